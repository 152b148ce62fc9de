import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.errors import UserError
from comic_jax.models import gcn


def test_adjacency_on_a_small_cooccurrence_matrix():
  # 3 classes; co-counts M01 = 2, M02 = 1, M12 = 0; n = (4, 2, 2).
  y = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 0], [0, 0, 1]])
  # P = M / n_i: P01 = 2/4 = .5, P02 = 1/4 = .25, P10 = 2/2 = 1, P12 = 0, P20 = 1/2 = .5, P21 = 0
  # A = 1[P >= .4] = [[0,1,0],[1,0,0],[1,0,0]]; column sums (2, 1, 0)
  # A' = .25 A / (colsum + 1e-6) + I
  eps = 1e-6
  a1 = np.array([[1, 0.25 / (1 + eps), 0],
                 [0.25 / (2 + eps), 1, 0],
                 [0.25 / (2 + eps), 0, 1]])
  d = np.diag(a1.sum(1) ** -0.5)
  np.testing.assert_allclose(gcn.gcn_adjacency(y), d @ a1.T @ d, rtol=1e-6)
  # Hand value of one entry: A_hat[0, 1] = d0 * A'[1, 0] * d1.
  d0, d1 = (1 + 0.25 / (1 + eps)) ** -0.5, (1 + 0.25 / (2 + eps)) ** -0.5
  assert gcn.gcn_adjacency(y)[0, 1] == pytest.approx(d0 * 0.25 / (2 + eps) * d1, rel=1e-6)


def test_gcn_classifier_matches_numpy():
  rng = np.random.default_rng(0)
  adj = gcn.gcn_adjacency((rng.random((30, 4)) < 0.4).astype(int))
  x = rng.normal(size=(4, 6)).astype(np.float32)
  module = gcn.GCNClassifier(adjacency=adj, node_features=x, hidden_dim=5)
  f = jnp.asarray(rng.normal(size=(3, 7)), jnp.float32)
  v = module.init(jax.random.key(0), f)
  w1, w2 = (np.asarray(v['params'][k]['kernel']) for k in ('gc1', 'gc2'))
  h = adj @ x @ w1
  h = np.where(h > 0, h, 0.2 * h)
  w = adj @ h @ w2
  np.testing.assert_allclose(module.apply(v, f), np.asarray(f) @ w.T, rtol=1e-4, atol=1e-5)
  learned = gcn.GCNClassifier(adjacency=adj, node_features=None, hidden_dim=5, embedding_dim=8)
  assert learned.init(jax.random.key(0), f)['params']['embeddings'].shape == (4, 8)


def test_label_embeddings_from_glove_text_and_npy(tmp_path):
  glove = tmp_path / 'glove.txt'
  glove.write_text('red 1 0 0\nstriped 0 2 0\ndisk 0 0 4\nblue 3 3 3\n')
  emb = gcn.load_label_embeddings(str(glove), ['red_striped_disk', 'blue_disk'])
  np.testing.assert_allclose(emb, [[1 / 3, 2 / 3, 4 / 3], [1.5, 1.5, 3.5]], rtol=1e-6)
  with pytest.raises(UserError, match='no vector'):
    gcn.load_label_embeddings(str(glove), ['green_plus'])
  np.save(tmp_path / 'e.npy', np.ones((2, 5)))
  assert gcn.load_label_embeddings(str(tmp_path / 'e.npy'), ['a', 'b']).shape == (2, 5)
  with pytest.raises(UserError, match='expected'):
    gcn.load_label_embeddings(str(tmp_path / 'e.npy'), ['a', 'b', 'c'])
  with pytest.raises(UserError, match='does not exist'):
    gcn.load_label_embeddings(str(tmp_path / 'nope.txt'), ['a'])
