"""HTB, the head-tail balancer (docs/method.md "Energy e_t", "Energy-adjusted logits", "HTB")."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from comic_jax.losses.baselines import bce
from comic_jax.models.heads import split_groups

_TINY = 1e-12


def energy_transform(mu: float = 0.9) -> optax.GradientTransformation:
  """e_t = mu * e_{t-1} + g_t is exactly optax.trace(decay=mu) applied to g_t."""
  return optax.trace(decay=mu)


def update_energy(energy_state, features: jnp.ndarray, mu: float = 0.9):
  """Feeds g_t = batch mean of stop_gradient(features) to the trace; returns the new state.

  The energy e_t itself is `new_state.trace`.
  """
  g = jnp.mean(jax.lax.stop_gradient(features).astype(jnp.float32), axis=0)
  _, new_state = energy_transform(mu).update(g, energy_state)
  return new_state


def energy_adjusted_logits(logits: jnp.ndarray, features: jnp.ndarray, weights: jnp.ndarray,
                           energy: jnp.ndarray, *, factor: float, scale: float, eta: float,
                           num_groups: int) -> jnp.ndarray:
  """zhat[c] = z[c] + factor * (rho / N_g) * sum_k cos(f_k, e_k) <w_{c,k}, ehat_k>
                                                   / (||w_{c,k}|| + eta)

  with ehat = e / ||e|| split into the N_g groups (docs/method.md "Energy-adjusted logits");
  factor is s_x * a_x (+a_h for the head model, -a_t for the tail model). A zero energy changes
  nothing.

  Args:
    logits: (B, C) z. features: (B, d) f. weights: (C, d) cosine-classifier weights.
    energy: (d,) e_t.
  """
  e = energy.astype(jnp.float32)
  e_hat = e / jnp.maximum(jnp.linalg.norm(e), _TINY)
  f = split_groups(features.astype(jnp.float32), num_groups)               # (B, G, k)
  e_g = split_groups(e_hat, num_groups)                                     # (G, k)
  w = split_groups(weights.astype(jnp.float32), num_groups)                 # (C, G, k)
  cos_fe = jnp.einsum('bgk,gk->bg', f, e_g) / (
      jnp.maximum(jnp.linalg.norm(f, axis=-1), _TINY) *
      jnp.maximum(jnp.linalg.norm(e_g, axis=-1), _TINY))                   # (B, G)
  w_e = jnp.einsum('cgk,gk->cg', w, e_g) / (jnp.linalg.norm(w, axis=-1) + eta)   # (C, G)
  return logits + factor * (scale / num_groups) * jnp.einsum('bg,cg->bc', cos_fe, w_e)


def htb_weights(loss_head: jnp.ndarray, loss_tail: jnp.ndarray, alpha: float = 2.0, *,
                detach: bool = True):
  """kappa_h = L_h^alpha / (L_h^alpha + L_t^alpha), kappa_t = 1 - kappa_h (no gradient unless
  `detach=False`, the authors' code).

  The branch that fits the batch worse gets the larger weight.
  """
  if detach:
    loss_head, loss_tail = jax.lax.stop_gradient(loss_head), jax.lax.stop_gradient(loss_tail)
  lh = loss_head ** alpha
  lt = loss_tail ** alpha
  kappa_h = lh / jnp.maximum(lh + lt, _TINY)
  return kappa_h, 1.0 - kappa_h


def product_log_probs(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray) -> jnp.ndarray:
  """log q, q = softmax(stop_gradient(teacher)) * softmax(student), renormalised over classes."""
  joint = (jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)) +
           jax.nn.log_softmax(student_logits.astype(jnp.float32)))
  return jax.nn.log_softmax(joint)


def htb_loss(adjusted_head: jnp.ndarray, adjusted_tail: jnp.ndarray,
             balanced_logits: jnp.ndarray, labels: jnp.ndarray, kappa_h, kappa_t) -> jnp.ndarray:
  """L_htb = kappa_h CE(q_h, ybar) + kappa_t CE(q_t, ybar), ybar = y / sum(y).

  Samples with no observed positive are left out (mean over the others; 0 if there are none).
  Only `balanced_logits` receives a gradient.
  """
  y = labels.astype(jnp.float32)
  n_pos = y.sum(axis=-1)
  has_pos = n_pos > 0
  ybar = y / jnp.maximum(n_pos, 1.0)[:, None]

  def ce(teacher):
    per_sample = -(ybar * product_log_probs(teacher, balanced_logits)).sum(axis=-1)
    return jnp.sum(jnp.where(has_pos, per_sample, 0.0)) / jnp.maximum(has_pos.sum(), 1)

  return kappa_h * ce(adjusted_head) + kappa_t * ce(adjusted_tail)


def distill_loss(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray,
                 temperature: float = 1.0) -> jnp.ndarray:
  """T^2 * mean over samples of CE(softmax(sg teacher / T), softmax(student / T)).

  The distillation reading of L_htb (docs/method.md "HTB loss: four forms"): the teacher's
  class distribution is a soft target that pulls the student toward it, where the product
  reading trains the student as the teacher's complement. Every sample counts (the target needs
  no label).
  """
  t = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature)
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  return temperature ** 2 * jnp.mean(-(t * log_q).sum(axis=-1))


def official_htb_loss(adjusted_head: jnp.ndarray, adjusted_tail: jnp.ndarray,
                      balanced_logits: jnp.ndarray, labels: jnp.ndarray, kappa_h, kappa_t,
                      mfm_loss: Callable) -> jnp.ndarray:
  """The authors' HTB loss file (docs/method.md "HTB loss: four forms"):

      kappa_h L(softmax(sg zhat_h) * softmax(z_b); y)
        + kappa_t L(softmax(sg zhat_t) * softmax(z_b); y)

  with L their MFM loss (`mfm_loss(logits, labels)`), applied to the unrenormalised product of the
  two class distributions as if it were logits (so each sigmoid lies in (0.5, 0.73)), every
  sample included (with or without an observed positive).
  """
  prob_b = jax.nn.softmax(balanced_logits.astype(jnp.float32))

  def term(teacher):
    return mfm_loss(jax.nn.softmax(jax.lax.stop_gradient(teacher).astype(jnp.float32)) * prob_b,
                    labels)

  return kappa_h * term(adjusted_head) + kappa_t * term(adjusted_tail)


def sigmoid_distill_loss(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray,
                         temperature: float = 1.0) -> jnp.ndarray:
  """T^2 * mean over samples of sum over classes of BCE(sigmoid(student / T); sigmoid(sg teacher
  / T)).

  Distillation class by class, as multi-label outputs are read (COMIC+'s reading of L_htb,
  docs/method.md "COMIC+"): each class's teacher probability is a soft target for the
  student's, where `distill_loss` makes the classes compete in one softmax, so a class the
  teacher is sure of takes target mass from every other class of the image.
  """
  t = jax.nn.sigmoid(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature)
  return temperature ** 2 * bce(student_logits.astype(jnp.float32) / temperature, t)


HTB_LOSSES = ('product', 'distill', 'distill_sigmoid', 'official')


def htb_loss_of(kind: str, adjusted_head, adjusted_tail, balanced_logits, labels, kappa_h,
                kappa_t, temperature: float = 1.0,
                mfm_loss: Callable | None = None) -> jnp.ndarray:
  """L_htb in one of its forms: 'product' (`htb_loss`), 'distill' (`distill_loss`),
  'distill_sigmoid' (`sigmoid_distill_loss`) or 'official' (`official_htb_loss`, which needs
  the branch's `mfm_loss`)."""
  if kind == 'product':
    return htb_loss(adjusted_head, adjusted_tail, balanced_logits, labels, kappa_h, kappa_t)
  if kind in ('distill', 'distill_sigmoid'):
    distill = distill_loss if kind == 'distill' else sigmoid_distill_loss
    return (kappa_h * distill(adjusted_head, balanced_logits, temperature) +
            kappa_t * distill(adjusted_tail, balanced_logits, temperature))
  if kind == 'official':
    return official_htb_loss(adjusted_head, adjusted_tail, balanced_logits, labels, kappa_h,
                             kappa_t, mfm_loss)
  raise ValueError(f'unknown HTB loss {kind!r}')
