"""The console scripts of pyproject.toml behave exactly as their `python -m` forms: the same exit
status, output and help (flags, errors), run through the function pip's script calls."""
import os
import subprocess
import sys
import tomllib

import pytest

from comic_jax.cli import console
from conftest import ROOT


def _scripts():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']['scripts']


def _run(args, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, HOME=str(tmp_path), COLUMNS='100')
  out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
  return out.returncode, out.stdout, out.stderr


def _both(script, args, tmp_path):
  """(console script's result, `python -m` result) for `args`."""
  module, function = _scripts()[script].split(':')
  code = f'import sys; sys.argv[0] = {script!r}; import {module} as m; m.{function}()'
  return (_run(['-c', code, *args], tmp_path),
          _run(['-m', console.MODULES[function], *args], tmp_path))


def test_every_script_is_a_module_of_the_console_map():
  scripts = _scripts()
  assert sorted(scripts) == sorted(f'comic-jax-{"train" if f == "train" else f}'
                                   for f in console.MODULES)
  for name, target in scripts.items():
    module, function = target.split(':')
    assert module == 'comic_jax.cli.console' and function in console.MODULES, name


@pytest.mark.parametrize('script', sorted(_scripts()))
def test_console_script_equals_python_m(script, tmp_path):
  """--help prints the module's docstring and its flags (absl lists the flags of the module
  run as __main__: a script that imported the module instead listed none)."""
  scripted, direct = _both(script, ['--help'], tmp_path)
  assert scripted == direct
  assert '\n  --' in direct[1]      # the command's own flags are listed


@pytest.mark.parametrize('script', ['comic-jax-train', 'comic-jax-predict'])
def test_a_made_up_flag_is_the_same_error(script, tmp_path):
  scripted, direct = _both(script, ['--no_such_flag=1'], tmp_path)
  assert scripted == direct and direct[0] == 2
  assert direct[2].startswith('error: ') and 'no_such_flag' in direct[2]


def test_benchmark_render_docs_names_the_tool_that_does_it(tmp_path):
  """The published tables are rendered by tools/render_docs.py, outside the installed package:
  `comic-jax-benchmark --render-docs` says so in one line, as python -m does."""
  scripted, direct = _both('comic-jax-benchmark', ['--render-docs', '--check'], tmp_path)
  assert scripted == direct
  assert direct[0] == 2, direct
  assert direct[2].startswith('error: ') and 'python tools/render_docs.py' in direct[2]
