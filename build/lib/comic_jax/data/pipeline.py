"""Feeding the sharded steps: host batches -> global arrays, and exact dataset-wide inference.

The global batch of a step is a pure function of (seed, step) (the samplers). Each process builds
only its rows of it (rows split evenly by process index, matching the device order of the
'data' mesh), and `jax.make_array_from_process_local_data` assembles the global array, so one
process or the hosts of a pod run the same code.
"""
from __future__ import annotations

from typing import Callable

import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
import numpy as np


def host_to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Global arrays from this process's slice of each global batch (rows split by process)."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def process_rows(global_size: int) -> slice:
  """This process's rows of a global batch of `global_size` rows."""
  per = global_size // jax.process_count()
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def train_batch(data, method_samplers: dict, step: int, seed: int = 0) -> dict[str, np.ndarray]:
  """This process's rows of the global batch of `step` for every sampler of the method.

  Cached backbone features (N, views, D) give each row one view, drawn from (seed, step).
  """
  batch = {}
  for prefix, sampler in method_samplers.items():
    idx = sampler.indices(step)
    rows = process_rows(len(idx))
    x = data.x_train
    if x.ndim == 3:
      views = np.random.default_rng([seed, 5, step, len(prefix)]).integers(x.shape[1],
                                                                           size=len(idx))
      batch[prefix + 'image'] = np.asarray(x[idx[rows], views[rows]])
    else:
      batch[prefix + 'image'] = np.asarray(x[idx[rows]])
    batch[prefix + 'label'] = data.y_train[idx[rows]].astype(np.float32)
    batch[prefix + 'label_full'] = data.y_train_full[idx[rows]].astype(np.float32)
  return batch


def map_dataset(fn: Callable, state, images, batch_size: int,
                sharding: NamedSharding) -> dict[str, np.ndarray]:
  """Applies fn(state, images, batch_index) -> {name: (B, ...) array} to every image exactly once:
  the last batch is padded (with image 0) and the padding dropped; results are gathered from
  every process."""
  n = len(images)
  chunks: dict[str, list] = {}
  for batch_index, start in enumerate(range(0, n, batch_size)):
    idx = np.arange(start, start + batch_size)
    idx = np.where(idx < n, idx, 0)
    local = np.asarray(images[idx[process_rows(batch_size)]])
    out = fn(state, host_to_global({'image': local}, sharding)['image'], batch_index)
    for name, value in out.items():
      if jax.process_count() > 1:
        value = multihost_utils.process_allgather(value, tiled=True)
      chunks.setdefault(name, []).append(np.asarray(value))
  return {name: np.concatenate(c)[:n] for name, c in chunks.items()}
