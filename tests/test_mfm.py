import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.losses import baselines, mfm


def np_sigmoid(z):
  return 1 / (1 + np.exp(-z))


def np_mfm(z, y, gp, gn, m, weight=None):
  """docs/method.md's MFM written out in NumPy: per element, then sum over classes, mean over
  rows."""
  p = np_sigmoid(z)
  pm = np.maximum(p - m, 0)
  pos = -(1 - p) ** gp * np.log(np.maximum(p, 1e-8))
  neg = -(pm ** gn) * np.log(np.maximum(1 - pm, 1e-8))
  el = y * pos + (1 - y) * neg
  if weight is not None:
    el = el * weight
  return el.sum(1).mean()


def test_head_tail_factor_hand_values():
  # D = [1, 0.1, 0.01] -> (1 - ln D)^(1/3)
  g = mfm.head_tail_factor(jnp.array([100, 10, 1]))
  np.testing.assert_allclose(g, [1.0, (1 + np.log(10)) ** (1 / 3), (1 + np.log(100)) ** (1 / 3)],
                             rtol=1e-6)
  # A class with one example, and one with none (counted as one: finite, the largest factor).
  g = mfm.head_tail_factor(jnp.array([50, 1, 0]))
  g50 = (1 + np.log(50)) ** (1 / 3)
  np.testing.assert_allclose(g, [1.0, g50, g50], rtol=1e-6)
  assert np.all(np.isfinite(g))


def test_focal_exponents():
  counts = jnp.array([400, 40, 4])
  g = (1 - np.log(np.array([1, 0.1, 0.01]))) ** (1 / 3)
  gp, gn = mfm.focal_exponents(counts, gamma_pn_pos=0.5, gamma_pn_neg=3.0, w_pos=0.2, w_neg=1.0)
  np.testing.assert_allclose(gp, 0.5 + 0.2 * g, rtol=1e-6)
  np.testing.assert_allclose(gn, 3.0 + g, rtol=1e-6)


@pytest.mark.parametrize('margin', [0.0, 0.05])
def test_mfm_loss_matches_numpy(margin):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 5)) * 3
  y = (rng.random((6, 5)) < 0.4).astype(np.float32)
  y[2] = 0  # an all-negative row
  gp, gn = rng.uniform(0, 1, 5), rng.uniform(2, 5, 5)
  w = rng.uniform(1, 2, 5)
  ours = mfm.mfm_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(gp), jnp.asarray(gn),
                      margin=margin, class_weight=jnp.asarray(w))
  np.testing.assert_allclose(ours, np_mfm(z, y, gp, gn, margin, w), rtol=1e-5)
  per = mfm.mfm_loss(jnp.asarray(z), jnp.asarray(y), jnp.asarray(gp), jnp.asarray(gn),
                     margin=margin, reduce=False)
  assert per.shape == (6, 5) and np.all(np.asarray(per)[2] >= 0)


def test_mfm_gradient_treats_focusing_factor_as_constant():
  z = jnp.array([[1.3, -0.4, 0.9, -3.5]])
  y = jnp.array([[1.0, 1.0, 0.0, 0.0]])
  gp, gn, m = 1.5, 4.0, 0.05
  grad = jax.grad(lambda z: mfm.mfm_loss(z, y, gp, gn, margin=m))(z)
  p = np_sigmoid(np.asarray(z))
  # y=1: d/dz[-(1-p)^g log p] with (1-p)^g constant = -(1-p)^(g+1).
  # y=0, p>m: d/dz[-(p-m)^g log(1-p+m)] with (p-m)^g constant = (p-m)^g p(1-p) / (1-p+m).
  expected = np.where(np.asarray(y) > 0, -(1 - p) ** (gp + 1),
                      np.maximum(p - m, 0) ** gn * p * (1 - p) / (1 - p + m))
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-9)
  assert p[0, 3] < m and grad[0, 3] == 0.0     # below the shift: no loss, no gradient


def test_bce_settings_reduce_mfm_to_bce():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(8, 4)) * 2)
  y = jnp.asarray((rng.random((8, 4)) < 0.5).astype(np.float32))
  counts = jnp.array([100, 30, 5, 1])
  ours = mfm.mfm_loss_from_counts(z, y, counts, mfm.MFMSettings.bce())
  np.testing.assert_allclose(ours, baselines.bce(z, y), rtol=1e-5)


def test_mfm_from_counts_uses_class_weights_and_weight_exponent():
  rng = np.random.default_rng(2)
  z = rng.normal(size=(4, 3))
  y = (rng.random((4, 3)) < 0.5).astype(np.float32)
  counts = np.array([90, 9, 3])
  d = counts / 90
  g3, g6 = (1 - np.log(d)) ** (1 / 3), (1 - np.log(d)) ** (1 / 6)
  s = mfm.MFMSettings()   # defaults: gamma_pn = (0, 3), w = (0, 1), m = 0.05, class weights on
  ours = mfm.mfm_loss_from_counts(jnp.asarray(z), jnp.asarray(y), jnp.asarray(counts), s)
  np.testing.assert_allclose(ours, np_mfm(z, y, 0 * g3, 3 + g3, 0.05, g3), rtol=1e-5)
  ours6 = mfm.mfm_loss_from_counts(jnp.asarray(z), jnp.asarray(y), jnp.asarray(counts), s,
                                   weight_exponent=1 / 6)
  np.testing.assert_allclose(ours6, np_mfm(z, y, 0 * g3, 3 + g3, 0.05, g6), rtol=1e-5)
