"""Versioned runs: a workdir written by comic-jax 0.2.0 (tests/fixtures/run_0_2_0, made by that
release) is loaded, predicted from, exported, audited and resumed by today's code; an older
config.json's missing fields are filled in with one line; the resume check compares the fields
that define a run."""
import csv
import json
import os
import shutil
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

import comic_jax
from comic_jax import atomic, versions
from comic_jax.errors import UserError
from comic_jax.inference import restore as inference
from comic_jax.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'run_0_2_0')
# The command line that trained the fixture with 0.2.0 (fixtures/run_0_2_0/HOW.txt).
OVERRIDES = ('--config.method=bce', '--config.num_epochs=2', '--config.eval_every_epochs=1',
             '--config.checkpoint_every_epochs=1', '--config.progress_bar=False',
             '--config.model.small_cnn_widths=(8,16,16,16)', '--config.model.projection_dim=32',
             '--config.data.synthetic.num_test=300', '--config.cpu_devices=1')


def _copy(tmp_path, name='run'):
  out = str(tmp_path / name)
  shutil.copytree(FIXTURE, out)
  return out


def _run(module, *args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def _saved(path):
  with open(path) as f:
    return json.load(f)


def _test_data():
  from comic_jax.data import sources
  return sources.load_dataset(inference.load_config(FIXTURE).data)


def _mean_ap(probs, labels):
  """The mean over classes with a positive of scikit-learn's average precision, in %."""
  aps = [average_precision_score(labels[:, c], probs[:, c]) for c in range(labels.shape[1])
         if labels[:, c].any()]
  return 100 * float(np.mean(aps))


def test_the_version_is_one_and_recorded_in_config_json(tmp_path, config):
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    assert tomllib.load(f)['project']['version'] == comic_jax.__version__
  workdir = str(tmp_path / 'w')
  workdir_lib.prepare_workdir(workdir, config)
  workdir_lib.release_lock(workdir)
  saved = _saved(os.path.join(workdir, 'config.json'))
  assert saved[versions.VERSION_KEY] == comic_jax.__version__
  assert versions.VERSION_KEY not in _saved(os.path.join(FIXTURE, 'config.json'))
  # Read back, the version is not a config field.
  assert versions.VERSION_KEY not in inference.load_config(workdir)


def test_missing_fields_are_filled_in_with_one_line(tmp_path, capsys, monkeypatch):
  run = _copy(tmp_path)
  path = os.path.join(run, 'config.json')
  saved = _saved(path)
  del saved['comic']['htb']['temperature']          # the field of the report that lacked it
  del saved['comic_plus']                           # a whole section added later
  saved['data']['old_field'] = 3                    # a field since removed
  atomic.write_json(path, saved)
  config = inference.load_config(run)
  assert config.comic.htb.temperature == 1.0 and config.comic_plus.members == [
      'balanced', 'head']
  assert 'old_field' not in config.data
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f'note: {path} was written by comic-jax 0.2.0')
  assert 'comic.htb.temperature=1.0 (default)' in lines[0] and 'data.old_field' in lines[0]
  # A recorded migration wins over the default for runs of its release or earlier.
  monkeypatch.setattr(versions, 'MIGRATIONS', {'0.2.0': {'comic.htb.temperature': 2.0},
                                                 '0.1.0': {'comic.htb.temperature': 3.0}})
  assert inference.load_config(run).comic.htb.temperature == 2.0
  assert 'temperature=2.0 (as that version ran)' in capsys.readouterr().err
  saved[versions.VERSION_KEY] = '0.3.0'             # a later version: the default again
  atomic.write_json(path, saved)
  assert inference.load_config(run).comic.htb.temperature == 1.0
  assert versions.migrations_for('0.1.0') == {'comic.htb.temperature': 3.0}
  assert versions.version_tuple('0.10.1rc2') == (0, 10, 1) > versions.version_tuple('0.9')


def _fixture_config():
  """The config the fixture was trained with (OVERRIDES on configs/synthetic.py)."""
  from configs import synthetic
  config = synthetic.get_config()
  config.update_from_flattened_dict({
      'method': 'bce', 'num_epochs': 2, 'eval_every_epochs': 1, 'checkpoint_every_epochs': 1,
      'progress_bar': False, 'model.small_cnn_widths': (8, 16, 16, 16),
      'model.projection_dim': 32, 'data.synthetic.num_test': 300, 'cpu_devices': 1})
  return config


def test_the_resume_check_compares_what_defines_the_run(tmp_path):
  run, config = _copy(tmp_path), _fixture_config()
  # How the run is carried out may change: bars, devices, caches, evaluation frequency.
  for key, value in (('progress_bar', True), ('eval_every_epochs', 2), ('cpu_devices', 2),
                     ('data.cache_dir', str(tmp_path / 'cache')), ('data.workers', 0)):
    changed = config.copy_and_resolve_references()
    changed.update_from_flattened_dict({key: value})
    workdir_lib.prepare_workdir(run, changed)
    workdir_lib.release_lock(run)
  # What it learns may not; the message names the field.
  for key, value in (('optim.learning_rate', 3e-4), ('data.missing_ratio', 0.5)):
    changed = config.copy_and_resolve_references()
    changed.update_from_flattened_dict({key: value})
    with pytest.raises(UserError, match=f'another config \\({key}: '):
      workdir_lib.prepare_workdir(run, changed)
    workdir_lib.release_lock(run)


def test_a_0_2_0_run_is_predicted_from_exported_and_audited(tmp_path):
  from comic_jax.audit import suspects as audit
  from comic_jax.inference import export
  data = _test_data()
  model = comic_jax.load(FIXTURE)
  probs = model.predict(data.x_test)
  # The test mAP the 0.2.0 release wrote when it trained the run, from today's code.
  recorded = _saved(os.path.join(FIXTURE, 'results.json'))['BCE']['total']
  assert _mean_ap(probs, np.asarray(data.y_test)) == pytest.approx(recorded, abs=0.01)
  # Its 0.2.0 export and a new export of it give the same probabilities.
  np.testing.assert_allclose(comic_jax.load(os.path.join(FIXTURE, 'export')).predict(
      data.x_test), probs, atol=1e-5)
  out = export.export_model(FIXTURE, str(tmp_path / 'export'))
  np.testing.assert_allclose(comic_jax.load(out).predict(data.x_test), probs, atol=1e-5)
  rows = audit.Audit(FIXTURE, cut='0.5').rows()
  score = audit.COLUMNS.index('score')
  assert rows and all(float(r[score]) > 0.5 for r in rows)


def test_a_0_2_0_run_is_predicted_by_the_command_line_and_resumed(tmp_path):
  """An older config.json lacking a field: predicted from by the command line (one note: line
  names the field), then resumed from its first checkpoint, which ends with the test mAP that
  the 0.2.0 release wrote."""
  from comic_jax.training import train
  run = _copy(tmp_path)
  path = os.path.join(run, 'config.json')
  saved = _saved(path)
  del saved['comic']['htb']['temperature']
  atomic.write_json(path, saved)
  x = _test_data().x_test[:5]
  np.savez(tmp_path / 'x.npz', x=x)
  result = _run('comic_jax.predict', f'--workdir={run}', f'--input={tmp_path / "x.npz"}',
                f'--output={tmp_path / "p.csv"}')
  assert result.returncode == 0, result.stderr
  notes = [line for line in result.stderr.splitlines() if line.startswith('note:')]
  assert len(notes) == 1 and 'comic.htb.temperature=1.0' in notes[0]
  with open(tmp_path / 'p.csv') as f:
    rows = list(csv.reader(f))[1:]
  np.testing.assert_allclose(np.array([r[2:] for r in rows], float),
                             comic_jax.load(FIXTURE).predict(x), atol=1e-6)
  # Resumed from the checkpoint of epoch 1 (the training command's path): today's code trains
  # epoch 2 and rewrites config.json with its version.
  shutil.rmtree(os.path.join(run, 'checkpoints', '86'))
  train.train_and_evaluate(_fixture_config(), run)
  assert _saved(path)[versions.VERSION_KEY] == comic_jax.__version__
  log = workdir_lib.read_metrics_log(os.path.join(run, 'metrics.jsonl'))
  assert [entry['step'] for entry in log] == [43, 86]
  resumed = _saved(os.path.join(run, 'results.json'))['BCE']['total']
  recorded = _saved(os.path.join(FIXTURE, 'results.json'))['BCE']['total']
  # The same digits on the fixture's CPU type (AMD EPYC family 25 model 17, the tests' 4
  # devices); on another the second epoch's float rounding differs (docs/architecture.md).
  from comic_jax.training import machine
  same_cpu = machine.local_cpu() == _saved(os.path.join(FIXTURE, 'environment.json'))['cpu']
  assert resumed == pytest.approx(recorded, abs=0 if same_cpu else 0.5)


def test_a_run_is_not_defined_by_the_sections_its_method_does_not_read():
  from comic_jax.methods import registry
  flat = versions.flatten(json.loads(_fixture_config().to_json_best_effort()))
  # Every method section of the default config is declared, with registered readers only.
  sections = {'.'.join(k.split('.')[:2]) if k.startswith('baselines.') else k.split('.')[0]
              for k in flat if k.split('.')[0] in ('comic', 'comic_plus', 'baselines')}
  declared = registry.method_sections()
  assert sections == set(declared)
  assert {m for readers in declared.values() for m in readers} <= set(registry.names())
  identity = lambda flat_: versions.identity(flat_, declared)
  # A BCE run ignores COMIC+'s and LL-R's knobs; a COMIC+ run is defined by COMIC's and Hill's.
  changed = dict(flat, **{'comic_plus.report': 'head', 'baselines.large_loss.delta_rel_r': 0.4})
  assert identity(changed) == identity(flat)
  plus = dict(flat, method='comic_plus')
  for key, value in (('comic.rlc.tau', 0.1), ('comic_plus.report', 'head'),
                     ('baselines.hill.margin', 2.0)):
    assert identity(dict(plus, **{key: value})) != identity(plus), key
  assert identity(dict(plus, **{'baselines.db.a': 7.0})) == identity(plus)
