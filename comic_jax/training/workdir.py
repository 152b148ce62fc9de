"""The workdir's safety: one run at a time, files that a crash cannot leave half-written, a
config check before resuming, and a clean stop on preemption.

- `acquire_lock`: `<workdir>/lock` holds the owner's pid and host; a second run into the same
  workdir is refused, a lock left by a dead process on this host is taken over.
- Every file is written through `comic_jax.atomic` (temp file + rename): `config.json`,
  `results.json`, `metrics.jsonl`, predictions and exports are the old or the new version, never
  a prefix.
- `read_metrics_log` / `rewrite_metrics_log`: a partial last line (a crash mid-append) is dropped
  with a warning instead of blocking the resume.
- `prepare_workdir`: creates the workdir, takes the lock and checks that a run that already
  trained there (it has a checkpoint) used the same config.
- `PreemptionGuard`: SIGTERM / SIGINT set a flag that the training loop polls at step
  boundaries (it then saves a checkpoint and stops); multi-host runs use orbax's preemption
  sync point so every host stops at the same step.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import sys
import time
import weakref

import jax

from comic_jax import atomic, versions
from comic_jax.errors import Preempted, UserError, require, warn  # noqa: F401 (workdir.Preempted)
from comic_jax.training import checkpoint

LOCK_NAME = 'lock'
_HELD: set[str] = set()   # workdirs whose lock this process holds


def read_metrics_log(path: str) -> list[dict]:
  """The complete lines of a metrics.jsonl; an unparsable line (what a crash mid-write leaves) is
  dropped with one warning."""
  if not os.path.exists(path):
    return []
  lines, bad = [], []
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        lines.append(json.loads(line))
      except json.JSONDecodeError:
        bad.append(number)
  if bad:
    warn(f'{path}: dropped {len(bad)} unreadable line(s) (line {bad[0]}; a crash mid-write?); '
         'the evaluations after the restored checkpoint are redone')
  return lines


def rewrite_metrics_log(path: str, max_step: int) -> None:
  """Keeps the complete log lines up to `max_step` (lines after the restored checkpoint are
  redone), rewritten atomically."""
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  kept = [entry for entry in read_metrics_log(path)
          if isinstance(entry, dict) and entry.get('step', 0) <= max_step]
  atomic.write_text(path, ''.join(json.dumps(entry) + '\n' for entry in kept))


# ------------------------------------------------------------------------------- the lock

def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # exists, owned by another user
    return True
  return True


def _read_lock(path: str) -> dict | None:
  try:
    with open(path) as f:
      owner = json.load(f)
    return owner if isinstance(owner, dict) else None
  except (OSError, json.JSONDecodeError):
    return None


def acquire_lock(workdir: str) -> str:
  """Takes `<workdir>/lock` for this process (released at exit); returns its path.

  Refused (UserError) while another live process holds it. A lock of a process that is gone
  (same host, pid not running), an unreadable lock file, or one left by an earlier call in this
  very process is taken over. Only process 0 of a multi-host run locks.
  """
  path = os.path.join(workdir, LOCK_NAME)
  if jax.process_index() != 0:
    return path
  me = {'pid': os.getpid(), 'host': socket.gethostname(),
        'since': time.strftime('%Y-%m-%d %H:%M:%S')}
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      owner = _read_lock(path)
      if owner is not None and (owner.get('host'), owner.get('pid')) == (me['host'], me['pid']):
        break                                                   # ours (an earlier call)
      if owner is not None and (owner.get('host') != me['host'] or _pid_alive(int(owner['pid']))):
        raise UserError(
            f'workdir {workdir!r} is in use by pid {owner.get("pid")} on host '
            f'{owner.get("host")} (since {owner.get("since")}); wait for that run to end, or '
            f'delete {path} if it is gone') from None
      what = 'an unreadable lock' if owner is None else f'the lock of pid {owner["pid"]} (gone)'
      warn(f'{workdir}: took over {what}')
      try:
        os.remove(path)
      except FileNotFoundError:
        pass
      continue
    with os.fdopen(fd, 'w') as f:
      json.dump(me, f)
    break
  else:
    raise UserError(f'cannot take the lock {path}: another run keeps taking it')
  _HELD.add(workdir)
  atexit.register(release_lock, workdir)
  return path


def release_all_locks() -> None:
  """Releases every lock this process holds (the CLI's signal handler, before it exits)."""
  for workdir in list(_HELD):
    release_lock(workdir)


def release_lock(workdir: str) -> None:
  """Removes `<workdir>/lock` if this process holds it."""
  _HELD.discard(workdir)
  path = os.path.join(workdir, LOCK_NAME)
  owner = _read_lock(path)
  if owner and (owner.get('host'), owner.get('pid')) == (socket.gethostname(), os.getpid()):
    try:
      os.remove(path)
    except OSError:
      pass


# ------------------------------------------------------------------------------- config check

def require_checkpoint(workdir: str) -> None:
  """For --mode=eval: the workdir must hold a checkpoint (checked before anything is created)."""
  require(os.path.isdir(workdir), f'workdir {workdir!r} does not exist; train first '
          '(--mode=train) or give the workdir of a trained run')
  require(checkpoint.has_checkpoint(workdir),
          f'workdir {workdir!r} has no checkpoint to evaluate; train first (--mode=train)')


def prepare_workdir(workdir: str, config) -> None:
  """Creates `workdir`, checks it is writable, takes its lock, and checks that a run that
  already trained there (it has a checkpoint) used this config. A run that stopped before its
  first checkpoint (a bad data path, say) does not bind the workdir."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'workdir {workdir!r} is not writable: {e.strerror or e}') from None
  lock_existed = os.path.exists(os.path.join(workdir, LOCK_NAME))
  acquire_lock(workdir)
  try:
    _check_saved_config(workdir, config)
  except UserError:
    if not lock_existed:     # a refused start leaves the workdir as it found it
      release_lock(workdir)
    raise
  if jax.process_index() == 0:
    atomic.write_json(os.path.join(workdir, 'config.json'),
               versions.stamp(json.loads(config.to_json_best_effort())), indent=2, sort_keys=True)


def _check_saved_config(workdir: str, config) -> None:
  """Refuses (UserError) to resume a run whose saved config differs from `config` in a field
  that defines the run (`versions.identity`); an older version's config.json is first read as
  today's code reads it (`versions.upgrade`)."""
  if not checkpoint.has_checkpoint(workdir):
    return
  from comic_jax.methods import registry
  sections = registry.method_sections()
  saved_path = os.path.join(workdir, 'config.json')
  require(os.path.exists(saved_path),
          f'workdir {workdir!r} has checkpoints but no config.json, so its config cannot be '
          'checked; put the config.json back, or use a new --workdir to start afresh')
  try:
    with open(saved_path) as f:
      saved = json.load(f)
    require(isinstance(saved, dict), f'{saved_path} is not a JSON object')
    saved = versions.identity(versions.flatten(versions.upgrade(saved, saved_path)), sections)
  except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as e:
    raise UserError(f'{saved_path} is unreadable ({e}), so the config of the checkpoints '
                    'cannot be checked; restore it, or use a new --workdir') from None
  current = versions.identity(versions.flatten(json.loads(config.to_json_best_effort())),
                             sections)
  differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
  shown = ', '.join(f'{k}: {saved.get(k)!r} there, {current.get(k)!r} now' for k in differ[:3])
  require(not differ, f'workdir {workdir!r} holds a run with another config ({shown}'
          f'{", ..." if len(differ) > 3 else ""}); use a new --workdir to start afresh')


# ------------------------------------------------------------------------------- preemption

class PreemptionGuard:
  """Turns SIGTERM / SIGINT into a request to stop at the next step boundary.

  The first signal sets a flag (polled by `should_stop`); a second one restores the previous
  handlers and re-raises, so a second Ctrl-C stops at once (under the CLI: one line, exit). In
  a multi-host run each host's flag is local, so the hosts agree through orbax's preemption
  sync point (`CheckpointManager.reached_preemption`, fed by JAX's preemption notifier).
  Handlers are restored by `close()` (or when the guard is garbage-collected).
  """
  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, manager=None):
    self.manager, self.signum = manager, None
    previous = {}
    if jax.process_count() == 1:
      try:
        for s in self.SIGNALS:
          if signal.getsignal(s) is not signal.SIG_IGN:   # ignored by the parent: stays so
            previous[s] = signal.signal(s, self._handler())
      except ValueError:      # not the main thread: no handlers, no graceful stop
        pass
    self._finalizer = weakref.finalize(self, _restore_handlers, previous)

  def _handler(self):
    # The handler holds the guard weakly, so a guard nobody closed is still collected (and its
    # finalizer restores the previous handlers).
    ref = weakref.ref(self)
    def handle(signum, frame):
      guard = ref()
      if guard is not None:
        guard._handle(signum, frame)
    return handle

  def _handle(self, signum, frame):
    if self.signum is not None:     # second signal: give up waiting for the step boundary
      self.close()
      signal.raise_signal(signum)
      return
    self.signum = signum
    if signum == signal.SIGINT:   # interactive: say that a second Ctrl-C stops at once
      print('\nstopping after this step to save a checkpoint (Ctrl-C again to stop at once)',
            file=sys.stderr, flush=True)

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop before training `step` (call it at every step boundary)."""
    if jax.process_count() > 1 and self.manager is not None:
      return bool(self.manager.reached_preemption(step))
    return self.signum is not None

  def stop(self, step: int) -> None:
    """Raises Preempted(step) (call after the checkpoint of `step` is saved)."""
    self.close()
    raise Preempted(step, self.signum)

  def close(self) -> None:
    self._finalizer()         # runs once: restores the handlers found at construction


def _restore_handlers(previous: dict) -> None:
  for s, handler in previous.items():
    try:
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    except (ValueError, TypeError):
      pass
