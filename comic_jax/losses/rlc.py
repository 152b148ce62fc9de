"""RLC, the reflective label corrector (docs/method.md "RLC: reflective label corrector").

Pure functions over an explicit state (kept in the train state and checkpointed):

    {'class_mean_sum': (C,), 'seen': (), 'corrections': (C,), 'true_corrections': (C,)}

`class_mean_sum / seen` is the running mean P_c of p_c over the samples seen this epoch
(including the current batch); `corrections` counts the labels corrected so far this epoch per
class (the dynamic re-weighting adds them to n_c), `true_corrections` those that were a hidden
true label (diagnostics only: it reads the simulated data's full labels).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from comic_jax.losses import mfm


def init_state(num_classes: int) -> dict:
  zeros = jnp.zeros((num_classes,), jnp.float32)
  return {'class_mean_sum': zeros, 'seen': jnp.zeros((), jnp.float32), 'corrections': zeros,
          'true_corrections': zeros}


def reset_epoch(state: dict, new_epoch: jnp.ndarray, *, keep_means: bool = False) -> dict:
  """Zeroes the per-epoch counters where `new_epoch` (a traced bool); `keep_means` keeps the EMA
  of the class means across epochs."""
  out = {k: jnp.where(new_epoch, jnp.zeros_like(v), v) for k, v in state.items()}
  if keep_means:
    out['class_mean_sum'], out['seen'] = state['class_mean_sum'], state['seen']
  return out


def update_class_means(state: dict, probs: jnp.ndarray, *, mode: str = 'epoch',
                       ema_decay: float = 0.9) -> tuple[dict, jnp.ndarray]:
  """Adds a batch of probabilities to the running class means; returns (state, P).

  mode 'epoch': P_c = mean of p_c over every sample seen this epoch, this batch included.
  mode 'ema':   P <- ema_decay * P + (1 - ema_decay) * batch mean (the first batch sets P).
  mode 'batch': P = the batch mean (the authors' code, `official_batch_mean`).
  """
  p = jax.lax.stop_gradient(probs).astype(jnp.float32)
  batch_mean = p.mean(axis=0)
  state = dict(state)
  if mode == 'epoch':
    state['class_mean_sum'] = state['class_mean_sum'] + p.sum(axis=0)
    state['seen'] = state['seen'] + p.shape[0]
    return state, state['class_mean_sum'] / state['seen']
  if mode == 'ema':
    first = state['seen'] == 0
    ema = jnp.where(first, batch_mean,
                    ema_decay * state['class_mean_sum'] + (1 - ema_decay) * batch_mean)
    state['class_mean_sum'], state['seen'] = ema, jnp.ones_like(state['seen'])
    return state, ema
  if mode == 'batch':
    return state, batch_mean
  raise ValueError(f'unknown class-mean mode {mode!r}')


def correct_labels(probs: jnp.ndarray, labels: jnp.ndarray, class_means: jnp.ndarray, *,
                   tau: float, active: jnp.ndarray | bool = True,
                   negatives: jnp.ndarray | None = None) -> jnp.ndarray:
  """yhat_c = 1 if y_c = 0 and p_c > max(tau, P_c) (and the warm-up is over), else 0.

  negatives: optional (B, C) mask of labels known to be absent (data with -1 = unknown labels):
  those are never corrected.
  Returns a float (B, C) array with no gradient.
  """
  p = jax.lax.stop_gradient(probs)
  threshold = jnp.maximum(tau, class_means)
  yhat = (labels == 0) & (p > threshold) & active
  if negatives is not None:
    yhat = yhat & (negatives <= 0)
  return yhat.astype(jnp.float32)


def count_corrections(state: dict, yhat: jnp.ndarray, labels_full: jnp.ndarray) -> dict:
  """Adds this batch's corrections (and how many hit a hidden true label) to the counters."""
  state = dict(state)
  state['corrections'] = state['corrections'] + yhat.sum(axis=0)
  state['true_corrections'] = state['true_corrections'] + (yhat * labels_full).sum(axis=0)
  return state


def shift_positives(logits: jnp.ndarray, labels: jnp.ndarray, margin: float) -> jnp.ndarray:
  """z - margin on the entries where labels = 1 (RLC's margin on positive logits)."""
  return logits - margin * labels.astype(logits.dtype)


def rlc_loss(logits: jnp.ndarray, labels: jnp.ndarray, yhat: jnp.ndarray, counts: jnp.ndarray,
             settings: mfm.MFMSettings, *, margin: float = 0.0,
             weight_exponent: float | None = None,
             positive_normalisation: bool = False,
             margin_observed_only: bool = False,
             focal_exponent: float | None = None) -> jnp.ndarray:
  """L_rlc: the MFM loss with targets max(y, yhat) and class counts `counts` (n_c plus this
  epoch's corrections: the dynamic re-weighting).

  margin: subtracted from the logits of positive targets (the authors' code uses 1.0), or, with
    `margin_observed_only` (the authors' code), of the observed positives only (not the
    corrected entries).
  positive_normalisation: scale by batch size / number of positive targets (the authors' code).
  weight_exponent / focal_exponent: the exponents of g_ht in the class weights and in the
    focusing exponents gamma± (default: MFM's; the authors' RLC uses 1/6 for both).
  """
  targets = jnp.maximum(labels.astype(jnp.float32), yhat)
  z = shift_positives(logits, labels if margin_observed_only else targets, margin)
  loss = mfm.mfm_loss_from_counts(z, targets, counts, settings, weight_exponent=weight_exponent,
                                  focal_exponent=focal_exponent)
  if positive_normalisation:
    loss = loss * targets.shape[0] / jnp.maximum(targets.sum(), 1.0)
  return loss
