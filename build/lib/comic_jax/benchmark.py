"""The benchmark runner: every (method, seed) in its own sub-workdir, then the paper's tables and
pictures.

    python -m comic_jax.benchmark --config=configs/synthetic.py --methods=all --seeds=3 \
        --workdir=runs/bench
    python -m comic_jax.benchmark --config=configs/synthetic.py --preset=modules --seeds=3 \
        --workdir=runs/bench

Finished runs (their `results.json` exists) are skipped and interrupted ones resume from their
checkpoints, so a killed benchmark picks up where it stopped. Each run's console output goes to
`<run>/log.txt`. Presets:

- `main`: the comparison table (`table.md`, `table.csv`): category, method, end-to-end, many,
  medium, few, total (mean ± std over seeds); COMIC contributes Head Model, Tail Model and COMIC.
- `missing_ratio`: COMIC (or `--methods`) at missing ratios 0 / 0.3 / 0.4 / 0.5.
- `modules`: COMIC, -RLC, -MFM, -HTB: total mAP, average mAP, recall.
- `mfm_factors`: MFM with P-N only, H-T only, both: total, many, medium, few.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from comic_jax import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory of the benchmark (one sub-directory per run).')
flags.DEFINE_string('methods', None, "Comma-separated methods, or 'all' (default: 'all' for the "
                    "main preset, 'comic' for the others).")
flags.DEFINE_integer('seeds', 3, 'Training seeds 0 .. seeds-1 per method.')
flags.DEFINE_enum('preset', 'main', ['main', 'missing_ratio', 'modules', 'mfm_factors'],
                  'Which study to run.')
flags.DEFINE_string('plot_methods', 'bce,comic', 'Methods drawn in per_class_ap.png.')
config_flags.DEFINE_config_file('config', None, 'Base config file (e.g. configs/synthetic.py).',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])

# The paper's table layout: categories, order, and the end-to-end column ("-" for the two-stage
# LWS and for Pseudo-Label, as in the paper).
CATEGORIES = (('MLC', ('bce', 'focal', 'asl')),
              ('LT-MLC', ('db', 'db_focal', 'lws')),
              ('PL-MLC', ('pseudo_label', 'ml_gcn', 'hill', 'pasl')),
              ('PLT-MLC', ('comic',)))
NOT_END_TO_END = ('lws', 'pseudo_label')
COMIC_ROWS = ('Head Model', 'Tail Model', 'COMIC')


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One row family of a table: a method with config overrides, run once per seed."""
  key: str                  # sub-directory name
  label: str                # row label
  method: str
  overrides: tuple = ()     # (('comic.lambda_c', 0.0), ...)


def all_methods() -> tuple[str, ...]:
  return tuple(m for _, ms in CATEGORIES for m in ms)


def experiments(preset: str, methods: tuple[str, ...]) -> list[Experiment]:
  """The runs of a preset (LWS needs the BCE run of the same seed, so BCE is added first)."""
  from comic_jax import methods as methods_lib
  if preset == 'main':
    if 'lws' in methods and 'bce' not in methods:
      methods = ('bce',) + methods
    order = sorted(methods, key=lambda m: (m == 'lws', all_methods().index(m)))
    return [Experiment(m, methods_lib.DISPLAY_NAMES[m], m) for m in order]
  if preset == 'missing_ratio':
    return [Experiment(f'{m}_r{r}', f'{methods_lib.DISPLAY_NAMES[m]} r={r}', m,
                       (('data.missing_ratio', r),))
            for m in methods for r in (0.0, 0.3, 0.4, 0.5)]
  if preset == 'modules':
    return [Experiment('comic', 'COMIC', 'comic'),
            Experiment('comic_no_rlc', '-RLC', 'comic', (('comic.lambda_c', 0.0),)),
            Experiment('comic_no_mfm', '-MFM', 'comic', (('comic.mfm.enabled', False),)),
            Experiment('comic_no_htb', '-HTB', 'comic', (('comic.htb.enabled', False),))]
  if preset == 'mfm_factors':
    return [Experiment('comic_mfm_pn', 'P-N only', 'comic',
                       (('comic.mfm.w_pos', 0.0), ('comic.mfm.w_neg', 0.0))),
            Experiment('comic_mfm_ht', 'H-T only', 'comic',
                       (('comic.mfm.gamma_pn_pos', 0.0), ('comic.mfm.gamma_pn_neg', 0.0))),
            Experiment('comic', 'P-N + H-T', 'comic')]
  raise ValueError(preset)


def run_config(base, experiment: Experiment, seed: int, workdir: str):
  """The config of one run: the base config, the method, the overrides and the seed."""
  config = base.copy_and_resolve_references()
  config.unlock()
  config.method = experiment.method
  config.seed = seed
  config.progress_bar = False
  config.update_from_flattened_dict(dict(experiment.overrides))
  if experiment.method == 'lws':
    config.baselines.lws.stage1_workdir = os.path.join(workdir, 'bce', f'seed{seed}')
    config.num_epochs = config.baselines.lws.epochs
  config.lock()
  return config


def run_dir(workdir: str, experiment: Experiment, seed: int) -> str:
  return os.path.join(workdir, experiment.key, f'seed{seed}')


def run_all(base, runs: list[tuple[Experiment, int]], workdir: str) -> None:
  """Trains every run that has no results.json yet; its output goes to <run>/log.txt."""
  from comic_jax import train
  import tqdm
  todo = [(e, s) for e, s in runs
          if not os.path.exists(os.path.join(run_dir(workdir, e, s), 'results.json'))]
  print(f'{len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to train')
  bar = tqdm.tqdm(todo, unit='run', dynamic_ncols=True)
  for experiment, seed in bar:
    bar.set_description(f'{experiment.key} seed {seed}')
    directory = run_dir(workdir, experiment, seed)
    os.makedirs(directory, exist_ok=True)
    config = run_config(base, experiment, seed, workdir)
    start = time.time()
    with open(os.path.join(directory, 'log.txt'), 'a') as log, \
        contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
      train.train_and_evaluate(config, directory)
    with open(os.path.join(directory, 'results.json')) as f:
      res = json.load(f)
    first = next(iter(res.values()))
    bar.write(f'{experiment.key} seed {seed}: total mAP {first["total"]:.2f} '
              f'({time.time() - start:.0f}s)')
  bar.close()


# ------------------------------------------------------------------------------- tables

def collect(workdir: str, experiment: Experiment, seeds: int) -> dict[str, list[dict]]:
  """{reported model: [metrics of each seed]} of an experiment's finished runs."""
  out: dict[str, list[dict]] = {}
  for seed in range(seeds):
    path = os.path.join(run_dir(workdir, experiment, seed), 'results.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      for name, m in json.load(f).items():
        out.setdefault(name, []).append(m)
  return out


def mean_std(values: list) -> tuple[float, float]:
  """Mean and sample standard deviation (0 with one seed); NaN/None entries are skipped."""
  v = np.array([np.nan if x is None else x for x in values], dtype=float)
  v = v[~np.isnan(v)]
  if not v.size:
    return float('nan'), float('nan')
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt(ms: tuple[float, float]) -> str:
  return 'n/a' if np.isnan(ms[0]) else f'{ms[0]:.2f} ± {ms[1]:.2f}'


def table_rows(workdir: str, preset: str, exps: list[Experiment], seeds: int):
  """(header, rows) where each row is a list of cells; numbers as (mean, std)."""
  if preset == 'main':
    keys = ('many', 'medium', 'few', 'total')
    header = ['category', 'method', 'end-to-end', 'many', 'medium', 'few', 'total', 'seeds']
    rows = []
    by_method = {e.method: e for e in exps}
    for category, ms in CATEGORIES:
      for m in ms:
        if m not in by_method:
          continue
        res = collect(workdir, by_method[m], seeds)
        names = COMIC_ROWS if m == 'comic' else (by_method[m].label,)
        for name in names:
          if name not in res:
            continue
          cells = [mean_std([r[k] for r in res[name]]) for k in keys]
          rows.append([category, name, '-' if m in NOT_END_TO_END else '✓', *cells,
                       len(res[name])])
    return header, rows
  keys = {'missing_ratio': ('total', 'many', 'medium', 'few'),
          'modules': ('total', 'average', 'recall'),
          'mfm_factors': ('total', 'many', 'medium', 'few')}[preset]
  header = ['setting', *keys, 'seeds']
  rows = []
  for e in exps:
    res = collect(workdir, e, seeds)
    name = 'COMIC' if e.method == 'comic' else e.label.split(' r=')[0]
    if name in res:
      rows.append([e.label, *[mean_std([r[k] for r in res[name]]) for k in keys],
                   len(res[name])])
  return header, rows


def write_tables(workdir: str, preset: str, header, rows) -> list[str]:
  stem = 'table' if preset == 'main' else f'table_{preset}'
  md_path, csv_path = os.path.join(workdir, f'{stem}.md'), os.path.join(workdir, f'{stem}.csv')
  with open(md_path, 'w') as f:
    f.write('| ' + ' | '.join(header) + ' |\n')
    f.write('|' + '---|' * len(header) + '\n')
    for row in rows:
      f.write('| ' + ' | '.join(fmt(c) if isinstance(c, tuple) else str(c) for c in row) + ' |\n')
  with open(csv_path, 'w', newline='') as f:
    writer = csv.writer(f)
    flat = []
    for h, c in zip(header, rows[0] if rows else header):
      flat += [f'{h}_mean', f'{h}_std'] if isinstance(c, tuple) else [h]
    writer.writerow(flat)
    for row in rows:
      out = []
      for c in row:
        out += [f'{c[0]:.4f}', f'{c[1]:.4f}'] if isinstance(c, tuple) else [c]
      writer.writerow(out)
  return [md_path, csv_path]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)
  from comic_jax import methods as methods_lib
  from comic_jax import plots
  from comic_jax.errors import UserError

  default = 'all' if FLAGS.preset == 'main' else 'comic'
  names = (FLAGS.methods or default).split(',')
  methods = all_methods() if names == ['all'] else tuple(n.strip() for n in names)
  bad = [m for m in methods if m not in methods_lib.METHODS]
  if bad:
    cli.fail(f'unknown method(s) {", ".join(bad)}; choose from {", ".join(methods_lib.METHODS)}')
  if FLAGS.seeds < 1:
    cli.fail('--seeds must be >= 1')
  exps = experiments(FLAGS.preset, methods)
  runs = [(e, s) for e in exps for s in range(FLAGS.seeds)]
  start = time.time()
  try:
    os.makedirs(FLAGS.workdir, exist_ok=True)
    run_all(FLAGS.config, runs, FLAGS.workdir)
  except UserError as e:
    cli.fail(e)
  header, rows = table_rows(FLAGS.workdir, FLAGS.preset, exps, FLAGS.seeds)
  written = write_tables(FLAGS.workdir, FLAGS.preset, header, rows)
  if FLAGS.preset == 'main':
    plot_methods = [m for m in FLAGS.plot_methods.split(',') if m in methods]
    written += plots.benchmark_plots(FLAGS.workdir, [e for e in exps if e.method in plot_methods],
                                     FLAGS.seeds, run_dir)
  with open(written[0]) as f:
    print(f.read())
  print(f'wall time {time.time() - start:.0f}s; wrote ' + ', '.join(written))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
