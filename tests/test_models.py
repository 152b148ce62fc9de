import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.models import backbones, heads, networks, resnet
from conftest import tiny_config


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


# torchvision's parameter counts minus the final fc layer (512*1000+1000 / 2048*1000+1000).
@pytest.mark.parametrize('name,expected', [('resnet18', 11_689_512 - 513_000),
                                           ('resnet34', 21_797_672 - 513_000),
                                           ('resnet50', 25_557_032 - 2_049_000),
                                           ('resnet101', 44_549_160 - 2_049_000)])
def test_resnet_parameter_counts_match_torchvision(name, expected):
  config = tiny_config(**{'model.backbone': name})
  model = backbones.create_backbone(config.model)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, 64, 64, 3)),
                                             train=False))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))
  assert n == expected
  out = jax.eval_shape(lambda v: model.apply(v, jnp.ones((2, 64, 64, 3)), train=False), shapes)
  assert out.shape == (2, 512 if name in ('resnet18', 'resnet34') else 2048)


def test_resnet18_runs_and_updates_batch_stats():
  model = resnet.ResNet18(num_filters=8)   # thin, to keep the CPU test fast
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  # Jitted: run op by op, each of the network's layers compiled separately (36 s; 3 s jitted).
  v = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), x)
  out, upd = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(v, x)
  assert out.shape == (2, 64) and np.all(np.isfinite(out))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), v['batch_stats'], upd['batch_stats'])
  assert all(jax.tree.leaves(changed))


def test_multilabel_net_outputs_and_image_normalisation():
  config = tiny_config(**{'model.projection_dim': 16})
  net = networks.create_network(config.model, num_classes=5, classifier='cosine')
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)), jnp.uint8)
  v = net.init(jax.random.key(0), images, train=False)
  out = net.apply(v, images, train=False)
  assert out['features'].shape == (3, 16) and out['logits'].shape == (3, 5)
  assert set(v['params']) == {'backbone', 'projection', 'classifier'}
  # uint8 input is standardised with the ImageNet mean / std; float input is taken as is.
  x = networks.normalize_images(images)
  ref = (np.asarray(images) / 255.0 - np.array(backbones.IMAGENET_MEAN)) / np.array(
      backbones.IMAGENET_STD)
  np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(net.apply(v, x, train=False)['logits'], out['logits'], rtol=1e-5,
                             atol=1e-5)


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
