"""The compiled programs of a run and what they need: the device mesh, the samplers, the one
train step (augment, loss, gradient update), the predict step, and the evaluation of its
probabilities. Pure functions of the method and the config; `build.build` jit-compiles them.

One jit-compiled train step, sharded over a 1-D device mesh with axis 'data': the global batch is
split over the devices, the train state is replicated. The same code runs on one CPU, N GPUs or
the hosts of a TPU pod (each host feeds its slice of every global batch).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from comic_jax import metrics
from comic_jax.data import augment, pipeline, samplers
from comic_jax.errors import UserError
from comic_jax.training.state import TrainState


def create_mesh(num_devices: int = 0) -> Mesh:
  devices = jax.devices()[:num_devices] if num_devices else jax.devices()
  return Mesh(np.array(devices), ('data',))


def create_samplers(method, observed_labels, batch_size: int, seed: int) -> dict[str, Any]:
  """One sampler per batch stream of the method, over the observed training labels."""
  out = {}
  for name, stream in method.streams.items():
    try:
      out[name] = samplers.create_sampler(stream.sampler, observed_labels, batch_size, seed)
    except ValueError as e:
      raise UserError(f'cannot sample training batches ({stream.sampler}): {e}') from None
  return out


def make_train_step(method, augment_config, image_size: int) -> Callable:
  """train_step(state, batch, key) -> (state, metrics): augment, loss, one gradient update.

  `key` is the run's training key, `jax.random.key(config.seed)` (`Parts.train_key`); each step
  folds its step number into it. It is an argument, not a constant of the program, so runs that
  differ only in their seed (the benchmark's seeds) share one compiled step: a later seed loads
  it from the compilation cache instead of compiling it again.
  """
  def train_step(state: TrainState, batch: dict, key: jax.Array):
    rng = jax.random.fold_in(key, state.step)
    aug_rng, loss_rng = jax.random.split(rng)
    batch = {name: dict(b) for name, b in batch.items()}
    for name, stream in method.streams.items():
      batch[name]['image'] = augment.augment_images(
          batch[name]['image'], jax.random.fold_in(aug_rng, stream.rng_index), augment_config,
          image_size, with_rand_augment=stream.rand_augment)

    def loss_fn(params):
      return method.loss(params, state.batch_stats, state.method_state, batch, loss_rng,
                         state.step)

    (_, (batch_stats, method_state, step_metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats, method_state=method_state)
    return state, step_metrics
  return train_step


def make_predict_step(method) -> Callable:
  def predict_step(state: TrainState, images):
    logits = method.predict(state.params, state.batch_stats, state.method_state, images)
    return {name: jax.nn.sigmoid(z) for name, z in logits.items()}
  return predict_step


def predict_dataset(predict_step, state, images, batch_size: int,
                    sharding: NamedSharding) -> dict[str, np.ndarray]:
  """Probabilities of every reported model for every image, each counted exactly once."""
  out = pipeline.map_dataset(lambda st, x, _: predict_step(st, x), state, images, batch_size,
                             sharding)
  return {k: v.astype(np.float64) for k, v in out.items()}


def evaluate_predictions(probs: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray):
  """({model: metric dict}, {model: per-class AP}) from probabilities."""
  results, per_class = {}, {}
  for name, p in probs.items():
    results[name], per_class[name] = metrics.multilabel_metrics(p, labels, groups)
  return results, per_class
