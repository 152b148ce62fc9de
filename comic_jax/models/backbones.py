"""Backbones: a small fast CNN for PLT-Synth on a CPU, the ResNets for real data, and an MLP for
inputs that are feature vectors.

A backbone maps a normalised NHWC float image batch to (B, D) features and takes `train` (batch
statistics on/off). `BACKBONES` is the registry: a new backbone is one entry there (its module,
its input normalisation, whether ImageNet weights exist for it; see docs/architecture.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from comic_jax.errors import require
from comic_jax.models import efficientnet, resnet, resnet_weights


def _windows(x):
  """(B, H, W, C) -> (B, H/2, 2, W/2, 2, C): the 2x2 windows (an odd last row / column dropped)."""
  b, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x):
  """2x2 max-pooling with stride 2 (an odd last row / column is dropped, like nn.max_pool's
  VALID windows) as a reshape and a max. The same values as nn.max_pool, and the same gradients
  but for exact ties inside a window (shared equally instead of given to one; after a ReLU the
  ties are zeros, whose gradient the ReLU stops).

  Why not nn.max_pool: XLA's CPU backend differentiates it through a reduce-window carrying four
  input-sized iota index arrays, about a third of the small CNN's train step in a profile
  (benchmarks/step_speed.py --profile). Why a custom gradient: JAX's own gradient of the
  reshape-and-max counts each window's maxima with a sum over the two window axes, which XLA's
  CPU backend ran as strided reductions taking ~20% of the BCE step's thread time
  (docs/performance.md); here the four window positions are counted with elementwise adds. The
  gradient is the same as JAX's, value for value (tested, ties included).
  """
  return _windows(x).max(axis=(2, 4))


def _max_pool_fwd(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(residuals, g):
  x, y = residuals
  hit = (_windows(x) == y[:, :, None, :, None, :]).astype(g.dtype)   # a maximum of its window
  count = hit[:, :, 0, :, 0] + hit[:, :, 0, :, 1] + hit[:, :, 1, :, 0] + hit[:, :, 1, :, 1]
  dx = (hit * (g / count)[:, :, None, :, None, :]).reshape(
      x.shape[0], y.shape[1] * 2, y.shape[2] * 2, x.shape[3])
  return (jnp.pad(dx, ((0, 0), (0, x.shape[1] - dx.shape[1]), (0, x.shape[2] - dx.shape[2]),
                       (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


class SmallCNN(nn.Module):
  """conv3x3-BN-ReLU stages with 2x2 max-pooling between them, then global average pooling.

  The default widths (16, 32, 64, 128) on 32x32 images leave a 4x4 final map (XLA's CPU 3x3 convs
  are pathologically slow on 2x2 maps) and train at ~2,700 img/s on a 2-core CPU (measured with
  batch 32; wider (24, 48, 96, 192) ran at ~1,100 img/s, 48x48 inputs at ~800).
  """
  widths: Sequence[int] = (16, 32, 64, 128)
  dtype: Any = jnp.float32
  pool: bool = True               # False: the last (B, H, W, widths[-1]) map, not pooled

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = nn.Conv(width, (3, 3), use_bias=False, dtype=self.dtype, name=f'conv{i}')(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype, name=f'bn{i}')(x)
      x = nn.relu(x)
      if i < len(self.widths) - 1:
        x = max_pool_2x2(x)
    return (jnp.mean(x, axis=(1, 2)) if self.pool else x).astype(jnp.float32)


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


class Identity(nn.Module):
  """No layers: the inputs are already backbone features (frozen-backbone mode reads them from
  the feature cache, `model.feature_cache`)."""

  @nn.compact
  def __call__(self, x, train: bool = True):
    del train
    return x.astype(jnp.float32)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """A backbone by name: how to build it from config.model, how its uint8 inputs are
  normalised ((x / 255 - mean) / std per channel) and, for one with ImageNet weights, how to read
  them."""
  create: Callable[[Any, Any], nn.Module]      # (model_config, dtype) -> module
  mean: tuple = IMAGENET_MEAN
  std: tuple = IMAGENET_STD
  # (source, cache_dir) -> {'params', 'batch_stats'} of the module that `create` builds; source
  # is 'imagenet' (the published weights) or what model.pretrained names (a checkpoint path).
  # None: no ImageNet weights.
  load_weights: Optional[Callable[[str, Optional[str]], dict]] = None
  taps: tuple = ()                             # what model.feature_taps may name
  spatial: bool = False                        # its module takes `pool=False` and then returns
                                               # its last feature map (B, H, W, D) (BoostLU)

  @property
  def pretrained(self) -> bool:
    """Whether the backbone has ImageNet weights (model.pretrained)."""
    return self.load_weights is not None


def _resnet_loader(depth: int):
  def load(source: str, cache_dir: Optional[str]):
    return resnet_weights.load_resnet_variables(
        'torchvision' if source == 'imagenet' else source, depth, cache_dir)
  return load


def _efficientnet_loader(name: str):
  def load(source: str, cache_dir: Optional[str]):
    del cache_dir                              # the weights come with an installed package
    return efficientnet.load_efficientnet_variables(
        name, path=None if source == 'imagenet' else source)
  return load


BACKBONES: dict[str, BackboneSpec] = {
    'small_cnn': BackboneSpec(lambda m, dtype: SmallCNN(widths=tuple(m.small_cnn_widths),
                                                        dtype=dtype), spatial=True),
    'mlp': BackboneSpec(lambda m, dtype: MLP(widths=tuple(m.mlp_widths), dtype=dtype)),
}
for _depth, _cls in ((18, resnet.ResNet18), (34, resnet.ResNet34), (50, resnet.ResNet50),
                     (101, resnet.ResNet101)):
  BACKBONES[f'resnet{_depth}'] = BackboneSpec(lambda m, dtype, _cls=_cls: _cls(dtype=dtype),
                                              load_weights=_resnet_loader(_depth), spatial=True)
for _name, _cls in efficientnet.EFFICIENTNETS.items():
  BACKBONES[_name] = BackboneSpec(
      lambda m, dtype, _cls=_cls: _cls(dtype=dtype, taps=tuple(m.feature_taps)), mean=_cls.MEAN,
      std=_cls.STD, load_weights=_efficientnet_loader(_name), taps=efficientnet.TAPS,
      spatial=True)


def backbone_name(model_config) -> str:
  """The backbone a config builds: `model.backbone`, unless `model.pretrained` names a backbone
  with ImageNet weights (`--config.model.pretrained=efficientnet_lite0` selects that network
  with its published weights)."""
  if model_config.pretrained in BACKBONES and BACKBONES[model_config.pretrained].pretrained:
    return model_config.pretrained
  return model_config.backbone


def validate_config(model_config) -> None:
  """Checks config.model."""
  m = model_config
  require(m.backbone in BACKBONES,
          f'config.model.backbone={m.backbone!r} is not one of: {", ".join(BACKBONES)}')
  name = backbone_name(m)
  require(m.dtype in ('float32', 'bfloat16'),
          f"config.model.dtype={m.dtype!r} is not one of: float32, bfloat16")
  require(m.classifier in ('auto', 'linear', 'cosine'),
          f"config.model.classifier={m.classifier!r} is not one of: auto, linear, cosine")
  require(m.projection_dim >= 0, f'config.model.projection_dim={m.projection_dim!r} must be >= 0')
  require(m.cosine.num_groups > 0,
          f'config.model.cosine.num_groups={m.cosine.num_groups!r} must be > 0')
  require(not m.feature_cache or not m.backbone_trainable,
          'config.model.feature_cache=True caches frozen backbone features: set '
          'config.model.backbone_trainable=False too')
  taps = tuple(m.feature_taps)
  require(not taps or BACKBONES[name].taps,
          f'config.model.feature_taps is for the EfficientNet-Lite backbones, not {name!r}')
  bad = [t for t in taps if t not in BACKBONES[name].taps]
  require(not bad, f'config.model.feature_taps: {", ".join(map(repr, bad))} not one of: '
                   f'{", ".join(BACKBONES[name].taps)}')
  require(len(set(taps)) == len(taps), f'config.model.feature_taps={taps} names a tap twice')
  require(not m.pretrained or BACKBONES[name].pretrained,
          f'config.model.pretrained needs a backbone with ImageNet weights, not {name!r}')


def spatial_map_problem(model_config) -> str:
  """Why the backbone of `model_config` gives no spatial feature map (what BoostLU's class
  activation map needs), or '' when it does."""
  if model_config.feature_cache:
    return 'the feature cache (model.feature_cache) holds pooled backbone features'
  name = backbone_name(model_config)
  if name not in BACKBONES or not BACKBONES[name].spatial:
    return f'the {name!r} backbone has no spatial feature map'
  if tuple(model_config.feature_taps):
    return ('model.feature_taps concatenates pooled maps of different sizes; set '
            'model.feature_taps=() for the head\'s map')
  return ''


def create_backbone(model_config, name: str = 'backbone', *, spatial: bool = False) -> nn.Module:
  """The backbone named by `model_config.backbone`; with `spatial`, one that returns its last
  feature map (B, H, W, D) instead of pooling it (`spatial_map_problem` says when it cannot)."""
  name = backbone_name(model_config)
  require(name in BACKBONES, f'config.model.backbone={name!r} is not one of: '
          f'{", ".join(BACKBONES)}')
  module = BACKBONES[name].create(model_config, jnp.dtype(model_config.dtype))
  if spatial:
    problem = spatial_map_problem(model_config)
    require(not problem, f'no spatial feature map: {problem}')
    module = module.clone(pool=False)
  return module.clone(name=name)


def normalization(model_config) -> tuple[tuple, tuple]:
  """(mean, std) of the backbone's input normalisation."""
  spec = BACKBONES[backbone_name(model_config)]
  return spec.mean, spec.std
