"""Command line: train or evaluate one run.

    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo
    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo --mode=eval
    python -m comic_jax.main --config=configs/synthetic.py --config.num_epochs=5 --workdir=...

A user's mistake (a bad config value, an unwritable workdir) ends with one line on stderr and
exit status 2, never a stack trace.
"""
import os
import sys

# The config files import `configs.default`: make the repository root importable from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'Train (resuming if possible) or only '
                  'evaluate the latest checkpoint.')
config_flags.DEFINE_config_file('config', None, 'Config file (e.g. configs/synthetic.py).',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def _fail(message: str) -> None:
  print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  """absl's flag parsing, with a user's mistakes reported in one line instead of a traceback."""
  overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
  try:
    args = FLAGS(argv)
    FLAGS.config.keys()  # a config file that failed to load raises only when first used
    return args
  except flags.Error as e:
    _fail(e)
  except (KeyError, AttributeError) as e:
    _fail(f'{", ".join(overrides)}: no such config field ({e})')
  except (OSError, SyntaxError, ImportError) as e:
    _fail(f'cannot load the config file: {str(e).strip().splitlines()[-1]}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so `--help` and flag errors stay fast.
  import jax
  from comic_jax import train
  from comic_jax.errors import UserError

  # Orbax and JAX log every checkpoint step at INFO: keep the console to our progress and table.
  logging.set_verbosity(logging.WARNING)
  logging.info('JAX %s, %d process(es), devices: %s', jax.__version__, jax.process_count(),
               jax.devices())
  try:
    if FLAGS.mode == 'train':
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
      train.evaluate(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
