"""User-facing errors: the CLI prints them as one line, never as a stack trace."""
import signal

# Exit status of a run stopped by a signal after saving its checkpoint: the shell's convention
# (128 + signal number: 143 for SIGTERM, 130 for SIGINT), so schedulers see "preempted".
PREEMPTED_EXIT_BASE = 128



class UserError(Exception):
  """A problem the user can fix (a bad config value, a missing file, an unwritable workdir)."""


def require(condition: bool, message: str) -> None:
  """Raises UserError(message) unless `condition`."""
  if not condition:
    raise UserError(message)


def warn(message: str) -> None:
  """One `warning: ...` line on stderr (process 0 only): a documented but surprising case that
  does not stop the run (a class without test positives, a damaged checkpoint skipped)."""
  import jax  # here, so that importing this module stays free of JAX
  if jax.process_index() == 0:
    from comic_jax import progress
    progress.message('warning: ' + ' '.join(str(message).split()))


def note(message: str) -> None:
  """One `note: ...` line on stderr (process 0 only): what the code did for the user that they
  should know of (the fields filled into an older run's config)."""
  import jax
  if jax.process_index() == 0:
    from comic_jax import progress
    progress.message('note: ' + ' '.join(str(message).split()))


class Preempted(Exception):
  """Raised by the training loop after it saved a checkpoint because of a signal."""

  def __init__(self, step: int, signum: int | None):
    self.step, self.signum = step, signum
    name = signal.Signals(signum).name if signum else 'preemption notice'
    super().__init__(f'stopped at step {step} ({name}), checkpoint saved; rerun the same command '
                     'to resume')

  @property
  def exit_code(self) -> int:
    return PREEMPTED_EXIT_BASE + (self.signum or signal.SIGTERM)
