"""Checkpoints with orbax's CheckpointManager: the whole train state (parameters, batch
statistics, optimizer state, method state such as COMIC's energies) at epoch boundaries."""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """A manager of `<workdir>/checkpoints`, keeping the last `keep` steps."""
  path = os.path.join(os.path.abspath(workdir), 'checkpoints')
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(path, options=options)


def has_checkpoint(workdir: str) -> bool:
  """Whether `<workdir>/checkpoints` holds a finished step (orbax names them by step number)."""
  path = os.path.join(os.path.abspath(workdir), 'checkpoints')
  return os.path.isdir(path) and any(name.isdigit() for name in os.listdir(path))


def save(manager: ocp.CheckpointManager, step: int, state) -> None:
  manager.save(step, args=ocp.args.StandardSave(state))


def restore_latest(manager: ocp.CheckpointManager, state):
  """(restored state, step) from the latest checkpoint, or (state, None) when there is none.

  `state` gives the structure, shapes, dtypes and shardings to restore into.
  """
  step = manager.latest_step()
  if step is None:
    return state, None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract)), step


def load_variables(workdir: str) -> dict:
  """{'params', 'batch_stats'} (NumPy) of the latest checkpoint of another run's workdir, read
  without knowing its train state's structure (LWS reuses a finished BCE run this way)."""
  path = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(path):
    raise FileNotFoundError(f'{workdir!r} has no checkpoints/ folder')
  with ocp.CheckpointManager(path) as manager:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'{workdir!r} has no checkpoint')
    restored = manager.restore(step, args=ocp.args.StandardRestore())
  return {'params': restored['params'], 'batch_stats': restored['batch_stats']}
