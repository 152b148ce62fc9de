import jax.numpy as jnp
import numpy as np

from comic_jax.losses import mfm, rlc


def test_epoch_running_mean_and_reset():
  s = rlc.init_state(2)
  a = jnp.array([[0.2, 0.9], [0.4, 0.1]])
  b = jnp.array([[0.6, 0.5]])
  s, p = rlc.update_class_means(s, a)
  np.testing.assert_allclose(p, [0.3, 0.5])
  s, p = rlc.update_class_means(s, b)
  np.testing.assert_allclose(p, [0.4, 0.5])           # mean over all 3 samples
  s = rlc.reset_epoch(s, jnp.array(True))
  s, p = rlc.update_class_means(s, b)
  np.testing.assert_allclose(p, [0.6, 0.5])           # a new epoch forgets the old one
  kept = rlc.reset_epoch(s, jnp.array(False))
  np.testing.assert_allclose(kept['class_mean_sum'], s['class_mean_sum'])


def test_ema_and_batch_means():
  s = rlc.init_state(1)
  s, p = rlc.update_class_means(s, jnp.array([[0.8]]), mode='ema', ema_decay=0.5)
  np.testing.assert_allclose(p, [0.8])                # the first batch sets the mean
  s, p = rlc.update_class_means(s, jnp.array([[0.2]]), mode='ema', ema_decay=0.5)
  np.testing.assert_allclose(p, [0.5])
  s = rlc.reset_epoch(s, jnp.array(True), keep_means=True)
  np.testing.assert_allclose(s['class_mean_sum'], [0.5])
  _, p = rlc.update_class_means(s, jnp.array([[0.2], [0.6]]), mode='batch')
  np.testing.assert_allclose(p, [0.4])


def test_correct_labels_rule_and_warmup():
  probs = jnp.array([[0.95, 0.75, 0.65, 0.99],
                     [0.80, 0.72, 0.90, 0.20]])
  labels = jnp.array([[0, 0, 0, 1],
                      [0, 0, 0, 0]])
  means = jnp.array([0.9, 0.5, 0.6, 0.5])
  yhat = rlc.correct_labels(probs, labels, means, tau=0.7)
  # class 0: threshold max(.7,.9)=.9 -> .95 yes, .80 no; class 1: .7 -> .75 yes, .72 yes;
  # class 2: .7 -> .65 no, .90 yes; class 3: observed positive is never "corrected", .20 no.
  np.testing.assert_array_equal(yhat, [[1, 1, 0, 0], [0, 1, 1, 0]])
  none = rlc.correct_labels(probs, labels, means, tau=0.7, active=jnp.array(False))
  np.testing.assert_array_equal(none, np.zeros((2, 4)))


def test_count_corrections_splits_true_and_false():
  s = rlc.init_state(3)
  yhat = jnp.array([[1, 0, 1], [1, 1, 0]], jnp.float32)
  full = jnp.array([[1, 0, 0], [0, 1, 0]], jnp.float32)
  s = rlc.count_corrections(s, yhat, full)
  np.testing.assert_array_equal(s['corrections'], [2, 1, 1])
  np.testing.assert_array_equal(s['true_corrections'], [1, 1, 0])


def test_rlc_loss_is_mfm_on_corrected_targets_with_reweighted_counts():
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(5, 3)) * 2)
  y = jnp.asarray((rng.random((5, 3)) < 0.3).astype(np.float32)).at[4].set(0.0)  # all-negative row
  yhat = jnp.zeros((5, 3)).at[0, 1].set(1.0).at[4, 2].set(1.0)
  counts = jnp.array([50.0, 7.0, 2.0])
  corrections = jnp.array([0.0, 3.0, 1.0])
  s = mfm.MFMSettings()
  ours = rlc.rlc_loss(z, y, yhat, counts + corrections, s)
  targets = jnp.maximum(y, yhat)
  ref = mfm.mfm_loss_from_counts(z, targets, jnp.array([50.0, 10.0, 3.0]), s)
  np.testing.assert_allclose(ours, ref, rtol=1e-6)
  # The authors' margin moves positive-target logits down by 1; their normalisation rescales.
  with_margin = rlc.rlc_loss(z, y, yhat, counts, s, margin=1.0)
  np.testing.assert_allclose(with_margin,
                             mfm.mfm_loss_from_counts(z - targets, targets, counts, s), rtol=1e-6)
  scaled = rlc.rlc_loss(z, y, yhat, counts, s, positive_normalisation=True)
  np.testing.assert_allclose(scaled, rlc.rlc_loss(z, y, yhat, counts, s) * 5 / targets.sum(),
                             rtol=1e-6)


def test_no_correction_leaves_rlc_equal_to_mfm():
  z = jnp.array([[2.0, -1.0], [0.5, 0.3]])
  y = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  counts = jnp.array([10.0, 2.0])
  s = mfm.MFMSettings()
  np.testing.assert_allclose(rlc.rlc_loss(z, y, jnp.zeros_like(y), counts, s),
                             mfm.mfm_loss_from_counts(z, y, counts, s), rtol=1e-7)


def test_known_negatives_are_never_corrected():
  """Labels known to be absent (-1 = unknown data) stay negatives whatever the model says."""
  rng = np.random.default_rng(0)
  probs = rng.random((16, 5))
  labels = (rng.random((16, 5)) < 0.2).astype(np.float32)
  negatives = ((rng.random((16, 5)) < 0.4) & (labels == 0)).astype(np.float32)
  means = probs.mean(axis=0)
  plain = np.asarray(rlc.correct_labels(jnp.asarray(probs), jnp.asarray(labels),
                                        jnp.asarray(means), tau=0.5))
  masked = np.asarray(rlc.correct_labels(jnp.asarray(probs), jnp.asarray(labels),
                                         jnp.asarray(means), tau=0.5,
                                         negatives=jnp.asarray(negatives)))
  expected = (labels == 0) & (probs > np.maximum(0.5, means)) & (negatives == 0)
  np.testing.assert_array_equal(masked, expected.astype(np.float32))
  assert (plain * negatives).sum() > 0          # the mask removed corrections the model wanted
