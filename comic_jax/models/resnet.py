"""ResNet-18/34/50/101 in Flax linen, laid out like torchvision's (v1.5: stride on the 3x3 conv).

Module names follow torchvision's state-dict (`conv1`, `bn1`, `layer1_0/conv1`, ...,
`layer2_0/downsample_conv`), so ImageNet weights map over one to one. Input NHWC float, output
the (B, 512 or 2048) globally average-pooled features (no final fc).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# torchvision initialises convs with kaiming_normal(mode='fan_out', nonlinearity='relu').
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def conv_and_norm(dtype, train: bool):
  """Bias-free conv and BatchNorm with torchvision's defaults (momentum 0.1, eps 1e-5)."""
  conv = functools.partial(nn.Conv, use_bias=False, dtype=dtype, kernel_init=_conv_init)
  norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5, dtype=dtype)
  return conv, norm


class BasicBlock(nn.Module):
  filters: int
  strides: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    conv, norm = conv_and_norm(self.dtype, train)
    y = conv(self.filters, (3, 3), (self.strides,) * 2, padding=((1, 1), (1, 1)), name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = conv(self.filters, (3, 3), padding=((1, 1), (1, 1)), name='conv2')(y)
    y = norm(name='bn2')(y)
    if x.shape[-1] != self.filters or self.strides != 1:
      x = conv(self.filters, (1, 1), (self.strides,) * 2, name='downsample_conv')(x)
      x = norm(name='downsample_bn')(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  filters: int
  strides: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    conv, norm = conv_and_norm(self.dtype, train)
    out = self.filters * self.expansion
    y = nn.relu(norm(name='bn1')(conv(self.filters, (1, 1), name='conv1')(x)))
    y = conv(self.filters, (3, 3), (self.strides,) * 2, padding=((1, 1), (1, 1)), name='conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = norm(name='bn3')(conv(out, (1, 1), name='conv3')(y))
    if x.shape[-1] != out or self.strides != 1:
      x = conv(out, (1, 1), (self.strides,) * 2, name='downsample_conv')(x)
      x = norm(name='downsample_bn')(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  stage_sizes: Sequence[int]
  block_cls: Any
  num_filters: int = 64
  dtype: Any = jnp.float32
  pool: bool = True                # False: the last stage's (B, H/32, W/32, D) map, not pooled

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.Conv(self.num_filters, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                dtype=self.dtype, kernel_init=_conv_init, name='conv1')(x.astype(self.dtype))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name='bn1')(x)
    x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(self.num_filters * 2 ** i, strides, dtype=self.dtype,
                           name=f'layer{i + 1}_{j}')(x, train)
    return (jnp.mean(x, axis=(1, 2)) if self.pool else x).astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
