import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.losses import htb


def test_energy_follows_the_recursion():
  rng = np.random.default_rng(0)
  state = htb.energy_transform(0.9).init(jnp.zeros(4))
  e = np.zeros(4)
  for _ in range(5):
    f = rng.normal(size=(8, 4))
    state = htb.update_energy(state, jnp.asarray(f), mu=0.9)
    e = 0.9 * e + f.mean(0)
  np.testing.assert_allclose(state.trace, e, rtol=1e-5)


def np_adjusted(z, f, w, e, factor, scale, eta, groups):
  b, d = f.shape
  k = d // groups
  e_hat = e / np.linalg.norm(e)
  out = z.copy()
  for i in range(b):
    for c in range(w.shape[0]):
      acc = 0.0
      for g in range(groups):
        fg, eg, wg = f[i, g * k:(g + 1) * k], e_hat[g * k:(g + 1) * k], w[c, g * k:(g + 1) * k]
        cos = fg @ eg / (np.linalg.norm(fg) * np.linalg.norm(eg))
        acc += cos * (wg @ eg) / (np.linalg.norm(wg) + eta)
      out[i, c] += factor * scale / groups * acc
  return out


@pytest.mark.parametrize('groups,factor', [(1, 1.0), (2, -1.0), (2, 2.0)])
def test_energy_adjusted_logits_match_numpy(groups, factor):
  rng = np.random.default_rng(groups)
  z, f = rng.normal(size=(3, 4)), rng.normal(size=(3, 8))
  w, e = rng.normal(size=(4, 8)), rng.normal(size=8)
  ours = htb.energy_adjusted_logits(jnp.asarray(z), jnp.asarray(f), jnp.asarray(w), jnp.asarray(e),
                                    factor=factor, scale=16.0, eta=1 / 32, num_groups=groups)
  np.testing.assert_allclose(ours, np_adjusted(z, f, w, e, factor, 16.0, 1 / 32, groups),
                             rtol=1e-5, atol=1e-5)


def test_zero_energy_changes_nothing_and_signs_are_opposite():
  rng = np.random.default_rng(3)
  z, f, w = (jnp.asarray(rng.normal(size=s)) for s in ((2, 3), (2, 4), (3, 4)))
  same = htb.energy_adjusted_logits(z, f, w, jnp.zeros(4), factor=1.0, scale=16, eta=0.1,
                                    num_groups=1)
  np.testing.assert_allclose(same, z)
  e = jnp.asarray(rng.normal(size=4))
  up = htb.energy_adjusted_logits(z, f, w, e, factor=1.0, scale=16, eta=0.1, num_groups=1)
  down = htb.energy_adjusted_logits(z, f, w, e, factor=-1.0, scale=16, eta=0.1, num_groups=1)
  np.testing.assert_allclose(up - z, z - down, rtol=1e-5)


def test_kappa_weights():
  kh, kt = htb.htb_weights(jnp.array(1.0), jnp.array(2.0), alpha=2.0)
  np.testing.assert_allclose([kh, kt], [1 / 5, 4 / 5], rtol=1e-6)
  for lh, lt, a in ((0.3, 0.3, 2.0), (5.0, 0.1, 1.0), (0.0, 1.0, 2.0)):
    kh, kt = htb.htb_weights(jnp.array(lh), jnp.array(lt), alpha=a)
    assert float(kh + kt) == pytest.approx(1.0)
  grads = jax.grad(lambda loss: htb.htb_weights(loss, jnp.array(2.0))[0])(jnp.array(1.0))
  assert grads == 0.0


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_htb_loss_matches_numpy_and_skips_rows_without_positives():
  rng = np.random.default_rng(0)
  zh, zt, zb = (rng.normal(size=(4, 5)) * 2 for _ in range(3))
  y = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 1, 1, 0, 1]], float)
  kh, kt = 0.3, 0.7

  def ce(t):
    q = np.exp(np_log_softmax(t)) * np.exp(np_log_softmax(zb))
    q = q / q.sum(1, keepdims=True)
    ybar = y / np.maximum(y.sum(1, keepdims=True), 1)
    per = -(ybar * np.log(q)).sum(1)
    return per[[0, 2, 3]].mean()                        # row 1 has no observed positive

  ours = htb.htb_loss(jnp.asarray(zh), jnp.asarray(zt), jnp.asarray(zb), jnp.asarray(y), kh, kt)
  np.testing.assert_allclose(ours, kh * ce(zh) + kt * ce(zt), rtol=1e-5)
  zero = htb.htb_loss(jnp.asarray(zh), jnp.asarray(zt), jnp.asarray(zb), jnp.zeros((4, 5)), kh, kt)
  assert float(zero) == 0.0


def test_htb_gradient_reaches_only_the_balanced_logits():
  rng = np.random.default_rng(1)
  zh, zt, zb = (jnp.asarray(rng.normal(size=(3, 4))) for _ in range(3))
  y = jnp.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], jnp.float32)
  g = jax.grad(lambda a, b, c: htb.htb_loss(a, b, c, y, 0.4, 0.6), argnums=(0, 1, 2))(zh, zt, zb)
  np.testing.assert_array_equal(g[0], 0.0)
  np.testing.assert_array_equal(g[1], 0.0)
  assert float(jnp.abs(g[2]).sum()) > 0
