"""The baseline losses (docs/baselines.md) against independent NumPy references written from the
spec.

Every reference computes per-element losses in float64 with plain NumPy (loops where the spec is
written per image), then sums over classes and averages over samples (the project's reduction).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.losses import baselines

LN2 = np.log(2.0)


def sig(z):
  return 1 / (1 + np.exp(-np.asarray(z, np.float64)))


def reduce(el):
  return np.asarray(el).sum(1).mean()


def random_batch(seed, b=6, c=5, scale=3.0, rate=0.4):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(b, c)) * scale
  y = (rng.random((b, c)) < rate).astype(np.float32)
  return z, y


def j(x):
  return jnp.asarray(x, jnp.float32)


def run(fn, *args, **kw):
  """fn(*args, **kw) under jit (one compilation instead of one per eager op keeps tests fast)."""
  return jax.jit(functools.partial(fn, **kw))(*args)


def grad_z(fn, z, *args, **kw):
  """d fn(z, *args, **kw) / dz under jit."""
  return jax.jit(jax.grad(functools.partial(fn, **kw)))(z, *args)


# ---------------------------------------------------------------------------------------------
# NumPy references.

def np_bce_el(z, y):
  p = sig(z)
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def np_focal(z, y, gamma=2.0, alpha=0.25):
  p = sig(z)
  pt = np.where(y == 1, p, 1 - p)
  return reduce(alpha * (1 - pt) ** gamma * np_bce_el(z, y))


def np_asl(z, y, gp=0.0, gn=4.0, m=0.05):
  b, c = z.shape
  el = np.zeros((b, c))
  for k in range(b):
    for i in range(c):
      p = sig(z[k, i])
      if y[k, i] == 1:
        el[k, i] = -(1 - p) ** gp * np.log(max(p, 1e-8))
      else:
        pm = max(p - m, 0.0)
        el[k, i] = -pm ** gn * np.log(max(1 - pm, 1e-8))
  return reduce(el)


def np_db_weights(y, counts, a=0.1, b=10.0, mu=0.2):
  n = np.array([max(float(c), 1.0) for c in counts])
  w = np.zeros(y.shape)
  for k in range(y.shape[0]):
    positives = [jj for jj in range(y.shape[1]) if y[k, jj] == 1]
    for i in range(y.shape[1]):
      if not positives:
        w[k, i] = a + 1.0
      else:
        r = (1 / n[i]) / sum(1 / n[jj] for jj in positives)
        w[k, i] = a + sig(b * (r - mu))
  return w


def np_db_bias(counts, n_train, kappa=0.05, lam=2.0):
  out = []
  for c in counts:
    n = min(max(float(c), 1.0), n_train - 1.0)
    out.append(-(kappa / lam) * np.log(n_train / n - 1))
  return np.array(out)


def np_db(z, y, counts, n_train, a=0.1, b=10.0, mu=0.2, kappa=0.05, lam=2.0, focal=False):
  w = np_db_weights(y, counts, a, b, mu)
  nu = np_db_bias(counts, n_train, kappa, lam)
  el = np.zeros(z.shape)
  for k in range(z.shape[0]):
    for i in range(z.shape[1]):
      zp = z[k, i] + nu[i]
      if y[k, i] == 1:
        term = w[k, i] * np.log1p(np.exp(-zp))
        pt = sig(zp)
      else:
        term = w[k, i] / lam * np.log1p(np.exp(lam * zp))
        pt = 1 - sig(lam * zp)
      el[k, i] = 2.0 * (1 - pt) ** 2 * term if focal else term
  return reduce(el)


def np_hill(z, y, m=1.0, gamma=2.0, lam=1.5):
  pm = sig(z - m)
  p = sig(z)
  pos = -(1 - pm) ** gamma * np.log(pm)
  neg = (lam - p) * p ** 2
  return reduce(np.where(y == 1, pos, neg))


def np_pseudo_label(z, y, threshold=0.6, active=True):
  p = sig(z)
  t = y.astype(np.float64).copy()
  if active:
    t[(y == 0) & (p > threshold)] = 1.0
  return reduce(np_bce_el(z, t))


def np_pasl(z, y, prior, gp=0.0, gu=4.0, m=0.0, thr=0.5, topk_factor=5, neg=None, gn=1.0):
  """P-ASL from the spec. `neg` (optional) marks annotated negatives among the y=0 entries; the
  other y=0 entries are unannotated. Selective weights act on unannotated entries only."""
  b, c = z.shape
  p = sig(z)
  neg = np.zeros((b, c), bool) if neg is None else (np.asarray(neg) > 0) & (y == 0)
  unann = (y == 0) & ~neg
  w = np.ones((b, c))
  for i in range(c):
    if prior[i] > thr:
      w[:, i][unann[:, i]] = 0
  # Unannotated entries, most likely positive first; ties to the lower row-major index.
  flat = [(-p[k, i], k * c + i) for k in range(b) for i in range(c) if unann[k, i]]
  flat.sort()
  for _, idx in flat[:topk_factor * b]:
    w[idx // c, idx % c] = 0
  el = np.zeros((b, c))
  for k in range(b):
    for i in range(c):
      if y[k, i] == 1:
        el[k, i] = -w[k, i] * (1 - p[k, i]) ** gp * np.log(max(p[k, i], 1e-8))
      else:
        pmk = max(p[k, i] - m, 0.0)
        g = gn if neg[k, i] else gu
        el[k, i] = -w[k, i] * pmk ** g * np.log(max(1 - pmk, 1e-8))
  return reduce(el)


# ---------------------------------------------------------------------------------------------
# Focal.


def finite_difference(f, z, eps=1e-6):
  """Central finite differences of the scalar NumPy function f at every entry of z."""
  fd = np.zeros_like(z)
  for idx in np.ndindex(z.shape):
    dz = np.zeros_like(z)
    dz[idx] = eps
    fd[idx] = (f(z + dz) - f(z - dz)) / (2 * eps)
  return fd

def test_focal_hand_value():
  # Row 1: z=0, y=1 -> p_t = 0.5: 0.25 * 0.5^2 * ln 2 = 0.0433217.
  #        z=ln 3, y=1 -> p = 0.75: 0.25 * 0.25^2 * (-ln 0.75) = 0.0044950. Row sum 0.0478167.
  # Row 2: z=0, y=0 -> same as the first entry, 0.0433217; z=ln 3, y=0 -> p_t = 0.25:
  #        0.25 * 0.75^2 * (-ln 0.25) = 0.1949476. Row sum 0.2382693.
  # Mean over rows: (0.0478167 + 0.2382693) / 2 = 0.1430430.
  z = j([[0.0, np.log(3)], [0.0, np.log(3)]])
  y = j([[1, 1], [0, 0]])
  expected = (0.0625 * LN2 + 0.015625 * -np.log(0.75) + 0.0625 * LN2
              + 0.25 * 0.5625 * -np.log(0.25)) / 2
  np.testing.assert_allclose(expected, 0.1430430, rtol=1e-6)
  np.testing.assert_allclose(run(baselines.focal, z, y), expected, rtol=1e-5)


@pytest.mark.parametrize('gamma,alpha', [(2.0, 0.25), (0.0, 1.0), (1.5, 0.5)])
def test_focal_matches_numpy(gamma, alpha):
  z, y = random_batch(0)
  ours = run(baselines.focal, j(z), j(y), gamma=gamma, alpha=alpha)
  np.testing.assert_allclose(ours, np_focal(z, y, gamma, alpha), rtol=1e-5)
  if gamma == 0.0 and alpha == 1.0:   # focal with gamma = 0, alpha = 1 is BCE
    np.testing.assert_allclose(ours, run(baselines.bce, j(z), j(y)), rtol=1e-5)


def test_focal_gradient_is_not_stop_grad():
  z, y = random_batch(1, b=3, c=4, scale=2.0)
  g, a = 2.0, 0.25
  grad = grad_z(baselines.focal, j(z), j(y))
  p = sig(z)
  q = 1 - p
  # y=1: d/dz[-a q^g log p] = a q^g (g p log p - q);
  # y=0: d/dz[-a p^g log q] = a p^g (p - g q log q).
  analytic = np.where(y == 1, a * q ** g * (g * p * np.log(p) - q),
                      a * p ** g * (p - g * q * np.log(q))) / z.shape[0]
  np.testing.assert_allclose(grad, analytic, rtol=1e-4, atol=1e-7)
  # Central finite differences of the NumPy reference agree too.
  np.testing.assert_allclose(grad, finite_difference(lambda v: np_focal(v, y), z), rtol=1e-4,
                             atol=1e-7)
  # A stop-grad focal factor would give a * q_t^g * (p - y) / B instead, which differs.
  stopped = a * np.where(y == 1, q, p) ** g * (p - y) / z.shape[0]
  assert np.max(np.abs(np.asarray(grad) - stopped)) > 1e-3


# ---------------------------------------------------------------------------------------------
# ASL.

def test_asl_hand_value():
  # y=1, z=0, g+=0: -ln 0.5 = 0.6931472. y=0, z=0: p_m = 0.5 - 0.05 = 0.45,
  # -(0.45^4) ln(0.55) = 0.0410063 * 0.5978370 = 0.0245151. One row: 0.7176622.
  ours = run(baselines.asl, j([[0.0, 0.0]]), j([[1, 0]]))
  np.testing.assert_allclose(ours, 0.7176622, rtol=1e-5)


@pytest.mark.parametrize('gp,gn,m', [(0.0, 4.0, 0.05), (1.0, 2.0, 0.2), (0.0, 0.0, 0.0)])
def test_asl_matches_numpy(gp, gn, m):
  z, y = random_batch(2)
  ours = run(baselines.asl, j(z), j(y), gamma_pos=gp, gamma_neg=gn, margin=m)
  np.testing.assert_allclose(ours, np_asl(z, y, gp, gn, m), rtol=1e-5)


def test_asl_below_margin_zero_loss_and_gradient():
  # p = sigmoid(-4) = 0.018 < m = 0.05: the negative contributes nothing, not even gradient.
  z = j([[-4.0, 1.0]])
  y = j([[0, 1]])
  for gn in (4.0, 0.0):
    grad = grad_z(baselines.asl, z, y, gamma_neg=gn)
    assert grad[0, 0] == 0.0
    assert grad[0, 1] != 0.0
    only_neg = run(baselines.asl, j([[-4.0]]), j([[0]]), gamma_neg=gn)
    assert float(only_neg) == 0.0


# ---------------------------------------------------------------------------------------------
# DB / DB-Focal.

def test_db_hand_value():
  # n = [1, 4], N = 5: nu = -(0.05/2) ln(5/n - 1) = [-0.025 ln 4, +0.025 ln 4]
  #                                             = [-0.034657, 0.034657].
  # Image [1, 1]: sum 1/n_j = 1.25, r = [0.8, 0.2], w = [0.1 + sigmoid(6), 0.1 + sigmoid(0)]
  # = [1.0975274, 0.6]. With z = -nu, z' = 0 and each positive term is w ln 2:
  # (1.0975274 + 0.6) * 0.6931472 = 1.1766363.
  counts = jnp.array([1, 4])
  nu = -0.025 * np.log(np.array([4.0, 0.25]))
  np.testing.assert_allclose(run(baselines.db_bias, counts, 5), nu, rtol=1e-5)
  np.testing.assert_allclose(run(baselines.db_weights, j([[1, 1]]), counts),
                             [[0.1 + sig(6.0), 0.6]], rtol=1e-6)
  ours = run(baselines.db, j(-nu[None]), j([[1, 1]]), counts, 5)
  np.testing.assert_allclose(ours, 1.1766363, rtol=1e-5)
  # DB-Focal at z' = 0: p_t = 0.5 for both, factor 2 * 0.5^2 = 0.5 -> half of DB.
  ours_f = run(baselines.db, j(-nu[None]), j([[1, 1]]), counts, 5, focal=True)
  np.testing.assert_allclose(ours_f, 0.5 * 1.1766363, rtol=1e-5)
  # A negative at z' = 0: (w / lam) * ln(1 + e^0) = w ln2 / 2. Image [0, 1]: r_0 = 1 / 0.25 = 4,
  # w_0 = 0.1 + sigmoid(38); r_1 = 1, w_1 = 0.1 + sigmoid(8). Loss = w_0 ln2 / 2 + w_1 ln2.
  ours_neg = run(baselines.db, j(-nu[None]), j([[0, 1]]), counts, 5)
  np.testing.assert_allclose(ours_neg, (0.1 + sig(38.0)) * LN2 / 2 + (0.1 + sig(8.0)) * LN2,
                             rtol=1e-5)


@pytest.mark.parametrize('focal', [False, True])
@pytest.mark.parametrize('mu,lam', [(0.2, 2.0), (0.3, 5.0)])
def test_db_matches_numpy(focal, mu, lam):
  z, y = random_batch(3, b=7, c=5, scale=2.0)
  y[4] = 0   # an image with no positive
  counts = np.array([40, 12, 5, 1, 0])   # the last class has no (observed) positive
  n_train = 50
  ours = jax.jit(lambda z, y: baselines.db(z, y, jnp.asarray(counts), n_train, mu=mu, lam=lam,
                                           focal=focal))(j(z), j(y))
  np.testing.assert_allclose(ours, np_db(z, y, counts, n_train, mu=mu, lam=lam, focal=focal),
                             rtol=1e-5)


def test_db_zero_count_class_and_image_without_positive():
  y = j([[1, 0, 0], [0, 0, 0]])
  counts = jnp.array([3, 0, 10])   # class 1 has no positive; class 2 is positive in all N = 10
  w = run(baselines.db_weights, y, counts)
  assert np.all(np.isfinite(w))
  np.testing.assert_allclose(w[1], [1.1, 1.1, 1.1], rtol=1e-6)   # no positive: a + 1
  # Image 0: P = {0}, r = (1/n_i) / (1/3) with n = [3, 1 (guarded), 10] = [1, 3, 0.3].
  np.testing.assert_allclose(w[0], 0.1 + sig(10 * (np.array([1, 3, 0.3]) - 0.2)), rtol=1e-6)
  nu = run(baselines.db_bias, counts, 10)
  assert np.all(np.isfinite(nu))
  # n clamped into [1, N-1]: n=0 behaves as n=1, n=10 as n=9.
  np.testing.assert_allclose(nu, -0.025 * np.log(10 / np.array([3, 1, 9]) - 1), rtol=1e-5)
  z = j([[0.5, -1.0, 2.0], [-0.3, 0.1, 3.0]])
  for focal in (False, True):
    loss = run(baselines.db, z, y, counts, 10, focal=focal)
    grad = grad_z(baselines.db, z, y, counts, 10, focal=focal)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, np_db(np.asarray(z), np.asarray(y), [3, 0, 10], 10,
                                           focal=focal), rtol=1e-5)


def test_db_focal_vs_db():
  z, y = random_batch(4, b=5, c=4, scale=2.0)
  counts, n_train = jnp.array([30, 10, 4, 2]), 40
  plain = float(run(baselines.db, j(z), j(y), counts, n_train))
  foc = float(run(baselines.db, j(z), j(y), counts, n_train, focal=True))
  assert 0 < foc < 2 * plain        # 2 (1 - p_t)^2 < 2 element-wise
  # Confidently right predictions: the focal factor all but removes the loss.
  conf = np.where(y == 1, 8.0, -8.0)
  assert float(run(baselines.db, j(conf), j(y), counts, n_train, focal=True)) < \
      1e-3 * float(run(baselines.db, j(conf), j(y), counts, n_train))
  # DB-Focal's factor is differentiated: the gradient matches finite differences of the reference.
  grad = grad_z(baselines.db, j(z), j(y), counts, n_train, focal=True)
  fd = finite_difference(lambda v: np_db(v, y, np.asarray(counts), n_train, focal=True), z)
  np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Hill.

def test_hill_hand_values():
  # y=1, z=1, m=1: sigmoid(0) = 0.5 -> -(0.5)^2 ln 0.5 = 0.25 ln 2 = 0.1732868.
  # y=0, z=0: p = 0.5 -> (1.5 - 0.5) * 0.25 = 0.25. Row: 0.4232868.
  np.testing.assert_allclose(run(baselines.hill, j([[1.0, 0.0]]), j([[1, 0]])), 0.4232868,
                             rtol=1e-5)
  # y=0, z = ln 3 (p = 0.75): (1.5 - 0.75) * 0.5625 = 0.421875.
  np.testing.assert_allclose(run(baselines.hill, j([[np.log(3)]]), j([[0]])), 0.421875, rtol=1e-5)
  # y=1, z = 1 + ln 3 (sigmoid(z - m) = 0.75): -(0.25)^2 ln 0.75 = 0.0179801.
  np.testing.assert_allclose(run(baselines.hill, j([[1 + np.log(3)]]), j([[1]])),
                             0.0625 * -np.log(0.75), rtol=1e-5)


def test_hill_matches_numpy_and_gradient():
  z, y = random_batch(5)
  np.testing.assert_allclose(run(baselines.hill, j(z), j(y)), np_hill(z, y), rtol=1e-5)
  np.testing.assert_allclose(run(baselines.hill, j(z), j(y), margin=0.5, gamma=1.0, lam=2.0),
                             np_hill(z, y, 0.5, 1.0, 2.0), rtol=1e-5)
  # The positive focal margin is not stop-grad: gradient equals finite differences.
  grad = grad_z(baselines.hill, j(z), j(y))
  np.testing.assert_allclose(grad, finite_difference(lambda v: np_hill(v, y), z), rtol=1e-4,
                             atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Pseudo-Label.

def test_pseudo_label_hand_value():
  # Entry (y=0, z = ln 4, p = 0.8 > 0.6) becomes positive: -ln 0.8 = 0.2231436 instead of
  # -ln 0.2 = 1.6094379. Entry (y=0, z = 0, p = 0.5 < 0.6) stays negative: ln 2 = 0.6931472.
  z = j([[np.log(4), 0.0]])
  y = j([[0, 0]])
  np.testing.assert_allclose(run(baselines.pseudo_label, z, y), -np.log(0.8) + LN2, rtol=1e-5)
  np.testing.assert_allclose(run(baselines.pseudo_label, z, y, active=False), -np.log(0.2) + LN2,
                             rtol=1e-5)
  # A higher threshold leaves the entry negative.
  np.testing.assert_allclose(run(baselines.pseudo_label, z, y, threshold=0.9), -np.log(0.2) + LN2,
                             rtol=1e-5)


def test_pseudo_label_before_and_after_warmup():
  z, y = random_batch(6, scale=3.0)
  jitted = jax.jit(lambda z, y, active: baselines.pseudo_label(z, y, active=active))
  before = jitted(j(z), j(y), jnp.asarray(False))      # `active` traced
  np.testing.assert_allclose(before, run(baselines.bce, j(z), j(y)), rtol=1e-5)
  np.testing.assert_allclose(before, np_pseudo_label(z, y, active=False), rtol=1e-5)
  after = jitted(j(z), j(y), jnp.asarray(True))
  np.testing.assert_allclose(after, np_pseudo_label(z, y), rtol=1e-5)
  assert np.any((y == 0) & (sig(z) > 0.6))             # the batch has pseudo-labels to make
  assert float(after) < float(before)


def test_pseudo_label_gradient_treats_pseudo_labels_as_constant():
  z, y = random_batch(7, b=4, c=5)
  grad = grad_z(baselines.pseudo_label, j(z), j(y))
  p = sig(z)
  t = np.where((y == 0) & (p > 0.6), 1.0, y)
  np.testing.assert_allclose(grad, (p - t) / z.shape[0], rtol=1e-4, atol=1e-7)
  grad_off = grad_z(baselines.pseudo_label, j(z), j(y), active=False)
  np.testing.assert_allclose(grad_off, (p - y) / z.shape[0], rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# P-ASL / CSL.

def test_pasl_topk_hand_example():
  # B = 1, topk_factor = 1 -> k = 1: of the unannotated entries p = [0.75, 0.25], the 0.75 one is
  # ignored. Loss = -ln 0.5 (positive, g+ = 0) + 0.25^4 * (-ln 0.75) = 0.6931472 + 0.0011238
  # = 0.6942709.
  z = j([[0.0, np.log(3), -np.log(3)]])
  y = j([[1, 0, 0]])
  prior = jnp.zeros(3)
  ours = run(baselines.pasl, z, y, prior, topk_factor=1)
  np.testing.assert_allclose(ours, 0.6942709, rtol=1e-5)
  # The ignored entry has no gradient; the others do.
  grad = grad_z(baselines.pasl, z, y, prior, topk_factor=1)
  assert grad[0, 1] == 0.0 and grad[0, 0] != 0.0 and grad[0, 2] != 0.0
  # k >= number of unannotated entries (5 * 1 capped at 3): every unannotated entry is ignored,
  # the positive still counts.
  np.testing.assert_allclose(run(baselines.pasl, z, y, prior), LN2, rtol=1e-5)
  # topk_factor = 0: nothing ignored: ln 2 + 0.75^4 (-ln 0.25) + 0.25^4 (-ln 0.75).
  np.testing.assert_allclose(run(baselines.pasl, z, y, prior, topk_factor=0),
                             LN2 + 0.75 ** 4 * np.log(4) + 0.25 ** 4 * -np.log(0.75), rtol=1e-5)


def test_pasl_prior_mask_hand_example():
  z = j([[0.0, np.log(3), -np.log(3)]])
  y = j([[1, 0, 0]])
  # No top-k; prior of class 2 is 0.9 > 0.5: its unannotated entry is ignored.
  # Loss = ln 2 + 0.75^4 * ln 4 = 0.6931472 + 0.3164062 * 1.3862944 = 1.1317818.
  ours = run(baselines.pasl, z, y, jnp.array([0.0, 0.2, 0.9]), topk_factor=0)
  np.testing.assert_allclose(ours, LN2 + 0.75 ** 4 * np.log(4), rtol=1e-5)
  # Prior masking plus k = 1 (top entry class 1): only the positive is left: ln 2.
  ours = run(baselines.pasl, z, y, jnp.array([0.0, 0.2, 0.9]), topk_factor=1)
  np.testing.assert_allclose(ours, LN2, rtol=1e-5)
  # Prior masking never removes an annotated positive (class 0 has prior 0.9 here), and the
  # threshold is strict (prior == 0.5 is kept).
  ours = run(baselines.pasl, z, y, jnp.array([0.9, 0.5, 0.0]), topk_factor=0)
  np.testing.assert_allclose(ours, LN2 + 0.75 ** 4 * np.log(4) + 0.25 ** 4 * -np.log(0.75),
                             rtol=1e-5)


def test_pasl_topk_is_over_the_whole_batch_and_ties_go_to_lower_index():
  # B = 2, topk_factor = 1 -> k = 2: both entries of the batch with the highest p are in row 0.
  z = np.array([[3.0, 2.0, -1.0], [1.0, 0.5, 0.0]])
  y = np.zeros((2, 3), np.float32)
  y[1, 2] = 1
  ours = run(baselines.pasl, j(z), j(y), jnp.zeros(3), topk_factor=1)
  np.testing.assert_allclose(ours, np_pasl(z, y, np.zeros(3), topk_factor=1), rtol=1e-5)
  grad = np.asarray(grad_z(baselines.pasl, j(z), j(y), jnp.zeros(3), topk_factor=1))
  assert grad[0, 0] == 0 and grad[0, 1] == 0 and grad[1, 0] != 0
  # Equal p: the lower flattened index is ignored.
  z = j([[1.0, 1.0], [1.0, -2.0]])
  y = jnp.zeros((2, 2))
  grad = np.asarray(grad_z(baselines.pasl, z, y, jnp.zeros(2), topk_factor=1))
  # k = 2: entries (0, 0) and (0, 1) ignored, (1, 0) kept despite the same p.
  assert grad[0, 0] == 0 and grad[0, 1] == 0 and grad[1, 0] != 0 and grad[1, 1] != 0


@pytest.mark.parametrize('gp,gu,m,thr,topk', [(0.0, 4.0, 0.0, 0.5, 5), (1.0, 2.0, 0.1, 0.3, 1),
                                               (0.0, 4.0, 0.05, 0.5, 0)])
def test_pasl_matches_numpy(gp, gu, m, thr, topk):
  z, y = random_batch(8, b=4, c=12, rate=0.3)
  prior = np.random.default_rng(9).uniform(0, 0.8, 12)
  ours = jax.jit(lambda z, y, prior: baselines.pasl(
      z, y, prior, gamma_pos=gp, gamma_unann=gu, margin=m, prior_threshold=thr,
      topk_factor=topk))(j(z), j(y), j(prior))
  np.testing.assert_allclose(ours, np_pasl(z, y, prior, gp, gu, m, thr, topk), rtol=1e-5)


def test_pasl_below_margin_zero_loss_and_gradient():
  # p = sigmoid(-4) = 0.018 < m = 0.05: nothing from that unannotated entry.
  z = j([[-4.0, 2.0]])
  y = j([[0, 1]])
  grad = grad_z(baselines.pasl, z, y, jnp.zeros(2), margin=0.05, topk_factor=0)
  assert grad[0, 0] == 0.0 and grad[0, 1] != 0.0
  assert float(run(baselines.pasl, j([[-4.0]]), j([[0]]), jnp.zeros(1), margin=0.05,
                              topk_factor=0)) == 0.0


def test_pasl_focusing_factors_are_constant():
  z = j([[0.7, -0.2, 1.5]])
  y = j([[1, 0, 0]])
  gp, gu = 1.0, 4.0
  grad = grad_z(baselines.pasl, z, y, jnp.zeros(3), gamma_pos=gp, gamma_unann=gu, topk_factor=0)
  p = sig(np.asarray(z))
  # y=1: -(1-p)^g+ log p, factor constant -> -(1-p)^(g+ + 1);
  # y=0 (m=0): -p^g_u log(1-p), factor constant -> p^(g_u + 1).
  expected = np.where(np.asarray(y) == 1, -(1 - p) ** (gp + 1), p ** (gu + 1))
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)


def three_kinds(seed, b=5, c=8):
  """Logits, observed positives and a known-negative mask: each entry positive, known negative
  or unknown (about a third each), as from labels in {1, 0, -1}."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(b, c)) * 3.0
  raw = rng.integers(-1, 2, size=(b, c))
  return z, (raw == 1).astype(np.float32), (raw == 0).astype(np.float32)


@pytest.mark.parametrize('gp,gu,gn,m,thr,topk', [(0.0, 4.0, 1.0, 0.0, 0.5, 1),
                                                  (1.0, 2.0, 3.0, 0.1, 0.3, 2),
                                                  (0.0, 4.0, 0.0, 0.05, 0.5, 0),
                                                  (0.0, 4.0, 1.0, 0.0, 0.5, 5)])
def test_pasl_with_annotated_negatives_matches_numpy(gp, gu, gn, m, thr, topk):
  z, y, neg = three_kinds(3)
  prior = np.random.default_rng(4).uniform(0, 0.8, y.shape[1])
  fn = jax.jit(lambda z, y, prior, neg: baselines.pasl(
      z, y, prior, gamma_pos=gp, gamma_unann=gu, gamma_neg=gn, margin=m, prior_threshold=thr,
      topk_factor=topk, negatives=neg))
  ours = fn(j(z), j(y), j(prior), j(neg))
  ref = np_pasl(z, y, prior, gp, gu, m, thr, topk, neg=neg, gn=gn)
  np.testing.assert_allclose(ours, ref, rtol=1e-5)
  # The annotated-negative term changes the loss (g- != g_u and no selective weights there).
  assert abs(ref - np_pasl(z, y, prior, gp, gu, m, thr, topk)) > 1e-3
  # No known negative (None, or an all-zero mask): exactly the loss without negatives.
  plain = run(baselines.pasl, j(z), j(y), j(prior), gamma_pos=gp, gamma_unann=gu, margin=m,
              prior_threshold=thr, topk_factor=topk)
  np.testing.assert_allclose(plain, np_pasl(z, y, prior, gp, gu, m, thr, topk), rtol=1e-5)
  np.testing.assert_array_equal(fn(j(z), j(y), j(prior), jnp.zeros_like(j(y))), plain)


def test_pasl_annotated_negatives_are_never_ignored():
  # One row, classes [positive, known negative, unknown, unknown]; the known negative has the
  # highest p and a prior above the threshold, yet keeps w = 1: k = 1 ignores the likeliest
  # unknown entry (class 2) only.
  z = j([[0.0, 3.0, 2.0, -1.0]])
  y = j([[1, 0, 0, 0]])
  neg = j([[0, 1, 0, 0]])
  prior = jnp.array([0.0, 0.9, 0.0, 0.0])
  grad = np.asarray(grad_z(baselines.pasl, z, y, prior, topk_factor=1, negatives=neg))
  assert grad[0, 2] == 0 and grad[0, 1] != 0 and grad[0, 3] != 0
  p = sig(np.asarray(z))[0]
  # ln 2 (positive) + p1^1 (-ln(1-p1)) (annotated negative, g- = 1) + p3^4 (-ln(1-p3)).
  expected = LN2 - p[1] * np.log(1 - p[1]) - p[3] ** 4 * np.log(1 - p[3])
  ours = run(baselines.pasl, z, y, prior, topk_factor=1, negatives=neg)
  np.testing.assert_allclose(ours, expected, rtol=1e-5)
  # The focusing factor p^g- is a constant: d/dz [-p log(1-p)] with p constant = p * p.
  np.testing.assert_allclose(grad[0, 1], p[1] ** 2, rtol=1e-5)
  # A mask entry on a positive is ignored (the label says positive).
  both = run(baselines.pasl, z, y, prior, topk_factor=1, negatives=j([[1, 1, 0, 0]]))
  np.testing.assert_allclose(both, ours, rtol=1e-6)


def test_pasl_method_passes_its_batch_known_negatives_to_the_loss():
  """SingleBranch.loss hands P-ASL the stream's 'label_negative'; a batch without the key (or
  with an all-zero mask) gives the loss without negatives."""
  from comic_jax.methods import registry
  from conftest import tiny_config
  rng = np.random.default_rng(0)
  _, y, neg = three_kinds(5, b=8, c=4)
  config = tiny_config(**{'method': 'pasl', 'model.backbone': 'mlp', 'model.mlp_widths': (6,),
                          'model.projection_dim': 8, 'baselines.pasl.topk_factor': 1})
  method = registry.create_method(config, y, steps_per_epoch=1, class_names=list('abcd'))
  x = j(rng.normal(size=(8, 3)))
  batch = {'main': {'image': x, 'label': j(y), 'label_full': j(y), 'label_negative': j(neg)}}
  params, batch_stats, state = method.init(jax.random.key(0), batch)
  out, _ = method.network.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                mutable=['batch_stats'])
  z = np.asarray(out['logits'], np.float64)
  prior = baselines.naive_prior(y)
  loss = lambda b: float(method.loss(params, batch_stats, state, b, None, 0)[0])
  np.testing.assert_allclose(loss(batch), np_pasl(z, y, prior, topk_factor=1, neg=neg),
                             rtol=1e-5)
  plain = np_pasl(z, y, prior, topk_factor=1)
  without = {'main': {k: v for k, v in batch['main'].items() if k != 'label_negative'}}
  np.testing.assert_allclose(loss(without), plain, rtol=1e-5)
  zeros = {'main': dict(batch['main'], label_negative=jnp.zeros_like(j(y)))}
  np.testing.assert_allclose(loss(zeros), plain, rtol=1e-5)


def test_naive_prior():
  labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(baselines.naive_prior(labels), [0.75, 0.5, 0.0])


# ---------------------------------------------------------------------------------------------

def test_registered_baselines_train_with_their_losses_and_defaults():
  """Each registered baseline's method object computes its loss with the config defaults."""
  from comic_jax.methods import registry
  from conftest import tiny_config
  z, y = random_batch(10)
  refs = {'bce': reduce(np_bce_el(z, y)), 'focal': np_focal(z, y), 'asl': np_asl(z, y),
          'hill': np_hill(z, y), 'pseudo_label': np_pseudo_label(z, y)}
  for name, ref in refs.items():
    method = registry.create_method(tiny_config(method=name), y, steps_per_epoch=1,
                                    class_names=[str(c) for c in range(y.shape[1])])
    got = jax.jit(method.loss_fn)(j(z), j(y), jnp.asarray(5))
    np.testing.assert_allclose(got, ref, rtol=1e-5, err_msg=name)
  # P-ASL reads the known-negative mask of its batch (config defaults, g- = 1); the others don't.
  z, y, neg = three_kinds(11, b=6, c=5)
  method = registry.create_method(tiny_config(method='pasl'), y, steps_per_epoch=1,
                                  class_names=[str(c) for c in range(y.shape[1])])
  assert method.reads_negatives
  got = jax.jit(method.loss_fn)(j(z), j(y), jnp.asarray(5), j(neg))
  ref = np_pasl(z, y, baselines.naive_prior(y), 0.0, 4.0, 0.0, 0.5, 5, neg=neg, gn=1.0)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  assert not registry.create_method(tiny_config(method='hill'), y, steps_per_epoch=1,
                                    class_names=[str(c) for c in range(5)]).reads_negatives
