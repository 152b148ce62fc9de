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

Beside each table the benchmark writes `environment.json` (`environment_<preset>.json` for a
study): the command, the date, the wall time and the machine (`machine.machine_description`).

`--sweep=comic.rlc.tau=0.6,0.7,0.8` trains every value (sub-workdir `<method>/<field>=<value>/
seed<k>`), picks per method the value with the best mean validation total mAP of its primary
model, writes `sweep.md` (every value's validation mAP) and puts only the chosen value's test
metrics in the tables.

The command and its flags: comic_jax/cli/benchmark.py.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import json
import os
import time

import numpy as np

from comic_jax import atomic, progress
from comic_jax.errors import UserError, require
from comic_jax.training import machine


def fmt(ms: tuple[float, float]) -> str:
  return 'n/a' if np.isnan(ms[0]) else f'{ms[0]:.2f} ± {ms[1]:.2f}'


def environment_path(table_csv: str) -> str:
  """The environment file beside a table: table.csv -> environment.json, table_modules.csv ->
  environment_modules.json."""
  directory, name = os.path.split(table_csv)
  return os.path.join(directory, 'environment' + name[len('table'):-len('.csv')] + '.json')


# Columns of each study preset; the rows of 'modules', 'mfm_factors' and 'official' come from the
# methods' specs (`MethodSpec.studies`), 'missing_ratio' applies to any method.
STUDY_COLUMNS = {'missing_ratio': ('total', 'many', 'medium', 'few'),
                 'modules': ('total', 'average', 'recall'),
                 'mfm_factors': ('total', 'many', 'medium', 'few'),
                 'official': ('total', 'many', 'medium', 'few')}
MISSING_RATIOS = (0.0, 0.3, 0.4, 0.5)


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One row family of a table: a method with config overrides, run once per seed."""
  key: str                  # sub-directory name
  label: str                # row label
  method: str
  overrides: tuple = ()     # (('comic.lambda_c', 0.0), ...)

  @property
  def spec(self):
    from comic_jax.methods import registry
    return registry.get(self.method)


def experiments(preset: str, methods: tuple[str, ...], base=None) -> list[Experiment]:
  """The runs of a preset. A method built on another's run (LWS on BCE) comes after it, and
  that method is added when missing. With the `base` config, a study row whose overrides are
  all the base's values already (a recipe that sets them) would repeat the method's own row:
  it is left out."""
  from comic_jax.methods import registry
  if preset == 'main':
    for m in methods:
      base = registry.get(m).builds_on
      if base and base not in methods:
        methods = (base,) + methods
    order = registry.names()
    methods = sorted(methods, key=lambda m: (bool(registry.get(m).builds_on), order.index(m)))
    return [Experiment(m, registry.get(m).display_name, m) for m in methods]
  if preset == 'missing_ratio':
    return [Experiment(f'{m}_r{r}', f'{registry.get(m).display_name} r={r}', m,
                       (('data.missing_ratio', r),))
            for m in methods for r in MISSING_RATIOS]
  out = []
  for m in methods:
    for row in registry.get(m).studies.get(preset, ()):
      if base is not None and row.overrides and all(
          _field(base, k) == v for k, v in row.overrides):
        continue
      out.append(Experiment(f'{m}_{row.suffix}' if row.suffix else m, row.label, m,
                            row.overrides))
  if not out:
    raise UserError(f'--preset={preset}: none of the methods {", ".join(methods)} defines it')
  return out


def _field(config, dotted: str):
  """config['a']['b'] for 'a.b'."""
  for part in dotted.split('.'):
    config = config[part]
  return config


# ------------------------------------------------------------------------------- sweeps

def parse_sweep(text: str, base) -> tuple[str, tuple]:
  """'comic.rlc.tau=0.6,0.7' -> ('comic.rlc.tau', (0.6, 0.7)), each value parsed as the
  field's type in the base config."""
  field, sep, values = text.partition('=')
  field = field.strip()
  require(bool(sep) and bool(field) and bool(values.strip()),
          f'--sweep={text!r} must look like FIELD=v1,v2,...')
  try:
    current = _field(base, field)
  except (KeyError, AttributeError):
    raise UserError(f'--sweep: the config has no field {field!r}') from None
  return field, tuple(parse_value(v.strip(), current, field) for v in values.split(','))


def parse_value(text: str, current, field: str):
  """A command-line value as the type of the field's current value."""
  try:
    if isinstance(current, bool):
      require(text.lower() in ('true', 'false'), f'--sweep: {field} takes True or False')
      return text.lower() == 'true'
    if isinstance(current, (int, float)):
      return type(current)(float(text) if isinstance(current, float) else int(text))
  except ValueError:
    raise UserError(f'--sweep: {field}={text!r} is not a {type(current).__name__}') from None
  return text


def sweep_variants(exps: list[Experiment], field: str, values: tuple) -> list[list[Experiment]]:
  """Per experiment, one variant per value (sub-workdir `<key>/<field>=<value>`)."""
  return [[dataclasses.replace(e, key=os.path.join(e.key, f'{field}={v}'),
                               overrides=e.overrides + ((field, v),)) for v in values]
          for e in exps]


def validation_score(workdir: str, experiment: Experiment, seeds: int, key: str = 'total'):
  """Mean over the finished seeds of the primary model's validation metric (NaN if none)."""
  scores = []
  for seed in range(seeds):
    path = os.path.join(run_dir(workdir, experiment, seed), 'val_results.json')
    if os.path.exists(path):
      with open(path) as f:
        scores.append(json.load(f).get(experiment.spec.primary_model, {}).get(key))
  return mean_std(scores)[0]


def choose(workdir: str, variants: list[Experiment], seeds: int) -> int:
  """Index of the variant with the best mean validation total mAP (the first on ties)."""
  scores = [validation_score(workdir, v, seeds) for v in variants]
  require(not all(np.isnan(scores)), f'--sweep: no validation results for {variants[0].label} '
          '(the data has no validation set: set config.data.val_fraction)')
  return int(np.nanargmax(scores))


def write_sweep(workdir: str, field: str, values: tuple, variants, chosen, seeds) -> str:
  """sweep.md: every value's validation mAP per method, the chosen one marked."""
  path = os.path.join(workdir, 'sweep.md')
  with open(path, 'w') as f:
    f.write(f'| method | {field} | val total | val few | chosen |\n|---|---|---|---|---|\n')
    for family, pick in zip(variants, chosen):
      for i, (v, e) in enumerate(zip(values, family)):
        total, few = (validation_score(workdir, e, seeds, k) for k in ('total', 'few'))
        f.write(f'| {e.label} | {v} | {total:.2f} | {few:.2f} | {"✓" if i == pick else ""} |\n')
  return path


def run_config(base, experiment: Experiment, seed: int, workdir: str):
  """The config of one run: the base config, the method, the overrides and the seed."""
  config = base.copy_and_resolve_references()
  config.unlock()
  config.method = experiment.method
  config.seed = seed
  config.progress_bar = False
  config.update_from_flattened_dict(dict(experiment.overrides))
  spec = experiment.spec
  if spec.benchmark_config is not None:
    spec.benchmark_config(config, os.path.join(workdir, spec.builds_on, f'seed{seed}'))
  config.lock()
  return config


def run_dir(workdir: str, experiment: Experiment, seed: int) -> str:
  return os.path.join(workdir, experiment.key, f'seed{seed}')


def run_all(base, runs: list[tuple[Experiment, int]], workdir: str) -> int:
  """Trains every run that has no results.json yet (its output goes to <run>/log.txt); returns
  how many it trained."""
  from comic_jax.training import train
  todo = [(e, s) for e, s in runs
          if not os.path.exists(os.path.join(run_dir(workdir, e, s), 'results.json'))]
  print(f'{len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to train')
  bar = progress.bar(iterable=todo, unit='run', dynamic_ncols=True)
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
    model = experiment.spec.primary_model     # the model the method reports
    shown = res.get(model) or next(iter(res.values()))
    bar.write(f'{experiment.key} seed {seed}: total mAP {shown["total"]:.2f} '
              f'({time.time() - start:.0f}s)')
  bar.close()
  return len(todo)


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


def table_rows(workdir: str, preset: str, exps: list[Experiment], seeds: int):
  """(header, rows) where each row is a list of cells; numbers as (mean, std)."""
  from comic_jax.methods import registry
  if preset == 'main':
    keys = ('many', 'medium', 'few', 'total')
    header = ['category', 'method', 'end-to-end', 'many', 'medium', 'few', 'total', 'seeds']
    rows = []
    order = registry.names()
    for e in sorted(exps, key=lambda e: order.index(e.method)):
      spec = e.spec
      res = collect(workdir, e, seeds)
      for name in spec.models:
        if name in res:
          cells = [mean_std([r[k] for r in res[name]]) for k in keys]
          rows.append([spec.category, name, '✓' if spec.end_to_end else '-', *cells,
                       len(res[name])])
    return header, rows
  keys = STUDY_COLUMNS[preset]
  header = ['setting', *keys, 'seeds']
  rows = []
  several = len({e.method for e in exps}) > 1    # COMIC's -RLC and COMIC+'s -RLC: named apart
  for e in exps:
    res = collect(workdir, e, seeds)
    name = e.spec.primary_model
    label = (f'{e.spec.display_name} {e.label}'
             if several and not e.label.startswith(e.spec.display_name) else e.label)
    if name in res:
      rows.append([label, *[mean_std([r[k] for r in res[name]]) for k in keys], len(res[name])])
  return header, rows


def left_out_methods(methods, config) -> dict[str, str]:
  """{method: why} for the methods that cannot run with the base config (BoostLU on pooled
  frozen features): the benchmark leaves them out and says so under the table."""
  from comic_jax.methods import registry
  reasons = {m: registry.unsupported_reason(m, config) for m in methods}
  return {m: r for m, r in reasons.items() if r}


def write_tables(workdir: str, preset: str, header, rows, notes=()) -> list[str]:
  """table.md (with `notes` as lines under it) and table.csv (`table_<preset>` for a study)."""
  stem = 'table' if preset == 'main' else f'table_{preset}'
  md_path, csv_path = os.path.join(workdir, f'{stem}.md'), os.path.join(workdir, f'{stem}.csv')
  with open(md_path, 'w') as f:
    f.write('| ' + ' | '.join(header) + ' |\n')
    f.write('|' + '---|' * len(header) + '\n')
    for row in rows:
      f.write('| ' + ' | '.join(fmt(c) if isinstance(c, tuple) else str(c) for c in row) + ' |\n')
    if notes:
      f.write('\n' + '\n'.join(notes) + '\n')
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


def write_environment(table_csv: str, argv: list[str], wall_s: float, runs: int,
                      trained: int) -> str:
  """What the table's numbers were measured with: the command, the date (UTC), the wall time
  (`trained` of the `runs` were trained by this command, the others were finished before) and
  the machine (`machine.machine_description`: the software's versions, the devices, the CPU)."""
  env = {'command': ' '.join(['python -m comic_jax.benchmark', *argv]),
         'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d'),
         'wall_time_s': round(wall_s, 1), 'runs': runs, 'runs_trained': trained,
         **machine.machine_description()}
  path = environment_path(table_csv)
  atomic.write_json(path, env, indent=2)
  return path
