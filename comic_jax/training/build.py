"""A run's parts, built from its config: the data, the class groups, the method, the mesh and
its shardings, the samplers and the batch feed, the optimizer and its schedule, the training key
and the jit-compiled steps. Nothing here holds or changes a train state: that is the trainer's
(`trainer.Trainer`). `check` comes first (before the workdir is locked), then `build`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from comic_jax import progress
from comic_jax.data import pipeline, plt, sources
from comic_jax.errors import require
from comic_jax.methods import registry
from comic_jax.training import features, optim, step
from comic_jax.training.config_checks import validate_config
from comic_jax.training.state import create_state


@dataclasses.dataclass(frozen=True)
class Parts:
  """Everything a run builds from its config, read-only once built."""
  config: Any
  workdir: str
  data: Any                       # data.types.Dataset (features in place of images if cached)
  groups: np.ndarray              # the class group (many / medium / few) of every class
  steps_per_epoch: int            # one pass of the uniform sampler, the last partial batch skipped
  total_steps: int
  mesh: Mesh
  replicated: NamedSharding       # the train state's sharding
  sharded: NamedSharding          # a batch's: split over the mesh's 'data' axis
  method: Any                     # the method object (methods.registry.Method)
  samplers: dict
  feed: Any                       # training batches and the iterator state a checkpoint keeps
  schedule: Callable              # the learning rate of a step
  train_key: jax.Array            # jax.random.key(config.seed), replicated
  train_step: Callable            # jit(step.make_train_step), donating the state
  predict_step: Callable          # jit(step.make_predict_step)
  init: Any                       # the state's initialisation, lowered (compiled by the trainer)

  def batch(self, step_: int) -> dict:
    """This process's rows of the global batch of `step_`, per stream, on the host."""
    return self.feed.batch(step_)


def log(fmt: str, *args) -> None:
  """A progress message, printed by process 0 only."""
  if jax.process_index() == 0:
    progress.log(fmt % args if args else fmt)


def check(config) -> None:
  """Before anything is created: every progress bar's switch set and the whole config checked."""
  progress.configure(config.progress_bar)   # every bar: decoding, features, training
  validate_config(config)


def _load_data(config):
  t0 = time.time()
  data = sources.load_dataset(config.data)
  log('data %s: %d train / %d validation / %d test images, %d classes (%.1fs)',
      data.name, len(data.x_train), data.has_val and len(data.x_val), len(data.x_test),
      data.num_classes, time.time() - t0)
  if data.neg_train is not None:
    log('training labels: %d observed positives, %d known negatives, %d unknown',
        int(data.y_train.sum()), int(data.neg_train.sum()),
        int(data.y_train.size - data.y_train.sum() - data.neg_train.sum()))
  n_train = len(data.x_train)
  n_dev = config.num_devices or jax.device_count()   # the batch is split over them
  require(n_train >= config.batch_size, f'config.batch_size={config.batch_size} is larger '
          f'than the {n_train} training images; set --config.batch_size='
          f'{max(n_train // 2 // n_dev, 1) * n_dev} or less')
  sources.check_model_inputs(data, config.model)
  return data


def build(config, workdir: str) -> Parts:
  """The run's parts (the workdir is locked: a frozen backbone's feature cache is written there)."""
  data = _load_data(config)
  mesh = step.create_mesh(config.num_devices)
  if config.model.feature_cache:
    data = features.cache_features(config.model, config.data, config.augment, data, mesh,
                                   seed=config.seed, batch_size=config.eval_batch_size, log=log)
    features.write_weights_record(workdir, config.model, config.seed)
  # (after the cache: every fold reads the features of the whole training set's file)
  data = plt.leave_out_fold(data, config.data)
  groups = sources.training_groups(data, config.data)
  steps_per_epoch = len(data.x_train) // config.batch_size
  require(steps_per_epoch > 0, f'config.data.folds={config.data.folds} leaves '
          f'{len(data.x_train)} training images, fewer than config.batch_size='
          f'{config.batch_size}: use fewer folds or a smaller batch')
  method = registry.create_method(config, data.y_train, steps_per_epoch, data.class_names)
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  samplers = step.create_samplers(method, data.y_train, config.batch_size, config.seed)
  total_steps = config.num_epochs * steps_per_epoch
  feed = pipeline.create_feed(data, samplers, method.streams, config.data,
                              batch_size=config.batch_size, seed=config.seed,
                              num_steps=total_steps)
  tx = optim.create_optimizer(config.optim, steps_per_epoch, config.num_epochs)
  schedule = optim.create_learning_rate_schedule(config.optim, steps_per_epoch, config.num_epochs)
  example = jax.tree.map(lambda x: x[:1], feed.batch(0))
  # The same key as `jax.random.key(config.seed)` computed anywhere, on every device.
  train_key = jax.jit(lambda: jax.random.key(config.seed), out_shardings=replicated)()
  train_step = jax.jit(step.make_train_step(method, config.augment, config.data.image_size),
                       in_shardings=(replicated, sharded, replicated),
                       out_shardings=(replicated, replicated), donate_argnums=(0,))
  predict_step = jax.jit(step.make_predict_step(method), in_shardings=(replicated, sharded),
                         out_shardings=sharded)
  init = jax.jit(lambda rng: create_state(method, tx, example, rng),
                 out_shardings=replicated).lower(jax.random.key(config.seed))
  return Parts(config=config, workdir=workdir, data=data, groups=groups,
               steps_per_epoch=steps_per_epoch, total_steps=total_steps, mesh=mesh,
               replicated=replicated, sharded=sharded, method=method, samplers=samplers,
               feed=feed, schedule=schedule, train_key=train_key, train_step=train_step,
               predict_step=predict_step, init=init)
