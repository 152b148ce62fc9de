"""The classifier heads (models/heads.py): the multi-head cosine classifier against a NumPy
reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.models import heads


def numpy_cosine_logits(f, w, scale, eta, groups):
  """docs/method.md's multi-head cosine classifier written out with loops."""
  b, d = f.shape
  c = w.shape[0]
  k = d // groups
  z = np.zeros((b, c))
  for i in range(b):
    for j in range(c):
      for g in range(groups):
        fg, wg = f[i, g * k:(g + 1) * k], w[j, g * k:(g + 1) * k]
        z[i, j] += fg @ wg / ((np.linalg.norm(wg) + eta) * np.linalg.norm(fg))
  return scale / groups * z


@pytest.mark.parametrize('groups', [1, 2, 4])
def test_cosine_logits_match_numpy(groups):
  rng = np.random.default_rng(groups)
  f, w = rng.normal(size=(5, 8)), rng.normal(size=(3, 8)) * 0.3
  ours = heads.cosine_logits(jnp.asarray(f), jnp.asarray(w), scale=16.0, eta=1 / 32,
                             num_groups=groups)
  np.testing.assert_allclose(ours, numpy_cosine_logits(f, w, 16.0, 1 / 32, groups), rtol=1e-5)


def test_cosine_classifier_module_and_bounds():
  module = heads.CosineClassifier(num_classes=3, scale=16.0, eta=1 / 32, num_groups=2)
  f = jax.random.normal(jax.random.key(0), (4, 8))
  params = module.init(jax.random.key(1), f)
  w = np.asarray(params['params']['kernel'])
  z = module.apply(params, f)
  np.testing.assert_allclose(z, numpy_cosine_logits(np.asarray(f), w, 16.0, 1 / 32, 2), rtol=1e-5)
  assert np.all(np.abs(z) <= 16.0)             # |cos| <= 1 and eta > 0
  # Scale-invariant in the feature: 10 f gives the same logits.
  np.testing.assert_allclose(module.apply(params, 10 * f), z, rtol=1e-5)


def test_cosine_logits_reject_indivisible_groups():
  with pytest.raises(ValueError, match='divisible'):
    heads.cosine_logits(jnp.ones((2, 6)), jnp.ones((3, 6)), scale=1, eta=0, num_groups=4)
