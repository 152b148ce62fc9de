"""LL-R / LL-Ct / LL-Cp and BoostLU (docs/baselines.md) against hand-computed values and NumPy
references written from the authors' code (snucml/LargeLossMatters losses.py / train.py,
youngwk/BridgeGapExplanationPAMC models.py)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.losses import large_loss as ll
from comic_jax.models import heads


def np_bce(z, y):
  p = 1 / (1 + np.exp(-np.asarray(z, np.float64)))
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def np_large_loss(z, y, k, scheme):
  """The authors' rule, in float64: rank the unobserved entries' BCE, take those >= the k-th
  largest; reject (0) or correct (BCE against 1); sum over classes, mean over samples."""
  loss = np_bce(z, y)
  unobserved = y <= 0
  selected = np.zeros_like(unobserved)
  if k > 0:
    values = np.sort(loss[unobserved])[::-1]
    threshold = values[min(k, values.size) - 1]
    selected = unobserved & (loss >= threshold)
  other = 0.0 * loss if scheme == 'reject' else np_bce(z, np.ones_like(y))
  return np.where(selected, other, loss).sum(1).mean(), selected


# A 2 x 3 batch: observed positives at (0, 0) and (1, 2); the unobserved losses in descending
# order are (1, 0) z=3 > (0, 2) z=2 > (1, 1) z=0.5 > (0, 1) z=-1.
Z = np.array([[-2.0, -1.0, 2.0], [3.0, 0.5, 4.0]])
Y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
SOFTPLUS = lambda x: math.log1p(math.exp(x))


def test_large_loss_hand_example():
  """k = 2: the two largest unobserved losses, (1, 0) and (0, 2), are handled apart. The
  observed positive (0, 0), whose loss softplus(2) is larger than theirs, is never a candidate."""
  k = 2
  kept = SOFTPLUS(-(-2.0)) + SOFTPLUS(-1.0) + SOFTPLUS(0.5) + SOFTPLUS(-4.0)   # BCE of the rest
  rejected = kept / 2                               # rows summed, mean over the 2 rows
  corrected = (kept + SOFTPLUS(-3.0) + SOFTPLUS(-2.0)) / 2   # (1,0), (0,2) against label 1
  for scheme, want in (('reject', rejected), ('correct', corrected)):
    loss, selected = jax.jit(lambda z, y: ll.large_loss(z, y, k, scheme=scheme))(
        jnp.asarray(Z, jnp.float32), jnp.asarray(Y, jnp.float32))
    np.testing.assert_array_equal(selected, [[False, False, True], [True, False, False]])
    np.testing.assert_allclose(loss, want, rtol=1e-6)
  # k = 0 is plain BCE; k beyond the 4 unobserved entries takes all of them, no observed one.
  plain = np_bce(Z, Y).sum(1).mean()
  np.testing.assert_allclose(ll.large_loss(jnp.asarray(Z), jnp.asarray(Y), 0)[0], plain,
                             rtol=1e-6)
  _, every = ll.large_loss(jnp.asarray(Z), jnp.asarray(Y), 6)
  np.testing.assert_array_equal(every, Y == 0)


def test_large_loss_matches_numpy_on_random_batches():
  rng = np.random.default_rng(0)
  for trial in range(6):
    z = rng.normal(size=(8, 5)) * 3
    y = (rng.random((8, 5)) < 0.3).astype(np.float64)
    k = int(rng.integers(0, 40))
    for scheme in ll.SCHEMES:
      want, want_sel = np_large_loss(z, y, k, scheme)
      got, sel = ll.large_loss(jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), k,
                               scheme=scheme)
      np.testing.assert_array_equal(sel, want_sel, err_msg=f'{trial} {scheme}')
      np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f'{trial} {scheme}')


def test_ties_at_the_threshold_are_all_taken_and_known_negatives_never():
  z = jnp.asarray([[1.0, 1.0, 1.0, -3.0]])
  y = jnp.zeros((1, 4))
  _, sel = ll.large_loss(z, y, 2)
  np.testing.assert_array_equal(sel, [[True, True, True, False]])      # the authors' >=
  _, sel = ll.large_loss(z, y, 2, negatives=jnp.asarray([[0.0, 1.0, 0.0, 0.0]]))
  np.testing.assert_array_equal(sel, [[True, False, True, False]])


def test_correction_gradient_is_bce_against_one():
  """The selection carries no gradient: a corrected entry's gradient is sigmoid(z) - 1."""
  g = jax.grad(lambda z: ll.large_loss(z, jnp.asarray(Y), 2, scheme='correct')[0])(
      jnp.asarray(Z, jnp.float32))
  p = 1 / (1 + np.exp(-Z))
  want = np.where([[False, False, True], [True, False, False]], p - 1, p - Y) / 2
  np.testing.assert_allclose(g, want, rtol=1e-5)


def test_llr_rel_and_k_schedule():
  """llr_rel = 1 in the first epoch, then delta_rel / 100 less each epoch; k = ceil(B C (1 -
  llr_rel)), LL-Cp's k = ceil(B C delta_rel / 100) from the second epoch on."""
  spe = 10
  steps = jnp.asarray([0, 9, 10, 19, 20, 35])
  np.testing.assert_allclose(jax.jit(lambda s: ll.llr_rel(s, spe, 0.5))(steps),
                             [1, 1, 0.995, 0.995, 0.99, 0.985], rtol=1e-7)
  k = jax.jit(lambda s: ll.num_large(s, spe, 0.5, 640))(steps)
  np.testing.assert_array_equal(k, [0, 0, 4, 4, 7, 10])     # ceil(3.2), ceil(6.4), ceil(9.6)
  k = jax.jit(lambda s: ll.num_large(s, spe, 0.1, 640, permanent=True))(steps)
  np.testing.assert_array_equal(k, [0, 0, 1, 1, 1, 1])      # ceil(0.64)
  # Exact at whole numbers (B C = 1000, 0.2 %: 2, 4, 6 with no float round-up), capped at B C.
  k = ll.num_large(jnp.asarray([10, 20, 30, 10 ** 6]), spe, 0.2, 1000)
  np.testing.assert_array_equal(k, [2, 4, 6, 1000])
  assert int(ll.num_large(50, spe, 0.0, 640)) == 0          # delta_rel 0: plain BCE


def test_boost_pool_hand_value():
  cam = np.array([[1.0, -2.0], [0.5, -0.25]]).reshape(1, 2, 2, 1)
  want = (5 * 1.0 - 2.0 + 5 * 0.5 - 0.25) / 4
  np.testing.assert_allclose(heads.boost_pool(jnp.asarray(cam), 5.0), [[want]], rtol=1e-7)
  rng = np.random.default_rng(1)
  cam = rng.normal(size=(3, 4, 4, 6))
  np.testing.assert_allclose(heads.boost_pool(jnp.asarray(cam, jnp.float32), 2.5),
                             np.where(cam > 0, 2.5 * cam, cam).mean((1, 2)), rtol=1e-5)


# ------------------------------------------------------------------------------- the methods

def _batch(y, index, rng, image_size=32):
  x = rng.integers(0, 255, size=(len(y), image_size, image_size, 3)).astype(np.uint8)
  return {'main': {'image': jnp.asarray(x), 'label': jnp.asarray(y), 'label_full': jnp.asarray(y),
                   'label_negative': jnp.zeros_like(jnp.asarray(y)),
                   'index': jnp.asarray(index, jnp.int32)}}


@pytest.mark.parametrize('name', ['ll_r', 'll_ct', 'll_cp', 'boostlu'])
def test_method_loss_is_the_large_loss_of_its_logits(name):
  """Each method's loss in epoch 2 (step 3, 2 steps an epoch) is `np_large_loss` of its own
  network's logits with the preset's k; LL-Cp then keeps the selected labels as positives."""
  from comic_jax.methods import registry
  from conftest import tiny_config
  rng = np.random.default_rng(0)
  y = (rng.random((12, 4)) < 0.3).astype(np.float32)
  config = tiny_config(**{'method': name, 'batch_size': 4, 'model.small_cnn_widths': (4, 8),
                          'model.projection_dim': 8,
                          'baselines.large_loss.delta_rel_cp': 20.0})
  method = registry.create_method(config, y, 2, list('abcd'))
  batch = _batch(y[[5, 2, 7, 0]], [5, 2, 7, 0], rng)
  params, stats, state = method.init(jax.random.key(0), batch)
  loss, (_, new_state, metrics) = jax.jit(method.loss)(params, stats, state, batch, None,
                                                       jnp.asarray(3))
  out, _ = method.network.apply({'params': params, 'batch_stats': stats},
                                batch['main']['image'], train=True, mutable=['batch_stats'])
  z = np.asarray(out['logits'], np.float64)
  delta = config.baselines.large_loss[{'ll_r': 'delta_rel_r', 'll_cp': 'delta_rel_cp'}.get(
      name, 'delta_rel_ct')]
  k = math.ceil(16 * delta / 100)                          # epoch 1: 1 - llr_rel = delta / 100
  scheme = 'reject' if name == 'll_r' else 'correct'
  want, selected = np_large_loss(z, np.asarray(batch['main']['label'], np.float64), k, scheme)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert metrics['large_losses'] == selected.sum() == k
  if name == 'll_cp':                                      # k = ceil(16 x 0.2) = 4 flipped
    flipped = np.zeros((12, 4), bool)
    flipped[[5, 2, 7, 0]] = selected
    np.testing.assert_array_equal(new_state['flipped'], flipped)
    assert method.epoch_summary(new_state)['ll_cp']['flipped'] == 4
  if name == 'boostlu':   # the logits are the boosted pooling of the per-position classifier
    assert isinstance(method.network.classifier, heads.LinearClassifier)


def test_boostlu_is_left_out_where_there_is_no_feature_map():
  from comic_jax.errors import UserError
  from comic_jax.methods import registry
  from conftest import tiny_config
  assert registry.unsupported_reason('boostlu', tiny_config()) == ''
  frozen = tiny_config(**{'model.backbone_trainable': False, 'model.feature_cache': True})
  assert 'feature cache' in registry.unsupported_reason('boostlu', frozen)
  assert registry.unsupported_reason('ll_ct', frozen) == ''
  mlp = tiny_config(**{'model.backbone': 'mlp'})
  assert 'no spatial feature map' in registry.unsupported_reason('boostlu', mlp)
  from comic_jax.training.config_checks import validate_config
  frozen.method = 'boostlu'
  with pytest.raises(UserError, match='config.method=boostlu: .*feature cache'):
    validate_config(frozen)


def test_the_benchmark_leaves_boostlu_out_of_a_frozen_table_and_says_so(tmp_path):
  from comic_jax.training import benchmark
  from conftest import tiny_config
  frozen = tiny_config(**{'model.backbone_trainable': False, 'model.feature_cache': True})
  left_out = benchmark.left_out_methods(('bce', 'll_ct', 'boostlu'), frozen)
  assert list(left_out) == ['boostlu'] and 'spatial feature map' in left_out['boostlu']
  assert benchmark.left_out_methods(('bce', 'boostlu'), tiny_config()) == {}
  md, _ = benchmark.write_tables(str(tmp_path), 'main', ['method'], [['BCE']],
                                 notes=['BoostLU is left out: why.'])
  assert open(md).read().endswith('| BCE |\n\nBoostLU is left out: why.\n')


def test_trains_end_to_end(tmp_path):
  """One short run through the trainer of BoostLU paired with LL-Cp (BoostLU's network, LL-Cp's
  flipped labels in the state, the checkpoint and the epoch lines): nothing is rejected in
  epoch 1, labels are flipped in epoch 2, and the results are finite."""
  import json

  from comic_jax.training import train
  from conftest import tiny_config
  config = tiny_config(**{'method': 'boostlu', 'baselines.boostlu.loss': 'll_cp',
                          'model.small_cnn_widths': (4, 8, 8, 8), 'model.projection_dim': 8,
                          'data.synthetic.num_test': 200, 'batch_size': 128, 'cpu_devices': 1})
  train.train_and_evaluate(config, str(tmp_path))
  results = json.loads((tmp_path / 'results.json').read_text())
  assert list(results) == ['BoostLU']
  assert all(np.isfinite(v) for v in results['BoostLU'].values() if isinstance(v, float))
  lines = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert lines[0]['train']['large_losses'] == 0 and lines[0]['ll_cp']['flipped'] == 0
  k = math.ceil(128 * 24 * config.baselines.large_loss.delta_rel_cp / 100)   # LL-Cp's k, epoch 2
  assert lines[1]['train']['large_losses'] == k
  assert 0 < lines[1]['ll_cp']['flipped'] <= k * (lines[1]['step'] - lines[0]['step'])
  # Prediction restores the per-image state with the checkpoint's shapes (no training data).
  import comic_jax
  probs = comic_jax.load(str(tmp_path)).predict(np.zeros((2, 32, 32, 3), np.uint8))
  assert np.shape(probs) == (2, 24) and np.all(np.isfinite(probs))


@pytest.mark.parametrize('backbone,size,shape', [('small_cnn', 32, (2, 4, 4, 128)),
                                                 ('resnet18', 64, (2, 2, 2, 512)),
                                                 ('efficientnet_lite0', 64, (2, 2, 2, 1280))])
def test_the_backbones_spatial_maps(backbone, size, shape):
  """BoostLU's map: the small CNN's last stage, a ResNet's last stage, EfficientNet-Lite's head
  convolution (shapes only, traced); the small CNN's map averages to its pooled features."""
  from comic_jax.models import backbones
  from conftest import tiny_config
  model = tiny_config(**{'model.backbone': backbone}).model
  x = jnp.zeros((2, size, size, 3))

  def forward(spatial):
    module = backbones.create_backbone(model, spatial=spatial)
    return lambda x: module.apply(module.init(jax.random.key(0), x, train=False), x, train=False)
  assert jax.eval_shape(forward(True), x).shape == shape
  if backbone == 'small_cnn':
    x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
    np.testing.assert_allclose(jax.jit(forward(True))(x).mean((1, 2)), jax.jit(forward(False))(x),
                               rtol=1e-5, atol=1e-6)
