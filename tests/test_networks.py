"""The network of a method (models/networks.py): its outputs and the input normalisation."""
import jax
import jax.numpy as jnp
import numpy as np

from comic_jax.models import backbones, networks
from conftest import tiny_config


def test_multilabel_net_outputs_and_image_normalisation():
  config = tiny_config(**{'model.projection_dim': 16})
  net = networks.create_network(config.model, num_classes=5, classifier='cosine')
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)), jnp.uint8)
  # Jitted: one compiled program each instead of one per operation (the test's time).
  v = jax.jit(lambda key: net.init(key, images, train=False))(jax.random.key(0))
  apply = jax.jit(lambda v, x: net.apply(v, x, train=False))
  out = apply(v, images)
  assert out['features'].shape == (3, 16) and out['logits'].shape == (3, 5)
  assert set(v['params']) == {'backbone', 'projection', 'classifier'}
  # uint8 input is standardised with the ImageNet mean / std; float input is taken as is.
  x = networks.normalize_images(images)
  ref = (np.asarray(images) / 255.0 - np.array(backbones.IMAGENET_MEAN)) / np.array(
      backbones.IMAGENET_STD)
  np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(apply(v, x)['logits'], out['logits'], rtol=1e-5, atol=1e-5)
