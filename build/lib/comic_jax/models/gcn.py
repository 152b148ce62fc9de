"""ML-GCN's classifier (BASELINES.md, ML-GCN): class weights produced by a two-layer graph
convolutional network over a fixed label graph."""
from __future__ import annotations

import os
import re

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from comic_jax.errors import UserError, require


def gcn_adjacency(labels: np.ndarray, *, threshold: float = 0.4,
                  reweight: float = 0.25) -> np.ndarray:
  """The fixed, normalised label graph A_hat of ML-GCN from (N, C) training labels.

  M = co-counts with a zero diagonal, P_ij = M_ij / n_i, A = 1[P >= threshold],
  A' = reweight * A / (column sums of A + 1e-6) + I, A_hat = D A'^T D with
  D = diag(row sums of A')^(-1/2).
  """
  y = np.asarray(labels, dtype=np.float64)
  m = y.T @ y
  np.fill_diagonal(m, 0.0)
  n = y.sum(axis=0)
  p = m / np.maximum(n, 1.0)[:, None]
  a = (p >= threshold).astype(np.float64)
  a = reweight * a / (a.sum(axis=0, keepdims=True) + 1e-6) + np.eye(len(a))
  d = np.diag(a.sum(axis=1) ** -0.5)
  return (d @ a.T @ d).astype(np.float32)


def _words(name: str) -> list[str]:
  return [w for w in re.split(r'[\s_\-/]+', name.lower()) if w]


def load_label_embeddings(path: str, class_names) -> np.ndarray:
  """(C, k) label embeddings from a user's file.

  `.npy` / `.npz` (first array): a (C, k) matrix in class order. Any other file is read as GloVe
  text ("word v1 v2 ..."); a class's vector is the mean of its name's words (`red_solid_disk` ->
  red, solid, disk), as ML-GCN does for multi-word COCO names.
  """
  require(os.path.exists(path), f'word-vector file {path!r} does not exist')
  c = len(class_names)
  if path.endswith(('.npy', '.npz')):
    loaded = np.load(path)
    matrix = loaded[loaded.files[0]] if path.endswith('.npz') else loaded
    require(matrix.ndim == 2 and matrix.shape[0] == c,
            f'{path!r} holds an array of shape {matrix.shape}; expected ({c}, k)')
    return matrix.astype(np.float32)
  wanted = {w for name in class_names for w in _words(name)}
  vectors: dict[str, np.ndarray] = {}
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      word, _, rest = line.rstrip().partition(' ')
      if word in wanted and word not in vectors:
        vectors[word] = np.array(rest.split(), dtype=np.float32)
  missing = [name for name in class_names if not any(w in vectors for w in _words(name))]
  if missing:
    raise UserError(f'{path!r} has no vector for any word of the classes {missing[:5]}')
  return np.stack([np.mean([vectors[w] for w in _words(name) if w in vectors], axis=0)
                   for name in class_names]).astype(np.float32)


class GCNClassifier(nn.Module):
  """W = A_hat LeakyReLU(A_hat X W1) W2 (no biases), logits z = f W^T.

  `node_features` is the fixed (C, k) label embedding X; with `learned_embeddings` X is a
  trainable parameter of shape (C, embedding_dim) instead.
  """
  adjacency: np.ndarray
  node_features: np.ndarray | None
  hidden_dim: int = 1024
  negative_slope: float = 0.2
  embedding_dim: int = 300

  @nn.compact
  def __call__(self, features):
    a = jnp.asarray(self.adjacency)
    c = a.shape[0]
    if self.node_features is None:
      x = self.param('embeddings', nn.initializers.normal(1.0), (c, self.embedding_dim))
    else:
      x = jnp.asarray(self.node_features)
    h = a @ nn.Dense(self.hidden_dim, use_bias=False, name='gc1')(x)
    h = nn.leaky_relu(h, self.negative_slope)
    w = a @ nn.Dense(features.shape[-1], use_bias=False, name='gc2')(h)   # (C, d)
    return features.astype(jnp.float32) @ w.T
