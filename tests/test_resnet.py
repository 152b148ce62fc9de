"""The ResNets (models/resnet.py): torchvision's parameter counts, and a forward pass that
updates the batch statistics."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.models import backbones, resnet
from conftest import tiny_config


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
