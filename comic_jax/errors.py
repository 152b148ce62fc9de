"""User-facing errors: the CLI prints them as one line, never as a stack trace."""


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
