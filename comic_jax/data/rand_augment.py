"""RandAugment on the device, inside the jit-compiled train step (COMIC's tail batch with
`augment.rand_augment_tail`)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from comic_jax.data import warps
from comic_jax.errors import require

# ------------------------------------------------------------------------------- RandAugment
#
# torchvision's RandAugment (transforms.RandAugment, PIL path): each image applies `num_ops`
# ops, each drawn uniformly from the 14 below, at the fixed magnitude bin `magnitude` of
# `num_bins`, with a random sign for the signed ops. Geometric ops use nearest sampling and a
# 0 (black) fill, as torchvision's defaults do; the colour ops follow PIL's ImageEnhance /
# ImageOps arithmetic (integer grey level, truncating blends), which is what torchvision calls
# on PIL images.

RAND_AUGMENT_OPS = ('Identity', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate',
                    'Brightness', 'Color', 'Contrast', 'Sharpness', 'Posterize', 'Solarize',
                    'AutoContrast', 'Equalize')
_SIGNED = ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate', 'Brightness', 'Color',
           'Contrast', 'Sharpness')
# What the blend stage blends each image with (PIL's "degenerate" image).
_KEEP, _BLACK, _MEAN, _GREY, _SMOOTH = range(5)


def rand_augment_magnitudes(magnitude: int, num_bins: int, height: int,
                            width: int) -> tuple[np.ndarray, np.ndarray]:
  """(values, signed): each op's magnitude at bin `magnitude` and whether it takes a random sign,
  in RAND_AUGMENT_OPS order; torchvision's `_augmentation_space`."""
  require(num_bins >= 2, f'num_bins={num_bins} must be >= 2')
  require(0 <= magnitude < num_bins, f'magnitude={magnitude} must be in [0, num_bins={num_bins})')
  t = magnitude / (num_bins - 1)
  values = {
      'ShearX': 0.3 * t, 'ShearY': 0.3 * t,
      'TranslateX': 150.0 / 331.0 * width * t, 'TranslateY': 150.0 / 331.0 * height * t,
      'Rotate': 30.0 * t, 'Brightness': 0.9 * t, 'Color': 0.9 * t, 'Contrast': 0.9 * t,
      'Sharpness': 0.9 * t, 'Posterize': 8 - int(np.round(magnitude / ((num_bins - 1) / 4))),
      'Solarize': 255.0 * (1 - t)}
  return (np.array([values.get(op, 0.0) for op in RAND_AUGMENT_OPS], np.float32),
          np.array([op in _SIGNED for op in RAND_AUGMENT_OPS]))


def _grey(x: jnp.ndarray) -> jnp.ndarray:
  """PIL's RGB -> L conversion, exactly: int32 (..., H, W) from int32 (..., H, W, C)."""
  if x.shape[-1] == 1:
    return x[..., 0]
  require(x.shape[-1] == 3, f'RandAugment needs 1 or 3 channels, not {x.shape[-1]}')
  return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16


def _smooth(x: jnp.ndarray) -> jnp.ndarray:
  """PIL's ImageFilter.SMOOTH (3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13, rounded; the border rows
  and columns are kept), the degenerate image of Sharpness. int32 (B, H, W, C)."""
  _, h, w, _ = x.shape
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  total = 4 * x + sum(p[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
  smooth = (2 * total + 13) // 26
  rows, cols = jnp.arange(h), jnp.arange(w)
  interior = (((rows > 0) & (rows < h - 1))[:, None] & ((cols > 0) & (cols < w - 1))[None, :])
  return jnp.where(interior[None, :, :, None], smooth, x)


def _op_params(op, m, lo, hi, hist, *, height: int, width: int):
  """One image's op as (matrix (2, 3), lut (C, 256), degenerate kind, blend factor): the op is
  a warp, a per-channel lookup table or a blend, and the two stages it does not use are exact
  identities. `m` is the signed magnitude; lo / hi / hist are the per-channel min, max and
  histogram of the image."""
  c = lo.shape[0]
  levels = jnp.arange(256, dtype=jnp.int32)
  eye = jnp.array([[1, 0, 0], [0, 1, 0]], jnp.float32)
  same = jnp.broadcast_to(levels, (c, 256))
  zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)

  def warp(mat):
    return jnp.asarray(mat, jnp.float32), same, _KEEP, one

  def lut(table):
    return eye, table.astype(jnp.int32), _KEEP, one

  def blend(kind):
    return lambda m: (eye, same, kind, 1 + m)

  def autocontrast(m):
    # floor((v - lo) * 255 / (hi - lo)) in exact integers; PIL computes it in doubles and can
    # land one level lower where the quotient is a whole number.
    span = jnp.maximum(hi - lo, 1)[:, None]
    stretched = jnp.clip((levels[None] - lo[:, None]) * 255 // span, 0, 255)
    return lut(jnp.where((hi > lo)[:, None], stretched, same))

  def equalize(m):
    last = jnp.take_along_axis(hist, hi[:, None], -1)[:, 0]     # count of the top level present
    step = (hist.sum(-1) - last) // 255
    below = jnp.cumsum(hist, -1) - hist                         # pixels strictly below each level
    eq = jnp.minimum((step[:, None] // 2 + below) // jnp.maximum(step, 1)[:, None], 255)
    return lut(jnp.where((step > 0)[:, None], eq, same))

  def rotate(m):
    return warp(warps.rotation_about(m[None], width / 2, height / 2)[0, :2])

  branches = {
      'Identity': lambda m: warp(eye),
      'ShearX': lambda m: warp(jnp.stack([jnp.stack([one, m, zero]), eye[1]])),
      'ShearY': lambda m: warp(jnp.stack([eye[0], jnp.stack([m, one, zero])])),
      'TranslateX': lambda m: warp(jnp.stack([jnp.stack([one, zero, -jnp.trunc(m)]), eye[1]])),
      'TranslateY': lambda m: warp(jnp.stack([eye[0], jnp.stack([zero, one, -jnp.trunc(m)])])),
      'Rotate': rotate,
      'Brightness': blend(_BLACK), 'Color': blend(_GREY), 'Contrast': blend(_MEAN),
      'Sharpness': blend(_SMOOTH),
      'Posterize': lambda m: lut(same & ((0xFF << (8 - m.astype(jnp.int32))) & 0xFF)),
      'Solarize': lambda m: lut(jnp.where(same >= m, 255 - same, same)),
      'AutoContrast': autocontrast, 'Equalize': equalize}

  def typed(fn):
    """Every branch must return the same dtypes."""
    def branch(m):
      mat, table, kind, factor = fn(m)
      return (jnp.asarray(mat, jnp.float32), jnp.asarray(table, jnp.int32),
              jnp.asarray(kind, jnp.int32), jnp.asarray(factor, jnp.float32))
    return branch

  return jax.lax.switch(op, [typed(branches[name]) for name in RAND_AUGMENT_OPS], m)


def _materialise(x: jnp.ndarray) -> jnp.ndarray:
  """x, through an identity scatter. XLA fuses cheap producers into their consumers, so a gather
  from the per-image tables would rebuild the 14-way table selection for every pixel; it does
  not fuse a scatter, so the tables are built once (the op runs 1.5x faster on CPU).
  jax.lax.optimization_barrier does not stop that fusion."""
  return jnp.zeros_like(x).at[:, jnp.arange(x.shape[1])].set(x)


def apply_op(images: jnp.ndarray, ops: jnp.ndarray, magnitudes: jnp.ndarray) -> jnp.ndarray:
  """Applies RandAugment op `ops[i]` (an index into RAND_AUGMENT_OPS) with signed magnitude
  `magnitudes[i]` (torchvision's value: shear tan, pixels, degrees, enhance factor - 1, bits,
  threshold) to image i. uint8 (B, H, W, C) -> uint8 (B, H, W, C).

  Vectorised: each image's op becomes a warp matrix, a lookup table and a blend (chosen by
  jax.lax.switch per image), and every image then goes through one nearest-neighbour warp, one
  table lookup and one blend, of which only its op's stage is not the identity. Equalize,
  AutoContrast and Contrast use the statistics of the whole image, as PIL does.
  """
  b, h, w, c = images.shape
  x = images.astype(jnp.int32)
  lo, hi = x.min(axis=(1, 2)), x.max(axis=(1, 2))                       # (B, C)
  # One scatter-add per image into C * 256 bins; batched over images (not one flat scatter), so
  # a batch sharded over devices needs no collective.
  bins = (jnp.arange(c) * 256 + x).reshape(b, -1)
  hist = jax.vmap(lambda v: jnp.zeros(c * 256, jnp.int32).at[v].add(1))(bins).reshape(b, c, 256)
  mats, luts, kinds, factors = jax.vmap(
      functools.partial(_op_params, height=h, width=w))(
          ops.astype(jnp.int32), magnitudes.astype(jnp.float32), lo, hi, hist)

  out = warps.affine_warp(images, mats, (h, w), interpolation='nearest').astype(jnp.int32)
  # Per-channel lookup, as one flat gather (channel k's table starts at k * 256).
  tables = _materialise(luts.reshape(b, c * 256))
  out = jnp.take_along_axis(tables, (out + 256 * jnp.arange(c)).reshape(b, -1),
                            axis=1).reshape(out.shape)
  grey = _grey(out)
  mean = (2 * grey.sum(axis=(1, 2)) + h * w) // (2 * h * w)              # PIL: int(mean + 0.5)
  kind = kinds[:, None, None, None]
  f32 = lambda v: v.astype(jnp.float32)
  degenerate = jnp.select(
      [kind == _BLACK, kind == _MEAN, kind == _GREY, kind == _SMOOTH],
      [jnp.zeros_like(out), jnp.broadcast_to(mean[:, None, None, None], out.shape),
       jnp.broadcast_to(grey[..., None], out.shape), _smooth(out)], out)
  deg = f32(degenerate)
  blended = deg + factors[:, None, None, None] * (f32(out) - deg)        # PIL's Image.blend
  return jnp.floor(jnp.clip(blended, 0, 255)).astype(jnp.uint8)


def rand_augment(images: jnp.ndarray, rng: jax.Array, *, num_ops: int = 2, magnitude: int = 9,
                 num_bins: int = 31) -> jnp.ndarray:
  """torchvision's RandAugment(num_ops, magnitude, num_bins) on a uint8 (B, H, W, C) batch.

  Each image draws its own `num_ops` ops (uniform over RAND_AUGMENT_OPS, repeats allowed) and
  signs; the draws depend only on `rng`, so the result is the same on 1 or N devices.
  """
  b, h, w, _ = images.shape
  values, signed = rand_augment_magnitudes(magnitude, num_bins, h, w)
  values, signed = jnp.asarray(values), jnp.asarray(signed)
  if num_ops == 0:
    return images
  u = jax.random.uniform(rng, (num_ops, b, 2))            # one random call: see _ATTEMPTS

  def one_op(i, images):
    ops = jnp.minimum(jnp.floor(u[i, :, 0] * len(RAND_AUGMENT_OPS)).astype(jnp.int32),
                      len(RAND_AUGMENT_OPS) - 1)
    negate = (u[i, :, 1] < 0.5) & signed[ops]
    return apply_op(images, ops, jnp.where(negate, -values[ops], values[ops]))
  # A loop, not num_ops inlined copies: apply_op is compiled once.
  return jax.lax.fori_loop(0, num_ops, one_op, images)
