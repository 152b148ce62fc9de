"""Multi-label losses of the baselines (docs/baselines.md, "The baselines in comic-jax").

Every loss takes (B, C) logits z and (B, C) observed 0/1 labels y, computes per-element losses and
reduces them with `reduce_loss`: sum over classes, mean over samples. The originals disagree (ASL,
Hill and P-ASL sum over batch and classes, DB and BCE average over both); with Adam a constant
factor only rescales the learning signal. p = sigmoid(z) throughout; "stop-grad" factors are
wrapped in `jax.lax.stop_gradient`. All functions are pure and jit-able (the keyword knobs are
Python numbers, except `pseudo_label`'s `active`, which may be traced).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from comic_jax.losses.common import reduce_loss
from comic_jax.losses.mfm import mfm_loss

# DB-Focal's focusing factor is fixed by its authors' config (ResampleLoss focal=dict(gamma=2,
# balance_param=2.0)); docs/baselines.md names the numbers, not knobs.
_DB_FOCAL_GAMMA = 2.0
_DB_FOCAL_BALANCE = 2.0


def bce(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Binary cross-entropy -[y log p + (1-y) log(1-p)], p = sigmoid(z), computed from logits."""
  return reduce_loss(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))


def focal(logits: jnp.ndarray, labels: jnp.ndarray, *, gamma: float = 2.0,
          alpha: float = 0.25) -> jnp.ndarray:
  """Focal loss [DB's focal_loss]: alpha * (1 - p_t)^gamma * BCE per element.

  p_t = p for y=1 and 1-p for y=0; alpha weighs both signs. The focal factor is NOT stop-grad (it
  is differentiated, as in the original). 1 - p_t is computed as sigmoid((1 - 2y) z), which is
  exact for 0/1 labels and avoids the cancellation in 1 - sigmoid(z).
  """
  z = logits.astype(jnp.float32)
  y = labels.astype(jnp.float32)
  ce = optax.sigmoid_binary_cross_entropy(z, y)
  one_minus_pt = jax.nn.sigmoid((1.0 - 2.0 * y) * z)
  return reduce_loss(alpha * one_minus_pt ** gamma * ce)


def asl(logits: jnp.ndarray, labels: jnp.ndarray, *, gamma_pos: float = 0.0,
        gamma_neg: float = 4.0, margin: float = 0.05) -> jnp.ndarray:
  """Asymmetric loss [Alibaba-MIIL/ASL], per element

      y=1:  -(1-p)^g+ log p
      y=0:  -p_m^g- log(1 - p_m),   p_m = max(p - m, 0),

  logs clamped at 1e-8, focusing factors stop-grad; for p < m the negative term and its gradient
  are 0. This is `mfm_loss` with scalar exponents and no class weight. `margin` must be a Python
  number (static under jit).
  """
  return mfm_loss(logits, labels, gamma_pos, gamma_neg, margin=margin)


def db_weights(labels: jnp.ndarray, counts: jnp.ndarray, *, a: float = 0.1, b: float = 10.0,
               mu: float = 0.2) -> jnp.ndarray:
  """DB's re-balanced weights [DistributionBalancedLoss, ResampleLoss.rebalance_weight], (B, C).

      r_ki = (1/n_i) / sum_{j in P_k} (1/n_j)   for every class i,
      w_ki = a + sigmoid(b * (r_ki - mu)),

  P_k the observed positives of image k. An image with no positive gets w = a + 1 everywhere (the
  original's limit r = inf). `counts` are the observed positives per class n_i; a class with
  n_i = 0 is treated as having one positive (1/n_i = 1), so no NaN or inf arises. The weights
  depend on labels and counts only: they are constants for the gradient.
  """
  y = jax.lax.stop_gradient(labels.astype(jnp.float32))
  n = jnp.maximum(jnp.asarray(counts, jnp.float32), 1.0)
  inv = 1.0 / n                                            # (C,)
  repeat = jnp.sum(y * inv, axis=-1, keepdims=True)        # (B, 1)
  has_pos = repeat > 0
  r = inv / jnp.where(has_pos, repeat, 1.0)
  w = a + jnp.where(has_pos, jax.nn.sigmoid(b * (r - mu)), 1.0)
  return jax.lax.stop_gradient(w)


def db_bias(counts: jnp.ndarray, num_train, *, kappa: float = 0.05,
            lam: float = 2.0) -> jnp.ndarray:
  """DB's negative-tolerant bias nu_i = -(kappa / lam) * log(N / n_i - 1), (C,).

  N = num_train, the number of training images (N >= 2). n_i is clamped into [1, N - 1] so that a
  class with no positive (n_i = 0, log(inf)) or positive in every image (n_i = N, log(0)) gets a
  finite bias (that of n_i = 1 or n_i = N - 1).
  """
  big_n = jnp.asarray(num_train, jnp.float32)
  n = jnp.clip(jnp.asarray(counts, jnp.float32), 1.0, big_n - 1.0)
  return -(kappa / lam) * jnp.log(big_n / n - 1.0)


def db(logits: jnp.ndarray, labels: jnp.ndarray, counts: jnp.ndarray, num_train, *,
       a: float = 0.1, b: float = 10.0, mu: float = 0.2, kappa: float = 0.05, lam: float = 2.0,
       focal: bool = False) -> jnp.ndarray:
  """Distribution-Balanced loss (DB, or DB-Focal with focal=True) [DistributionBalancedLoss].

  With z' = z + nu (`db_bias`) and w the re-balanced weights (`db_weights`, constants), per element

      y=1:  w * log(1 + exp(-z'))
      y=0:  (w / lam) * log(1 + exp(lam * z'))

  (stable softplus). DB-Focal multiplies each term by 2.0 * (1 - p_t)^2, p_t = sigmoid(z') for
  positives and 1 - sigmoid(lam z') for negatives, not stop-grad (the original differentiates
  through its `cls_score.clone()`). nu is used only inside the loss; predictions use raw z.
  Defaults are COCO's (VOC: mu=0.3, lam=5).
  """
  z = logits.astype(jnp.float32)
  y = labels.astype(jnp.float32)
  w = db_weights(y, counts, a=a, b=b, mu=mu)
  zp = z + db_bias(counts, num_train, kappa=kappa, lam=lam)
  per_element = y * w * jax.nn.softplus(-zp) + (1.0 - y) * (w / lam) * jax.nn.softplus(lam * zp)
  if focal:
    one_minus_pt = y * jax.nn.sigmoid(-zp) + (1.0 - y) * jax.nn.sigmoid(lam * zp)
    per_element = _DB_FOCAL_BALANCE * one_minus_pt ** _DB_FOCAL_GAMMA * per_element
  return reduce_loss(per_element)


def hill(logits: jnp.ndarray, labels: jnp.ndarray, *, margin: float = 1.0, gamma: float = 2.0,
         lam: float = 1.5) -> jnp.ndarray:
  """Hill loss [xinyu1205/robust-loss-mlml], per element

      y=1:  -(1 - sigmoid(z - m))^gamma * log sigmoid(z - m)     (focal margin, not stop-grad)
      y=0:  (lam - p) * p^2,   p = sigmoid(z).

  log sigmoid is computed as log_sigmoid (the original takes log of the sigmoid, unclamped).
  """
  z = logits.astype(jnp.float32)
  y = labels.astype(jnp.float32)
  zm = z - margin
  pos = -jax.nn.sigmoid(-zm) ** gamma * jax.nn.log_sigmoid(zm)
  p = jax.nn.sigmoid(z)
  neg = (lam - p) * p ** 2
  return reduce_loss(y * pos + (1.0 - y) * neg)


def pseudo_label(logits: jnp.ndarray, labels: jnp.ndarray, *, threshold: float = 0.6,
                 active=True) -> jnp.ndarray:
  """Pseudo-Label (Lee 2013): BCE where an unobserved entry (y=0) with stop-grad p > threshold
  counts as positive, recomputed each batch. The pseudo-targets are constants for the gradient.

  `active` (a Python or traced bool) switches pseudo-labelling on; the training loop passes
  False during the warm-up (docs/baselines.md: one warm-up epoch), where the loss is plain BCE.
  """
  z = logits.astype(jnp.float32)
  y = labels.astype(jnp.float32)
  p = jax.lax.stop_gradient(jax.nn.sigmoid(z))
  pseudo = jnp.logical_and(jnp.asarray(active, bool), jnp.logical_and(y <= 0, p > threshold))
  targets = jax.lax.stop_gradient(jnp.where(pseudo, 1.0, y))
  return reduce_loss(optax.sigmoid_binary_cross_entropy(z, targets))


def pasl(logits: jnp.ndarray, labels: jnp.ndarray, prior: jnp.ndarray, *,
         gamma_pos: float = 0.0, gamma_unann: float = 4.0, gamma_neg: float = 1.0,
         margin: float = 0.0, prior_threshold: float = 0.5, topk_factor: int = 5,
         negatives: jnp.ndarray | None = None) -> jnp.ndarray:
  """P-ASL / CSL partial selective loss [Alibaba-MIIL/PartialLabelingCSL, PartialSelectiveLoss]
  (docs/baselines.md, P-ASL). Each entry is an annotated positive (y=1), an annotated negative
  (`negatives`) or unannotated (the rest):

      -w [1(y=1) (1-p)^g+ log p + 1(neg) p_m^g- log(1 - p_m) + 1(unann) p_m^g_u log(1 - p_m)],

  p_m = max(p - m, 0), focusing factors stop-grad, logs clamped at 1e-8. Without `negatives`
  (None, or all zero: PLT data) every 0 is unannotated and the annotated-negative term never
  applies. Selective weights w (constants) act on unannotated entries only: 0 for those of
  classes with prior > prior_threshold, and 0 for the k unannotated entries of the batch most
  likely positive (highest p), k = topk_factor * B capped at B * C; 1 otherwise, so annotated
  positives and annotated negatives always keep w = 1.

  As in the original, the top-k is taken over all unannotated entries, including those the prior
  already masks (the two masks may overlap). The ranking uses p (the original sorts 1 - p_m
  ascending; the order is the same except among entries with p <= m, whose loss is 0 either
  way). Ties go to the lower flattened (row-major) index, the rule of `jax.lax.top_k`.
  `topk_factor` and `margin` must be Python numbers (static under jit).

  Args:
    logits: (B, C) z.
    labels: (B, C) 1 = positive, 0 = not a positive (annotated negative or unannotated).
    prior: (C,) class prior (e.g. `naive_prior`, or the mean prediction of an "ignore"-mode model).
    negatives: optional (B, C) mask, nonzero where the label is a known (annotated) negative;
      ignored where y=1.
  """
  y = labels.astype(jnp.float32)
  unann = y <= 0
  known_neg = None
  if negatives is not None:
    known_neg = unann & (jnp.asarray(negatives) > 0)
    unann = unann & ~known_neg
  p = jax.nn.sigmoid(logits.astype(jnp.float32))

  # Selective weights.
  ignore = unann & (jnp.asarray(prior, jnp.float32) > prior_threshold)[None, :]
  batch, num_classes = y.shape
  k = min(int(topk_factor) * batch, batch * num_classes)
  if k > 0:
    score = jax.lax.stop_gradient(jnp.where(unann, p, -jnp.inf)).reshape(-1)
    _, idx = jax.lax.top_k(score, k)
    top = jnp.zeros(batch * num_classes, bool).at[idx].set(True).reshape(batch, num_classes)
    ignore = ignore | (top & unann)
  w = jax.lax.stop_gradient(jnp.where(ignore, 0.0, 1.0))
  # The per-element terms are ASL's (= `mfm_loss` with scalar exponents), then weighted. Known
  # negatives take the y=0 term with g- instead of g_u (a select: without any, the values are
  # those of the unannotated term exactly).
  per_element = mfm_loss(logits, y, gamma_pos, gamma_unann, margin=margin, reduce=False)
  if known_neg is not None:
    annotated = mfm_loss(logits, y, gamma_pos, gamma_neg, margin=margin, reduce=False)
    per_element = jnp.where(known_neg, annotated, per_element)
  return reduce_loss(w * per_element)


def naive_prior(observed_labels) -> np.ndarray:
  """The cheap P-ASL prior: per-class frequency of observed positives, (N, C) -> (C,) (NumPy)."""
  y = np.asarray(observed_labels, np.float64)
  return (y > 0).mean(axis=0)


