"""benchmarks/backbone_speed.py without PyTorch: its arguments, the alternating timer, the table
and ratios it prints, and its JAX fine-tuning step on a one-block network (checked against the
SGD update computed in NumPy)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.models import efficientnet
from conftest import load_benchmark

backbone_speed = load_benchmark('backbone_speed')


def test_arguments_defaults_quick_and_errors(capsys):
  args = backbone_speed.parse_args([])
  assert (args.sizes, args.threads, args.batch, args.train_sizes, args.out) == (
      [96, 128, 224], [1, 2], 64, [96, 128, 224], None)
  assert backbone_speed.cases(args) == [('forward', 96), ('forward', 128), ('forward', 224),
                                        ('train', 96), ('train', 128), ('train', 224)]
  quick = backbone_speed.parse_args(['--quick'])
  assert quick.train_sizes == [96] and quick.out == backbone_speed.DEFAULT_OUT
  assert backbone_speed.cases(quick)[-1] == ('train', 96)
  assert backbone_speed.parse_args(['--quick', '--out', 'x']).out == 'x'
  # The worker process gets back the same measurement list.
  worker = backbone_speed.parse_args(backbone_speed.worker_command(quick, 2)[2:])
  assert worker.worker and worker.threads == [2] and backbone_speed.cases(worker) == (
      backbone_speed.cases(quick))
  for bad in (['--sizes', '16'], ['--threads', '0'], ['--batch', '0']):
    with pytest.raises(SystemExit) as info:
      backbone_speed.parse_args(bad)
    assert info.value.code == 2
  assert 'sizes >= 32' in capsys.readouterr().err


def test_repeats_alternate_and_the_table_gives_the_ratio_of_medians():
  calls = []
  runs = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
  wall, cpu = backbone_speed.time_alternating(runs, warmup=1, repeats=3)
  assert calls == ['a', 'b'] + ['a', 'b'] * 3
  assert [len(wall[k]) for k in 'ab'] == [3, 3] and [len(cpu[k]) for k in 'ab'] == [3, 3]
  assert backbone_speed.median([3.0, 1.0, 2.0]) == 2.0
  assert backbone_speed.median([4.0, 1.0, 2.0, 3.0]) == 2.5
  rows = [{'mode': 'forward', 'size': 96, 'threads': 2,
           'img_per_sec': {'jax float32': 150.0, 'torch float32': 120.0},
           'img_per_cpu_sec': {'jax float32': 90.0, 'torch float32': 60.0}},
          {'mode': 'train', 'size': 96, 'threads': 1, 'img_per_sec': {'jax float32': 5.0},
           'img_per_cpu_sec': {'jax float32': 5.0}}]
  table = backbone_speed.markdown_table(rows).splitlines()
  assert table[0] == ('| step | input | threads | jax float32 img/s | torch float32 img/s | '
                      'JAX / PyTorch | JAX / PyTorch per CPU second |')
  assert table[2] == '| forward | 96 px | 2 | 150.0 | 120.0 | 1.25x | 1.50x |'
  assert table[3] == '| train | 96 px | 1 | 5.0 | - | - | - |'
  assert backbone_speed.format_row(rows[0]) == (
      'forward  96 px, 2 threads: jax float32 150.0, torch float32 120.0 img/s; '
      'JAX / PyTorch 1.25x (per CPU second 1.50x)')


class _OneBlock(nn.Module):
  """A one-block backbone (the project's MBConv) returning pooled features: compiles in a
  second."""

  @nn.compact
  def __call__(self, x, train=True):
    spec = efficientnet.BlockSpec(3, 8, 3, 2, 2)
    return jnp.mean(efficientnet.MBConv(spec)(x, train), axis=(1, 2))


def test_jax_train_step_is_one_sgd_step_on_backbone_and_classifier():
  model = _OneBlock()
  images, labels = backbone_speed.random_batch(4, 8, num_classes=3)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  features = backbone_speed.jax_forward(model)(variables, images)
  assert features.shape == (4, 8)
  init, step = backbone_speed.jax_train_step(model, num_classes=3, learning_rate=0.5)
  state = init(variables, 8)
  kernel = np.asarray(state['params']['classifier']['kernel'], np.float64)
  bias = np.asarray(state['params']['classifier']['bias'], np.float64)
  before = jax.tree.map(np.asarray, state)
  # The train-mode features (batch statistics) and the loss, in NumPy.
  f = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'])[0])(
      variables, images), np.float64)
  logits = f @ kernel + bias
  p = 1 / (1 + np.exp(-logits))
  loss = np.mean(-labels * np.log(p) - (1 - labels) * np.log(1 - p))
  state, got = step(state, images, labels)
  np.testing.assert_allclose(float(got), loss, rtol=1e-5)
  # SGD with momentum, first step: w - lr * grad; the bias gradient of the mean BCE is
  # mean over the batch of (p - y) / classes.
  np.testing.assert_allclose(state['params']['classifier']['bias'],
                             bias - 0.5 * (p - labels).mean(axis=0) / 3, rtol=1e-5, atol=1e-7)
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)),
                       state['params']['backbone'], before['params']['backbone'])
  assert all(jax.tree.leaves(moved))
  assert not np.array_equal(state['batch_stats']['MBConv_0']['depthwise_bn']['mean'],
                            before['batch_stats']['MBConv_0']['depthwise_bn']['mean'])
