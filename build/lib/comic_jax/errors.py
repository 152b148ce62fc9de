"""User-facing errors: the CLI prints them as one line, never as a stack trace."""


class UserError(Exception):
  """A problem the user can fix (a bad config value, a missing file, an unwritable workdir)."""


def require(condition: bool, message: str) -> None:
  """Raises UserError(message) unless `condition`."""
  if not condition:
    raise UserError(message)
