"""Batch augmentations that run on the device inside the jit-compiled train step."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from comic_jax.errors import require


def flip_and_translate(images: jnp.ndarray, rng: jax.Array, *, flip: bool,
                       max_shift: int) -> jnp.ndarray:
  """Random horizontal flip (p = 0.5) and random translation by up to `max_shift` pixels.

  Translation pads with the edge pixels and crops back to the input size. Each image draws its
  own flip and offset; the draws depend only on `rng`, so they are the same on 1 or N devices.
  """
  b, h, w, _ = images.shape
  flip_rng, shift_rng = jax.random.split(rng)
  if flip:
    do_flip = jax.random.bernoulli(flip_rng, 0.5, (b,))
    images = jnp.where(do_flip[:, None, None, None], images[:, :, ::-1], images)
  if max_shift:
    s = max_shift
    padded = jnp.pad(images, ((0, 0), (s, s), (s, s), (0, 0)), mode='edge')
    offsets = jax.random.randint(shift_rng, (b, 2), 0, 2 * s + 1)
    crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, im.shape[-1]))
    images = jax.vmap(crop)(padded, offsets)
  return images


# ------------------------------------------------------------------------------- affine warps
#
# Coordinates are continuous pixel coordinates, x = column and y = row: pixel (row i, column j)
# covers [j, j + 1) x [i, i + 1) and its centre is (j + 0.5, i + 0.5). This is PIL's and
# torchvision's half-pixel convention (align_corners=False), in which resizing a crop box
# (top, left, height, width) to S pixels is the map x_src = left + x * width / S.

def affine_warp(images: jnp.ndarray, matrices: jnp.ndarray, out_size: int | tuple[int, int], *,
                interpolation: str = 'bilinear') -> jnp.ndarray:
  """Resamples every image at an affine map of the output grid, in one gather pass.

  `images` are uint8 (B, H, W, C); `matrices` (B, 2, 3) map an output point (x, y, 1) to the
  source point it samples; `out_size` is S or (height, width). 'bilinear' blends the four
  nearest pixels, clamped to the image at its borders (what a resize does there); 'nearest'
  takes the pixel that contains the point (PIL's NEAREST affine transform). Output pixels whose
  source point lies outside the image are 0 (zero padding, torchvision's default fill), so a
  warp never smears the edge pixels. Returns uint8 (B, out_h, out_w, C), rounded.
  """
  require(interpolation in ('bilinear', 'nearest'),
          f'interpolation={interpolation!r} is not bilinear or nearest')
  out_h, out_w = (out_size, out_size) if isinstance(out_size, int) else out_size
  b, h, w, c = images.shape
  m = matrices.astype(jnp.float32)
  ys, xs = jnp.meshgrid(jnp.arange(out_h, dtype=jnp.float32) + 0.5,
                        jnp.arange(out_w, dtype=jnp.float32) + 0.5, indexing='ij')
  # Elementwise, not a matmul: a matmul may run at reduced precision on accelerators.
  coef = lambda r, k: m[:, r, k][:, None, None]
  sx = coef(0, 0) * xs + coef(0, 1) * ys + coef(0, 2)
  sy = coef(1, 0) * xs + coef(1, 1) * ys + coef(1, 2)
  flat = images.reshape(b, h * w, c)

  def tap(iy, ix):
    """Pixels (iy, ix) of each image, as (B, out_h, out_w, C)."""
    idx = (iy * w + ix).reshape(b, -1)
    return jnp.take_along_axis(flat, idx[..., None], axis=1).reshape(b, out_h, out_w, c)

  if interpolation == 'nearest':
    ix, iy = jnp.floor(sx).astype(jnp.int32), jnp.floor(sy).astype(jnp.int32)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    out = tap(jnp.clip(iy, 0, h - 1), jnp.clip(ix, 0, w - 1))
    return jnp.where(inside[..., None], out, jnp.zeros((), images.dtype))

  inside = (sx >= 0) & (sx <= w) & (sy >= 0) & (sy <= h)
  x, y = sx - 0.5, sy - 0.5
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  x0i, y0i = x0.astype(jnp.int32), y0.astype(jnp.int32)
  xa, xb = jnp.clip(x0i, 0, w - 1), jnp.clip(x0i + 1, 0, w - 1)
  ya, yb = jnp.clip(y0i, 0, h - 1), jnp.clip(y0i + 1, 0, h - 1)
  f32 = lambda v: v.astype(jnp.float32)
  top = f32(tap(ya, xa)) * (1 - fx) + f32(tap(ya, xb)) * fx
  bottom = f32(tap(yb, xa)) * (1 - fx) + f32(tap(yb, xb)) * fx
  out = jnp.where(inside[..., None], top * (1 - fy) + bottom * fy, 0.0)
  return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)


def _matmul(*mats: jnp.ndarray) -> jnp.ndarray:
  """Product of batched 3x3 matrices at full float32 precision."""
  out = mats[0]
  for m in mats[1:]:
    out = jnp.matmul(out, m, precision=jax.lax.Precision.HIGHEST)
  return out


def _rotation_about(angles: jnp.ndarray, cx: float, cy: float) -> jnp.ndarray:
  """(B, 3, 3) output-to-source maps of a counter-clockwise rotation (degrees, as torchvision and
  PIL: positive turns the picture counter-clockwise on screen) about (cx, cy)."""
  t = jnp.deg2rad(angles.astype(jnp.float32))
  cos, sin = jnp.cos(t), jnp.sin(t)
  zero, one = jnp.zeros_like(t), jnp.ones_like(t)
  # The inverse rotation (y points down): src = [[cos, -sin], [sin, cos]] (p - c) + c.
  return jnp.stack([
      jnp.stack([cos, -sin, cx - cos * cx + sin * cy], -1),
      jnp.stack([sin, cos, cy - sin * cx - cos * cy], -1),
      jnp.stack([zero, zero, one], -1)], -2)


def resized_crop_matrices(boxes: jnp.ndarray, out_size: int, *, flips: jnp.ndarray | None = None,
                          angles: jnp.ndarray | None = None) -> jnp.ndarray:
  """(B, 2, 3) maps for `affine_warp` that crop, resize, flip and rotate in one go.

  `boxes` (B, 4) are (top, left, height, width) in source pixels; the box is resized to
  out_size x out_size, then mirrored left-right where `flips` (B,) is true, then rotated by
  `angles` (B,) degrees counter-clockwise about the output centre (= the crop centre). This is
  the order of torchvision's RandomResizedCrop -> RandomHorizontalFlip -> RandomRotation, so the
  rotation turns the resized square, not the (possibly oblong) source box.
  """
  boxes = boxes.astype(jnp.float32)
  top, left, bh, bw = (boxes[:, k] for k in range(4))
  s = float(out_size)
  zero, one = jnp.zeros_like(top), jnp.ones_like(top)
  row = lambda *v: jnp.stack(v, -1)
  crop = jnp.stack([row(bw / s, zero, left), row(zero, bh / s, top), row(zero, zero, one)], -2)
  mats = [crop]
  if flips is not None:
    f = jnp.where(flips, -1.0, 1.0)
    mats.append(jnp.stack([row(f, zero, (1 - f) / 2 * s), row(zero, one, zero),
                           row(zero, zero, one)], -2))
  if angles is not None:
    mats.append(_rotation_about(angles, s / 2, s / 2))
  return _matmul(*mats)[:, :2]


# Each function draws all its uniforms in one jax.random call: every call adds compile time.
_ATTEMPTS = 10


def sample_crop_boxes(rng: jax.Array, batch: int, height: int, width: int, *,
                      scale: tuple[float, float] = (0.5, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jnp.ndarray:
  """(B, 4) integer crop boxes (top, left, height, width), torchvision's RandomResizedCrop draw.

  Each image tries 10 boxes of area fraction U(scale) and aspect ratio (width / height)
  log-uniform in `ratio`, with sides rounded to whole pixels, and keeps the first that fits in
  the image, at a uniform position; if none fits, it takes the central crop of the largest box
  whose ratio is clamped into `ratio` (torchvision's fallback). The loop is vectorised: all
  attempts are drawn and the first fitting one is selected, which is the same distribution.
  """
  u = jax.random.uniform(rng, (batch, 2 * _ATTEMPTS + 2))
  return _crop_boxes(u, height, width, scale, ratio)


def _crop_boxes(u: jnp.ndarray, height: int, width: int, scale: tuple[float, float],
                ratio: tuple[float, float]) -> jnp.ndarray:
  """`sample_crop_boxes` from uniforms u (B, 2 * _ATTEMPTS + 2): areas, log ratios, position."""
  require(0 < scale[0] <= scale[1] <= 1, f'scale={scale} must satisfy 0 < min <= max <= 1')
  require(0 < ratio[0] <= ratio[1], f'ratio={ratio} must satisfy 0 < min <= max')
  a = _ATTEMPTS
  area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, :a])
  lo, hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(lo + (hi - lo) * u[:, a:2 * a])
  cw = jnp.round(jnp.sqrt(area * aspect))
  ch = jnp.round(jnp.sqrt(area / aspect))
  fits = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
  first = jnp.argmax(fits, axis=1)[:, None]
  found = fits.any(axis=1)
  cw = jnp.take_along_axis(cw, first, 1)[:, 0]
  ch = jnp.take_along_axis(ch, first, 1)[:, 0]
  top = jnp.minimum(jnp.floor(u[:, 2 * a] * (height - ch + 1)), height - ch)
  left = jnp.minimum(jnp.floor(u[:, 2 * a + 1] * (width - cw + 1)), width - cw)
  # torchvision's fallback: the central crop with the aspect ratio clamped into `ratio`.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    fw, fh = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    fw, fh = int(round(height * ratio[1])), height
  else:
    fw, fh = width, height
  return jnp.stack([jnp.where(found, top, (height - fh) // 2),
                    jnp.where(found, left, (width - fw) // 2),
                    jnp.where(found, ch, fh), jnp.where(found, cw, fw)], -1)


def random_resized_crop(images: jnp.ndarray, rng: jax.Array, *, out_size: int,
                        scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        max_rotation: float = 15.0, flip: bool = True) -> jnp.ndarray:
  """Random resized crop + horizontal flip (p = 0.5) + rotation, as one bilinear resampling.

  The crop box is torchvision's RandomResizedCrop draw (`sample_crop_boxes`: area fraction in
  `scale`, log-uniform aspect ratio in `ratio`, central-crop fallback); the flip and a rotation
  by U(-max_rotation, max_rotation) degrees about the crop centre follow, in torchvision's
  order, composed into one affine map per image (`resized_crop_matrices`) and sampled once with
  bilinear interpolation (`affine_warp`). Where the rotated square's corners reach past the crop
  box they show the image around it, and 0 (black) only past the image's own border;
  torchvision fills them with 0 always. Every draw depends only on `rng` (one row per image),
  so the result is the same on 1 or N devices. uint8 (B, H, W, C) -> uint8 (B, S, S, C).
  """
  b, h, w, _ = images.shape
  u = jax.random.uniform(rng, (b, 2 * _ATTEMPTS + 4))
  boxes = _crop_boxes(u[:, :-2], h, w, scale, ratio)
  flips = u[:, -2] < 0.5 if flip else None
  angles = max_rotation * (2 * u[:, -1] - 1) if max_rotation else None
  matrices = resized_crop_matrices(boxes, out_size, flips=flips, angles=angles)
  return affine_warp(images, matrices, out_size)


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
    return warp(_rotation_about(m[None], width / 2, height / 2)[0, :2])

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

  out = affine_warp(images, mats, (h, w), interpolation='nearest').astype(jnp.int32)
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


KINDS = ('shift', 'resized_crop', 'none')


def validate_config(augment_config) -> None:
  """Checks config.augment."""
  a = augment_config
  require(a.kind in KINDS, f'config.augment.kind={a.kind!r} is not one of: {", ".join(KINDS)}')
  require(a.max_shift >= 0, f'config.augment.max_shift={a.max_shift!r} must be >= 0')


def augment_images(images, rng, augment_config, image_size: int,
                   with_rand_augment: bool = False):
  """The configured on-device augmentation of one batch of NHWC images (feature vectors pass
  through). A stream that asks for it (`with_rand_augment`, COMIC's tail batch) also gets
  RandAugment when `augment.rand_augment_tail` is on."""
  a = augment_config
  if images.ndim != 4 or a.kind == 'none':
    return images
  if a.kind == 'shift':
    images = flip_and_translate(images, rng, flip=a.flip, max_shift=a.max_shift)
  else:
    images = random_resized_crop(
        images, rng, out_size=image_size, scale=tuple(a.crop_scale),
        ratio=tuple(a.crop_ratio), max_rotation=a.max_rotation, flip=a.flip)
  if with_rand_augment and a.rand_augment_tail:
    images = rand_augment(images, jax.random.fold_in(rng, 1), num_ops=a.rand_augment_ops,
                                magnitude=a.rand_augment_magnitude)
  return images
