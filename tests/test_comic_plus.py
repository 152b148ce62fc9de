"""COMIC+ (docs/method.md "COMIC+") and the distillation reading of L_htb, against NumPy."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import comic_jax
from comic_jax import metrics
from comic_jax.errors import UserError
from comic_jax.losses import htb
from comic_jax.methods import comic, comic_plus, registry
from comic_jax.training import train
from conftest import tiny_config


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------- pure functions

@pytest.mark.parametrize('temperature', [1.0, 2.5])
def test_distill_loss_matches_numpy_and_trains_only_the_student(temperature):
  rng = np.random.default_rng(0)
  teacher, student = rng.normal(size=(2, 5, 6)) * 3
  p = np.exp(np_log_softmax(teacher / temperature))
  expected = temperature ** 2 * np.mean(-(p * np_log_softmax(student / temperature)).sum(1))
  ours = htb.distill_loss(jnp.asarray(teacher), jnp.asarray(student), temperature)
  np.testing.assert_allclose(ours, expected, rtol=1e-5)
  # Gradient w.r.t. the student: T * (softmax(s / T) - softmax(t / T)) / B; none to the teacher.
  g_s = jax.grad(lambda s: htb.distill_loss(jnp.asarray(teacher), s, temperature))(
      jnp.asarray(student))
  q = np.exp(np_log_softmax(student / temperature))
  np.testing.assert_allclose(g_s, temperature * (q - p) / 5, rtol=1e-4, atol=1e-6)
  g_t = jax.grad(lambda t: htb.distill_loss(t, jnp.asarray(student), temperature))(
      jnp.asarray(teacher))
  assert not np.any(np.asarray(g_t))


@pytest.mark.parametrize('temperature', [1.0, 2.0])
def test_sigmoid_distill_loss_matches_numpy_and_trains_only_the_student(temperature):
  rng = np.random.default_rng(2)
  teacher, student = rng.normal(size=(2, 5, 6)) * 3
  t = 1 / (1 + np.exp(-teacher / temperature))
  q = 1 / (1 + np.exp(-student / temperature))
  expected = temperature ** 2 * np.mean(-(t * np.log(q) + (1 - t) * np.log(1 - q)).sum(1))
  ours = htb.sigmoid_distill_loss(jnp.asarray(teacher), jnp.asarray(student), temperature)
  np.testing.assert_allclose(ours, expected, rtol=1e-5)
  # Gradient w.r.t. the student: T * (sigmoid(s / T) - sigmoid(t / T)) / B; none to the teacher.
  g_s = jax.grad(lambda s: htb.sigmoid_distill_loss(jnp.asarray(teacher), s, temperature))(
      jnp.asarray(student))
  np.testing.assert_allclose(g_s, temperature * (q - t) / 5, rtol=1e-4, atol=1e-6)
  g_t = jax.grad(lambda x: htb.sigmoid_distill_loss(x, jnp.asarray(student), temperature))(
      jnp.asarray(teacher))
  assert not np.any(np.asarray(g_t))
  zh, zt = jnp.asarray(teacher), jnp.asarray(rng.normal(size=(5, 6)))
  y = jnp.zeros((5, 6))
  np.testing.assert_allclose(
      htb.htb_loss_of('distill_sigmoid', zh, zt, jnp.asarray(student), y, 0.3, 0.7, temperature),
      0.3 * htb.sigmoid_distill_loss(zh, jnp.asarray(student), temperature) +
      0.7 * htb.sigmoid_distill_loss(zt, jnp.asarray(student), temperature), rtol=1e-6)


def test_htb_loss_of_dispatches_both_readings():
  rng = np.random.default_rng(1)
  zh, zt, zb = (jnp.asarray(rng.normal(size=(4, 5))) for _ in range(3))
  y = jnp.asarray((rng.random((4, 5)) < 0.4).astype(np.float32))
  assert float(htb.htb_loss_of('product', zh, zt, zb, y, 0.3, 0.7)) == pytest.approx(
      float(htb.htb_loss(zh, zt, zb, y, 0.3, 0.7)))
  zbn = np.asarray(zb)
  expected = sum(k * np.mean(-(np.exp(np_log_softmax(np.asarray(t))) *
                               np_log_softmax(zbn)).sum(1)) for k, t in ((0.3, zh), (0.7, zt)))
  np.testing.assert_allclose(htb.htb_loss_of('distill', zh, zt, zb, y, 0.3, 0.7), expected,
                             rtol=1e-5)
  with pytest.raises(ValueError):
    htb.htb_loss_of('nope', zh, zt, zb, y, 0.3, 0.7)


def test_fuse_logits_matches_numpy():
  rng = np.random.default_rng(2)
  zs = [rng.normal(size=(3, 4)) * 4 for _ in range(3)]
  p = np.mean([np_sigmoid(z) for z in zs], 0)
  np.testing.assert_allclose(comic_plus.fuse_logits([jnp.asarray(z) for z in zs], 'prob'),
                             np.log(p / (1 - p)), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(comic_plus.fuse_logits([jnp.asarray(z) for z in zs], 'logit'),
                             np.mean(zs, 0), rtol=1e-5, atol=1e-5)
  one = comic_plus.fuse_logits([jnp.asarray(zs[0])], 'prob')
  np.testing.assert_allclose(one, zs[0], rtol=1e-3, atol=1e-3)        # a single model: itself
  huge = comic_plus.fuse_logits([jnp.full((1, 1), 1e3), jnp.full((1, 1), 1e3)], 'prob')
  assert np.isfinite(np.asarray(huge)).all()


def test_trust_better_weights_swap_the_papers_kappa():
  kh, kt = comic_plus.trust_better_weights(jnp.array(1.0), jnp.array(2.0), alpha=2.0)
  np.testing.assert_allclose([kh, kt], [4 / 5, 1 / 5], rtol=1e-6)   # L_t^2 / (L_h^2 + L_t^2)
  ph, pt = htb.htb_weights(jnp.array(0.4), jnp.array(3.0), alpha=2.0)
  bh, bt = comic_plus.trust_better_weights(jnp.array(0.4), jnp.array(3.0), alpha=2.0)
  np.testing.assert_allclose([bh, bt], [pt, ph], rtol=1e-6)


# ----------------------------------------------------------------------------- the method

def _npz(path, n=160, c=4, seed=0, frequencies=None):
  rng = np.random.default_rng(seed)
  y = (rng.random((n, c)) < (0.4 if frequencies is None else np.asarray(frequencies))
       ).astype(np.int8)
  if frequencies is None:
    y[:, 3] = (rng.random(n) < 0.08)                                  # a rare class
  x = (rng.normal(size=(n, 8)) + 3.0 * y @ rng.normal(size=(c, 8))).astype(np.float32)
  np.savez(path, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])


def _config(tmp_path, **overrides):
  return tiny_config(**{'method': 'comic_plus', 'data.name': 'npz',
                        'data.path': str(tmp_path / 'd.npz'), 'data.longtail': 'as_is',
                        'data.val_fraction': 0.25, 'data.cache_dir': str(tmp_path / 'cache'),
                        'model.backbone': 'mlp', 'model.mlp_widths': (32,),
                        'model.projection_dim': 16, 'comic.htb.attention_dim': 8,
                        'augment.kind': 'none', 'batch_size': 16, 'eval_batch_size': 16,
                        **overrides})


@pytest.fixture(scope='module')
def fusion_run(tmp_path_factory):
  """(config, workdir) of a 2-epoch COMIC+ run that reports the fusion of its three models and
  evaluates an exponential moving average of its parameters (decay 0.5): trained once for the
  tests of resuming, of the fusion and of the average."""
  folder = tmp_path_factory.mktemp('fusion')
  _npz(folder / 'd.npz')
  config = _config(folder, num_epochs=2, **{'comic_plus.report': 'fusion',
                                             'comic_plus.fusion': 'prob',
                                             'comic_plus.members': ('balanced', 'head', 'tail'),
                                             'comic_plus.ema': 0.5})
  workdir = str(folder / 'straight')
  train.train_and_evaluate(config, workdir)
  return config, workdir


def test_tiny_comic_plus_run_resumes_and_reports_the_fusion(fusion_run, tmp_path):
  config, straight = fusion_run
  resumed = str(tmp_path / 'r')
  train.train_and_evaluate(config, resumed, stop_after_epochs=1)
  train.train_and_evaluate(config, resumed)
  read = lambda d, n: json.load(open(os.path.join(d, n)))
  a, b = read(straight, 'results.json'), read(resumed, 'results.json')
  assert set(a) == {'Balanced Model', 'Head Model', 'Tail Model', 'COMIC+'}
  for name in a:
    for key in metrics.METRIC_KEYS:
      assert a[name][key] == pytest.approx(b[name][key], abs=1e-6), (name, key)
  va, vb = read(straight, 'val_results.json'), read(resumed, 'val_results.json')
  assert set(va) == set(a)
  for name in va:
    assert va[name]['total'] == pytest.approx(vb[name]['total'], abs=1e-6), name
  # "COMIC+" is the mean of the three models' probabilities (NumPy on the models' logits).
  run = train.Trainer.open(config, straight)
  run.restore()
  logits = jax.device_get(jax.jit(run.method.predict)(
      run.state.params, run.state.batch_stats, run.state.method_state,
      jnp.asarray(run.data.x_test)))
  p = np.mean([np_sigmoid(np.asarray(logits[m], np.float64))
               for m in ('Balanced Model', 'Head Model', 'Tail Model')], 0)
  expected = metrics.multilabel_metrics(p, run.data.y_test, run.groups)[0]
  assert a['COMIC+']['total'] == pytest.approx(expected['total'], abs=1e-3)
  # Loaded without model=, the run (and its export, and the audit) answers with the row its
  # table reports, "COMIC+" (the fusion), not one of the members.
  from comic_jax.audit import suspects as audit
  from comic_jax.inference import export
  loaded = comic_jax.load(straight)
  exported = comic_jax.load(export.export_model(straight, str(tmp_path / 'export')))
  assert loaded.model == exported.model == audit.Audit(straight).model.model == 'COMIC+'
  for model in (loaded, exported):
    probs = model.predict(run.data.x_test).astype(np.float64)
    got = metrics.multilabel_metrics(probs, run.data.y_test, run.groups)[0]['total']
    assert got == pytest.approx(a['COMIC+']['total'], abs=1e-6)
    assert got != pytest.approx(a['Balanced Model']['total'], abs=1e-6)


def test_comic_plus_with_every_change_off_is_comic(tmp_path):
  _npz(tmp_path / 'd.npz')
  off = {'comic_plus.htb_loss': 'product', 'comic_plus.kappa': 'worse',
         'comic_plus.report': 'balanced', 'comic_plus.lambda_b': 1.0,
         'comic_plus.teacher_loss': 'mfm', 'comic_plus.teacher_classifier': '',
         'comic_plus.teacher_energy': True, 'num_epochs': 1}
  train.train_and_evaluate(_config(tmp_path, **off), str(tmp_path / 'plus'))
  train.train_and_evaluate(_config(tmp_path, method='comic', num_epochs=1), str(tmp_path / 'c'))
  plus = json.load(open(tmp_path / 'plus' / 'results.json'))
  paper = json.load(open(tmp_path / 'c' / 'results.json'))
  assert plus['COMIC+'] == pytest.approx(paper['COMIC'], abs=1e-6)
  assert plus['Head Model'] == pytest.approx(paper['Head Model'], abs=1e-6)


def test_comic_plus_config_errors_and_registration():
  spec = registry.get('comic_plus')
  assert spec.display_name == 'COMIC+' and spec.primary_model == 'COMIC+'
  assert [r.label for r in spec.studies['modules']][0] == 'COMIC+'
  for field, value in (('report', 'best'), ('fusion', 'max'), ('kappa', 'x'),
                       ('htb_loss', 'official2'), ('members', ('balanced', 'nope')),
                       ('branch_loss', 'asl'), ('teacher_loss', 'asl'),
                       ('teacher_classifier', 'gcn')):
    with pytest.raises(UserError, match='comic'):
      spec.validate(tiny_config(**{'method': 'comic_plus', f'comic_plus.{field}': value}))
  # COMIC's weight of L_htb, given to COMIC+, would be ignored: refused, naming the right field.
  with pytest.raises(UserError, match='comic_plus.lambda_b'):
    spec.validate(tiny_config(**{'method': 'comic_plus', 'comic.lambda_b': 2.0}))
  spec.validate(tiny_config(**{'method': 'comic_plus', 'comic.lambda_b': 2.0,
                               'comic_plus.lambda_b': 2.0}))
  # The teachers' energy weights are refused when COMIC+ leaves the energy term out.
  with pytest.raises(UserError, match='teacher_energy'):
    spec.validate(tiny_config(**{'method': 'comic_plus', 'comic.htb.a_head': 2.0}))
  spec.validate(tiny_config(**{'method': 'comic_plus', 'comic.htb.a_head': 2.0,
                               'comic_plus.teacher_energy': True}))


def test_branch_loss_choices_match_their_references():
  """comic_plus.branch_loss: Hill's loss (NumPy, docs/baselines.md) or plain BCE in place of MFM."""
  rng = np.random.default_rng(0)
  y_train = (rng.random((40, 5)) < 0.3).astype(np.int8)
  z = rng.normal(size=(6, 5)).astype(np.float32) * 3
  y = (rng.random((6, 5)) < 0.4).astype(np.float32)

  def loss(kind, teacher=False):
    field = 'teacher_loss' if teacher else 'branch_loss'
    config = tiny_config(**{'method': 'comic_plus', f'comic_plus.{field}': kind})
    method = comic_plus.ComicPlus(config, y_train, 10)
    fn = method.teacher_loss if teacher else method.branch_loss
    return float(fn(jnp.asarray(z), jnp.asarray(y)))

  p = 1 / (1 + np.exp(-z))
  pm = 1 / (1 + np.exp(-(z - 1.0)))
  hill = y * -((1 - pm) ** 2) * np.log(pm) + (1 - y) * (1.5 - p) * p ** 2
  bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  assert loss('hill') == pytest.approx(hill.sum(1).mean(), rel=1e-5)
  assert loss('bce') == pytest.approx(bce.sum(1).mean(), rel=1e-5)
  assert loss('mfm') != pytest.approx(loss('bce'), rel=1e-3)
  # comic_plus.teacher_loss: the same choices for the head and tail branches (and kappa).
  assert loss('hill', teacher=True) == pytest.approx(hill.sum(1).mean(), rel=1e-5)
  assert loss('mfm', teacher=True) == pytest.approx(loss('mfm'), rel=1e-6)


def test_teachers_have_their_own_classifier_and_no_energy_term():
  """COMIC+'s teachers: a linear classifier (kernel (d, C)) while the balanced branch keeps the
  cosine one, and logits without the energy term (a_head = a_tail = 0); with the paper's
  settings, cosine teachers and COMIC's energy factors."""
  from comic_jax.methods import comic
  y_train = (np.random.default_rng(0).random((40, 5)) < 0.3).astype(np.int8)
  config = tiny_config(method='comic_plus')
  method = comic_plus.ComicPlus(config, y_train, 10)
  params = jax.eval_shape(method.network.init, jax.random.key(0),
                          jnp.zeros((2, 32, 32, 3), jnp.float32))['params']
  d = config.model.projection_dim
  for branch in ('head', 'tail'):
    assert params[branch]['classifier']['dense']['kernel'].shape == (d, 5)
  assert 'dense' not in params['balanced']['classifier']
  assert method.energy_factor == {'head': 0.0, 'tail': 0.0}
  paper = comic_plus.ComicPlus(tiny_config(**{
      'method': 'comic_plus', 'comic_plus.teacher_classifier': '',
      'comic_plus.teacher_energy': True}), y_train, 10)
  paper_params = jax.eval_shape(paper.network.init, jax.random.key(0),
                                jnp.zeros((2, 32, 32, 3), jnp.float32))['params']
  assert 'dense' not in paper_params['head']['classifier']
  assert paper.energy_factor == comic.Comic(tiny_config(method='comic'), y_train,
                                            10).energy_factor == {'head': 1.0, 'tail': -1.0}


def test_report_auto_reports_the_candidate_best_on_validation(tmp_path):
  _npz(tmp_path / 'd.npz')
  config = _config(tmp_path, num_epochs=1, **{'comic_plus.report': 'auto',
                                               'comic_plus.report_per_group': False})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  read = lambda n: json.load(open(os.path.join(workdir, n)))
  val, test = read('val_results.json'), read('results.json')
  choice = val.pop('report_choice')
  candidates = comic_plus.AUTO_CANDIDATES
  assert set(test) == {'COMIC+', *candidates} and set(choice['candidates']) == set(candidates)
  # The choice is the best validation total mAP (the first on ties); never the test set's.
  best = max(val[c]['total'] for c in candidates)
  assert choice['COMIC+'] == next(c for c in candidates if val[c]['total'] == best)
  assert choice['candidates'] == {c: val[c]['total'] for c in candidates}
  assert val['COMIC+'] == val[choice['COMIC+']] and test['COMIC+'] == test[choice['COMIC+']]
  # The fusions are the mean probabilities of their members (NumPy on the models' logits).
  model = comic_jax.load(workdir)
  assert model.model == 'COMIC+'           # predict answers with the choice by default
  x = np.load(tmp_path / 'd.npz')['x_test']
  probs = model.predict_all(x)
  np.testing.assert_array_equal(probs['COMIC+'], probs[choice['COMIC+']])
  fused = np.mean([probs[m] for m in ('Balanced Model', 'Head Model', 'Tail Model')], 0)
  np.testing.assert_allclose(probs['Fusion (balanced, head, tail)'], fused, atol=2e-6)


def test_choose_per_group_takes_each_group_s_best_candidate():
  names = ('a', 'b', 'c')
  nan = float('nan')
  val = {'a': {'total': 30.0, 'many': 50.0, 'medium': 20.0, 'few': nan},
         'b': {'total': 31.0, 'many': 40.0, 'medium': 25.0, 'few': nan},
         'c': {'total': 29.0, 'many': 50.0, 'medium': 25.0, 'few': nan}}
  groups = np.array([2, 0, 1, 1, 0])        # few, many, medium, medium, many
  index, picks = comic_plus.choose_per_group(val, groups, names)
  # many: a and c tie at 50, the first wins; medium: b (first of the tie); few: no score, so the
  # best total (b).
  assert picks == {'many': 'a', 'medium': 'b', 'few': 'b'}
  np.testing.assert_array_equal(index, [1, 0, 1, 1, 0])


def test_report_per_group_reports_each_group_s_choice(tmp_path):
  # 120 training images, 90 after the carve: classes of ~54 / 45 (many), ~27 / 18 (medium)
  # and ~9 / 7 (few) positives.
  _npz(tmp_path / 'd.npz', c=6, frequencies=(0.6, 0.5, 0.3, 0.2, 0.1, 0.08))
  config = _config(tmp_path, num_epochs=1, **{'comic_plus.report': 'auto',
                                               'comic_plus.report_per_group': True,
                                               'data.many_threshold': 35,
                                               'data.few_threshold': 12})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  read = lambda n: json.load(open(os.path.join(workdir, n)))
  val, test, per_class = read('val_results.json'), read('results.json'), read('per_class_ap.json')
  choice = val.pop('report_choice')
  assert choice['COMIC+'] == 'per class group'
  for group in ('many', 'medium', 'few'):   # each group's pick: the best of its validation mAP
    scores = np.array([val[c][group] for c in comic_plus.AUTO_CANDIDATES], float)  # None: NaN
    if not np.all(np.isnan(scores)):
      assert choice['groups'][group] == comic_plus.AUTO_CANDIDATES[int(np.nanargmax(scores))]
  # Each class's test AP is that of its group's pick, and the reported mAP their mean.
  ap = per_class['ap']
  expected = [ap[choice['groups'][g]][c] for c, g in enumerate(per_class['group'])]
  np.testing.assert_allclose(ap['COMIC+'], expected, atol=1e-9)
  assert test['COMIC+']['total'] == pytest.approx(np.nanmean(expected), abs=1e-6)


def test_ema_update_and_debiased_value_match_numpy():
  """comic_plus.ema: a_t = d a_{t-1} + (1 - d) x_t from zeros, read as a_t / (1 - d^t)."""
  rng = np.random.default_rng(0)
  xs = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(5)]
  decay = 0.9
  like = {'w': jnp.asarray(xs[0]), 'b': {'s': jnp.asarray(xs[0][0], jnp.bfloat16)}}
  state = comic_plus.ema_init(like)
  # No step yet: the value is the parameters themselves.
  got = comic_plus.ema_value(state, decay, like)
  np.testing.assert_array_equal(np.asarray(got['w']), xs[0])
  average = np.zeros((3, 2))
  for t, x in enumerate(xs, 1):
    tree = {'w': jnp.asarray(x), 'b': {'s': jnp.asarray(x[0], jnp.bfloat16)}}
    state = {'average': comic_plus.ema_update(state['average'], tree, decay),
             'count': state['count'] + 1}
    average = decay * average + (1 - decay) * x.astype(np.float64)
    got = comic_plus.ema_value(state, decay, like)
    np.testing.assert_allclose(np.asarray(got['w']), average / (1 - decay ** t), rtol=1e-5)
    assert got['b']['s'].dtype == jnp.bfloat16
  # The debiased mean weights x_t by (1 - d) d^(5 - t) / (1 - d^5): a weighted mean of the xs.
  weights = np.array([(1 - decay) * decay ** (5 - t) for t in range(1, 6)]) / (1 - decay ** 5)
  np.testing.assert_allclose(np.asarray(got['w']), np.tensordot(weights, np.stack(xs), 1),
                             rtol=1e-5)
  with pytest.raises(UserError, match='comic_plus.ema'):
    registry.get('comic_plus').validate(tiny_config(**{'method': 'comic_plus',
                                                       'comic_plus.ema': 1.0}))


def test_ema_run_reports_the_averaged_parameters(fusion_run):
  """With comic_plus.ema, the method state carries the average of every step's parameters
  (one step behind the update) and the reported models are computed from it."""
  config, workdir = fusion_run
  assert config.comic_plus.ema == 0.5
  run = train.Trainer.open(config, workdir)
  run.restore()
  state = jax.device_get(run.state.method_state['ema'])
  steps = int(jax.device_get(run.state.step))
  assert int(state['count']) == steps > 2
  # Decay 0.5 weighs the last step's parameters (those before the final update) by 1/2 / (1 -
  # 2^-steps): the average lies between the run's parameters and differs from them.
  averaged = comic_plus.ema_value(state, 0.5, {'params': run.state.params,
                                               'batch_stats': run.state.batch_stats})
  leaves = jax.tree_util.tree_leaves(averaged['params'])
  assert any(not np.allclose(a, b) for a, b in
             zip(leaves, jax.tree_util.tree_leaves(run.state.params)))
  images = jnp.asarray(run.data.x_test)
  got = jax.jit(run.method.predict)(run.state.params, run.state.batch_stats,
                                    run.state.method_state, images)
  plain = jax.jit(lambda *args: comic.Comic.predict(run.method, *args))(
      averaged['params'], averaged['batch_stats'], run.state.method_state, images)
  for ours, comics in (('Balanced Model', 'COMIC'), ('Head Model', 'Head Model'),
                       ('Tail Model', 'Tail Model')):
    np.testing.assert_allclose(np.asarray(got[ours]), np.asarray(plain[comics]), rtol=1e-5,
                               atol=1e-5, err_msg=ours)
  results = json.load(open(os.path.join(workdir, 'results.json')))
  p = np_sigmoid(np.asarray(got['COMIC+'], np.float64))
  expected = metrics.multilabel_metrics(p, run.data.y_test, run.groups)[0]
  assert results['COMIC+']['total'] == pytest.approx(expected['total'], abs=1e-3)
