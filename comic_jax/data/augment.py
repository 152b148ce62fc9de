"""Batch augmentations that run on the device inside the jit-compiled train step."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from comic_jax.data import rand_augment, warps
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
    mats.append(warps.rotation_about(angles, s / 2, s / 2))
  return warps.matmul(*mats)[:, :2]


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
  return warps.affine_warp(images, matrices, out_size)


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
    images = rand_augment.rand_augment(images, jax.random.fold_in(rng, 1),
                                       num_ops=a.rand_augment_ops,
                                       magnitude=a.rand_augment_magnitude)
  return images
