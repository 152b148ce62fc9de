"""ImageNet weights into a model's variables (models/pretrained.py): merging a backbone's weights
at a sub-path, and `load_into` through the backbone's own loader."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.errors import UserError
from comic_jax.models import pretrained, resnet_weights
from random_weights import random_torchvision_state_dict


def test_merge_backbone_at_a_sub_path():
  pre = resnet_weights.resnet_variables_from_torch(random_torchvision_state_dict(18), 18)
  zeros = jax.tree.map(lambda a: np.zeros_like(a), pre)
  as_jax = jax.tree.map(jnp.asarray, zeros)
  variables = {
      'params': {'head': {'backbone': zeros['params'], 'classifier': {'kernel': np.ones((4, 3))}},
                 'tail': {'backbone': as_jax['params']}},
      'batch_stats': {'head': {'backbone': zeros['batch_stats']},
                      'tail': {'backbone': as_jax['batch_stats']}},
  }
  before = jax.tree.map(lambda a: np.array(a), variables)
  merged = pretrained.merge_backbone(variables, pre, ('head', 'backbone'))
  merged = pretrained.merge_backbone(merged, pre, 'tail/backbone')
  for branch in ('head', 'tail'):
    for collection in ('params', 'batch_stats'):
      jax.tree.map(np.testing.assert_array_equal, merged[collection][branch]['backbone'],
                   pre[collection])
  assert isinstance(merged['params']['tail']['backbone']['conv1']['kernel'], jax.Array)
  assert merged['params']['head']['classifier'] is variables['params']['head']['classifier']
  jax.tree.map(np.testing.assert_array_equal, variables, before)     # inputs not modified

  # dtypes follow the model's
  bf16 = jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.bfloat16), pre)
  out = pretrained.merge_backbone(bf16, pre, ())
  assert out['params']['conv1']['kernel'].dtype == jnp.bfloat16

  # every shape and key is checked, and errors say where
  narrow = jax.tree.map(lambda a: a, variables)
  narrow['params']['head']['backbone']['layer4_1']['conv2']['kernel'] = np.zeros((3, 3, 512, 8))
  with pytest.raises(UserError, match=r'shape mismatch at params/head/backbone/layer4_1/conv2/'
                                      r'kernel: pretrained \(3, 3, 512, 512\), model'):
    pretrained.merge_backbone(narrow, pre, ('head', 'backbone'))
  with pytest.raises(UserError, match='the model has no params/balanced'):
    pretrained.merge_backbone(variables, pre, ('balanced', 'backbone'))
  pre50 = resnet_weights.resnet_variables_from_torch(random_torchvision_state_dict(50), 50)
  with pytest.raises(UserError, match='the model has no params/head/backbone/layer1_2, '):
    pretrained.merge_backbone(variables, pre50, ('head', 'backbone'))


def test_load_into_every_comic_branch_or_a_standalone_backbone(tmp_path):
  import types
  sd = random_torchvision_state_dict(18, seed=7)
  path = str(tmp_path / 'resnet18.npz')
  np.savez(path, **{'module.' + k: v for k, v in sd.items()})
  pre = resnet_weights.resnet_variables_from_torch(sd, 18)
  zeros = jax.tree.map(np.zeros_like, pre)
  branches = ('head', 'tail', 'balanced')
  comic = {c: {b: {'backbone': zeros[c], 'projection': {'kernel': np.ones((512, 4))}}
               for b in branches} for c in ('params', 'batch_stats')}
  config = types.SimpleNamespace(backbone='resnet18', pretrained=path)
  assert pretrained.backbone_paths(comic['params']) == [(b, 'backbone') for b in branches]
  out = pretrained.load_into(config, comic)
  for b in branches:
    jax.tree.map(np.testing.assert_array_equal,
                 {c: out[c][b]['backbone'] for c in ('params', 'batch_stats')}, pre)
    assert out['params'][b]['projection'] is comic['params'][b]['projection']
  standalone = pretrained.load_into(config, zeros)                 # backbone.init(...) variables
  jax.tree.map(np.testing.assert_array_equal, standalone, pre)
  no_backbone = {'params': {'scales': np.ones(3)}, 'batch_stats': {}}
  assert pretrained.load_into(config, no_backbone) is no_backbone
  with pytest.raises(UserError, match="needs a backbone with ImageNet weights, not 'small_cnn'"):
    pretrained.load_into(types.SimpleNamespace(backbone='small_cnn', pretrained=path), comic)
  with pytest.raises(UserError, match='is this a torchvision/timm ResNet-34'):
    pretrained.load_into(types.SimpleNamespace(backbone='resnet34', pretrained=path), comic)


def test_each_backbone_reads_its_published_weights_with_its_own_loader(tmp_path, monkeypatch):
  """'imagenet' and the backbone's name both load the published weights (here a ResNet-18's
  torchvision file, replaced by a local one: no network), through BACKBONES[name].load_weights."""
  import types
  sd = random_torchvision_state_dict(18, seed=2)
  path = str(tmp_path / 'resnet18-00000000.npz')
  np.savez(path, **sd)
  calls = []

  def fetch(arch, cache_dir=None):
    calls.append((arch, cache_dir))
    return path
  monkeypatch.setattr(resnet_weights, 'fetch_torchvision_weights', fetch)
  pre = resnet_weights.resnet_variables_from_torch(sd, 18)
  zeros = jax.tree.map(np.zeros_like, pre)
  for source in ('imagenet', 'resnet18', 'torchvision'):
    config = types.SimpleNamespace(backbone='small_cnn' if source == 'resnet18' else 'resnet18',
                                   pretrained=source)
    out = pretrained.load_into(config, zeros, cache_dir='cache')
    jax.tree.map(np.testing.assert_array_equal, out, pre)
  assert calls == [('resnet18', 'cache')] * 3
