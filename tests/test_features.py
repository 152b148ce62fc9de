import json
import os

import jax
import numpy as np
import pytest

from comic_jax.data import sources
from comic_jax.models import resnet_weights
from comic_jax.training import config_checks, features, train
from conftest import COMIC_TINY, tiny_config
from random_weights import random_torchvision_state_dict


def test_frozen_backbone_features_are_cached_and_the_heads_train(tmp_path):
  config = tiny_config(method='comic', **{**COMIC_TINY, 'model.backbone_trainable': False,
                                          'model.feature_cache': True, 'model.feature_views': 2,
                                          'num_epochs': 2, 'data.cache_dir': str(tmp_path)})
  workdir = str(tmp_path / 'run')
  state = train.train_and_evaluate(config, workdir)
  data = sources.load_dataset(config.data)
  cache_path = lambda c, images, **kw: features.cache_path(c.model, c.data, c.augment, images, **kw)
  train_path = cache_path(config, data.x_train, views=2)
  test_path = cache_path(config, data.x_test)
  assert train_path.startswith(str(tmp_path / 'features'))
  train_views, test_features = np.load(train_path), np.load(test_path)
  dim = config.model.small_cnn_widths[-1]          # the backbone's output width
  assert train_views.shape == (1387, 2, dim) and test_features.shape == (300, dim)
  # Two views of the same image differ (augmentation), the features are not all equal.
  assert not np.allclose(train_views[:, 0], train_views[:, 1])
  # Another training seed, method or missing ratio shares the cache; other views or other
  # images do not.
  other = tiny_config(**{**COMIC_TINY, 'seed': 3, 'method': 'bce', 'data.missing_ratio': 0.3,
                         'data.cache_dir': str(tmp_path)})
  assert cache_path(other, data.x_train, views=2) == train_path
  assert cache_path(other, data.x_train, views=3) != train_path
  assert cache_path(other, data.x_train[1:], views=2) != train_path
  tapped = tiny_config(**{**COMIC_TINY, 'data.cache_dir': str(tmp_path),
                          'model.feature_taps': ('stage3',)})
  assert cache_path(tapped, data.x_train, views=2) != train_path
  # The heads hold no backbone weights: the backbone is the identity on cached features.
  assert set(state.params['head']) == {'projection', 'classifier'}
  with open(os.path.join(workdir, 'results.json')) as f:
    assert list(json.load(f)) == ['COMIC', 'Head Model', 'Tail Model']
  run = train.Trainer.open(config, workdir)                       # a rerun reads the cache
  assert run.data.x_train.shape == (1387, 2, dim)


def test_feature_cache_needs_a_frozen_backbone():
  from comic_jax.errors import UserError
  with pytest.raises(UserError, match='backbone_trainable=False'):
    config_checks.validate_config(tiny_config(**{'model.feature_cache': True}))


def test_pretrained_weights_are_loaded_into_the_backbone(tmp_path):
  sd = random_torchvision_state_dict('resnet18', seed=3)
  path = str(tmp_path / 'resnet18.npz')
  np.savez(path, **sd)
  config = tiny_config(**{'model.backbone': 'resnet18', 'model.pretrained': path})
  run = train.Trainer.open(config, str(tmp_path / 'run'))
  expected = resnet_weights.resnet_variables_from_torch(sd, 18)
  got = jax.device_get({'params': run.state.params['backbone'],
                        'batch_stats': run.state.batch_stats['backbone']})
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  assert run.state.params['classifier']['dense']['kernel'].shape == (128, 24)
