"""Checkpoints with orbax's CheckpointManager: the whole train state (parameters, batch
statistics, optimizer state, method state such as COMIC's energies) at epoch boundaries, and
at the step where a preempted run stops.

A checkpoint that cannot be read (a crash or a full disk while it was written, a damaged file)
is moved aside to `checkpoints/unreadable_<step>` with one warning line, and the run falls back
to the previous one: nothing is deleted, and resuming from there ends with the same results.
"""
from __future__ import annotations

import functools
import logging
import os
import time

import jax
import orbax.checkpoint as ocp

from comic_jax.errors import UserError, require, warn


@functools.cache   # once per process
def _write_replicated_arrays_whole() -> None:
  """Each replicated array is written whole by its first replica (orbax's default on GPUs).

  On CPUs and TPUs orbax splits a replicated array between its replicas, which compiles a
  slicing program per array shape: about 40 for COMIC's train state, 4.3 of the 5.7 s of the
  tiny COMIC's first save on 4 CPU devices (1.4 s without). The train states here are small,
  so one writer per array costs nothing measurable, and a checkpoint written either way restores
  the same arrays (tested by every resume test).
  """
  absl_logger = logging.getLogger('absl')      # orbax warns that a handler is replaced: expected
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  finally:
    absl_logger.setLevel(level)


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """A manager of `<workdir>/checkpoints`, keeping the last `keep` steps."""
  _write_replicated_arrays_whole()
  path = os.path.join(os.path.abspath(workdir), 'checkpoints')
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(path, options=options)


def has_checkpoint(workdir: str) -> bool:
  """Whether `<workdir>/checkpoints` holds a finished step (orbax names them by step number)."""
  path = os.path.join(os.path.abspath(workdir), 'checkpoints')
  return os.path.isdir(path) and any(name.isdigit() for name in os.listdir(path))


def _one_line(e: BaseException) -> str:
  text = ' '.join(str(e).split()) or type(e).__name__
  return text if len(text) < 200 else text[:200] + '...'


def save(manager: ocp.CheckpointManager, step: int, state, extra: dict | None = None) -> None:
  """Saves `state` as `step` (asynchronously). A checkpoint folder that cannot be written (read
  only, disk full) ends the run with one line instead of a traceback per array. `extra`: more
  items, {name: orbax args} (a streamed run's data iterator); the state stays the 'default'
  item, so whoever reads the state alone reads it as before."""
  directory = str(manager.directory)
  if jax.process_index() == 0:
    probe = os.path.join(directory, f'.write_test_{os.getpid()}')
    try:
      with open(probe, 'w') as f:
        f.write('ok')
      os.remove(probe)
    except OSError as e:
      raise UserError(f'cannot write the checkpoint of step {step} to {directory}: '
                      f'{e.strerror or e}; make it writable and rerun to resume from the last '
                      'saved checkpoint') from None
  args = ocp.args.StandardSave(state)
  if extra:
    args = ocp.args.Composite(default=args, **extra)
  try:
    manager.save(step, args=args)
  except Exception as e:  # noqa: BLE001 - orbax raises many kinds; the user needs one line
    raise UserError(f'cannot write the checkpoint of step {step} to {directory}: '
                    f'{_one_line(e)}; rerun to resume from the last saved checkpoint') from None


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for the asynchronous saves, turning a failed one into one line."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # noqa: BLE001
    raise UserError(f'a checkpoint could not be written to {manager.directory}: '
                    f'{_one_line(e)}; rerun to resume from the last saved checkpoint') from None


def restore_latest(manager: ocp.CheckpointManager, state=None, extra: dict | None = None, *,
                   move_aside: bool = True):
  """(restored state, step) from the latest readable checkpoint, or (state, None) when there
  is none: the one restore path of training, evaluation, prediction and export.

  `state` (arrays or ShapeDtypeStructs) gives the structure, shapes, dtypes and shardings to
  restore into; None restores the tree as saved (NumPy arrays). An unreadable step is moved
  aside (see the module docstring; `move_aside=False`, for a workdir only read, leaves it where
  it is) and the previous one is tried. `extra`: the items `save` was given, {name: orbax
  restore args}, restored with the state.
  """
  abstract = None if state is None else jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  steps = sorted(manager.all_steps(), reverse=True)
  for i, step in enumerate(steps):
    try:
      if extra:   # orbax restores several items only through a manager that names them
        with ocp.CheckpointManager(manager.directory, item_names=('default', *extra)) as named:
          return named.restore(step, args=ocp.args.Composite(
              default=ocp.args.StandardRestore(abstract), **extra))['default'], step
      return manager.restore(step, args=ocp.args.StandardRestore(abstract)), step
    except UserError:   # readable, but not this run's (an `extra` item said so): not moved aside
      raise
    except Exception as e:  # noqa: BLE001 - a damaged step raises whatever its reader hits
      previous = f'falling back to step {steps[i + 1]}' if i + 1 < len(steps) else \
          'no earlier checkpoint' + (': starting from scratch' if move_aside else '')
      if move_aside:
        warn(f'the checkpoint of step {step} is unreadable ({_one_line(e)}); moved it to '
             f'{_move_aside(manager, step)}, {previous}')
      else:
        warn(f'the checkpoint of step {step} in {manager.directory} is unreadable '
             f'({_one_line(e)}); {previous}')
  if steps and move_aside:
    manager.reload()
  return state, None


def _move_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Renames `checkpoints/<step>` to `checkpoints/unreadable_<step>[_<time>]` (orbax ignores
  names that are not step numbers) so the step can be saved again; nothing is deleted."""
  directory = str(manager.directory)
  src = os.path.join(directory, str(step))
  dest = os.path.join(directory, f'unreadable_{step}')
  if os.path.exists(dest):
    dest += time.strftime('_%Y%m%d%H%M%S')
  if jax.process_index() == 0 and os.path.exists(src):
    os.replace(src, dest)
  manager.reload()
  return dest


def open_workdir(workdir: str) -> ocp.CheckpointManager:
  """A manager of the finished run's `<workdir>/checkpoints`, only read (nothing is created);
  UserError when the workdir has no checkpoint."""
  path = os.path.join(os.path.abspath(workdir), 'checkpoints')
  require(has_checkpoint(workdir), f'workdir {workdir!r} has no checkpoint; train first')
  return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(create=False))


def restore_workdir(workdir: str, state=None):
  """(restored state, step) of the latest readable checkpoint of `workdir`, a run only read
  (`restore_latest` with nothing moved aside); UserError when none can be read."""
  with open_workdir(workdir) as manager:
    restored, step = restore_latest(manager, state, move_aside=False)
  require(step is not None, f'no checkpoint in {os.path.join(workdir, "checkpoints")} can be '
          'read; train again')
  return restored, int(step)


def saved_method_state(workdir: str, sharding=None):
  """ShapeDtypeStructs (with `sharding`) of the method state in the latest checkpoint of
  `workdir`, read from orbax's metadata (no array is read); None when there is none to read.
  What prediction restores a state into whose shape depends on the training set (LL-Cp's
  per-image labels), which it does not load."""
  path = os.path.join(os.path.abspath(workdir), 'checkpoints')
  try:
    with ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(create=False),
                               item_handlers=ocp.StandardCheckpointHandler()) as manager:
      tree = manager.item_metadata(manager.latest_step())['method_state']
  except Exception:  # noqa: BLE001 - then the method's own shapes are used
    return None
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree,
                      is_leaf=lambda m: hasattr(m, 'shape'))


def load_variables(workdir: str) -> dict:
  """{'params', 'batch_stats'} (NumPy) of the latest checkpoint of another run's workdir, read
  without knowing its train state's structure (LWS reuses a finished BCE run this way)."""
  if not has_checkpoint(workdir):
    raise FileNotFoundError(f'{workdir!r} has no checkpoint')
  restored, _ = restore_workdir(workdir)
  return {'params': restored['params'], 'batch_stats': restored['batch_stats']}
