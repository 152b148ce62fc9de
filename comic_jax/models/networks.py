"""Whole networks: backbone -> projection to d -> classifier (one "branch" of docs/method.md)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from comic_jax.models import backbones, heads

# Learning-rate groups (config.optim.lr_scale): the attribute names that MultiLabelNet and
# ComicNet (models/comic_branches.py) give their sub-modules, and 'other' for everything else.
PARAM_GROUPS = ('backbone', 'projection', 'classifier', 'attention', 'other')


def param_groups(params):
  """A tree like `params` holding each parameter's group: the innermost of PARAM_GROUPS on its
  path, else 'other'."""
  def group(path, _):
    names = [getattr(k, 'key', getattr(k, 'name', str(k))) for k in path]
    return next((n for n in reversed(names) if n in PARAM_GROUPS), 'other')
  return jax.tree_util.tree_map_with_path(group, params)


def normalize_images(images: jnp.ndarray, mean=backbones.IMAGENET_MEAN,
                     std=backbones.IMAGENET_STD) -> jnp.ndarray:
  """uint8 RGB in [0, 255] -> float32 standardised per channel: (x / 255 - mean) / std."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean)) / jnp.asarray(std)


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
  mean: tuple = backbones.IMAGENET_MEAN  # the backbone's input normalisation of uint8 images
  std: tuple = backbones.IMAGENET_STD

  def setup(self):
    if self.projection_dim:
      self.projection = nn.Dense(self.projection_dim, dtype=self.dtype)

  def embed(self, images, train: bool = True):
    x = (normalize_images(images, self.mean, self.std)
         if jnp.issubdtype(images.dtype, jnp.integer) else images)
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
  """'cosine' (docs/method.md's multi-head cosine classifier) or 'linear'."""
  if kind == 'cosine':
    cos = model_config.cosine
    return heads.CosineClassifier(num_classes, cos.scale, cos.eta, cos.num_groups)
  if kind == 'linear':
    return heads.LinearClassifier(num_classes, dtype=jnp.dtype(model_config.dtype))
  raise ValueError(f'unknown classifier {kind!r}')


def create_network(model_config, num_classes: int, classifier,
                   name: str | None = None) -> MultiLabelNet:
  """A branch from `config.model`; `classifier` is a kind ('linear' | 'cosine') or a module.

  In frozen-backbone mode with the feature cache (`model.feature_cache`) the inputs are the
  cached backbone features, so the branch's backbone is the identity.
  """
  if isinstance(classifier, str):
    classifier = create_classifier(model_config, num_classes, classifier)
  mean, std = backbones.normalization(model_config)
  return MultiLabelNet(
      backbone=(backbones.Identity(name='backbone') if model_config.feature_cache
                else backbones.create_backbone(model_config)),
      mean=tuple(mean), std=tuple(std),
      classifier=classifier,
      projection_dim=model_config.projection_dim,
      backbone_trainable=model_config.backbone_trainable,
      log_softmax_features=model_config.official_log_softmax_features,
      dtype=jnp.dtype(model_config.dtype),
      name=name)


class BoostLUNet(MultiLabelNet):
  """BoostLU's network [youngwk/BridgeGapExplanationPAMC, models.py]: the backbone's last feature
  map (B, H, W, D) instead of its pooled features, the projection and the linear classifier
  applied at every position (together a 1x1 convolution, the class activation map (B, H, W, C)),
  then `heads.boost_pool`: positive CAM values times alpha, averaged over positions. The
  parameters are MultiLabelNet's; 'features' are the projected map's mean over positions."""
  alpha: float = 5.0

  def __call__(self, images, train: bool = True):
    f = self.embed(images, train)                    # (B, H, W, d)
    cam = self.classify(f)                           # (B, H, W, C)
    return {'features': jnp.mean(f, axis=(1, 2)), 'logits': heads.boost_pool(cam, self.alpha)}


def create_boostlu_network(model_config, num_classes: int, alpha: float) -> BoostLUNet:
  """BoostLU's branch from `config.model` (a linear classifier; the backbone must give a spatial
  map: `backbones.spatial_map_problem`)."""
  mean, std = backbones.normalization(model_config)
  return BoostLUNet(
      backbone=backbones.create_backbone(model_config, spatial=True), mean=tuple(mean),
      std=tuple(std), classifier=create_classifier(model_config, num_classes, 'linear'),
      projection_dim=model_config.projection_dim,
      backbone_trainable=model_config.backbone_trainable,
      log_softmax_features=model_config.official_log_softmax_features,
      dtype=jnp.dtype(model_config.dtype), alpha=alpha)
