"""Backbones: a small fast CNN for PLT-Synth on a CPU, the ResNets for real data, and an MLP for
inputs that are feature vectors.

A backbone maps a normalised NHWC float image batch to (B, D) features and takes `train` (batch
statistics on/off).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from comic_jax.models import resnet


class SmallCNN(nn.Module):
  """conv3x3-BN-ReLU stages with 2x2 max-pooling between them, then global average pooling.

  The default widths (16, 32, 64, 128) on 32x32 images leave a 4x4 final map (XLA's CPU 3x3 convs
  are pathologically slow on 2x2 maps) and train at ~2,700 img/s on a 2-core CPU (measured with
  batch 32; wider (24, 48, 96, 192) ran at ~1,100 img/s, 48x48 inputs at ~800).
  """
  widths: Sequence[int] = (16, 32, 64, 128)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = nn.Conv(width, (3, 3), use_bias=False, dtype=self.dtype, name=f'conv{i}')(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype, name=f'bn{i}')(x)
      x = nn.relu(x)
      if i < len(self.widths) - 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


class MLP(nn.Module):
  """Dense-ReLU layers for inputs that are already feature vectors (N, D): precomputed
  embeddings of your own data, or backbone features cached in frozen-backbone mode. No layers
  (`widths=()`) passes the features through unchanged."""
  widths: Sequence[int] = (512,)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    del train
    x = x.astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense{i}')(x))
    return x.astype(jnp.float32)


_RESNETS = {'resnet18': resnet.ResNet18, 'resnet34': resnet.ResNet34,
            'resnet50': resnet.ResNet50, 'resnet101': resnet.ResNet101}
BACKBONES = ('small_cnn', 'mlp') + tuple(_RESNETS)


def create_backbone(model_config, name: str = 'backbone') -> nn.Module:
  """The backbone named by `model_config.backbone`."""
  dtype = jnp.dtype(model_config.dtype)
  if model_config.backbone == 'small_cnn':
    return SmallCNN(widths=tuple(model_config.small_cnn_widths), dtype=dtype, name=name)
  if model_config.backbone == 'mlp':
    return MLP(widths=tuple(model_config.mlp_widths), dtype=dtype, name=name)
  if model_config.backbone in _RESNETS:
    return _RESNETS[model_config.backbone](dtype=dtype, name=name)
  raise ValueError(f'unknown backbone {model_config.backbone!r}; choose one of {BACKBONES}')
