"""The backbones (models/backbones.py): the 2x2 max-pooling and its custom gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.models import backbones


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (2, 5, 7, 3)])
def test_max_pool_2x2_matches_flax_max_pool_in_value_and_gradient(shape):
  import flax.linen as nn
  x = jax.random.normal(jax.random.key(0), shape)        # no ties: one maximum per window
  w = jax.random.normal(jax.random.key(1), (shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
  flax_pool = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(backbones.max_pool_2x2(x), flax_pool(x))
  # NumPy reference of the values: the max of each full 2x2 window.
  h, v = shape[1] // 2 * 2, shape[2] // 2 * 2
  ref = np.asarray(x)[:, :h, :v].reshape(shape[0], h // 2, 2, v // 2, 2, shape[3]).max((2, 4))
  np.testing.assert_array_equal(backbones.max_pool_2x2(x), ref)
  grad = lambda pool: jax.grad(lambda v: jnp.sum(pool(v) * w))(x)
  np.testing.assert_array_equal(grad(backbones.max_pool_2x2), grad(flax_pool))


def _pool_grad_reference(x, g):
  """NumPy: each window's incoming gradient split equally between the window's maxima; rows and
  columns outside the full windows get none."""
  b, h, w, c = x.shape
  dx = np.zeros_like(x)
  for i in range(h // 2):
    for j in range(w // 2):
      win = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]                     # (b, 2, 2, c)
      hit = win == win.max(axis=(1, 2), keepdims=True)
      dx[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = hit * (g[:, i, j][:, None, None] /
                                                       hit.sum(axis=(1, 2))[:, None, None])
  return dx


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (2, 5, 7, 3)])
def test_max_pool_2x2_gradient_shares_ties_and_equals_autodiff(shape):
  """The custom gradient against a NumPy reference, with many exact ties (values on a 0.5 grid,
  zeros as after a ReLU), and against JAX's own differentiation of the reshape-and-max it
  replaces, bit for bit."""
  x = np.maximum(np.round(np.asarray(jax.random.normal(jax.random.key(2), shape)) * 2) / 2, 0)
  g = np.asarray(jax.random.normal(jax.random.key(3),
                                   (shape[0], shape[1] // 2, shape[2] // 2, shape[3])))
  x, g = x.astype(np.float32), g.astype(np.float32)
  ours = jax.grad(lambda v: jnp.sum(backbones.max_pool_2x2(v) * g))(x)
  np.testing.assert_allclose(ours, _pool_grad_reference(x, g), rtol=1e-6, atol=0)

  def reshape_max(v):
    b, h, w, c = v.shape
    return v[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
  autodiff = jax.jit(jax.grad(lambda v: jnp.sum(reshape_max(v) * g)))(x)
  np.testing.assert_array_equal(jax.jit(jax.grad(
      lambda v: jnp.sum(backbones.max_pool_2x2(v) * g)))(x), autodiff)
