"""The validation split (PLT-Synth's own, a real source's carved one), its metrics in the run's
outputs, and the benchmark's `--sweep` that chooses a value on it."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from comic_jax import metrics
from comic_jax.data import longtail, plt, sources, synthetic
from comic_jax.training import benchmark, step, train
from conftest import ROOT, tiny_config


def _npz(path, n=160, c=4, seed=0):
  """Feature vectors that carry their labels (an MLP learns them in seconds)."""
  rng = np.random.default_rng(seed)
  y = (rng.random((n, c)) < 0.4).astype(np.int8)
  x = (rng.normal(size=(n, 8)) + 3.0 * y @ rng.normal(size=(c, 8))).astype(np.float32)
  np.savez(path, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
  return x, y


def _npz_config(tmp_path, **overrides):
  return tiny_config(**{'data.name': 'npz', 'data.path': str(tmp_path / 'd.npz'),
                        'data.longtail': 'as_is', 'data.cache_dir': str(tmp_path / 'cache'),
                        'model.backbone': 'mlp', 'augment.kind': 'none', 'batch_size': 16,
                        'eval_batch_size': 16, **overrides})


# ----------------------------------------------------------------------------- PLT-Synth

def test_plt_synth_validation_set_leaves_train_and_test_as_they_were():
  small = dict(seed=3, pool_size=3000, num_test=300, min_test_positives=6)
  data = synthetic.make_plt_synth(**small)
  # The training and test sets re-derived as the data set built them before it had a
  # validation set: test draws from the stream [seed, 1], topped up class by class.
  rng = np.random.default_rng([3, 0])
  pool = synthetic.sample_scenes(3000, rng)
  labels = synthetic.scenes_to_labels(pool)
  targets = longtail.pareto_reference_counts(24, 600, 4, 6.0)
  chosen = longtail.greedy_longtail_subsample(labels, targets, seed=3)
  np.testing.assert_array_equal(data.y_train_full, labels[chosen])
  np.testing.assert_array_equal(
      data.x_train, synthetic.render_scenes([pool[i] for i in chosen], 32, seed=3 * 2 + 11))
  test_rng = np.random.default_rng([3, 1])
  scenes = synthetic.sample_scenes(300, test_rng)
  counts = synthetic.scenes_to_labels(scenes).sum(0)
  for cls in np.flatnonzero(counts < 6):
    scenes += synthetic.sample_scenes(int(6 - counts[cls]), test_rng, forced_class=cls)
  np.testing.assert_array_equal(data.y_test, synthetic.scenes_to_labels(scenes))
  np.testing.assert_array_equal(data.x_test, synthetic.render_scenes(scenes, 32, seed=3 * 2 + 12))
  # The validation set: drawn by the same rules, fully labelled, every class >= 6 positives,
  # other images than the test set's.
  assert data.has_val and data.x_val.shape[1:] == data.x_test.shape[1:]
  assert len(data.y_val) >= 300 and data.y_val.sum(0).min() >= 6
  assert data.y_val.sum(1).min() >= 1                        # every scene has an object
  assert not np.array_equal(data.x_val[:300], data.x_test[:300])
  again = synthetic.make_plt_synth(**small)
  np.testing.assert_array_equal(again.x_val, data.x_val)     # fixed by the data seed


def test_val_fraction_is_refused_for_plt_synth():
  from comic_jax.errors import UserError
  with pytest.raises(UserError, match='val_fraction'):
    sources.validate_config(tiny_config(**{'data.val_fraction': 0.1}).data)


# ----------------------------------------------------------------------------- real sources

def test_split_validation_is_a_seeded_partition():
  keep, held = plt.split_validation(50, 0.2, seed=4)
  assert len(held) == 10 and len(keep) == 40
  np.testing.assert_array_equal(np.sort(np.concatenate([keep, held])), np.arange(50))
  k2, h2 = plt.split_validation(50, 0.2, seed=4)
  np.testing.assert_array_equal(held, h2)
  assert not np.array_equal(held, plt.split_validation(50, 0.2, seed=5)[1])
  assert len(plt.split_validation(50, 0.0, seed=4)[1]) == 0


def test_npz_validation_is_carved_from_training_images_with_observed_labels(tmp_path):
  x, _ = _npz(tmp_path / 'd.npz')
  config = _npz_config(tmp_path, **{'data.val_fraction': 0.25})
  whole = sources.load_dataset(_npz_config(tmp_path).data)
  data = sources.load_dataset(config.data)
  keep, held = plt.split_validation(120, 0.25, config.data.seed)
  np.testing.assert_array_equal(data.x_val, x[:120][held])
  np.testing.assert_array_equal(data.x_train, x[:120][keep])
  np.testing.assert_array_equal(data.y_val, whole.y_train[held])       # observed, not full
  np.testing.assert_array_equal(data.y_train, whole.y_train[keep])
  assert (data.y_val <= whole.y_train_full[held]).all()
  assert data.y_val.sum() < whole.y_train_full[held].sum()
  assert not sources.load_dataset(_npz_config(tmp_path).data).has_val   # default: none


def test_run_logs_validation_every_epoch_and_the_test_set_once(tmp_path):
  _npz(tmp_path / 'd.npz')
  config = _npz_config(tmp_path, **{'data.val_fraction': 0.25, 'num_epochs': 3})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    log = [json.loads(line) for line in f]
  assert [('val' in e, 'eval' in e) for e in log] == [(True, False)] * 2 + [(True, True)]
  with open(os.path.join(workdir, 'results.json')) as f:
    assert log[-1]['eval'] == json.load(f)
  with open(os.path.join(workdir, 'val_results.json')) as f:
    val = json.load(f)
  assert log[-1]['val'] == val
  # The validation metrics are those of the run's model on the carved images.
  run = train.Trainer.open(config, workdir)
  run.restore()
  data = run.data
  probs = step.predict_dataset(run.predict_step, run.state, data.x_val, 16, run.sharded)
  expected = metrics.multilabel_metrics(probs['BCE'], data.y_val, run.groups)[0]
  assert val['BCE']['total'] == pytest.approx(expected['total'], abs=1e-6)
  # thresholds.json: per class, the threshold with the best F1 on the validation split, checked
  # against a brute-force search over every candidate threshold.
  with open(os.path.join(workdir, 'thresholds.json')) as f:
    saved = np.array(json.load(f)['thresholds']['BCE'])
  y = np.asarray(data.y_val) > 0
  for c in np.flatnonzero(y.sum(0)):
    f1 = lambda t: 2 * ((probs['BCE'][:, c] >= t) & y[:, c]).sum() / (
        (probs['BCE'][:, c] >= t).sum() + y[:, c].sum())
    best = max(f1(t) for t in probs['BCE'][:, c])
    assert f1(saved[c]) == pytest.approx(best), c


# ----------------------------------------------------------------------------- sweeps

def test_parse_sweep_takes_the_fields_type():
  base = ml_collections.ConfigDict({'a': {'tau': 0.7, 'n': 2, 'on': True, 'kind': 'x'}})
  assert benchmark.parse_sweep('a.tau=0.6,0.8', base) == ('a.tau', (0.6, 0.8))
  assert benchmark.parse_sweep('a.n=1,3', base) == ('a.n', (1, 3))
  assert benchmark.parse_sweep('a.on=True,false', base) == ('a.on', (True, False))
  assert benchmark.parse_sweep('a.kind=y,z', base) == ('a.kind', ('y', 'z'))
  from comic_jax.errors import UserError
  for bad, message in (('a.nope=1', 'no field'), ('a.tau', 'FIELD=v1'), ('a.n=1.5', 'not a int')):
    with pytest.raises(UserError, match=message):
      benchmark.parse_sweep(bad, base)


def test_choose_picks_the_best_mean_validation_total(tmp_path):
  exp = benchmark.Experiment('bce', 'BCE', 'bce')
  family = benchmark.sweep_variants([exp], 'optim.learning_rate', (0.1, 0.01))[0]
  assert [v.key for v in family] == ['bce/optim.learning_rate=0.1', 'bce/optim.learning_rate=0.01']
  assert family[1].overrides == (('optim.learning_rate', 0.01),)
  # value 0.1: seeds 40 and 10 (mean 25); value 0.01: 30 and 30 (mean 30).
  for v, scores in zip(family, ((40.0, 10.0), (30.0, 30.0))):
    for seed, score in enumerate(scores):
      d = tmp_path / benchmark.run_dir('', v, seed)
      d.mkdir(parents=True)
      (d / 'val_results.json').write_text(json.dumps({'BCE': {'total': score, 'few': 1.0}}))
  assert benchmark.choose(str(tmp_path), family, seeds=2) == 1
  assert benchmark.choose(str(tmp_path), family, seeds=1) == 0       # seed 0 only: 40 > 30
  path = benchmark.write_sweep(str(tmp_path), 'optim.learning_rate', (0.1, 0.01), [family], [1], 2)
  lines = open(path).read().splitlines()
  assert lines[2] == '| BCE | 0.1 | 25.00 | 1.00 |  |'
  assert lines[3] == '| BCE | 0.01 | 30.00 | 1.00 | ✓ |'


def test_benchmark_sweep_reports_the_chosen_values_test_metrics(tmp_path):
  _npz(tmp_path / 'd.npz')
  workdir = tmp_path / 'bench'
  out = subprocess.run(
      [sys.executable, '-m', 'comic_jax.benchmark', '--config=configs/npz.py',
       f'--workdir={workdir}', '--methods=bce', '--seeds=1',
       '--sweep=optim.learning_rate=1e-07,0.01',
       f'--config.data.path={tmp_path / "d.npz"}', '--config.data.longtail=as_is',
       '--config.data.val_fraction=0.25', f'--config.data.cache_dir={tmp_path / "cache"}',
       '--config.model.backbone=mlp', '--config.augment.kind=none', '--config.batch_size=16',
       '--config.eval_batch_size=16', '--config.num_epochs=2', '--plot_methods='],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  val, test = {}, {}
  for lr in ('1e-07', '0.01'):
    d = workdir / 'bce' / f'optim.learning_rate={lr}' / 'seed0'
    val[lr] = json.loads((d / 'val_results.json').read_text())['BCE']['total']
    test[lr] = json.loads((d / 'results.json').read_text())['BCE']
  best = max(val, key=val.get)
  assert best == '0.01'                      # a learning rate of 1e-7 learns nothing
  table = (workdir / 'table.md').read_text().splitlines()
  assert f'{test[best]["total"]:.2f} ± 0.00' in table[2]
  sweep = (workdir / 'sweep.md').read_text().splitlines()
  assert '✓' in [line for line in sweep if '| 0.01 |' in line][0]
