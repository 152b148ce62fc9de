"""`python -m comic_jax.main` (`comic-jax-train`): train or evaluate one run.

    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo
    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo --mode=eval
    python -m comic_jax.main --config=configs/synthetic.py --config.num_epochs=5 --workdir=...

A trained run is exported with `python -m comic_jax.predict --mode=export`. A user's mistake (a
bad config value, an unwritable workdir) ends with one line on stderr and exit status 2, never a
stack trace.
"""
from absl import flags
from ml_collections import config_flags

from comic_jax.cli import prologue, runtime

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
  flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'Train (resuming if possible) or only '
                    'evaluate the latest checkpoint. Export with `python -m comic_jax.predict '
                    '--mode=export`.')
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
    prologue.exit_on_signals()   # a signal outside the training steps: one line, 128 + signal
  runtime.keep_freed_memory()   # XLA's per-step buffers reuse the heap: ~1.35x faster steps on CPU
  prologue.no_arguments(argv)
  runtime.use_cpu_devices(FLAGS.config)   # before JAX starts: a CPU-only run splits the CPU
  if FLAGS.multihost:  # must come before any other JAX call
    import jax
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  from comic_jax.training import train  # here, so that `--help` and flag errors stay fast

  runtime.use_compilation_cache(FLAGS.config)   # a later run of the same recipe skips compiling
  prologue.quiet_logs()
  with prologue.user_errors():
    if FLAGS.mode == 'train':
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
      train.evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
  define_flags()
  prologue.run(main)
