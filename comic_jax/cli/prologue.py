"""The prologue every command shares (comic_jax/cli/: train, benchmark, predict, audit,
convert): flags parsed with one-line errors, a user's mistake ending with one line on stderr and
exit status 2 (never a stack trace), a preempted run ending with its checkpoint saved and the
exit status 128 + signal, a signal outside the training steps ending the process with one line,
and the console kept to the command's own progress (JAX's and orbax's INFO logs off).

The process's runtime tuning (malloc, the CPU-device split, the compilation cache) is
`cli/runtime.py`; the description of the machine behind a run's numbers is
`training/machine.py`.
"""
import contextlib
import os
import signal
import sys

from absl import app, flags

from comic_jax import versions

versions.configs_importable()   # the config files import `configs.default`


def fail(message) -> None:
  from comic_jax import progress
  progress.end_bars()      # the error starts a line of its own
  print('error: ' + ' '.join(str(message).split()), file=sys.stderr, flush=True)
  sys.exit(2)


def _bad_override(overrides: list[str], error: Exception) -> str:
  """The override(s) whose path holds the field named in `error` (all of them if none does)."""
  text = str(error.args[0] if error.args else error)
  named = [o for o in overrides
           if any(repr(part) in text or part == text for part in o[len('--config.'):].split('.'))]
  return ', '.join(named or overrides)


def parse_flags(argv):
  """absl's flag parsing (a `flags_parser` for `app.run`), with one-line errors."""
  overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
  try:
    args = flags.FLAGS(argv)
    flags.FLAGS.config.keys()  # a config file that failed to load raises only when first used
    return args
  except flags.Error as e:
    fail(e)
  except (KeyError, AttributeError) as e:
    fail(f'{_bad_override(overrides, e)}: no such config field; see the config file for the '
         'field names')
  except (OSError, SyntaxError, ImportError) as e:
    fail(f'cannot load the config file: {str(e).strip().splitlines()[-1]}')


def parse_plain_flags(argv):
  """absl's flag parsing with one-line errors, for a command without a config file."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(e)


def run(main, *, config_file: bool = True) -> None:
  """absl's `app.run(main)` with this prologue's flag parsing (`parse_flags` where the command
  takes `--config`, else `parse_plain_flags`). `--help` lists the flags of the module run as
  `__main__` (`python -m comic_jax.main`): the command module's flags are listed as its."""
  for flag in flags.FLAGS.flags_by_module_dict().get(main.__module__, []):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=parse_flags if config_file else parse_plain_flags)


def no_arguments(argv) -> None:
  """Every input of a command is a flag: a stray word is a user's mistake."""
  if len(argv) > 1:
    fail(f'unexpected argument(s) {" ".join(argv[1:])}: give options as --name=value '
         '(see --help)')


def quiet_logs() -> None:
  """Orbax and JAX log every checkpoint step at INFO: keep the console to our progress."""
  from absl import logging
  logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def user_errors():
  """A UserError ends the command with one line and status 2; a preempted run (its checkpoint
  saved) with its one line and status 128 + signal."""
  from comic_jax.errors import Preempted, UserError
  try:
    yield
  except UserError as e:
    fail(e)
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)


def exit_on_signals() -> None:
  """SIGTERM / SIGINT outside the training steps (imports, data loading, compilation, the final
  evaluation, a second Ctrl-C) end the process at once with one line and status 128 + signal.

  Nothing is lost by stopping there: every file of the workdir and the caches is written
  through a temp file and a rename, and an unfinished checkpoint is ignored on resume. During
  the training steps `workdir.PreemptionGuard` takes over and saves a checkpoint first. Not for
  multi-process runs, where JAX's preemption notifier owns SIGTERM. A signal the parent
  ignores (nohup, a background job) stays ignored.
  """
  def handle(signum, frame):
    workdir = sys.modules.get('comic_jax.training.workdir')
    if workdir is not None:
      workdir.release_all_locks()
    print(f'\nstopped by {signal.Signals(signum).name}; rerun the same command to resume from '
          'the last saved checkpoint', file=sys.stderr, flush=True)
    os._exit(128 + signum)

  for s in (signal.SIGTERM, signal.SIGINT):
    if signal.getsignal(s) is not signal.SIG_IGN:
      signal.signal(s, handle)
