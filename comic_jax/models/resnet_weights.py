"""torchvision's (and timm's, which uses the same names) ResNet checkpoints -> the variables of
`comic_jax.models.resnet`, and torchvision's ImageNet weights.

* `resnet_variables_from_torch(state_dict, depth)` converts a state dict into
  `{'params': ..., 'batch_stats': ...}` (conv OIHW -> HWIO, BatchNorm weight/bias/running_mean/
  running_var -> scale/bias/mean/var, `layerI.J.downsample.0/1` ->
  `layerI_J/downsample_conv|downsample_bn`).
* `fetch_torchvision_weights(arch)` downloads torchvision's IMAGENET1K_V1 file (only when called)
  and checks its sha256 against the prefix in its name, as torch.hub does.
* `load_resnet_variables(source, depth)`: the converted weights of a file or of torchvision's.

NumPy only at import (no JAX, no Flax), like `torch_checkpoint`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Optional, Union

from comic_jax.errors import UserError, require
from comic_jax.models.torch_checkpoint import (
  BATCHNORM_LEAVES,
  read_state_dict,
  to_flax_variables,
)

RESNET_STAGES = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)),
                  50: (True, (3, 4, 6, 3)), 101: (True, (3, 4, 23, 3))}


def resnet_depth(depth: Union[int, str]) -> int:
  value = str(depth)
  value = value[len('resnet'):] if value.startswith('resnet') else value
  require(value.isdigit() and int(value) in RESNET_STAGES,
          f'unknown ResNet depth {depth!r}; choose one of {sorted(RESNET_STAGES)}')
  return int(value)


def resnet_layout(depth: Union[int, str]):
  """[(torch module name, flax path, 'conv' | 'bn', torch shape)] in torchvision's state-dict
  order (conv shapes OIHW, BatchNorm shapes (C,)), fc excluded."""
  bottleneck, stages = RESNET_STAGES[resnet_depth(depth)]
  layout = [('conv1', ('conv1',), 'conv', (64, 3, 7, 7)), ('bn1', ('bn1',), 'bn', (64,))]
  in_ch = 64
  for i, n_blocks in enumerate(stages):
    width = 64 * 2 ** i
    for j in range(n_blocks):
      torch_name, flax_name = f'layer{i + 1}.{j}', f'layer{i + 1}_{j}'
      if bottleneck:
        out = 4 * width
        convs = [(width, in_ch, 1, 1), (width, width, 3, 3), (out, width, 1, 1)]
      else:
        out = width
        convs = [(width, in_ch, 3, 3), (width, width, 3, 3)]
      for k, shape in enumerate(convs, 1):
        layout.append((f'{torch_name}.conv{k}', (flax_name, f'conv{k}'), 'conv', shape))
        layout.append((f'{torch_name}.bn{k}', (flax_name, f'bn{k}'), 'bn', (shape[0],)))
      if j == 0 and (i > 0 or in_ch != out):
        layout.append((f'{torch_name}.downsample.0', (flax_name, 'downsample_conv'), 'conv',
                       (out, in_ch, 1, 1)))
        layout.append((f'{torch_name}.downsample.1', (flax_name, 'downsample_bn'), 'bn', (out,)))
      in_ch = out
  return layout


def _expected_torch_keys(depth):
  """{torch key: (shape, collection, flax path)}"""
  expected = {}
  for name, flax_path, kind, shape in resnet_layout(depth):
    if kind == 'conv':
      expected[f'{name}.weight'] = (shape, 'params', flax_path + ('kernel',))
    else:
      for torch_leaf, collection, flax_leaf in BATCHNORM_LEAVES:
        expected[f'{name}.{torch_leaf}'] = (shape, collection, flax_path + (flax_leaf,))
  return expected


def _ignored(key: str) -> bool:
  return key.startswith('fc.') or key.endswith('.num_batches_tracked')


def resnet_variables_from_torch(state_dict: Mapping[str, Any], depth: Union[int, str]):
  """torchvision/timm ResNet-`depth` state dict -> {'params': ..., 'batch_stats': ...} for
  comic_jax.models.resnet.ResNet{depth} (nested dicts of float32 ndarrays).

  fc.* and *.num_batches_tracked are dropped; a missing key, an unexpected key or a shape that
  does not match raises UserError naming the key.
  """
  depth = resnet_depth(depth)
  return to_flax_variables(state_dict, _expected_torch_keys(depth), f'ResNet-{depth}',
                           f'(is this a torchvision/timm ResNet-{depth} checkpoint?)', _ignored)


def load_resnet_variables(source: str, depth: Union[int, str],
                          cache_dir: Optional[str] = None):
  """Pretrained {'params', 'batch_stats'} for ResNet-`depth` from a checkpoint file, or from
  torchvision's IMAGENET1K_V1 weights when `source` is 'torchvision' (downloaded into
  `cache_dir` on first use)."""
  if source == 'torchvision':
    source = fetch_torchvision_weights(f'resnet{resnet_depth(depth)}', cache_dir)
  return resnet_variables_from_torch(read_state_dict(source), depth)


# ----------------------------------------------------------------------------------------------
# Downloading torchvision's weights
# ----------------------------------------------------------------------------------------------

TORCHVISION_URLS = {
    'IMAGENET1K_V1': {
        'resnet18': 'https://download.pytorch.org/models/resnet18-f37072fd.pth',
        'resnet34': 'https://download.pytorch.org/models/resnet34-b627a593.pth',
        'resnet50': 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
        'resnet101': 'https://download.pytorch.org/models/resnet101-63fe2227.pth',
    },
    'IMAGENET1K_V2': {
        'resnet50': 'https://download.pytorch.org/models/resnet50-11ad3fa6.pth',
        'resnet101': 'https://download.pytorch.org/models/resnet101-cd907fc2.pth',
    },
}
DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'comic_jax')
_HASH_RE = re.compile(r'-([a-f0-9]+)\.')        # torch.hub's HASH_REGEX


def torchvision_url(arch: Union[int, str], weights: str = 'IMAGENET1K_V1') -> str:
  """torchvision's download URL for `arch` ('resnet18', ..., or the depth)."""
  require(weights in TORCHVISION_URLS,
          f'unknown torchvision weights {weights!r}; choose one of {sorted(TORCHVISION_URLS)}')
  arch = f'resnet{resnet_depth(arch)}'
  urls = TORCHVISION_URLS[weights]
  require(arch in urls, f'torchvision has no {weights} weights for {arch}; those with them: '
                        f'{", ".join(urls)}')
  return urls[arch]


def sha256_prefix(filename: str) -> str:
  """The hash fragment in a torchvision/torch.hub file name: 'resnet50-0676ba61.pth' ->
  '0676ba61'."""
  match = _HASH_RE.search(os.path.basename(filename))
  require(match is not None, f'{filename} has no -<sha256 prefix>. in its name')
  return match.group(1)


def fetch_torchvision_weights(arch: Union[int, str], cache_dir: Optional[str] = None,
                              weights: str = 'IMAGENET1K_V1', timeout: float = 60.0) -> str:
  """The path of torchvision's `arch` weights in `cache_dir` (default ~/.cache/comic_jax),
  downloaded on first use and checked against the sha256 prefix in the file name."""
  from comic_jax import download
  url = torchvision_url(arch, weights)
  dest = os.path.join(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR), url.rsplit('/', 1)[-1])
  try:
    return download.fetch(url, dest, sha256_prefix(dest), timeout=timeout)
  except UserError as e:
    raise UserError(f'{e}, and pass the file path instead') from None
