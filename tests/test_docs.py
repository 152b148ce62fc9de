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

from comic_jax.training import benchmark
from conftest import ROOT, load_tool

published = load_tool('render_docs')   # the renderer: a tool of the checkout

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
        f'{rel}: a table differs from docs/results; run python tools/render_docs.py')


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
  argv = [f'--publish={name}={workdir / "table.csv"}']
  assert published.render_docs(argv, str(root)) == 0
  assert published.render_docs(['--check'], str(root)) == 0
  text = _read('README.md')
  start = text.index('<!-- summary:')        # a hand edit inside the rendered block
  (root / 'README.md').write_text(text[:start] + text[start:].replace(' ± ', ' +- ', 1))
  assert published.render_docs(['--check'], str(root)) == 1
  out = subprocess.run([sys.executable, 'tools/render_docs.py', '--publish=bad'], cwd=ROOT,
                       capture_output=True, text=True, check=False)
  assert out.returncode == 2 and out.stderr.startswith('error: --publish=')



def test_a_study_table_is_published_beside_its_main_table_and_checked(tmp_path, capsys):
  """`--publish=toy/modules=.../table_modules.csv` copies the study's table and environment
  beside docs/results/toy/table.csv; its marker renders the whole table, and a stale one (a
  changed result, or a hand edit) fails --check."""
  root = tmp_path / 'repo'
  for rel in published.RENDERED:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
  (root / 'README.md').write_text('# toy\n')
  (root / 'docs/results.md').write_text('## Ablations\n\n<!-- table: toy/modules -->\n'
                                        '<!-- end table -->\n\nProse.\n')
  bench = tmp_path / 'bench'
  bench.mkdir()
  benchmark.write_tables(str(bench), 'modules', ['setting', 'total', 'average', 'recall', 'seeds'],
                         [['COMIC', (24.0812, 1.0449), (25.5, 0.9), (46.66, 2.7), 3],
                          ['-HTB', (26.5, 0.4), (28.18, 0.39), (56.93, 0.67), 3]])
  (bench / 'environment_modules.json').write_text(json.dumps({
      'command': 'python -m comic_jax.benchmark --preset=modules', 'date': '2030-01-02',
      'wall_time_s': 61.0, 'runs': 6, 'runs_trained': 6, 'jax': '0.10.2', 'backend': 'cpu',
      'devices': 1, 'cpu_cores': 2, 'cpu': {'model_name': 'Toy CPU', 'features': ['avx2']}}))
  argv = [f'--publish=toy/modules={bench / "table_modules.csv"}']
  assert published.render_docs(argv, str(root)) == 0
  results = root / published.RESULTS / 'toy'
  assert sorted(os.listdir(results)) == ['environment_modules.json', 'table_modules.csv']
  page = (root / 'docs/results.md').read_text()
  assert '| setting | total | average | recall | seeds |' in page
  assert '| COMIC | 24.08 ± 1.04 | 25.50 ± 0.90 | 46.66 ± 2.70 | 3 |' in page
  assert '| -HTB | 26.50 ± 0.40 | 28.18 ± 0.39 | 56.93 ± 0.67 | 3 |' in page
  assert ('`python -m comic_jax.benchmark --preset=modules`: Toy CPU, 2 cores, avx2; 1 CPU device; '
          '2030-01-02, 1 min 01 s wall, 6 runs, JAX 0.10.2. Source: '
          '[docs/results/toy/table_modules.csv](results/toy/table_modules.csv)') in page
  assert page.endswith('<!-- end table -->\n\nProse.\n')
  assert published.render_docs(['--check'], str(root)) == 0
  table = results / 'table_modules.csv'
  table.write_text(table.read_text().replace('26.5000', '26.9000'))    # a new result
  assert published.render_docs(['--check'], str(root)) == 1
  assert published.render_docs([], str(root)) == 0
  assert '| -HTB | 26.90 ± 0.40 |' in (root / 'docs/results.md').read_text()
  # A study's table under another study's name is refused.
  with pytest.raises(SystemExit) as exit_:
    published.render_docs([f'--publish=toy/mfm_factors={bench / "table_modules.csv"}'], str(root))
  assert exit_.value.code == 2
  assert 'table_mfm_factors.csv, not table_modules.csv' in capsys.readouterr().err

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


# ------------------------------------------------------------------------------- commands

COMMAND = re.compile(r'(?:python -m (comic_jax(?:\.\w+)+)|\b(comic-jax-[a-z]+))')
FLAG = re.compile(r'(?<![\w-])--([A-Za-z][\w-]*)((?:\.[\w]+)*)(=\S*)?')
STOP = re.compile(r'\s(?:#|\||&&|;|>|2>)')     # where a command's arguments end on a line


def _scripts():
  import tomllib
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']['scripts']


def _script_module(script):
  """`comic-jax-X` -> the module it runs (pyproject -> comic_jax.cli.console.MODULES), or None."""
  from comic_jax.cli import console
  target = _scripts().get(script)
  return None if target is None else console.MODULES.get(target.split(':')[1])


def doc_snippets(text):
  """(line number, kind, text) of a Markdown page: kind 'shell' for the logical lines of shell
  code blocks (continuations joined, comments dropped), 'code' for inline code spans (those
  spanning a line break joined); Python blocks and plain prose are left out."""
  lines, out, fence, start, logical = text.splitlines(), [], None, 0, ''
  paragraph = []

  def flush_paragraph():
    joined = ' '.join(t for _, t in paragraph)
    first = paragraph[0][0] if paragraph else 0
    for m in re.finditer(r'`([^`]+)`', joined):
      line = first + joined[:m.start()].count('\0')
      out.append((line, 'code', m.group(1)))
    paragraph.clear()

  for number, line in enumerate(lines, 1):
    if line.lstrip().startswith('```'):        # a fence, also one indented in a list item
      flush_paragraph()
      fence = None if fence is not None else line.lstrip()[3:].strip()
      continue
    if fence is not None:
      if fence in ('', 'bash', 'sh', 'shell', 'console'):
        code = re.split(r'\s#', ' ' + line, maxsplit=1)[0].strip()
        start = start if logical else number
        logical += ' ' + code.rstrip('\\')
        if not code.endswith('\\'):
          out.append((start, 'shell', logical.strip()))
          logical = ''
      continue
    if not line.strip():
      flush_paragraph()
    else:
      paragraph.append((number, line + '\0'))   # \0 marks the line ends
  flush_paragraph()
  return out


def doc_commands(text):
  """(line, module, [(flag, config path or '', value or None)], config file or None) of every
  comic-jax command a page shows, and (line, None, flags, None) for flags shown alone in inline
  code (`--cut=val`)."""
  out = []
  for line, kind, snippet in doc_snippets(text):
    snippet = snippet.replace('\0', '')
    found = list(COMMAND.finditer(snippet))
    if not found:
      if kind == 'code' and snippet.startswith('--'):
        out.append((line, None, _flags(snippet), None))
      continue
    for i, m in enumerate(found):
      end = found[i + 1].start() if i + 1 < len(found) else len(snippet)
      args = snippet[m.end():end]
      stop = STOP.search(args)
      args = args[:stop.start()] if stop else args
      module = m.group(1) or _script_module(m.group(2)) or m.group(2)
      flags_ = _flags(args)
      config = next((v[1:] for f, p, v in flags_ if f == 'config' and not p and v), None)
      out.append((line, module, flags_, config))
  return out


def _flags(args):
  return [(m.group(1), m.group(2)[1:], m.group(3)) for m in FLAG.finditer(args)]


def _helpxml(modules):
  """{module: {flag: type}} of the commands `python -m module` (absl's --helpxml, one subprocess
  each, run side by side: every command defines its flags in absl's one global registry)."""
  import xml.etree.ElementTree as ET
  env = dict(os.environ, PYTHONPATH=ROOT)
  running = {m: subprocess.Popen([sys.executable, '-m', m, '--helpxml'], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for m in modules}
  out = {}
  for module, process in running.items():
    try:
      root = ET.fromstring(process.communicate(timeout=120)[0])
    except ET.ParseError:          # not a command: no absl flags to list
      out[module] = None
      continue
    out[module] = {f.findtext('name'): f.findtext('type') for f in root.iter('flag')}
  return out


def _config_of(spec):
  """The ConfigDict of `--config=configs/x.py[:arg]` (configs/default.py without one)."""
  import importlib
  if not spec or not spec.partition(':')[0].endswith('.py'):   # none, or a placeholder: CONFIG
    spec = 'configs/default.py'
  path, _, arg = spec.partition(':')
  module = importlib.import_module(path[:-len('.py')].replace('/', '.'))
  return module.get_config(arg) if arg else module.get_config()


def _has_field(config, dotted):
  for part in dotted.split('.'):
    if not hasattr(config, 'keys') or part not in config.keys():
      return False
    config = config[part]
  return True


def command_problems(pages_text, flags_of=_helpxml):
  """Every command, flag and config field shown in the pages ({name: text}) that does not exist:
  one line each, naming the page, line and what to fix."""
  import importlib.util

  problems, known = [], {}
  render_flags = {o[2:] for a in published.render_parser()._actions for o in a.option_strings}
  shown = [(page, *c) for page, text in pages_text.items() for c in doc_commands(text)]
  for page, line, module, flags_, config in shown:
    where = f'{page}:{line}'
    if module is None:
      continue
    if module.startswith('comic-jax-'):
      problems.append(f'{where}: {module} is not a console script of pyproject.toml '
                      f'({", ".join(sorted(_scripts()))})')
      continue
    if importlib.util.find_spec(module) is None:
      problems.append(f'{where}: python -m {module}: no such module')
      continue
    known[module] = None
  known = flags_of(sorted(known))
  for module in [m for m, f in known.items() if f is None]:
    problems.append(f'python -m {module}: not a command (it lists no flags with --helpxml)')
    del known[module]
  union = render_flags.union(*known.values())
  for page, line, module, flags_, config in shown:
    where = f'{page}:{line}'
    if module is not None and module not in known:
      continue
    defined = set(known[module]) if module else union
    try:
      config_dict = _config_of(config)
    except (ImportError, AttributeError, TypeError, ValueError) as e:
      problems.append(f'{where}: --config={config}: cannot load ({e})')
      continue
    for flag, path, _ in flags_:
      if flag == 'config' and path:
        if path.upper() == path or path == 'x':
          continue                               # a placeholder: --config.FIELD=..., --config.x
        if not _has_field(config_dict, path):
          problems.append(f'{where}: --config.{path}: no such field in '
                          f'{config or "configs/default.py"}')
      elif flag not in defined and not (flag.startswith('no') and flag[2:] in defined):
        command = f'python -m {module}' if module else 'any comic-jax command'
        problems.append(f'{where}: --{flag} is not a flag of {command}: fix the page or define '
                        'the flag')
  return problems


def test_every_command_flag_and_config_field_shown_exists():
  problems = command_problems({page: _read(page) for page in PAGES})
  assert not problems, 'the docs show commands, flags or fields that do not exist:\n' + \
      '\n'.join(problems)


def test_the_command_check_catches_a_made_up_flag_field_or_command():
  fake = {'main': {'config': 'string', 'workdir': 'string', 'progress_bar': 'bool'},
          'predict': {'workdir': 'string', 'input': 'string', 'recursive': 'bool'}}
  flags_of_fake = lambda modules: {m: fake['main' if m == 'comic_jax.main' else 'predict']
                                   for m in modules}
  page = ('Train:\n\n```bash\npython -m comic_jax.main --config=configs/npz.py \\\n'
          '  --config.data.no_such_field=1 --workdir=w   # a comment --not_checked\n'
          'pip install --upgrade x\n```\n\n'
          'Then `comic-jax-predict --workdir=w --input=a --recursive --made_up=1` and\n'
          'a flag alone `--no_such_flag=3`, a field alone `--config.data.partial=as_is`,\n'
          'and `--config.model.nope=2`; `python -m comic_jax.nowhere --x` and `comic-jax-nope`.\n')
  problems = command_problems({'FAKE.md': page}, flags_of=flags_of_fake)
  assert problems == [
      'FAKE.md:11: python -m comic_jax.nowhere: no such module',
      'FAKE.md:11: comic-jax-nope is not a console script of pyproject.toml '
      f'({", ".join(sorted(_scripts()))})',
      'FAKE.md:4: --config.data.no_such_field: no such field in configs/npz.py',
      'FAKE.md:9: --made_up is not a flag of python -m comic_jax.predict: fix the page or '
      'define the flag',
      'FAKE.md:10: --no_such_flag is not a flag of any comic-jax command: fix the page or '
      'define the flag',
      'FAKE.md:11: --config.model.nope: no such field in configs/default.py'], problems


# ------------------------------------------------------------------------------- code -> docs

SECTION = re.compile(r'(docs/[\w/]+\.md),? "([^"\n]+)"')


def section_problems(files_text, root=ROOT):
  """Every `docs/page.md "Section"` pointer in code whose page has no heading starting with the
  quoted words (a section renamed or moved): one line each."""
  problems = []
  for rel, text in files_text.items():
    for m in SECTION.finditer(text):
      page, title = m.groups()
      path = os.path.join(root, page)
      headings = [] if not os.path.isfile(path) else [
          line.lstrip('#').strip().lower() for line in _read(page, root).splitlines()
          if line.startswith('#')]
      if not any(h.startswith(title.lower()) for h in headings):
        line = text[:m.start()].count('\n') + 1
        problems.append(f'{rel}:{line}: {page} has no section "{title}"')
  return problems


def _code_files():
  for top in ('comic_jax', 'configs', 'benchmarks', 'tools', 'launch', 'tests'):
    for d, _, files in os.walk(os.path.join(ROOT, top)):
      for f in sorted(files):
        if f.endswith('.py'):
          yield os.path.relpath(os.path.join(d, f), ROOT)


def test_docstrings_point_to_sections_that_exist():
  problems = section_problems({rel: _read(rel) for rel in _code_files()
                               if rel != 'tests/test_docs.py'})
  assert not problems, 'code points to documentation sections that do not exist:\n' + \
      '\n'.join(problems)


def test_the_section_check_catches_a_moved_section():
  assert section_problems({'x.py': 'see docs/method.md "COMIC+" and\ndocs/method.md, "Nowhere"'}
                          ) == ['x.py:2: docs/method.md has no section "Nowhere"']
