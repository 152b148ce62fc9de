"""ResNet weights (models/resnet_weights.py): the torchvision -> Flax conversion (proved equal to
torchvision's forward pass), loading a file, and torchvision's URLs and download (on local files
only: no test touches the network).

The fixtures in tests/fixtures/ were written by tools/make_torchvision_fixture.py with torch
2.14.1 and torchvision 0.29.1; these tests need neither.
"""
import io
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from comic_jax.errors import UserError
from comic_jax.models import resnet, resnet_weights
from random_weights import random_torchvision_state_dict

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
MODELS = {18: resnet.ResNet18, 34: resnet.ResNet34, 50: resnet.ResNet50, 101: resnet.ResNet101}


def fixture(name):
  return os.path.join(FIXTURES, name)


@jax.jit
def _resnet18(variables, x):
  return resnet.ResNet18().apply(variables, x, train=False)


@jax.jit
def _resnet50(variables, x):
  return resnet.ResNet50().apply(variables, x, train=False)


# Tolerance of the parity test. torchvision's own float32 output differs from its float64 output
# (same weights and input) by at most 8.4e-8 (ResNet-18) and 1.8e-7 (ResNet-50), for outputs of
# size ~0.1-1.1; ours differ from torchvision's float32 output by 8.9e-8 and 3.3e-7 (XLA CPU,
# jax 0.10.2), i.e. both are float32 rounding (eps 1.2e-7). 1e-5 leaves 30x room for other CPUs'
# and XLA versions' summation orders, and is far below any conversion mistake: the control below
# (conv1's kernel flipped in space) moves the output by > 1e-2.
PARITY_ATOL = 1e-5


@pytest.mark.parametrize('depth,forward', [(18, _resnet18), (50, _resnet50)])
def test_forward_pass_equals_torchvision(depth, forward):
  """Measured max |ours - torchvision float32|: ResNet-18 8.9e-8, ResNet-50 3.3e-7 (run with -s
  to see them)."""
  data = np.load(fixture(f'torchvision_resnet{depth}_random.npz'))
  state_dict = random_torchvision_state_dict(f'resnet{depth}', int(data['seed']))
  floats = [v.astype(np.float64) for v in state_dict.values() if v.dtype == np.float32]
  fingerprint = [sum(v.sum() for v in floats), sum((v * v).sum() for v in floats)]
  np.testing.assert_allclose(fingerprint, data['weights_fingerprint'], rtol=1e-12,
                             err_msg='random_torchvision_state_dict no longer makes the weights '
                                     'the fixture was made with: rerun '
                                     'tools/make_torchvision_fixture.py')
  variables = resnet_weights.resnet_variables_from_torch(state_dict, depth)
  x = data['input'].astype(np.float32).transpose(0, 2, 3, 1)           # NCHW -> NHWC
  ours = np.asarray(forward(variables, x))
  assert ours.shape == data['output'].shape == (2, 512 if depth == 18 else 2048)
  diff = np.abs(ours - data['output']).max()
  diff64 = np.abs(ours - data['output_float64']).max()
  torch_own = np.abs(data['output'] - data['output_float64']).max()
  print(f'\nResNet-{depth}: max |ours - torchvision| = {diff:.3g} (vs torchvision float64: '
        f'{diff64:.3g}; torchvision float32 vs float64: {torch_own:.3g}; '
        f'max |output| = {np.abs(data["output"]).max():.3g})')
  assert diff < PARITY_ATOL and diff64 < PARITY_ATOL
  if depth == 18:        # control: a wrong kernel layout is caught by orders of magnitude
    flipped = jax.tree.map(lambda a: a, variables)
    flipped['params']['conv1']['kernel'] = variables['params']['conv1']['kernel'][::-1, ::-1]
    assert np.abs(np.asarray(forward(flipped, x)) - data['output']).max() > 1000 * PARITY_ATOL


@pytest.mark.parametrize('depth', [18, 34, 50, 101])
def test_converted_tree_is_exactly_our_flax_resnet(depth):
  variables = resnet_weights.resnet_variables_from_torch(
      random_torchvision_state_dict(depth), depth)
  shapes = jax.eval_shape(lambda: MODELS[depth]().init(jax.random.key(0), jnp.ones((1, 64, 64, 3)),
                                                       train=False))
  assert set(shapes) == {'params', 'batch_stats'}
  for collection in shapes:
    ours = jax.tree_util.tree_flatten_with_path(variables[collection])[0]
    flax = jax.tree_util.tree_flatten_with_path(shapes[collection])[0]
    assert [(p, v.shape) for p, v in ours] == [(p, v.shape) for p, v in flax]
    assert all(v.dtype == np.float32 for _, v in ours)


def test_conversion_layout_and_dropped_keys():
  sd = random_torchvision_state_dict('resnet50', seed=3)
  sd['fc.weight'], sd['fc.bias'] = np.zeros((1000, 2048), np.float32), np.zeros(1000, np.float32)
  v = resnet_weights.resnet_variables_from_torch(sd, 'resnet50')
  w = sd['layer2.0.downsample.0.weight']                                  # OIHW
  np.testing.assert_array_equal(v['params']['layer2_0']['downsample_conv']['kernel'],
                                w.transpose(2, 3, 1, 0))                  # HWIO
  np.testing.assert_array_equal(v['params']['conv1']['kernel'][2, 5, 1, 7],
                                sd['conv1.weight'][7, 1, 2, 5])
  bn = v['params']['layer3_5']['bn3'], v['batch_stats']['layer3_5']['bn3']
  np.testing.assert_array_equal(bn[0]['scale'], sd['layer3.5.bn3.weight'])
  np.testing.assert_array_equal(bn[0]['bias'], sd['layer3.5.bn3.bias'])
  np.testing.assert_array_equal(bn[1]['mean'], sd['layer3.5.bn3.running_mean'])
  np.testing.assert_array_equal(bn[1]['var'], sd['layer3.5.bn3.running_var'])
  assert 'fc' not in v['params']
  # float16 / bfloat16 checkpoints are converted to float32.
  half = {k: v.astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v
          for k, v in random_torchvision_state_dict(18).items()}
  assert resnet_weights.resnet_variables_from_torch(half, 18)['params']['bn1']['scale'].dtype == \
      np.float32


def test_conversion_errors_name_the_key():
  sd = random_torchvision_state_dict(18)
  missing = {k: v for k, v in sd.items() if k != 'layer3.1.bn2.running_var'}
  with pytest.raises(UserError, match=r'missing key\(s\).*layer3\.1\.bn2\.running_var'):
    resnet_weights.resnet_variables_from_torch(missing, 18)
  wrong = dict(sd, **{'layer2.0.conv1.weight': np.zeros((128, 64, 1, 1), np.float32)})
  with pytest.raises(UserError, match=r'shape mismatch for layer2\.0\.conv1\.weight: got '
                                      r'\(128, 64, 1, 1\), ResNet-18 needs \(128, 64, 3, 3\)'):
    resnet_weights.resnet_variables_from_torch(wrong, 18)
  extra = dict(sd, **{'layer1.0.se.fc1.weight': np.zeros(3, np.float32)})
  with pytest.raises(UserError, match=r'unexpected key\(s\).*layer1\.0\.se\.fc1\.weight'):
    resnet_weights.resnet_variables_from_torch(extra, 18)
  with pytest.raises(UserError, match='is this a torchvision/timm ResNet-34'):
    resnet_weights.resnet_variables_from_torch(sd, 34)           # ResNet-18 weights, depth 34
  with pytest.raises(UserError, match='unknown ResNet depth'):
    resnet_weights.resnet_variables_from_torch(sd, 152)
  ints = dict(sd, **{'bn1.weight': np.ones(64, np.int64)})
  with pytest.raises(UserError, match='bn1.weight has dtype int64'):
    resnet_weights.resnet_variables_from_torch(ints, 18)


def test_load_resnet_variables_from_a_file(tmp_path):
  sd = random_torchvision_state_dict(18, seed=5)
  path = str(tmp_path / 'resnet18.npz')
  np.savez(path, **sd)
  v = resnet_weights.load_resnet_variables(path, 18)
  np.testing.assert_array_equal(v['batch_stats']['layer4_1']['bn2']['var'],
                                sd['layer4.1.bn2.running_var'])


# ---------------------------------------------------------------------------------------------
# torchvision URLs and downloads (no network: urlopen is replaced)
# ---------------------------------------------------------------------------------------------

def test_torchvision_urls_and_hash_fragments():
  expected = {18: 'resnet18-f37072fd.pth', 34: 'resnet34-b627a593.pth',
              50: 'resnet50-0676ba61.pth', 101: 'resnet101-63fe2227.pth'}
  for depth, name in expected.items():
    url = resnet_weights.torchvision_url(f'resnet{depth}')
    assert url == 'https://download.pytorch.org/models/' + name
    assert resnet_weights.torchvision_url(depth) == url
  assert resnet_weights.sha256_prefix(resnet_weights.torchvision_url('resnet50')) == '0676ba61'
  assert resnet_weights.torchvision_url(50, 'IMAGENET1K_V2').endswith('/resnet50-11ad3fa6.pth')
  with pytest.raises(UserError, match='no IMAGENET1K_V2 weights for resnet18'):
    resnet_weights.torchvision_url(18, 'IMAGENET1K_V2')
  with pytest.raises(UserError, match='unknown ResNet depth'):
    resnet_weights.torchvision_url('resnet152')





class _Response(io.BytesIO):
  pass


def test_fetch_downloads_once_checks_the_hash_and_explains_failures(tmp_path, monkeypatch):
  import hashlib
  import urllib.error
  import urllib.request
  content = b'pretend resnet18 weights'
  prefix = hashlib.sha256(content).hexdigest()[:8]
  monkeypatch.setitem(resnet_weights.TORCHVISION_URLS['IMAGENET1K_V1'], 'resnet18',
                      f'https://example.invalid/models/resnet18-{prefix}.pth')
  calls = []

  def serve(body):
    def urlopen(url, timeout=None):
      calls.append(url)
      return _Response(body)
    return urlopen

  cache = str(tmp_path / 'cache')
  monkeypatch.setattr(urllib.request, 'urlopen', serve(content))
  path = resnet_weights.fetch_torchvision_weights('resnet18', cache)
  assert path == os.path.join(cache, f'resnet18-{prefix}.pth')
  assert open(path, 'rb').read() == content and len(calls) == 1
  assert resnet_weights.fetch_torchvision_weights(18, cache) == path and len(calls) == 1   # cached

  other = str(tmp_path / 'other')
  monkeypatch.setattr(urllib.request, 'urlopen', serve(b'truncated'))
  with pytest.raises(UserError, match='corrupt or incomplete'):
    resnet_weights.fetch_torchvision_weights('resnet18', other)
  assert os.listdir(other) == []

  def offline(url, timeout=None):
    raise urllib.error.URLError('Temporary failure in name resolution')

  monkeypatch.setattr(urllib.request, 'urlopen', offline)
  with pytest.raises(UserError) as info:
    resnet_weights.fetch_torchvision_weights('resnet50', other)
  message = str(info.value)
  assert '\n' not in message and 'download it by hand' in message
  assert 'https://download.pytorch.org/models/resnet50-0676ba61.pth' in message
  assert os.listdir(other) == []
