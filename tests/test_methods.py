import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax import metrics
from comic_jax.errors import UserError
from comic_jax.methods import registry
from comic_jax.training import train
from conftest import tiny_config


def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def _per_class(workdir, name):
  with open(os.path.join(workdir, 'per_class_ap.json')) as f:
    return json.load(f)['ap'][name]


SINGLE_BRANCH = ('bce', 'focal', 'asl', 'db', 'db_focal', 'pseudo_label', 'ml_gcn', 'hill',
                 'pasl')


@pytest.mark.parametrize('name', SINGLE_BRANCH)
def test_every_baseline_loss_is_finite_and_differentiable(name):
  rng = np.random.default_rng(0)
  y = (rng.random((64, 6)) < 0.3).astype(np.float32)
  y[:, 5] = 0                                   # a class with no observed positive
  config = tiny_config(method=name)
  loss = registry.create_method(config, y, 2, [str(c) for c in range(6)]).loss_fn
  z = jnp.asarray(rng.normal(size=(8, 6)) * 3, jnp.float32)
  for step in (0, 5):                           # before and after any warm-up
    value, grad = jax.value_and_grad(loss)(z, jnp.asarray(y[:8]), jnp.asarray(step))
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad)), name


def test_db_trains_with_class_aware_batches_others_with_uniform():
  y = np.eye(4, dtype=np.float32).repeat(10, 0)
  for name, sampler in (('db', 'class_aware'), ('db_focal', 'class_aware'), ('bce', 'uniform'),
                        ('pasl', 'uniform')):
    m = registry.create_method(tiny_config(method=name), y, 1, ['a', 'b', 'c', 'd'])
    assert {k: s.sampler for k, s in m.streams.items()} == {'main': sampler}


def test_ml_gcn_says_when_it_falls_back(capsys):
  y = (np.random.default_rng(0).random((40, 4)) < 0.4).astype(np.float32)
  m = registry.create_method(tiny_config(method='ml_gcn'), y, 1, ['a', 'b', 'c', 'd'])
  assert 'no word vectors given' in capsys.readouterr().out
  assert m.network.classifier.node_features.shape == (4, 4)    # one-hot


def test_lws_learns_only_scales_and_keeps_per_class_ap(tmp_path, bce_run):
  stage1 = str(tmp_path / 'bce')          # the shared 1-epoch BCE run (a copy: LWS only reads it)
  shutil.copytree(bce_run[0], stage1)
  with pytest.raises(UserError, match='stage1_workdir'):
    train.Trainer.open(tiny_config(method='lws'), str(tmp_path / 'x'))
  config = tiny_config(method='lws', num_epochs=2, **{'baselines.lws.stage1_workdir': stage1,
                                                     'optim.learning_rate': 0.05})
  state = train.train_and_evaluate(config, str(tmp_path / 'lws'))
  assert set(state.params) == {'scales'}
  scales = np.asarray(state.params['scales'])
  assert np.all(scales > 0) and np.abs(scales - 1).max() > 1e-3      # the scales did move
  bce, lws = _results(stage1)['BCE'], _results(str(tmp_path / 'lws'))['LWS']
  # A positive per-class scale leaves the sign of every logit (hence the p >= 0.5 predictions)
  # unchanged ...
  for key in ('precision', 'recall', 'f1'):
    assert lws[key] == pytest.approx(bce[key], abs=1e-6)
  # ... and never inverts two images' order within a class. In float32 a scale below 1 can make
  # two neighbouring scores equal (seen on one of this project's machines: two probabilities 1 ulp
  # apart, 0.03765999 and 0.03766001, both 0.06217807 after scaling), and AP counts tied scores
  # as one threshold; so each class's AP is that of stage 1's scores with LWS's ties merged.
  def probabilities(run_config, workdir, name):
    run = train.Trainer.open(run_config, workdir)
    run.restore()
    return run.predict(np.asarray(run.data.x_test))[name], run.data.y_test
  p_bce, y = probabilities(bce_run[1], stage1, 'BCE')
  p_lws, _ = probabilities(config, str(tmp_path / 'lws'), 'LWS')
  ap_lws, ap_bce = _per_class(str(tmp_path / 'lws'), 'LWS'), _per_class(stage1, 'BCE')
  for c in range(y.shape[1]):
    order = np.argsort(-p_bce[:, c], kind='mergesort')
    assert np.all(np.diff(p_lws[order, c]) <= 0)                # no inversion
    merged = p_bce[:, c].copy()                                 # stage 1 with LWS's ties merged
    for value in np.unique(p_lws[:, c]):
      tie = p_lws[:, c] == value
      merged[tie] = p_bce[tie, c].max()
    assert 100 * metrics.average_precision(merged, y[:, c]) == pytest.approx(ap_lws[c], abs=1e-9)
    if len(np.unique(p_lws[:, c])) == len(np.unique(p_bce[:, c])):  # no tie made: the same AP
      assert ap_lws[c] == pytest.approx(ap_bce[c], abs=1e-9)
