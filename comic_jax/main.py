"""Command line: train or evaluate one run.

    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo
    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo --mode=eval
    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo --mode=export
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

from comic_jax import cli, runtime  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'export'], 'Train (resuming if possible), '
                  'only evaluate the latest checkpoint, or export it to <workdir>/export.')
config_flags.DEFINE_config_file('config', None, 'Config file (e.g. configs/synthetic.py).',
                                lock_config=True)
flags.DEFINE_bool('multihost', False, 'Join a multi-process run (TPU pod, several GPU hosts): '
                  'calls jax.distributed.initialize first. On TPU pods and SLURM the three '
                  'flags below are detected; elsewhere give them.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (with --multihost).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --multihost).')
flags.DEFINE_integer('process_id', None, 'This process (with --multihost).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if not FLAGS.multihost:   # JAX's preemption notifier owns SIGTERM in multi-process runs
    cli.exit_on_signals()   # a signal outside the training steps: one line, exit 128 + signal
  runtime.keep_freed_memory()   # XLA's per-step buffers reuse the heap: ~1.35x faster steps on CPU
  if len(argv) > 1:
    cli.fail(f'unexpected argument(s) {" ".join(argv[1:])}: give options as --name=value '
             '(see --help)')
  runtime.use_cpu_devices(FLAGS.config)   # before JAX starts: a CPU-only run splits the CPU
  if FLAGS.multihost:  # must come before any other JAX call
    import jax
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  # Imported here so `--help` and flag errors stay fast.
  from comic_jax import train
  from comic_jax.errors import UserError
  from comic_jax.workdir import Preempted

  runtime.use_compilation_cache(FLAGS.config)   # a later run of the same recipe skips compiling
  # Orbax and JAX log every checkpoint step at INFO: keep the console to our progress and table.
  logging.set_verbosity(logging.WARNING)
  try:
    if FLAGS.mode == 'train':
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == 'eval':
      train.evaluate(FLAGS.config, FLAGS.workdir)
    else:
      from comic_jax import export
      print('exported the model to ' + export.export_model(
          FLAGS.workdir, os.path.join(FLAGS.workdir, 'export')))
  except UserError as e:
    cli.fail(e)
  except Preempted as e:   # a checkpoint was saved: one line, exit 128 + signal number
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
