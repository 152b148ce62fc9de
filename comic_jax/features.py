"""Frozen-backbone mode (what the authors' code actually trains): backbone features are computed
once per training image and augmentation view, and once per test image, then only the heads
(projection, classifiers, attention) train, from the cache.

`config.model.feature_cache=True` (with `backbone_trainable=False`): the cache is written to
`<workdir>/feature_cache.npz` and reused when the run resumes. Training then sees, for each
sampled image, one of its `model.feature_views` cached views (drawn from the seed and step).
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from comic_jax.data import augment, pipeline
from comic_jax.data.types import PLTData
from comic_jax.models import backbones, networks, pretrained


def cache_features(config, data: PLTData, workdir: str, mesh, log=print) -> PLTData:
  """`data` with x_train = (N, views, D) and x_test, x_val = (N, D) backbone features.

  Views are augmented like training batches; the backbone carries `config.model.pretrained`.
  """
  path = os.path.join(workdir, 'feature_cache.npz')
  if os.path.exists(path):
    with np.load(path) as z:
      return dataclasses.replace(data, x_train=z['train'], x_test=z['test'],
                                 x_val=z['val'] if 'val' in z else None)
  start = time.time()
  backbone = backbones.create_backbone(config.model)
  mean, std = backbones.normalization(config.model)
  normalize = lambda x: networks.normalize_images(x, mean, std)
  example = normalize(jnp.asarray(np.asarray(data.x_train[:1])))
  variables = pretrained.load_into(
      config.model, backbone.init(jax.random.key(config.seed), example, train=False))
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  key = jax.random.key(config.seed)

  @jax.jit
  def embed_view(variables, images, view, batch_index):
    rng = jax.random.fold_in(jax.random.fold_in(key, view), batch_index)
    x = augment.augment_images(images, rng, config.augment, config.data.image_size)
    return {'f': backbone.apply(variables, normalize(x), train=False)}

  @jax.jit
  def embed_test(variables, images):
    return {'f': backbone.apply(variables, normalize(images), train=False)}

  variables = jax.device_put(variables, replicated)
  views = []
  for view in range(config.model.feature_views):
    views.append(pipeline.map_dataset(
        lambda v, x, b: embed_view(v, x, view, b), variables, data.x_train,
        config.eval_batch_size, sharded)['f'])
  train = np.stack(views, axis=1).astype(np.float32)
  test = pipeline.map_dataset(lambda v, x, _: embed_test(v, x), variables, data.x_test,
                              config.eval_batch_size, sharded)['f'].astype(np.float32)
  val = {}
  if data.has_val:
    val['val'] = pipeline.map_dataset(lambda v, x, _: embed_test(v, x), variables, data.x_val,
                                      config.eval_batch_size, sharded)['f'].astype(np.float32)
  if jax.process_index() == 0:
    np.savez(path + '.part.npz', train=train, test=test, **val)
    os.replace(path + '.part.npz', path)
  log(f'feature cache: {train.shape[0]} train images x {train.shape[1]} views, '
      f'{test.shape[0]} test images, {train.shape[2]}-d features ({time.time() - start:.1f}s)')
  return dataclasses.replace(data, x_train=train, x_test=test, x_val=val.get('val'))
