"""Affine warps of NHWC uint8 batches on the device (bilinear or nearest, zero fill), and the
3x3 matrices they are built from: what the crops of `augment` and the geometric ops of
`rand_augment` use."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from comic_jax.errors import require

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


def matmul(*mats: jnp.ndarray) -> jnp.ndarray:
  """Product of batched 3x3 matrices at full float32 precision."""
  out = mats[0]
  for m in mats[1:]:
    out = jnp.matmul(out, m, precision=jax.lax.Precision.HIGHEST)
  return out


def rotation_about(angles: jnp.ndarray, cx: float, cy: float) -> jnp.ndarray:
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
