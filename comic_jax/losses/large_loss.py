"""Large-loss rejection and correction: LL-R, LL-Ct, LL-Cp (docs/baselines.md, "Partial-label
baselines published after the paper").

LL-* [snucml/LargeLossMatters; Kim et al., CVPR 2022] is BCE with every unobserved label taken as
negative, except that in each batch the k unobserved entries with the largest BCE losses are
rejected (LL-R: loss 0) or corrected (LL-Ct, LL-Cp: BCE against label 1). k grows with the epoch:
k = ceil(B x C x (1 - llr_rel)), llr_rel = 1 - epoch x delta_rel / 100 (epoch counted from 0, so
nothing changes in the first epoch); LL-Cp uses k = ceil(B x C x delta_rel / 100) from the second
epoch on and keeps its corrections as positives for good (the method keeps the flipped labels).

BoostLU, which its authors pair with LL-Ct, is a head: `models.heads.boost_pool`.

All functions are pure and jit-able; `step` may be traced, the rest are Python numbers.
"""
from __future__ import annotations

import fractions

import jax.numpy as jnp
import optax

from comic_jax.losses.common import reduce_loss

SCHEMES = ('reject', 'correct')      # what happens to the selected entries' loss


def delta_fraction(delta_rel) -> fractions.Fraction:
  """delta_rel (percent, as the authors give it: 0.1 .. 0.5) as an exact fraction of 1, read as
  the decimal it is written as (0.2 -> 1/500), so k below has no float rounding."""
  return fractions.Fraction(str(float(delta_rel))) / 100


def llr_rel(step, steps_per_epoch: int, delta_rel: float) -> jnp.ndarray:
  """The authors' llr_rel of the epoch holding `step` (0-based steps, `steps_per_epoch` steps an
  epoch): 1 in the first epoch, then delta_rel / 100 less after each epoch."""
  epoch = jnp.asarray(step) // steps_per_epoch
  return 1.0 - epoch.astype(jnp.float32) * float(delta_fraction(delta_rel))


def num_large(step, steps_per_epoch: int, delta_rel: float, num_entries: int, *,
              permanent: bool = False) -> jnp.ndarray:
  """k, the number of largest unobserved losses handled apart in the batch of `step`
  (int32, in [0, num_entries]; num_entries = B x C):

      k = ceil(B x C x (1 - llr_rel)) = ceil(B x C x epoch x delta_rel / 100)   (LL-R, LL-Ct)
      k = ceil(B x C x delta_rel / 100) if epoch >= 1 else 0                    (LL-Cp)

  computed in integers (`delta_fraction` = p / q): ceil(n / q) = (n + q - 1) // q.
  """
  frac = delta_fraction(delta_rel)
  p, q = frac.numerator, frac.denominator
  if p == 0:                                   # delta_rel = 0: plain BCE throughout
    return jnp.zeros((), jnp.int32)
  epoch = (jnp.asarray(step) // steps_per_epoch).astype(jnp.int32)
  times = jnp.minimum(epoch, 1) if permanent else epoch
  # k reaches B x C at times = ceil(q / p): capping there keeps B x C x times x p within int32
  # (`fits_int32` checks B x C x (q + p)).
  times = jnp.minimum(times, -(-q // p))
  k = (num_entries * p * times + q - 1) // q
  return jnp.clip(k, 0, num_entries).astype(jnp.int32)


def fits_int32(num_entries: int, delta_rel: float) -> bool:
  """Whether `num_large` computes k for B x C = num_entries without int32 overflow."""
  frac = delta_fraction(delta_rel)
  return num_entries * (frac.denominator + frac.numerator) < 2 ** 31


def large_loss_selection(losses: jnp.ndarray, unobserved: jnp.ndarray, k) -> jnp.ndarray:
  """(B, C) bool: the unobserved entries whose loss is among the k largest unobserved losses of
  the batch (all of them at or above the k-th largest value, as the authors' `>=` does, so tied
  values at the threshold are all taken). k = 0 selects nothing; k beyond the number of
  unobserved entries selects them all. Observed entries are never selected (the authors' code
  gives them loss 0 in the ranking, which selects them too when k reaches into the zeros)."""
  flat = jnp.where(unobserved, losses, -jnp.inf).reshape(-1)
  ranked = -jnp.sort(-flat)                                     # descending
  k = jnp.asarray(k, jnp.int32)
  threshold = ranked[jnp.clip(k - 1, 0, flat.size - 1)]
  return unobserved & (losses >= threshold) & (k > 0)


def large_loss(logits: jnp.ndarray, labels: jnp.ndarray, k, *, scheme: str = 'reject',
               negatives: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """LL-R (scheme='reject') or LL-Ct / LL-Cp (scheme='correct') on one batch, with k from
  `num_large`. Per element, with l = BCE(z, y) and s the selection (`large_loss_selection`):

      reject:   l if not s, else 0
      correct:  l if not s, else BCE(z, 1)

  reduced with the project's rule (`reduce_loss`: sum over classes, mean over samples; the
  authors divide the sum by B x C, C times less, which with Adam only rescales the signal).

  Unobserved entries are the 0 labels; with `negatives` (the batch's known-negative mask),
  known negatives are observed too and never selected (the authors' OpenImages rule: only the
  unknown entries are candidates). The selection depends on the loss values only through a
  comparison, so no gradient flows through it.

  Returns (loss, selection): the selection is what LL-Cp turns into permanent positives.
  """
  if scheme not in SCHEMES:
    raise ValueError(f'scheme {scheme!r} is not one of {SCHEMES}')
  z = logits.astype(jnp.float32)
  y = labels.astype(jnp.float32)
  unobserved = y <= 0
  if negatives is not None:
    unobserved = unobserved & ~(jnp.asarray(negatives) > 0)
  bce = optax.sigmoid_binary_cross_entropy(z, y)
  selected = large_loss_selection(bce, unobserved, k)
  other = (jnp.zeros_like(bce) if scheme == 'reject'
           else optax.sigmoid_binary_cross_entropy(z, jnp.ones_like(y)))
  return reduce_loss(jnp.where(selected, other, bce)), selected

