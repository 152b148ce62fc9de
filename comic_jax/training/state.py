"""The train state, created in one place: training initialises it, and restoring a checkpoint
(resume, evaluation, prediction, export) restores into the structure it gives."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax.training import train_state


class TrainState(train_state.TrainState):
  """Parameters, optimizer state and step, plus BatchNorm statistics and the method's own state
  (COMIC: energies and RLC running means), all checkpointed together."""
  batch_stats: Any = None
  method_state: Any = None


def create_state(method, tx, example_batch: dict, rng) -> TrainState:
  """The initial state of `method` for batches shaped like `example_batch` ({stream: {'image':
  ...}}), with the optimizer `tx`. The step is strongly typed (TrainState.create's 0 is weakly
  typed), as a restored checkpoint's: a fresh and a resumed run then share one compiled train
  step (and its entry in the compilation cache) instead of compiling two."""
  params, batch_stats, method_state = method.init(rng, example_batch)
  state = TrainState.create(apply_fn=None, params=params, tx=tx, batch_stats=batch_stats,
                            method_state=method_state)
  return state.replace(step=jnp.zeros((), jnp.int32))


def abstract_state(method, tx, example_batch: dict, seed: int, sharding=None):
  """The shapes and dtypes (ShapeDtypeStructs, with `sharding`) of `create_state`'s state,
  computed without running the initialisation: what a checkpoint is restored into."""
  shapes = jax.eval_shape(lambda rng: create_state(method, tx, example_batch, rng),
                          jax.random.key(seed))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)
