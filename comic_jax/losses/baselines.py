"""Multi-label losses of the baselines (BASELINES.md). All reduce the same way: sum over classes,
mean over samples (with Adam this only rescales the learning signal)."""
from __future__ import annotations

import jax.numpy as jnp
import optax

from comic_jax.losses.common import reduce_loss


def bce(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Binary cross-entropy -[y log p + (1-y) log(1-p)], p = sigmoid(z), computed from logits."""
  return reduce_loss(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))


LOSSES = {'bce': bce}
