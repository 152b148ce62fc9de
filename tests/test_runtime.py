"""Runtime tuning (runtime.py): malloc options, the compilation cache folder and the CPU-device
split, none of which changes a result."""
import os
import subprocess
import sys

import pytest

from comic_jax.cli import runtime
from conftest import ROOT, tiny_config


def test_keep_freed_memory_sets_glibc_malloc_options():
  """On glibc (this project's machines) every mallopt call succeeds (the conftest made them
  already: this repeats them). The effect on speed is measured by benchmarks/step_speed.py
  (--malloc-defaults for the comparison); the results of a run do not change (the determinism
  tests of tests/test_train.py run with it on)."""
  import ctypes
  try:
    ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError):
    pytest.skip('not glibc')
  assert runtime.keep_freed_memory() is True


def test_use_compilation_cache_folder(tmp_path, monkeypatch):
  """The cache goes to <data.cache_dir>/xla, is off with compilation_cache=False, and a
  JAX_COMPILATION_CACHE_DIR of the user (here: the conftest's session cache) wins."""
  import jax
  config = tiny_config()
  config.data.cache_dir = str(tmp_path)
  assert runtime.use_compilation_cache(config) == os.environ['JAX_COMPILATION_CACHE_DIR']
  before = jax.config.jax_compilation_cache_dir
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  config.compilation_cache = False
  assert runtime.use_compilation_cache(config) is None
  assert jax.config.jax_compilation_cache_dir == before
  config.compilation_cache = True
  try:
    assert runtime.use_compilation_cache(config) == str(tmp_path / 'xla')
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'xla')
  finally:
    jax.config.update('jax_compilation_cache_dir', before)


def test_use_cpu_devices_splits_the_cpu_before_jax_starts(monkeypatch, capsys):
  """cpu_devices=2 gives two CPU devices when asked before JAX runs anything (a fresh process);
  a device count in XLA_FLAGS (the tests' own) wins; asked after JAX has started (this process):
  one warning line, nothing changed."""
  import jax
  code = ('from configs import synthetic; from comic_jax.cli import runtime; import jax; '
          'c = synthetic.get_config(); c.cpu_devices = 2; '
          'n = runtime.use_cpu_devices(c); print(n, jax.device_count())')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ['2', '2'], (out.stdout, out.stderr)
  assert 'warning' not in out.stderr
  config = tiny_config(cpu_devices=2)
  assert 'xla_force_host_platform_device_count' in os.environ['XLA_FLAGS']
  assert runtime.use_cpu_devices(config) == 0          # the tests' 4 fake devices stay
  assert jax.device_count() == 4                   # JAX has started in this process
  monkeypatch.delenv('XLA_FLAGS')
  capsys.readouterr()
  assert runtime.use_cpu_devices(config) == 0          # too late: JAX runs here already
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('warning: config.cpu_devices=2 is ignored'), err
  assert jax.device_count() == 4
