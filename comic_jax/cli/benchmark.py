"""`python -m comic_jax.benchmark` (`comic-jax-benchmark`): every (method, seed) trained in its
own sub-workdir, then the tables and pictures (the runner: comic_jax/training/benchmark.py).

    python -m comic_jax.benchmark --config=configs/synthetic.py --methods=all --seeds=3 \\
        --workdir=runs/bench

The published tables of README.md and docs/results.md are rendered by a tool of the source
checkout: `python tools/render_docs.py`.
"""
import os
import sys
import time

from absl import flags
from ml_collections import config_flags

from comic_jax.cli import prologue, runtime

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Directory of the benchmark (one sub-directory per run).')
  flags.DEFINE_string('methods', None, "Comma-separated methods, or 'all' (default: 'all' for "
                      "the main preset, 'comic' for the others).")
  flags.DEFINE_integer('seeds', 3, 'Training seeds 0 .. seeds-1 per method.')
  flags.DEFINE_enum('preset', 'main', ['main', 'missing_ratio', 'modules', 'mfm_factors',
                                       'official'],
                    'Which study to run (modules, mfm_factors and official are defined by the '
                    "methods; official: the paper's COMIC beside the authors' code).")
  flags.DEFINE_string('plot_methods', 'bce,comic', 'Methods drawn in per_class_ap.png.')
  flags.DEFINE_string('sweep', '', "FIELD=v1,v2,...: train every value of a config field (e.g. "
                      "comic.rlc.tau=0.6,0.7,0.8), pick per method the value with the best mean "
                      "validation total mAP over seeds, report the test metrics of that value "
                      "only")
  config_flags.DEFINE_config_file('config', None, 'Base config file (e.g. '
                                  'configs/synthetic.py).', lock_config=True)
  flags.mark_flags_as_required(['config', 'workdir'])


def _methods(registry) -> tuple[str, ...]:
  """The methods of --methods (a name that is not registered: one error line)."""
  default = 'all' if FLAGS.preset == 'main' else 'comic'
  names = (FLAGS.methods or default).split(',')
  methods = registry.names() if names == ['all'] else tuple(n.strip() for n in names)
  bad = [m for m in methods if m not in registry.names()]
  if bad:
    prologue.fail(f'unknown method(s) {", ".join(bad)}; choose from '
                  f'{", ".join(registry.names())}')
  if FLAGS.seeds < 1:
    prologue.fail('--seeds must be >= 1')
  return methods


def _train(benchmark, methods):
  """Every run trained (or found finished): (experiments of the tables, runs, trained, the
  sweep's file or None)."""
  exps = benchmark.experiments(FLAGS.preset, methods, FLAGS.config)
  variants, sweep_file = [[e] for e in exps], None
  if FLAGS.sweep:
    field, values = benchmark.parse_sweep(FLAGS.sweep, FLAGS.config)
    variants = benchmark.sweep_variants(exps, field, values)
  runs = [(v, s) for family in variants for v in family for s in range(FLAGS.seeds)]
  os.makedirs(FLAGS.workdir, exist_ok=True)
  trained = benchmark.run_all(FLAGS.config, runs, FLAGS.workdir)
  if FLAGS.sweep:   # every choice on the validation set; the table shows the chosen values
    chosen = [benchmark.choose(FLAGS.workdir, family, FLAGS.seeds) for family in variants]
    sweep_file = benchmark.write_sweep(FLAGS.workdir, field, values, variants, chosen,
                                       FLAGS.seeds)
    exps = [family[i] for family, i in zip(variants, chosen)]
  return exps, runs, trained, sweep_file


def main(argv):
  prologue.no_arguments(argv)
  prologue.quiet_logs()
  runtime.keep_freed_memory()   # XLA's per-step buffers reuse the heap
  runtime.use_cpu_devices(FLAGS.config)         # before JAX starts; every run shares the split
  runtime.use_compilation_cache(FLAGS.config)   # a recipe's later runs skip compiling
  from comic_jax import plots, progress
  from comic_jax.methods import registry
  from comic_jax.training import benchmark
  progress.configure(FLAGS.config.progress_bar)   # the runs' bar (each run's own are off)
  methods = _methods(registry)
  left_out = benchmark.left_out_methods(methods, FLAGS.config)
  for m, reason in left_out.items():
    print(f'{m} left out: {reason}')
  methods = tuple(m for m in methods if m not in left_out)
  start = time.time()
  with prologue.user_errors():
    exps, runs, trained, sweep_file = _train(benchmark, methods)
  header, rows = benchmark.table_rows(FLAGS.workdir, FLAGS.preset, exps, FLAGS.seeds)
  written = benchmark.write_tables(FLAGS.workdir, FLAGS.preset, header, rows, notes=[
      f'{registry.get(m).display_name} is left out: {reason}.' for m, reason in left_out.items()])
  written.append(benchmark.write_environment(written[1], sys.argv[1:], time.time() - start,
                                             len(runs), trained))
  if sweep_file:
    written.append(sweep_file)
  if FLAGS.preset == 'main':
    plot_methods = [m for m in FLAGS.plot_methods.split(',') if m in methods]
    written += plots.benchmark_plots(
        FLAGS.workdir, [(e.spec.primary_model, [benchmark.run_dir(FLAGS.workdir, e, s)
                                                for s in range(FLAGS.seeds)])
                        for e in exps if e.method in plot_methods])
  with open(written[0]) as f:
    print(f.read())
  print(f'wall time {time.time() - start:.0f}s; wrote ' + ', '.join(written))


def run() -> None:
  if '--render-docs' in sys.argv[1:]:
    prologue.fail('the published tables are rendered by a tool of the source checkout: '
                  'python tools/render_docs.py [--publish=NAME=TABLE.csv] [--check]')
  define_flags()
  prologue.run(main)
