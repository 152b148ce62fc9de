"""The authors' code, where it is an option (docs/method.md "Paper vs the authors' code"): each
`official_*` behaviour against a NumPy re-derivation of the authors' formula, written here from
their loss files' arithmetic (loops, their clamps and their order of operations).

Their losses sum over the batch; ours average over samples (docs/method.md "Choices where the
paper leaves room", Reduction), so
theirs = B x ours throughout.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.losses import htb, mfm, rlc
from comic_jax.methods import comic
from comic_jax.methods.registry import get as get_method
from conftest import COMIC_TINY, tiny_config

EPS = 1e-8


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _class_weight(counts, exponent):
  prob = counts / counts.sum()
  prob = prob / prob.max()
  return (1.0 - np.log(prob)) ** exponent


def np_cooccurrence(labels):
  """Their matrix: counts of images holding both classes, each column divided by its sum."""
  c = labels.shape[1]
  m = np.zeros((c, c))
  for row in labels:
    for i in range(c):
      for j in range(c):
        m[i, j] += row[i] * row[j]
  return m / m.sum(axis=0)


def np_prior_focal_modifier(x, y, counts, matrix=None, gamma_pos=0.0, gamma_neg=3.0, clip=0.05,
                            factor=1.2):
  """Their MFM (`PriorFocalModifierLoss.forward`): sum over the batch. matrix=None: the
  co-occurrence scaling off (their `MultiGrainedFocalLoss`, positive scale 1)."""
  weight = _class_weight(counts, 1.0 / 3.0)
  if matrix is None:
    scores = np.zeros_like(x)
  else:
    scores = np.stack([matrix[row == 1].mean(axis=0) for row in y])
    scores = scores / scores.sum(axis=1, keepdims=True)
  sig = _sigmoid(x)
  xs_pos = sig * (1.0 - scores)
  xs_neg = np.minimum(1.0 - sig + clip, 1.0)
  xs_neg = np.where(scores == 0, xs_neg, np.minimum(xs_neg * factor, 1.0))
  loss = y * np.log(np.maximum(xs_pos, EPS)) + (1 - y) * np.log(np.maximum(xs_neg, EPS))
  loss = loss * weight
  pt = xs_pos * y + xs_neg * (1 - y)
  gamma = gamma_pos * y + (gamma_neg + weight) * (1 - y)
  loss = loss * (1.0 - pt) ** gamma
  return -loss.sum()


def np_reflective_label_corrector(logits, targets, counts, tau=0.7, margin=1.0, batch_size=32):
  """Their RLC forward (`ReflectiveLabelCorrectorLoss.forward`, after its warm-up), at the first
  batch of an epoch: (loss summed over the batch, corrected targets)."""
  original = targets.copy()
  logits = np.where(targets == 1, logits - margin, logits)
  prediction = _sigmoid(logits)
  average = prediction.mean(axis=0)
  targets = np.where((prediction > tau) & (prediction > average), 1.0, targets)
  sum_targets = (targets == 1).sum()
  distribution = counts + (targets - original).sum(axis=0)
  weight = _class_weight(distribution, 1.0 / 6.0)
  xs_pos = prediction
  xs_neg = np.minimum(1.0 - prediction + 0.05, 1.0)
  loss = targets * np.log(np.maximum(xs_pos, EPS)) + (1 - targets) * np.log(np.maximum(xs_neg, EPS))
  loss = loss * weight
  pt = xs_pos * targets + xs_neg * (1 - targets)
  gamma = 0.0 * targets + (3.0 + weight) * (1 - targets)
  loss = loss * (1.0 - pt) ** gamma
  loss = loss * (batch_size / sum_targets)
  return -loss.sum(), targets


def np_head_tail_balancer(head, tail, balance, labels, pfm, gamma=2.0):
  """Their HTB loss file (`HeadTailBalancerLoss.forward`); `pfm(x, y)` their MFM."""
  head_acc, tail_acc = pfm(head, labels) ** gamma, pfm(tail, labels) ** gamma
  head_weight = head_acc / (head_acc + tail_acc)
  tail_weight = tail_acc / (head_acc + tail_acc)
  prob_balance = _softmax(balance)
  return (head_weight * pfm(_softmax(head) * prob_balance, labels) +
          tail_weight * pfm(_softmax(tail) * prob_balance, labels))


def _batch(seed=0, b=32, c=6, scale=2.0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, c)) * scale
  labels = (rng.random((b, c)) < 0.3).astype(np.float64)
  labels[np.arange(b), rng.integers(c, size=b)] = 1.0     # every row holds a positive
  counts = rng.integers(3, 300, size=c).astype(np.float64)
  return logits, labels, counts


def _official_config(**overrides):
  return tiny_config(**{'method': 'comic', **COMIC_TINY, **dict(comic.OFFICIAL_WITH_HTB),
                        **overrides})


def test_cooccurrence_matrix_matches_numpy():
  _, labels, _ = _batch(1)
  np.testing.assert_allclose(mfm.cooccurrence_matrix(labels), np_cooccurrence(labels), rtol=1e-6)


@pytest.mark.parametrize('with_matrix', [False, True])
def test_mfm_with_cooccurrence_matches_the_authors_formula(with_matrix):
  logits, labels, counts = _batch(2)
  train_labels = (np.random.default_rng(3).random((50, 6)) < 0.4).astype(np.float64)
  matrix = np_cooccurrence(train_labels) if with_matrix else None
  settings = mfm.MFMSettings(cooccurrence_factor=1.2 if with_matrix else 0.0)
  ours = mfm.mfm_loss_from_counts(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), counts,
                                  settings, cooccurrence=None if matrix is None else
                                  jnp.asarray(matrix, jnp.float32))
  theirs = np_prior_focal_modifier(logits, labels, counts, matrix)
  np.testing.assert_allclose(float(ours) * len(logits), theirs, rtol=2e-5)
  if with_matrix:   # the scaling changes the value, and a row without positives is left alone
    plain = mfm.mfm_loss_from_counts(jnp.asarray(logits, jnp.float32), jnp.asarray(labels),
                                     counts, mfm.MFMSettings())
    assert abs(float(plain) - float(ours)) > 1e-3
    empty = np.zeros((1, 6))
    pos, neg = mfm.cooccurrence_scales(jnp.asarray(empty), jnp.asarray(matrix, jnp.float32))
    np.testing.assert_array_equal(pos, 1.0)
    np.testing.assert_array_equal(neg, 1.0)


def test_rlc_with_every_official_option_matches_the_authors_formula():
  """Through the method's own `rlc_term`, so the wiring of each option is what is checked."""
  logits, labels, counts = _batch(4, scale=2.5)
  # Class 0 is a frequent class the model is sure of: its batch mean exceeds tau, so where P_c
  # is taken from (shifted or not) decides some corrections.
  rng = np.random.default_rng(7)
  logits[:, 0] = 2.0 + rng.normal(size=len(logits)) * 0.5
  labels[:, 0] = rng.random(len(logits)) < 0.75
  c = labels.shape[1]
  config = _official_config()
  y_train = np.zeros((int(counts.max()), c), np.int8)
  for j, n in enumerate(counts.astype(int)):     # observed labels with these class counts
    y_train[:n, j] = 1
  method = comic.Comic(config, y_train, steps_per_epoch=10)
  np.testing.assert_array_equal(method.counts, counts)

  def ours(m):
    loss, state, _ = m.rlc_term(rlc.init_state(c), jnp.asarray(logits, jnp.float32),
                                jnp.asarray(labels, jnp.float32), jnp.asarray(labels, jnp.float32),
                                True, jnp.asarray(True))
    return float(loss), state

  theirs, targets = np_reflective_label_corrector(logits, labels, counts)
  value, state = ours(method)
  np.testing.assert_allclose(value * len(logits), theirs, rtol=2e-5)
  np.testing.assert_array_equal(state['corrections'], (targets - labels).sum(axis=0))
  assert state['corrections'].sum() > 0
  # Each of the three options of this round changes the value on this batch.
  for field in ('official_shifted_means', 'official_margin_observed', 'official_focal_exponent'):
    other = comic.Comic(_official_config(**{f'comic.rlc.{field}': False}), y_train, 10)
    assert abs(ours(other)[0] * len(logits) - theirs) > 1e-4 * abs(theirs), field


def test_official_htb_loss_matches_the_authors_formula_and_kappa_has_a_gradient():
  logits, labels, counts = _batch(5)
  rng = np.random.default_rng(6)
  head, tail, balance = logits, rng.normal(size=logits.shape) * 2, rng.normal(size=logits.shape)
  train_labels = (rng.random((50, 6)) < 0.4).astype(np.float64)
  matrix = np_cooccurrence(train_labels)
  settings = mfm.MFMSettings(cooccurrence_factor=1.2)
  jm = jnp.asarray(matrix, jnp.float32)

  def mfm_loss(z, y):
    return mfm.mfm_loss_from_counts(z, y, counts, settings, cooccurrence=jm)

  def ours(h, detach=False):
    y = jnp.asarray(labels, jnp.float32)
    kh, kt = htb.htb_weights(mfm_loss(h, y), mfm_loss(jnp.asarray(tail, jnp.float32), y), 2.0,
                             detach=detach)
    return htb.htb_loss_of('official', h, jnp.asarray(tail, jnp.float32),
                           jnp.asarray(balance, jnp.float32), y, kh, kt, mfm_loss=mfm_loss)

  theirs = np_head_tail_balancer(head, tail, balance, labels,
                                 lambda x, y: np_prior_focal_modifier(x, y, counts, matrix))
  h = jnp.asarray(head, jnp.float32)
  # Their per-term sums make kappa scale-free and the loss B x ours.
  np.testing.assert_allclose(float(ours(h)) * len(head), theirs, rtol=2e-5)
  # kappa is not detached in their file: the head logits get a gradient through it (only).
  assert float(jnp.abs(jax.grad(ours)(h)).max()) > 1e-6
  np.testing.assert_array_equal(jax.grad(lambda x: ours(x, detach=True))(h), 0.0)


def test_official_preset_traces_and_validates():
  """The 'official' study's rows are valid configs whose COMIC loss traces (shapes only)."""
  rows = get_method('comic').studies['official']
  assert [r.suffix for r in rows] == ['', 'official', 'official_htb']
  config = _official_config()
  get_method('comic').validate(config)
  y = (np.random.default_rng(0).random((40, 6)) < 0.3).astype(np.int8)
  method = comic.Comic(config, y, steps_per_epoch=10)
  assert method.cooccurrence is not None and method.warmup_steps == 0
  stream = {'image': jnp.zeros((4, 32, 32, 3), jnp.float32),
            'label': jnp.asarray(y[:4], jnp.float32), 'label_full': jnp.asarray(y[:4], jnp.float32),
            'label_negative': jnp.asarray(1 - y[:4], jnp.float32)}
  batch = {'main': stream, 'tail': stream}
  key = jax.random.PRNGKey(0)
  params, batch_stats, method_state = jax.eval_shape(method.init, key, batch)
  _, (_, _, step_metrics) = jax.eval_shape(method.loss, params, batch_stats, method_state, batch,
                                           key, jnp.int32(1))
  assert {'htb', 'kappa_head', 'head_rlc'} <= set(step_metrics)
  with pytest.raises(Exception, match='cooccurrence_factor'):
    get_method('comic').validate(_official_config(**{'comic.mfm.cooccurrence_factor': -1.0}))
