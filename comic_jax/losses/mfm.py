"""MFM, the multi-focal modifier (docs/method.md "MFM: multi-focal modifier loss").

Pure functions: the per-class focusing exponents from class counts, and the MFM loss. With
zero exponents, no probability shift and no class weight, the MFM loss is exactly BCE (the
"-MFM" ablation).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from comic_jax.losses.common import reduce_loss

_EPS = 1e-8  # clamp inside logs, as ASL does


def head_tail_factor(counts: jnp.ndarray, exponent: float = 1.0 / 3.0) -> jnp.ndarray:
  """g_ht[c] = (1 - ln D_c) ** exponent, D_c = n_c / max_j n_j (docs/method.md, MFM).

  1 for the largest class, growing toward the tail. A class with no (observed) positive is
  counted as having one, so its factor stays finite.
  """
  n = jnp.maximum(jnp.asarray(counts, jnp.float32), 1.0)
  return (1.0 - jnp.log(n / jnp.max(n))) ** exponent


def focal_exponents(counts: jnp.ndarray, *, gamma_pn_pos: float, gamma_pn_neg: float,
                    w_pos: float, w_neg: float, exponent: float = 1.0 / 3.0):
  """(gamma+, gamma-) per class: gamma± = gamma_pn± + w± * g_ht (docs/method.md, MFM)."""
  g = head_tail_factor(counts, exponent)
  return gamma_pn_pos + w_pos * g, gamma_pn_neg + w_neg * g


def mfm_loss(logits: jnp.ndarray, targets: jnp.ndarray, gamma_pos: jnp.ndarray,
             gamma_neg: jnp.ndarray, *, margin: float = 0.05,
             class_weight: jnp.ndarray | None = None, reduce: bool = True,
             pos_scale: jnp.ndarray | None = None,
             neg_scale: jnp.ndarray | None = None) -> jnp.ndarray:
  """The MFM loss (docs/method.md, MFM), summed over classes and averaged over samples.

      y=1:  l+ = -(1 - p) ** gamma+[c] * log(p)
      y=0:  l- = -(p_m) ** gamma-[c] * log(1 - p_m),   p_m = max(p - margin, 0)

  The focusing factors are constants in the gradient (stop_gradient); for p < margin the
  negative term and its gradient are 0.

  Args:
    logits: (B, C) z; p = sigmoid(z).
    targets: (B, C) in {0, 1}.
    gamma_pos, gamma_neg: (C,) exponents (`focal_exponents`), or scalars.
    margin: m, the probability shift on negatives.
    class_weight: optional (C,) factor per class (MFM's `class_weight` option multiplies by g_ht).
    reduce: False returns the (B, C) per-element losses.
    pos_scale, neg_scale: optional (B, C) factors of the authors' co-occurrence scaling
      (`cooccurrence_scales`): p becomes p * pos_scale in the positive term and 1 - p_m becomes
      min((1 - p_m) * neg_scale, 1) in the negative term, the focusing factors included.
  """
  y = targets.astype(jnp.float32)
  z = logits.astype(jnp.float32)
  p = jax.nn.sigmoid(z)
  log_p = jnp.maximum(jax.nn.log_sigmoid(z), jnp.log(_EPS))
  if margin > 0:
    p_m = jnp.maximum(p - margin, 0.0)
    log_1m = jnp.log(jnp.clip(jax.nn.sigmoid(-z) + margin, _EPS, 1.0))   # log(1 - p_m)
  else:
    p_m = p
    log_1m = jnp.maximum(jax.nn.log_sigmoid(-z), jnp.log(_EPS))
  if pos_scale is not None:
    p = p * pos_scale
    log_p = jnp.maximum(jax.nn.log_sigmoid(z) + jnp.log(jnp.maximum(pos_scale, _EPS)),
                        jnp.log(_EPS))
  if neg_scale is not None:
    log_1m = jnp.minimum(log_1m + jnp.log(neg_scale), 0.0)
    p_m = 1.0 - jnp.exp(log_1m)
  focus_pos = jax.lax.stop_gradient((1.0 - p) ** gamma_pos)
  focus_neg = jax.lax.stop_gradient(p_m ** gamma_neg)
  per_element = -(y * focus_pos * log_p + (1.0 - y) * focus_neg * log_1m)
  if class_weight is not None:
    per_element = per_element * class_weight
  return reduce_loss(per_element) if reduce else per_element


def cooccurrence_matrix(observed_labels) -> np.ndarray:
  """The authors' normalised co-occurrence matrix A (docs/method.md, "Paper vs the authors'
  code"): M = Y^T Y over the observed training labels (M[i, j] = images with both i and j, the
  diagonal n_i), each column divided by its sum (NumPy; a column without positives stays 0)."""
  y = (np.asarray(observed_labels) > 0).astype(np.float64)
  m = y.T @ y
  return (m / np.maximum(m.sum(axis=0, keepdims=True), 1.0)).astype(np.float32)


def cooccurrence_scales(targets: jnp.ndarray, matrix: jnp.ndarray, neg_factor: float = 1.2):
  """(pos_scale, neg_scale) of the authors' MFM for a batch (no gradient).

  For sample k with positive classes P_k: s_k = mean of the rows A[i] over i in P_k, renormalised
  to sum to 1; pos_scale = 1 - s_k; neg_scale = neg_factor where s_k > 0 (classes that co-occur
  with the sample's positives, the positives themselves included), else 1. A sample without
  positives gets s = 0, no scaling (the authors' code divides by zero there).
  """
  y = jax.lax.stop_gradient(targets).astype(jnp.float32)
  a = jnp.asarray(matrix, jnp.float32)
  n = y.sum(axis=-1, keepdims=True)
  mean_rows = (y @ a) / jnp.maximum(n, 1.0)
  s = mean_rows / jnp.maximum(mean_rows.sum(axis=-1, keepdims=True), _EPS)
  s = jnp.where(n > 0, s, 0.0)
  return 1.0 - s, jnp.where(s > 0, neg_factor, 1.0)


@dataclasses.dataclass(frozen=True)
class MFMSettings:
  """The knobs of MFM (config.comic.mfm). `MFMSettings.bce()` turns MFM into plain BCE."""
  gamma_pn_pos: float = 0.0
  gamma_pn_neg: float = 3.0
  w_pos: float = 0.0
  w_neg: float = 1.0
  margin: float = 0.05
  exponent: float = 1.0 / 3.0
  class_weight: bool = True
  cooccurrence_factor: float = 0.0       # > 0: the authors' co-occurrence scaling, this factor
                                         # on co-occurring negatives (their 1.2); 0: off

  @classmethod
  def from_config(cls, mfm_config) -> 'MFMSettings':
    if not mfm_config.enabled:
      return cls.bce()
    return cls(gamma_pn_pos=mfm_config.gamma_pn_pos, gamma_pn_neg=mfm_config.gamma_pn_neg,
               w_pos=mfm_config.w_pos, w_neg=mfm_config.w_neg, margin=mfm_config.margin,
               exponent=mfm_config.exponent, class_weight=mfm_config.class_weight,
               cooccurrence_factor=(mfm_config.cooccurrence_factor
                                    if mfm_config.official_cooccurrence else 0.0))

  @classmethod
  def bce(cls) -> 'MFMSettings':
    return cls(gamma_pn_pos=0.0, gamma_pn_neg=0.0, w_pos=0.0, w_neg=0.0, margin=0.0,
               class_weight=False)


def mfm_loss_from_counts(logits: jnp.ndarray, targets: jnp.ndarray, counts: jnp.ndarray,
                         settings: MFMSettings, *, weight_exponent: float | None = None,
                         focal_exponent: float | None = None,
                         cooccurrence: jnp.ndarray | None = None,
                         reduce: bool = True) -> jnp.ndarray:
  """`mfm_loss` with exponents (and class weights g_ht, if enabled) derived from `counts`.

  `weight_exponent` overrides the cube root in the class weights (the authors' RLC uses 1/6),
  `focal_exponent` the one inside the focusing exponents gamma± (their RLC: 1/6 as well).
  `cooccurrence`: the matrix of `cooccurrence_matrix`, used when
  `settings.cooccurrence_factor` > 0 (the authors' co-occurrence scaling).
  """
  gamma_pos, gamma_neg = focal_exponents(
      counts, gamma_pn_pos=settings.gamma_pn_pos, gamma_pn_neg=settings.gamma_pn_neg,
      w_pos=settings.w_pos, w_neg=settings.w_neg,
      exponent=settings.exponent if focal_exponent is None else focal_exponent)
  weight = None
  if settings.class_weight:
    exponent = settings.exponent if weight_exponent is None else weight_exponent
    weight = head_tail_factor(counts, exponent)
  pos_scale = neg_scale = None
  if settings.cooccurrence_factor > 0 and cooccurrence is not None:
    pos_scale, neg_scale = cooccurrence_scales(targets, cooccurrence,
                                               settings.cooccurrence_factor)
  return mfm_loss(logits, targets, gamma_pos, gamma_neg, margin=settings.margin,
                  class_weight=weight, reduce=reduce, pos_scale=pos_scale, neg_scale=neg_scale)
