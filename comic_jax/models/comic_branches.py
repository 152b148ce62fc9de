"""COMIC's three branches and the additive-attention fusion (docs/method.md "HTB: head-tail
balancer").

Each branch is a `MultiLabelNet` (backbone + projection to d + cosine classifier). The balanced
branch's feature is fused with the head and tail features of the same images:

    f_b = fhat_b + beta * Attn(fhat_b, [f_h, f_t])

with f_h, f_t held constant (stop_gradient).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from comic_jax.models.networks import MultiLabelNet


class AdditiveAttention(nn.Module):
  """Bahdanau attention: score_j = v . tanh(W_q q + W_k k_j), softmax over j, output
  sum_j a_j k_j. Dropout (rate `dropout_rate`) acts on the attention weights in training."""
  hidden_dim: int
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, query, keys, train: bool = False):
    """query (B, d), keys (B, J, d) -> (output (B, d), weights (B, J))."""
    q = nn.Dense(self.hidden_dim, use_bias=False, name='query')(query)
    k = nn.Dense(self.hidden_dim, use_bias=False, name='key')(keys)
    scores = nn.Dense(1, use_bias=False, name='score')(jnp.tanh(q[:, None, :] + k))[..., 0]
    weights = jax.nn.softmax(scores, axis=-1)
    dropped = nn.Dropout(self.dropout_rate, deterministic=not train)(weights)
    return jnp.einsum('bj,bjd->bd', dropped, keys), weights


class ComicNet(nn.Module):
  """Head, tail and balanced branches (+ attention). Without HTB only the balanced branch."""
  balanced: MultiLabelNet
  head: Optional[MultiLabelNet] = None
  tail: Optional[MultiLabelNet] = None
  attention: Optional[AdditiveAttention] = None
  beta: float = 1.0

  def head_forward(self, images, train: bool = True):
    return self.head(images, train)

  def tail_forward(self, images, train: bool = True):
    return self.tail(images, train)

  def balanced_forward(self, images, context=None, train: bool = True):
    """context: (B, 2, d) head and tail features of the same images (or None without HTB)."""
    f_hat = self.balanced.embed(images, train)
    f = f_hat
    if self.attention is not None:
      fused, _ = self.attention(f_hat, jax.lax.stop_gradient(context), train)
      f = f_hat + self.beta * fused
    return {'features': f, 'logits': self.balanced.classify(f)}

  def __call__(self, images, train: bool = False):
    """All branches on the same images (initialisation and test time)."""
    if self.head is None:
      return {'balanced': self.balanced_forward(images, None, train)}
    h, t = self.head(images, train), self.tail(images, train)
    context = jnp.stack([h['features'], t['features']], axis=1)
    return {'head': h, 'tail': t, 'balanced': self.balanced_forward(images, context, train)}
