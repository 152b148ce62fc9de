"""Frozen-backbone mode (what the authors' code actually trains): backbone features are computed
once per training image and augmentation view, and once per test image, then only the heads
(projection, classifiers, attention) train, from the cache.

`config.model.feature_cache=True` (with `backbone_trainable=False`): the cache is written to
`<data.cache_dir>/features/<digest>.npz` (`cache_path`) and shared by every run that computes
the same features (other seeds and methods, resumed runs). Training then sees, for each
sampled image, one of its `model.feature_views` cached views (drawn from the seed and step).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import tqdm

from comic_jax.data import augment, pipeline
from comic_jax.data.types import PLTData
from comic_jax.models import backbones, networks, pretrained


def cache_path(config) -> str:
  """Where the features of this data set, backbone, weights and augmentation are cached:
  `<data.cache_dir>/features/<digest>.npz`, shared by every run (seed, method) that would
  compute the same features."""
  from comic_jax.data import splits
  key = json.dumps({'data': config.data.to_dict(), 'augment': config.augment.to_dict(),
                    'backbone': backbones.backbone_name(config.model),
                    'pretrained': config.model.pretrained, 'dtype': config.model.dtype,
                    'widths': [list(config.model.small_cnn_widths),
                               list(config.model.mlp_widths)],
                    'views': config.model.feature_views, 'version': 2},
                   sort_keys=True, default=str)
  digest = hashlib.sha256(key.encode()).hexdigest()[:20]
  return os.path.join(splits.cache_dir(config.data.cache_dir), 'features', f'{digest}.npz')


def _eval_fields(data: PLTData) -> list[str]:
  """The image arrays besides the training set (test, and validation when there is one)."""
  return [f for f in ('x_test', 'x_val') if getattr(data, f, None) is not None]


def cache_features(config, data: PLTData, workdir: str, mesh, log=print) -> PLTData:
  """`data` with x_train = (N, views, D) and the test (and validation) images = (N, D) backbone
  features.

  Views are augmented like training batches, with keys from the data seed (not the training
  seed), so every training seed shares the cache; the backbone carries
  `config.model.pretrained`. `workdir` is unused: the cache is shared (`cache_path`).
  """
  del workdir
  path = cache_path(config)
  fields = _eval_fields(data)
  if os.path.exists(path):
    with np.load(path) as z:
      return dataclasses.replace(data, x_train=z['x_train'], **{f: z[f] for f in fields})
  start = time.time()
  backbone = backbones.create_backbone(config.model)
  mean, std = backbones.normalization(config.model)
  normalize = lambda x: networks.normalize_images(x, mean, std)
  example = normalize(jnp.asarray(np.asarray(data.x_train[:1])))
  variables = pretrained.load_into(
      config.model, backbone.init(jax.random.key(config.seed), example, train=False))
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  key = jax.random.key(config.data.seed)

  @jax.jit
  def embed_view(variables, images, view, batch_index):
    rng = jax.random.fold_in(jax.random.fold_in(key, view), batch_index)
    x = augment.augment_images(images, rng, config.augment, config.data.image_size)
    return {'f': backbone.apply(variables, normalize(x), train=False)}

  @jax.jit
  def embed(variables, images):
    return {'f': backbone.apply(variables, normalize(images), train=False)}

  variables = jax.device_put(variables, replicated)
  n_images = len(data.x_train) * config.model.feature_views + sum(
      len(getattr(data, f)) for f in fields)
  bar = tqdm.tqdm(total=n_images, desc='feature cache', unit='img', dynamic_ncols=True,
                  leave=False, disable=jax.process_index() != 0)

  def mapped(fn, images):
    out = pipeline.map_dataset(fn, variables, images, config.eval_batch_size, sharded)['f']
    bar.update(len(images))
    return out.astype(np.float32)

  views = [mapped(lambda v, x, b, view=view: embed_view(v, x, view, b), data.x_train)
           for view in range(config.model.feature_views)]
  arrays = {'x_train': np.stack(views, axis=1)}
  for f in fields:
    arrays[f] = mapped(lambda v, x, _: embed(v, x), getattr(data, f))
  bar.close()
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + '.part.npz', **arrays)
    os.replace(path + '.part.npz', path)
  seconds = time.time() - start
  train = arrays['x_train']
  log(f'feature cache: {train.shape[0]} train images x {train.shape[1]} views + '
      f'{n_images - train.shape[0] * train.shape[1]} test/val images, {train.shape[2]}-d '
      f'features, {n_images / seconds:.1f} img/s ({seconds:.1f}s) -> {path}')
  return dataclasses.replace(data, **arrays)
