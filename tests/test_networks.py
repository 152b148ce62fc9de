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
