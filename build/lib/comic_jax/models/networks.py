"""Whole networks: backbone -> projection to d -> classifier (one "branch" of METHOD.md)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from comic_jax.models import backbones, heads

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 RGB in [0, 255] -> float32 standardised with the ImageNet mean / std."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


class MultiLabelNet(nn.Module):
  """backbone + linear projection to `projection_dim` + a classifier module.

  `embed` gives the projected features f, `classify` the logits z of given features, and
  `__call__` both, so a composite model (COMIC's balanced branch) can alter f in between.
  """
  backbone: nn.Module
  classifier: nn.Module                 # CosineClassifier | LinearClassifier | GCNClassifier
  projection_dim: int = 0               # 0: no projection, f = backbone features
  backbone_trainable: bool = True       # False: backbone in inference mode, no gradient
  log_softmax_features: bool = False    # the authors' code: f = log_softmax(projection(x))
  dtype: Any = jnp.float32

  def setup(self):
    if self.projection_dim:
      self.projection = nn.Dense(self.projection_dim, dtype=self.dtype)

  def embed(self, images, train: bool = True):
    x = normalize_images(images) if jnp.issubdtype(images.dtype, jnp.integer) else images
    if self.backbone_trainable:
      f = self.backbone(x, train=train)
    else:
      f = jax.lax.stop_gradient(self.backbone(x, train=False))
    if self.projection_dim:
      f = self.projection(f)
    if self.log_softmax_features:
      f = jax.nn.log_softmax(f, axis=-1)
    return f.astype(jnp.float32)

  def classify(self, features):
    return self.classifier(features)

  def __call__(self, images, train: bool = True):
    f = self.embed(images, train)
    return {'features': f, 'logits': self.classify(f)}


def create_classifier(model_config, num_classes: int, kind: str) -> nn.Module:
  """'cosine' (METHOD.md's multi-head cosine classifier) or 'linear'."""
  if kind == 'cosine':
    cos = model_config.cosine
    return heads.CosineClassifier(num_classes, cos.scale, cos.eta, cos.num_groups)
  if kind == 'linear':
    return heads.LinearClassifier(num_classes, dtype=jnp.dtype(model_config.dtype))
  raise ValueError(f'unknown classifier {kind!r}')


def create_network(model_config, num_classes: int, classifier,
                   name: str | None = None) -> MultiLabelNet:
  """A branch from `config.model`; `classifier` is a kind ('linear' | 'cosine') or a module."""
  if isinstance(classifier, str):
    classifier = create_classifier(model_config, num_classes, classifier)
  return MultiLabelNet(
      backbone=backbones.create_backbone(model_config),
      classifier=classifier,
      projection_dim=model_config.projection_dim,
      backbone_trainable=model_config.backbone_trainable,
      log_softmax_features=model_config.official_log_softmax_features,
      dtype=jnp.dtype(model_config.dtype),
      name=name)
