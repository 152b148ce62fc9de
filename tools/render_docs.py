"""The published tables: README.md and docs/results.md show tables rendered from the committed
benchmark outputs in `docs/results/<name>/` (`table.csv`, `environment.json`), between marker
comments, so that every published number has one source.

    python tools/render_docs.py --publish=synthetic=runs/bench/table.csv
    python tools/render_docs.py            # rerender from docs/results only
    python tools/render_docs.py --check    # exit 1 if a rendered table is stale

A maintainer's tool of the source checkout (it rewrites the repository's pages), not part of
the installed package.

`<!-- table: NAME -->` ... `<!-- end table -->` holds the whole table of `docs/results/NAME`
(`table.csv`), and `<!-- table: NAME/STUDY -->` a study preset's table published beside it
(`--publish=synthetic/modules=runs/bench/table_modules.csv`: `table_modules.csv`,
`environment_modules.json`),
`<!-- summary: NAME=LABEL, ... -->` ... `<!-- end summary -->` the README's short one (BCE, the
best other baseline, COMIC, COMIC+ of each named table). Rendering needs no JAX.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # a script of the checkout: the package beside it

from comic_jax.cli import prologue as cli  # noqa: E402
from comic_jax.errors import UserError, require  # noqa: E402
from comic_jax.training import machine  # noqa: E402
from comic_jax.training.benchmark import environment_path, fmt  # noqa: E402

RESULTS = os.path.join('docs', 'results')
RENDERED = ('README.md', 'docs/results.md')     # the files with rendered tables
MARKER = re.compile(r'<!-- (table|summary): ([^>]+?) -->\n.*?<!-- end \1 -->', re.DOTALL)
NAME = re.compile(r'[\w-]+(/[\w-]+)?')     # a main table (synthetic) or a study (synthetic/modules)


def table_file(name: str) -> str:
  """The table of a published result, relative to docs/results: synthetic -> synthetic/
  table.csv, synthetic/modules -> synthetic/table_modules.csv."""
  directory, _, study = name.partition('/')
  return os.path.join(directory, f'table_{study}.csv' if study else 'table.csv')


@dataclasses.dataclass(frozen=True)
class Result:
  """One committed benchmark output: docs/results/<name>/table.csv and environment.json, or a
  study's docs/results/<name>/table_<study>.csv and environment_<study>.json."""
  name: str
  columns: list          # the table's columns ('total' for total_mean / total_std)
  rows: list             # per row {column: text or (mean, std)}
  environment: dict


def load_result(name: str, root: str = ROOT) -> Result:
  table = os.path.join(root, RESULTS, table_file(name))
  require(os.path.isfile(table), f'no benchmark output {os.path.join(RESULTS, table_file(name))}')
  with open(table, newline='') as f:
    reader = csv.reader(f)
    flat = next(reader)
    body = list(reader)
  columns = []
  for h in flat:
    base = h.removesuffix('_mean')
    if not h.endswith('_std') and base not in columns:
      columns.append(base)
  rows = []
  for line in body:
    cells = dict(zip(flat, line))
    rows.append({c: (float(cells[f'{c}_mean']), float(cells[f'{c}_std']))
                 if f'{c}_mean' in cells else cells[c] for c in columns})
  with open(environment_path(table)) as f:
    environment = json.load(f)
  return Result(name, columns, rows, environment)


def cell(value) -> str:
  return fmt(value) if isinstance(value, tuple) else str(value)


def markdown_table(header: list, rows: list) -> list[str]:
  return (['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
          + ['| ' + ' | '.join(row) + ' |' for row in rows])


def machine_line(result: Result) -> str:
  """`command` on CPU, date, wall time: where and how a table was measured."""
  env = result.environment
  if env.get('backend', 'cpu') == 'cpu':
    devices = env.get('devices', 1)
    where = (f"{machine.describe_cpu(env.get('cpu', {}), env.get('cpu_cores', 0))}; "
             f"{devices} CPU device{'s' if devices > 1 else ''}")
  else:
    where = f"{env.get('devices', 1)} x {env.get('device_kind', env['backend'])}"
  minutes, seconds = divmod(round(env['wall_time_s']), 60)
  trained = env.get('runs_trained', env.get('runs'))
  runs = (f"{env['runs']} runs" if trained == env.get('runs')
          else f"{trained} of {env['runs']} runs trained")
  return (f"`{env['command']}`: {where}; {env['date']}, {minutes} min {seconds:02d} s wall, "
          f"{runs}, JAX {env.get('jax', '?')}.")


def render_table(result: Result, link: str) -> list[str]:
  """The whole table of a benchmark output, then the line naming its command and machine;
  `link` is the table file's path relative to the page."""
  lines = markdown_table(result.columns, [[cell(r[c]) for c in result.columns]
                                          for r in result.rows])
  source = f'[{RESULTS}/{table_file(result.name)}]({link})'
  return [*lines, '', f'Measured with {machine_line(result)} Source: {source}']


def summary_rows(result: Result) -> dict:
  """BCE, the best other baseline (by mean total mAP), COMIC and COMIC+ of a main table."""
  by_name = {r['method']: r for r in result.rows}
  baselines = [r for r in result.rows if r['category'] != 'PLT-MLC' and r['method'] != 'BCE']
  best = max(baselines, key=lambda r: r['total'][0])
  plus = next(r for r in result.rows if r['method'].startswith('COMIC+'))
  return {'BCE': by_name['BCE'], 'best': best, 'COMIC': by_name['COMIC'], 'COMIC+': plus}


def render_summary(results: list[Result], labels: list[str]) -> list[str]:
  """The README's table: total and few-shot mAP of four rows in each regime (`labels`)."""
  header = ['method'] + [f'{label}: {k}' for label in labels for k in ('total', 'few')]
  picked = [summary_rows(r) for r in results]
  rows = []
  for key, label in (('BCE', 'BCE'), ('best', 'best other baseline'), ('COMIC', 'COMIC (paper)'),
                     ('COMIC+', 'COMIC+ (ours)')):
    row = [label]
    for p in picked:
      named = f" ({p[key]['method']})" if key == 'best' else ''
      row += [cell(p[key]['total']) + named, cell(p[key]['few'])]
    rows.append(row)
  return markdown_table(header, rows) + [''] + [f'- {label}: {machine_line(r)}'
                                                for label, r in zip(labels, results)]


def render_text(text: str, page: str, root: str = ROOT) -> str:
  """`text` (of the file `page`, relative to the root) with every marked block rendered from
  the committed results: `<!-- table: NAME -->` or `<!-- summary: NAME=LABEL, ... -->`."""
  def block(match):
    kind, args = match.group(1), [a.strip() for a in match.group(2).split(',')]
    names = [a.partition('=')[0].strip() for a in args]
    results = [load_result(n, root) for n in names]
    if kind == 'table':
      require(len(results) == 1, f'{page}: a table marker names one result, not {match.group(2)}')
      link = os.path.relpath(os.path.join(RESULTS, table_file(names[0])), os.path.dirname(page))
      lines = render_table(results[0], link)
    else:
      lines = render_summary(results, [a.partition('=')[2].strip() or n
                                       for a, n in zip(args, names)])
    return '\n'.join([f'<!-- {kind}: {match.group(2)} -->', *lines, f'<!-- end {kind} -->'])
  return MARKER.sub(block, text)


def publish(name: str, table_csv: str, root: str = ROOT) -> None:
  """Copies a benchmark's table (and its environment file, and for the main table its pictures)
  into docs/results/<name>/; a study (`synthetic/modules`) beside its main table, from the
  benchmark's `table_modules.csv`."""
  study = name.partition('/')[2]
  expected = f'table_{study}.csv'
  require(not study or os.path.basename(table_csv) == expected,
          f'--publish={name}=...: the {study} study\'s table is {expected}, not '
          f'{os.path.basename(table_csv)}')
  env = environment_path(table_csv)
  for path in (table_csv, env):
    require(os.path.exists(path), f'--publish: {path} does not exist (run the benchmark first)')
  target = os.path.join(root, RESULTS, table_file(name))
  directory = os.path.dirname(target)
  os.makedirs(directory, exist_ok=True)
  shutil.copyfile(table_csv, target)
  shutil.copyfile(env, environment_path(target))
  if not study and os.path.basename(table_csv) == 'table.csv':
    source = os.path.dirname(table_csv)
    for picture in sorted(os.listdir(source or '.')):
      if picture.endswith('.png'):
        shutil.copyfile(os.path.join(source, picture), os.path.join(directory, picture))


def render_parser() -> argparse.ArgumentParser:
  """The tool's flags (argparse: it needs no absl and no JAX)."""
  parser = argparse.ArgumentParser(prog='python tools/render_docs.py')
  parser.add_argument('--publish', action='append', default=[], metavar='NAME=TABLE.csv',
                      help='copy a benchmark output into docs/results/NAME first (a study: '
                      'NAME/STUDY=.../table_STUDY.csv)')
  parser.add_argument('--check', action='store_true', help='only report stale tables')
  return parser


def render_docs(argv: list[str], root: str = ROOT) -> int:
  """`[--publish=NAME=TABLE.csv ...] [--check]`: rewrites the marked tables of
  README.md and docs/results.md; with --check changes nothing and returns 1 if one is stale."""
  args = render_parser().parse_args(argv)
  try:
    for item in args.publish:
      name, sep, path = item.partition('=')
      require(bool(sep) and NAME.fullmatch(name) is not None and path.endswith('.csv'),
              f'--publish={item!r} must look like NAME=path/to/table.csv or '
              'NAME/STUDY=path/to/table_STUDY.csv')
      publish(name, path, root)
    stale = []
    for rel in RENDERED:
      path = os.path.join(root, rel)
      with open(path) as f:
        text = f.read()
      new = render_text(text, rel, root)
      if new != text:
        stale.append(rel)
        if not args.check:
          with open(path, 'w') as f:
            f.write(new)
  except (UserError, OSError, KeyError, ValueError, StopIteration) as e:
    cli.fail(e)
  verb = 'stale' if args.check else 'rendered'
  print(f'{verb}: {", ".join(stale)}' if stale else 'every rendered table is up to date')
  return 1 if args.check and stale else 0


if __name__ == '__main__':
  sys.exit(render_docs(sys.argv[1:]))
