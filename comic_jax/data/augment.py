"""Batch augmentations that run on the device inside the jit-compiled train step."""
from __future__ import annotations

import jax
import jax.numpy as jnp


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
