"""The method registry: a method defined in this file alone trains, enters the benchmark's table
and its pictures, with no edit to the package; and the TensorBoard event files a run writes."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from comic_jax import plots
from comic_jax.methods import registry
from comic_jax.methods.baselines import SingleBranch
from comic_jax.methods.registry import MethodSpec, StreamSpec
from comic_jax.training import benchmark, train
from conftest import tiny_config


class SquaredError(SingleBranch):
  """A toy method: squared error between p and y, trained on class-aware batches."""

  def __init__(self, config, observed_labels, steps_per_epoch, class_names):
    loss = lambda z, y, step: ((jax.nn.sigmoid(z) - y) ** 2).sum(-1).mean()
    super().__init__(config, observed_labels, loss, sampler='class_aware')


@pytest.fixture
def toy_method():
  spec = registry.register(MethodSpec('toy_squared', 'Toy-SE', 'MLC', SquaredError))
  yield spec
  registry.unregister(spec.name)


def test_a_method_registered_in_a_test_file_trains_and_enters_table_and_plots(tmp_path,
                                                                              toy_method, bce_run):
  assert 'toy_squared' in registry.names()
  base = tiny_config(num_epochs=1)
  exps = benchmark.experiments('main', ('bce', 'toy_squared'))
  assert [e.method for e in exps] == ['bce', 'toy_squared']
  workdir = str(tmp_path)
  # BCE's run is the shared 1-epoch one (the same config and seed): only the toy method trains.
  shutil.copytree(bce_run[0], benchmark.run_dir(workdir, exps[0], 0))
  benchmark.run_all(base, [(e, 0) for e in exps], workdir)
  with open(os.path.join(workdir, 'toy_squared', 'seed0', 'results.json')) as f:
    toy = json.load(f)['Toy-SE']
  header, rows = benchmark.table_rows(workdir, 'main', exps, seeds=1)
  assert [r[1] for r in rows] == ['BCE', 'Toy-SE']
  assert rows[1][0] == 'MLC' and rows[1][2] == '✓'
  assert rows[1][header.index('total')] == pytest.approx((toy['total'], 0.0))
  written = benchmark.write_tables(workdir, 'main', header, rows)
  assert '| MLC | Toy-SE | ✓ |' in open(written[0]).read()
  pictures = plots.benchmark_plots(workdir, [
      (e.spec.primary_model, [benchmark.run_dir(workdir, e, 0)]) for e in exps])
  assert [os.path.basename(p) for p in pictures] == ['per_class_ap.png', 'class_distribution.png']
  # The toy method's sampler came from its stream spec: class-aware batches.
  run = train.Trainer.open(tiny_config(method='toy_squared', num_epochs=1), str(tmp_path / 'again'))
  assert run.method.streams == {'main': StreamSpec('class_aware')}
  assert type(run.samplers['main']).__name__ == 'ClassAwareSampler'


def _signature(function):
  """The parameter names of a function, without `self`."""
  import inspect
  return [p for p in inspect.signature(function).parameters if p != 'self']


def test_every_registered_method_has_the_method_interface(bce_run):
  """Each registered method's object is a `registry.Method`, its members with the base's
  parameter names (the training loop calls them by position), and streams / report_names of the
  documented types."""
  rng = np.random.default_rng(0)
  y = (rng.random((40, 4)) < 0.4).astype(np.float32)
  members = [n for n in vars(registry.Method) if not n.startswith('_')]
  functions = [n for n in members if callable(getattr(registry.Method, n))]
  assert set(functions) == {'init', 'loss', 'predict', 'epoch_summary', 'choose_report',
                            'is_loss_metric'}
  assert set(registry.Method.__annotations__) == {'streams', 'report_names'}
  for name in registry.names():
    config = tiny_config(method=name, **{'baselines.lws.stage1_workdir': bce_run[0]})
    method = registry.create_method(config, y, 2, ['a', 'b', 'c', 'd'])
    assert isinstance(method, registry.Method), name
    for function in functions:
      assert _signature(getattr(method, function)) == _signature(
          getattr(registry.Method, function)), (name, function)
    assert method.streams and all(isinstance(s, StreamSpec) for s in method.streams.values())
    assert 'main' in method.streams, name
    assert isinstance(method.report_names, tuple) and method.report_names, name
    assert all(isinstance(n, str) for n in method.report_names), name
    # The first is the method's own row, the model load / predict / export answer with.
    assert method.report_names[0] == registry.get(name).display_name, name
  # A method that implements only the three required members gets every hook's default.
  class Minimal(registry.Method):
    report_names = ('X',)
    init = loss = predict = lambda self, *args: None
  minimal = Minimal()
  assert minimal.streams == registry.MAIN
  assert minimal.epoch_summary({'a': 1}) == {}
  assert minimal.choose_report({'a': 1}, {'X': {'total': 1.0}}, np.zeros(4, int)) is None
  assert minimal.is_loss_metric('loss') and minimal.is_loss_metric('anything')
  with pytest.raises(NotImplementedError):
    registry.Method().init(None, None)


def test_the_method_sections_of_the_default_config_come_from_the_method_modules():
  """configs/default.py's method sections are the method modules' `CONFIG_SECTIONS`, read from
  their source without importing them (`default.method_defaults`) exactly as the imported
  modules define them; every section a registered method declares it reads exists, and each one
  is read by some method."""
  import importlib
  import pkgutil

  from comic_jax import methods
  from configs import default
  imported = {}
  for info in pkgutil.iter_modules(methods.__path__):
    sections = getattr(importlib.import_module(f'comic_jax.methods.{info.name}'),
                       default.SECTIONS_NAME, {})
    assert not set(sections) & set(imported), info.name
    imported.update(sections)
  read = default.method_defaults()
  assert read == imported
  assert {'comic', 'comic_plus', 'baselines.hill', 'baselines.lws'} <= set(read)
  config = default.get_config()
  for section, fields in read.items():
    node = config
    for part in section.split('.'):
      node = node[part]
    assert node.to_dict() == fields, section
  builtin = [registry.get(name) for name in registry.names() if name != 'toy_squared']
  declared = {s for spec in builtin for s in spec.config_sections}
  assert declared == set(read)
  assert set(config.baselines) == {s.split('.')[1] for s in read if s.startswith('baselines.')}
