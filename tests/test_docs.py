"""The documentation: its tables are the committed benchmark outputs, its links lead somewhere.
No JAX: these read files only."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from comic_jax import benchmark, published
from conftest import ROOT

PAGES = ['README.md'] + sorted(
    os.path.relpath(os.path.join(d, f), ROOT)
    for d, _, files in os.walk(os.path.join(ROOT, 'docs')) for f in files if f.endswith('.md'))


def _read(rel, root=ROOT):
  with open(os.path.join(root, rel)) as f:
    return f.read()


def test_readme_tables_match_results():
  for rel in published.RENDERED:
    text = _read(rel)
    assert published.MARKER.search(text), f'{rel} has no rendered table'
    assert published.render_text(text, rel) == text, (
        f'{rel}: a table differs from docs/results; run python -m comic_jax.benchmark '
        '--render-docs')


def _copy_docs(tmp_path):
  for rel in (*published.RENDERED, published.RESULTS):
    source, target = os.path.join(ROOT, rel), tmp_path / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if os.path.isdir(source) else shutil.copyfile)(source, target)
  return tmp_path


def _one_main_result():
  for name in sorted(os.listdir(os.path.join(ROOT, published.RESULTS))):
    path = os.path.join(ROOT, published.RESULTS, name, 'table.csv')
    if not os.path.isfile(path):      # an output of another benchmark (backbone_speed)
      continue
    with open(path) as f:
      if next(csv.reader(f))[:2] == ['category', 'method']:
        return name
  pytest.fail('no main benchmark table in docs/results')


def test_a_changed_result_makes_the_rendered_table_stale(tmp_path):
  root = _copy_docs(tmp_path)
  name = _one_main_result()
  path = root / published.RESULTS / name / 'table.csv'
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  column = rows[0].index('total_mean')
  bce = next(r for r in rows if r[1] == 'BCE')
  old = float(bce[column])
  bce[column] = f'{old + 1.0:.4f}'
  with open(path, 'w', newline='') as f:
    csv.writer(f).writerows(rows)
  stale = [rel for rel in published.RENDERED
           if published.render_text(_read(rel, root), rel, root) != _read(rel, root)]
  assert stale, 'no rendered table shows the changed BCE row'
  for rel in stale:      # the new value is what rendering writes
    assert f'{old + 1.0:.2f} ± ' in published.render_text(_read(rel, root), rel, root)


def test_rendering_formats_the_csv_as_the_benchmark_does(tmp_path):
  directory = tmp_path / published.RESULTS / 'toy'
  directory.mkdir(parents=True)
  header = ['category', 'method', 'end-to-end', 'many', 'medium', 'few', 'total', 'seeds']
  rows = [['MLC', 'BCE', '✓', (40.0, 1.0), (25.0, 0.5), (20.0, 0.25), (27.7849, 0.2951), 3],
          ['MLC', 'Focal', '✓', (41.0, 1.0), (26.0, 0.5), (21.0, 0.25), (28.5, 0.1), 3],
          ['PL-MLC', 'Hill', '✓', (42.0, 1.0), (26.0, 0.5), (23.0, 0.25), (28.86, 0.59), 3],
          ['PLT-MLC', 'Head Model', '✓', (39.0, 1.0), (24.0, 0.5), (20.0, 0.2), (29.5, 0.4), 3],
          ['PLT-MLC', 'COMIC', '✓', (35.0, 0.4), (24.0, 1.4), (17.5, 1.6), (24.21, 1.05), 3],
          ['PLT-MLC', 'COMIC+ (ours)', '✓', (40.4, 1.0), (26.6, 0.3), (23.8, 0.6), (28.91, 0.14),
           3]]
  md, _ = benchmark.write_tables(str(directory), 'main', header, rows)
  (directory / 'environment.json').write_text(json.dumps({
      'command': 'python -m comic_jax.benchmark --config=configs/synthetic.py',
      'date': '2030-01-02',
      'wall_time_s': 125.4, 'runs': 36, 'runs_trained': 36, 'jax': '0.10.2', 'backend': 'cpu',
      'devices': 2,
      'cpu_cores': 2, 'cpu': {'model_name': 'Toy CPU', 'family': 6, 'model': 1,
                              'features': ['avx2']}}))
  page = ('<!-- table: toy -->\nold\n<!-- end table -->\n\n'
          '<!-- summary: toy=from scratch -->\n<!-- end summary -->\n')
  out = published.render_text(page, 'docs/results.md', str(tmp_path))
  with open(md) as f:
    table = f.read().splitlines()
  assert out.splitlines()[1:1 + len(table)] == table      # the benchmark's own table.md
  assert ('Measured with `python -m comic_jax.benchmark --config=configs/synthetic.py`: Toy CPU '
          '(family 6 model 1), 2 cores, avx2; 2 CPU devices; 2030-01-02, 2 min 05 s wall, 36 runs, '
          'JAX 0.10.2. '
          'Source: [docs/results/toy/table.csv](results/toy/table.csv)') in out
  assert '| method | from scratch: total | from scratch: few |' in out
  # The best baseline other than BCE is Hill (COMIC's Head Model is not a baseline).
  assert '| best other baseline | 28.86 ± 0.59 (Hill) | 23.00 ± 0.25 |' in out
  assert '| COMIC+ (ours) | 28.91 ± 0.14 | 23.80 ± 0.60 |' in out
  assert published.render_text(out, 'docs/results.md', str(tmp_path)) == out   # idempotent


def test_render_command_publishes_and_checks(tmp_path):
  root = _copy_docs(tmp_path)
  name = _one_main_result()
  workdir = tmp_path / 'runs' / 'bench'
  workdir.mkdir(parents=True)
  for f in ('table.csv', 'environment.json'):
    shutil.copyfile(root / published.RESULTS / name / f, workdir / f)
  argv = ['--render-docs', f'--publish={name}={workdir / "table.csv"}']
  assert published.render_docs(argv, str(root)) == 0
  assert published.render_docs(['--render-docs', '--check'], str(root)) == 0
  text = _read('README.md')
  start = text.index('<!-- summary:')        # a hand edit inside the rendered block
  (root / 'README.md').write_text(text[:start] + text[start:].replace(' ± ', ' +- ', 1))
  assert published.render_docs(['--render-docs', '--check'], str(root)) == 1
  out = subprocess.run([sys.executable, '-m', 'comic_jax.benchmark', '--render-docs',
                        '--publish=bad'], cwd=ROOT, capture_output=True, text=True, check=False)
  assert out.returncode == 2 and out.stderr.startswith('error: --publish=')


LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def _anchors(text):
  """GitHub's heading anchors of a Markdown page."""
  out, fenced = set(), False
  for line in text.splitlines():
    fenced ^= line.startswith('```')
    if not fenced and line.startswith('#'):
      title = line.lstrip('#').strip().lower()
      out.add(re.sub(r'[^\w\- ]', '', title).replace(' ', '-'))
  return out


def _links(text):
  fenced = False
  for line in text.splitlines():
    fenced ^= line.startswith('```')
    if not fenced:
      yield from LINK.findall(re.sub(r'`[^`]*`', '', line))   # not inside inline code


@pytest.mark.parametrize('page', PAGES)
def test_relative_links_resolve(page):
  text = _read(page)
  broken = []
  for target in _links(text):
    if re.match(r'[a-z]+:', target):
      continue                                  # http(s), mailto: not checked offline
    path, _, anchor = target.partition('#')
    full = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else \
        os.path.join(ROOT, page)
    if not os.path.exists(full) or (
        anchor and full.endswith('.md') and anchor not in _anchors(_read(full, '/'))):
      broken.append(target)
  assert not broken, f'{page}: broken links {broken}'


def test_link_check_catches_a_broken_link():
  assert list(_links('see [a](docs/nope.md) and `[b](x)`\n```\n[c](y)\n```\n![d](z.png)')) == [
      'docs/nope.md', 'z.png']
  assert _anchors('# Reproduce the paper\n## Use a trained model\n') == {
      'reproduce-the-paper', 'use-a-trained-model'}
