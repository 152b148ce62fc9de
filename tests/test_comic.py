import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax import metrics
from comic_jax.data import pipeline, sources
from comic_jax.methods import registry
from comic_jax.training import step, train
from conftest import COMIC_TINY, tiny_config


def comic_config(**overrides):
  return tiny_config(**{'method': 'comic', **overrides})


def tiny_comic_config(**overrides):
  """COMIC with narrow branches and 300 test images: for the tests of plumbing, not quality."""
  return comic_config(**{**COMIC_TINY, **overrides})


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f) if name.endswith('.json') else [json.loads(line) for line in f]


def _nonzero(tree) -> bool:
  return any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(jax.device_get(tree)))


def test_each_branch_is_trained_by_its_own_terms_only(tmp_path):
  run = train.Trainer.open(tiny_comic_config(), str(tmp_path))
  method, state = run.method, run.state
  assert set(state.params) == {'head', 'tail', 'balanced', 'attention'}
  step = method.warmup_steps + 1                 # RLC active
  batch = pipeline.host_to_global(run.batch(step), run.sharded)
  rng = jax.random.key(0)
  owners = {'head': {'head'}, 'tail': {'tail'}, 'balanced': {'balanced', 'attention'}}

  def stacked_terms(params):
    terms, _ = method.loss_terms(params, state.batch_stats, state.method_state, batch, rng,
                                 jnp.asarray(step))
    return jnp.stack([terms[term] for term in owners])

  @jax.jit
  def term_grad(params, onehot):   # one compiled backward pass, run once per term
    return jax.vjp(stacked_terms, params)[1](onehot)[0]

  for i, (term, owned) in enumerate(owners.items()):
    grads = term_grad(state.params, jnp.eye(len(owners))[i])
    for module, g in grads.items():
      assert _nonzero(g) == (module in owned), (term, module)


def _method_and_shapes(config):
  """The method a trainer of `config` builds and the shapes of its initial (params, batch_stats,
  method_state), traced without compiling (jax.eval_shape)."""
  data = sources.load_dataset(config.data)
  method = registry.create_method(config, data.y_train, len(data.x_train) // config.batch_size,
                                  data.class_names)
  samplers = step.create_samplers(method, data.y_train, config.batch_size, config.seed)
  example = jax.tree.map(lambda x: x[:1],
                         pipeline.train_batch(data, samplers, method.streams, 0, config.seed))
  return method, jax.eval_shape(method.init, jax.random.key(0), example)


def test_comic_state_holds_energies_and_rlc_counters():
  config = tiny_comic_config()
  method, (_, _, ms) = _method_and_shapes(config)
  assert set(ms) == {'energy', 'rlc'}
  assert set(ms['energy']) == {'head', 'tail'}
  assert ms['energy']['head'].trace.shape == (config.model.projection_dim,)
  assert set(ms['rlc']) == {'head', 'tail', 'balanced'}
  assert {k: s.sampler for k, s in method.streams.items()} == {'main': 'uniform',
                                                              'tail': 'class_reversed'}


def test_ablations_change_the_model():
  no_htb, (params, _, method_state) = _method_and_shapes(
      tiny_comic_config(**{'comic.htb.enabled': False}))
  assert set(params) == {'balanced'}
  assert no_htb.report_names == ('COMIC',)
  assert {k: s.sampler for k, s in no_htb.streams.items()} == {'main': 'uniform'}
  assert 'energy' not in method_state
  no_rlc, _ = _method_and_shapes(tiny_comic_config(**{'comic.lambda_c': 0.0}))
  assert not no_rlc.use_rlc


def test_tiny_comic_run_reports_three_models_and_corrections(comic_trained):
  workdir, config = comic_trained
  results = _read(workdir, 'results.json')
  assert list(results) == ['COMIC', 'Head Model', 'Tail Model']
  data = sources.load_dataset(config.data)
  groups = sources.training_groups(data, config.data)
  chance = metrics.multilabel_metrics(np.random.default_rng(0).random(data.y_test.shape),
                                      data.y_test, groups)[0]
  for name in results:
    assert results[name]['total'] > 1.5 * chance['total'], (name, results[name], chance)
  log = _read(workdir, 'metrics.jsonl')
  assert all(v == {'corrections': 0, 'true': 0, 'false': 0} for v in log[0]['rlc'].values())
  for line in log[1:]:   # after the 1-epoch warm-up
    for branch, r in line['rlc'].items():
      assert r['corrections'] == r['true'] + r['false']
    assert sum(r['corrections'] for r in line['rlc'].values()) > 0
  # The per-step counts in `train` add up to the epoch's counters.
  spe = len(data.x_train) // config.batch_size
  assert log[1]['train']['head_corrections'] * spe == pytest.approx(
      log[1]['rlc']['head']['corrections'], rel=1e-6)


def test_interrupted_comic_run_resumes_to_the_same_metrics(comic_trained, tmp_path):
  straight, config = comic_trained
  assert config.to_dict() == tiny_comic_config(num_epochs=2).to_dict()
  resumed = str(tmp_path / 'r')
  train.train_and_evaluate(config, resumed, stop_after_epochs=1)
  train.train_and_evaluate(config, resumed)
  a, b = _read(straight, 'results.json'), _read(resumed, 'results.json')
  for name in ('COMIC', 'Head Model', 'Tail Model'):
    for key in metrics.METRIC_KEYS:
      assert a[name][key] == pytest.approx(b[name][key], abs=1e-6), (name, key)
  la, lb = _read(straight, 'metrics.jsonl'), _read(resumed, 'metrics.jsonl')
  assert la[-1]['rlc'] == lb[-1]['rlc']


def test_comic_trains_with_a_linear_classifier(tmp_path):
  """The energy term projects e_t onto each class's weights, (C, d), whichever classifier holds
  them (a linear one stores its kernel (d, C))."""
  from comic_jax.models import heads
  run = train.Trainer.open(tiny_comic_config(**{'model.classifier': 'linear'}), str(tmp_path))
  classifier = run.state.params['head']['classifier']
  np.testing.assert_array_equal(heads.class_weights(classifier),
                                np.asarray(classifier['dense']['kernel']).T)
  batch = pipeline.host_to_global(run.batch(run.method.warmup_steps + 1), run.sharded)
  state, step_metrics = jax.eval_shape(run.train_step, run.state, batch,
                                         run.train_key)   # traces every term
  assert {'loss', 'head_rlc', 'balanced_corrections'} <= set(step_metrics)
