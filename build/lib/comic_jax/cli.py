"""Command-line helpers shared by `main` and `benchmark`: a user's mistake on the command line
ends with one line on stderr and exit status 2, never a stack trace."""
import sys

from absl import flags


def fail(message) -> None:
  print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
  sys.exit(2)


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
    fail(f'{", ".join(overrides)}: no such config field ({e})')
  except (OSError, SyntaxError, ImportError) as e:
    fail(f'cannot load the config file: {str(e).strip().splitlines()[-1]}')
