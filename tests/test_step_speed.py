"""benchmarks/step_speed.py: XLA's flops count, the peak table, and the PyTorch twin's layers
(same parameter count as ours; skipped where PyTorch is not installed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.methods import comic
from comic_jax.models import networks
from conftest import load_benchmark

step_speed = load_benchmark('step_speed')


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_compiled_flops_of_a_matmul(dtype):
  # (M, K) @ (K, N): M * N dot products of K multiply-adds = 2 M N K flops.
  m, k, n = 4, 8, 16
  a, b = jnp.ones((m, k), dtype), jnp.ones((k, n), dtype)
  flops = step_speed.compiled_flops(jax.jit(jnp.dot).lower(a, b).compile())
  # A CPU runs a bfloat16 dot in float32; XLA counts each convert as one flop per element.
  converts = (m * k + k * n + m * n) if dtype == jnp.bfloat16 else 0
  assert 2 * m * n * k <= flops <= 2 * m * n * k + converts


def test_step_flops_counts_the_unoptimised_hlo():
  # The lowered (unoptimised) module's count: exactly 2 M N K for a float32 dot.
  m, k, n = 4, 8, 16
  a, b = jnp.ones((m, k)), jnp.ones((k, n))
  dot = jax.jit(jnp.dot)
  assert step_speed.step_flops(dot, dot.lower(a, b), a, b) == 2 * m * n * k


def test_peak_flops_by_device_kind():
  assert step_speed.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989e12
  # float32 runs on TF32 tensor cores by default: its peak is TF32's.
  assert step_speed.peak_flops('NVIDIA H100 80GB HBM3', 'float32') == 494.7e12
  assert step_speed.peak_flops('cpu', 'float32') is None


def _jax_param_count(config, num_classes):
  if config.method == 'comic':
    net = comic.create_comic_network(config, num_classes)
  else:
    net = networks.create_network(config.model, num_classes, 'linear')
  size = config.data.image_size
  images = jnp.zeros((2, size, size, 3), jnp.uint8)
  shapes = jax.eval_shape(lambda: net.init({'params': jax.random.key(0),
                                            'dropout': jax.random.key(1)}, images, train=False))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes['params']))


@pytest.mark.parametrize('setup,method', [('synth', 'bce'), ('synth', 'comic'),
                                          ('resnet50', 'bce')])
def test_twin_has_our_parameter_count(setup, method):
  torch = pytest.importorskip('torch')
  config = (step_speed.synth_config(method) if setup == 'synth'
            else step_speed.resnet50_config(method, 'float32', 'unused.npz'))
  model, _ = step_speed.build_torch_twin(torch, config, 7, 'cpu')
  assert step_speed.count_params_torch(model) == _jax_param_count(config, 7)


def test_twin_step_runs_and_learns():
  torch = pytest.importorskip('torch')
  config = step_speed.synth_config('comic')
  rs = np.random.RandomState(0)
  batch = {s: {'image': torch.from_numpy(rs.randint(0, 256, (4, 16, 16, 3)).astype(np.uint8)),
               'label': torch.from_numpy((rs.uniform(size=(4, 5)) < 0.3).astype(np.float32))}
           for s in ('main', 'tail')}
  threads = torch.get_num_threads()
  torch.set_num_threads(1)   # a busy machine makes torch's thread pool spin
  try:
    torch.manual_seed(0)
    _, step = step_speed.build_torch_twin(torch, config, 5, 'cpu')
    losses = [float(step(batch).detach()) for _ in range(8)]
  finally:
    torch.set_num_threads(threads)
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
