"""A trained model rebuilt from its workdir alone, for prediction and the export: the config
from `config.json` (not the config file), class names from `per_class_ap.json`, and the
variables of the latest readable checkpoint, restored into the structure of the state that
training creates (`state.abstract_state`). The training data set is not built, except for
ML-GCN, whose label graph is computed from the training labels.

A frozen-backbone run (`model.feature_cache=True`) checkpoints only its heads, which read
backbone features: its model is the backbone (the weights recorded in `backbone.json`, checked
against the installed ones) followed by the heads, one function from image to probabilities.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from comic_jax import versions
from comic_jax.data import sources
from comic_jax.errors import UserError, require
from comic_jax.methods import registry
from comic_jax.training import checkpoint, features, optim
from comic_jax.training import state as state_lib


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config, rebuilt from `<workdir>/config.json`; that of an older version with the
  fields added since filled in (`versions.upgrade`, one `note:` line)."""
  path = os.path.join(workdir, 'config.json')
  require(os.path.isfile(path), f'{workdir!r} is not a run directory (no config.json)')
  try:
    with open(path) as f:
      saved = json.load(f)
    require(isinstance(saved, dict), f'cannot read {path}: not a JSON object')
    return ml_collections.ConfigDict(versions.upgrade(saved, path))
  except (OSError, ValueError, TypeError, AttributeError) as e:
    raise UserError(f'cannot read {path}: {" ".join(str(e).split())}') from None


def class_names_of(workdir: str, config) -> tuple[str, ...]:
  """From per_class_ap.json (written when training ends); else the data set is loaded."""
  path = os.path.join(workdir, 'per_class_ap.json')
  if os.path.isfile(path):
    try:
      with open(path) as f:
        return tuple(json.load(f)['class_names'])
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise UserError(f'cannot read {path}: {" ".join(str(e).split())}') from None
  from comic_jax.data import sources
  return tuple(sources.load_dataset(config.data).class_names)


def head_input(config) -> dict:
  """The input the heads of a run read: `preprocessing_of` for end-to-end runs; for a
  frozen-backbone run {'input': 'features', 'dim': D} of its backbone's features."""
  prep = sources.preprocessing_of(config.data)
  if not config.model.feature_cache:
    return prep
  return {'input': 'features', 'dim': features.feature_dim(config.model, config.seed,
                                                              _example(prep))}


def _example(prep: dict) -> np.ndarray:
  if prep['input'] == 'features':
    return np.zeros((1, prep['dim']), np.float32)
  return np.zeros((1, prep['height'], prep['width'], 3), np.uint8)


def create_method(config, class_names):
  """The run's method, built without its training data (but for ML-GCN's label graph)."""
  if registry.get(config.method).model_uses_labels:   # ML-GCN's label graph
    from comic_jax.data import sources
    observed = np.asarray(sources.load_dataset(config.data).y_train)
  else:                           # only the losses use the labels, and no loss runs here
    observed = np.ones((1, len(class_names)), np.int8)
  return registry.create_method(config, observed, 1, tuple(class_names))


def restore_model(workdir: str, config, class_names):
  """(method, variables on one device, step) of the latest readable checkpoint. The variables
  are {'params', 'batch_stats', 'method_state'}, and for a frozen-backbone run
  {'backbone': its variables, 'heads': those three}."""
  method = create_method(config, class_names)
  example = _example(head_input(config))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = state_lib.abstract_state(
      method, optim.create_optimizer(config.optim, 1, config.num_epochs),
      {name: {'image': example} for name in method.streams}, config.seed, device)
  if registry.get(config.method).state_per_image:   # LL-Cp: sized by the training set
    saved = checkpoint.saved_method_state(workdir, device)
    abstract = abstract if saved is None else abstract.replace(method_state=saved)
  restored, step = checkpoint.restore_workdir(workdir, abstract)
  variables = {'params': restored.params, 'batch_stats': restored.batch_stats,
               'method_state': restored.method_state}
  if config.model.feature_cache:
    variables = {'backbone': jax.device_put(_backbone_variables(workdir, config), device),
                 'heads': variables}
  return method, variables, step


def read_backbone_record(workdir: str) -> dict:
  """The `backbone.json` of a frozen-backbone run (`features.weights_record`)."""
  path = os.path.join(workdir, features.BACKBONE_FILE)
  require(os.path.isfile(path), f'{path} is missing: it records the backbone weights of this '
          'frozen-backbone run (train it again to write it)')
  try:
    with open(path) as f:
      recorded = json.load(f)
    recorded['sha256']   # noqa: B018 - a KeyError names the missing field
    return recorded
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f'cannot read {path}: {" ".join(str(e).split())}') from None


def _backbone_variables(workdir: str, config):
  features.check_weights(config.model, config.seed, read_backbone_record(workdir),
                         os.path.join(workdir, features.BACKBONE_FILE))
  example = _example(sources.preprocessing_of(config.data))
  return features.frozen_backbone(config.model, config.seed, example)[1]


def probabilities_fn(method, config) -> Callable:
  """probabilities(variables, images) -> {reported model: sigmoid of its logits}: pure, so it
  can be jit-compiled or exported with jax.export; the backbone included for a frozen run."""
  features_of = features.backbone_features_fn(config.model) if config.model.feature_cache else None

  def probabilities(variables, images):
    heads = variables
    if features_of is not None:
      heads, images = variables['heads'], features_of(variables['backbone'], images)
    logits = method.predict(heads['params'], heads['batch_stats'], heads['method_state'], images)
    return {k: jax.nn.sigmoid(v).astype(jnp.float32) for k, v in logits.items()}
  return probabilities
