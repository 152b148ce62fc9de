"""Classifier heads: the multi-head cosine classifier of docs/method.md and a plain linear one."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

_TINY = 1e-12  # guards ||f|| = 0; far below any real feature norm


def split_groups(x: jnp.ndarray, num_groups: int) -> jnp.ndarray:
  """(..., d) -> (..., num_groups, d / num_groups): the N_g equal groups of docs/method.md."""
  d = x.shape[-1]
  if d % num_groups:
    raise ValueError(f'feature dim {d} is not divisible by num_groups={num_groups}')
  return x.reshape(x.shape[:-1] + (num_groups, d // num_groups))


def cosine_logits(features: jnp.ndarray, weights: jnp.ndarray, *, scale: float, eta: float,
                  num_groups: int) -> jnp.ndarray:
  """Multi-head cosine ("causal norm") logits, docs/method.md "Classifier":

      z[c] = (rho / N_g) * sum_k <w_{c,k}, f_k> / ((||w_{c,k}|| + eta) * ||f_k||)

  Args:
    features: (B, d) features f.
    weights: (C, d) class weights w.
    scale: rho. eta: the class-agnostic baseline energy. num_groups: N_g.
  Returns:
    (B, C) logits.
  """
  f = split_groups(features, num_groups)                         # (B, G, d/G)
  w = split_groups(weights, num_groups)                          # (C, G, d/G)
  f_unit = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), _TINY)
  w_scaled = w / (jnp.linalg.norm(w, axis=-1, keepdims=True) + eta)
  return (scale / num_groups) * jnp.einsum('bgd,cgd->bc', f_unit, w_scaled)


class CosineClassifier(nn.Module):
  """Learns the (C, d) class weights and returns `cosine_logits`."""
  num_classes: int
  scale: float = 16.0
  eta: float = 1.0 / 32.0
  num_groups: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features):
    w = self.param('kernel', nn.initializers.normal(stddev=0.01),
                   (self.num_classes, features.shape[-1]), jnp.float32)
    return cosine_logits(features.astype(jnp.float32), w, scale=self.scale, eta=self.eta,
                         num_groups=self.num_groups)


class LinearClassifier(nn.Module):
  """z = W f + b."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features):
    return nn.Dense(self.num_classes, dtype=self.dtype, name='dense')(features).astype(jnp.float32)


def boost_pool(cam: jnp.ndarray, alpha: float) -> jnp.ndarray:
  """BoostLU [youngwk/BridgeGapExplanationPAMC, models.py; Kim et al., CVPR 2023]: a (B, H, W, C)
  class activation map -> (B, C) logits, the mean over positions of where(CAM > 0, alpha x CAM,
  CAM) (positive evidence boosted before global average pooling, at training and test time)."""
  cam = cam.astype(jnp.float32)
  return jnp.mean(jnp.where(cam > 0, alpha * cam, cam), axis=(1, 2))


def class_weights(classifier_params) -> jnp.ndarray:
  """The (C, d) class weights w_c of either classifier's parameters (a linear classifier's
  kernel is stored (d, C)); what COMIC's energy adjustment projects the energy onto."""
  if 'dense' in classifier_params:
    return classifier_params['dense']['kernel'].T
  return classifier_params['kernel']
