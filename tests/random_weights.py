"""Random weights in the layout of real checkpoints, for the tests and the tools that write
tests/fixtures/ (NumPy only, so tools/make_torchvision_fixture.py can use it from a torch-only
virtualenv)."""
import collections
from typing import Union

import numpy as np

from comic_jax.models.resnet_weights import RESNET_STAGES, resnet_depth, resnet_layout


def random_torchvision_state_dict(arch: Union[int, str], seed: int = 0):
  """A torchvision-named ResNet state dict with random weights (NumPy only; fc excluded),
  the same for the same (arch, seed) on any machine (np.random.RandomState's streams are frozen).

  Convs ~ N(0, 2 / fan_out) as torchvision's kaiming init; BatchNorm weight ~ U[0.5, 1.5] (U[0.2,
  0.5] for the last BN of each residual branch, which keeps activations O(1) through 50 layers),
  bias ~ N(0, 0.1), running_mean ~ N(0, 0.1), running_var ~ U[0.5, 1.5]; num_batches_tracked an
  int64 scalar as in a real state dict.
  """
  depth = resnet_depth(arch)
  rs = np.random.RandomState(seed)
  bottleneck, _ = RESNET_STAGES[depth]
  last_bn = 'bn3' if bottleneck else 'bn2'
  state = collections.OrderedDict()
  for name, _, kind, shape in resnet_layout(depth):
    if kind == 'conv':
      fan_out = shape[0] * shape[2] * shape[3]
      state[f'{name}.weight'] = (rs.standard_normal(shape) * np.sqrt(2.0 / fan_out)).astype(
          np.float32)
      continue
    residual_end = name.endswith(last_bn) or name.endswith('downsample.1')
    low, high = (0.2, 0.5) if residual_end else (0.5, 1.5)
    state[f'{name}.weight'] = rs.uniform(low, high, shape).astype(np.float32)
    state[f'{name}.bias'] = (0.1 * rs.standard_normal(shape)).astype(np.float32)
    state[f'{name}.running_mean'] = (0.1 * rs.standard_normal(shape)).astype(np.float32)
    state[f'{name}.running_var'] = rs.uniform(0.5, 1.5, shape).astype(np.float32)
    state[f'{name}.num_batches_tracked'] = np.array(rs.randint(0, 1000), np.int64)
  return state
