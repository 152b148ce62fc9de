"""Pretrained ResNet weights: the torch-free checkpoint readers, the torchvision -> Flax
conversion (proved equal to torchvision's forward pass), merging into a model, and the download
helpers (on local files only: no test touches the network).

The fixtures in tests/fixtures/ were written by tools/make_torchvision_fixture.py with torch
2.14.1, torchvision 0.29.1 and safetensors 0.8.0; these tests need none of them.
"""
import io
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from comic_jax.errors import UserError
from comic_jax.models import pretrained, resnet

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
MODELS = {18: resnet.ResNet18, 34: resnet.ResNet34, 50: resnet.ResNet50, 101: resnet.ResNet101}

# The values tools/make_torchvision_fixture.py saved (TINY and tiny_extras() there).
TINY = {
    'a.weight': np.array([[1.0, -2.0, 3.5], [0.25, 0.0, -1e-3]], np.float32),
    'b.running_mean': np.array([1 / 3, -2.0, 1e-300], np.float64),
    'c.num_batches_tracked': np.array(12345678901, np.int64),
    'd.half': np.array([0.5, -65504.0, 6.1e-5], np.float16),
}
_BASE = np.arange(12, dtype=np.float32).reshape(3, 4)
EXTRAS = {
    'e.bf16': np.array([1.0, -3.140625, 1e30]).astype(ml_dtypes.bfloat16),
    'f.transposed': _BASE.T,
    'g.slice': _BASE[1:, ::2],
    'h.param': np.array([2.0, 4.0], np.float32),
    'i.bool': np.array([True, False]),
}


def fixture(name):
  return os.path.join(FIXTURES, name)


def assert_exactly(got, expected):
  assert list(sorted(got)) == list(sorted(expected))
  for key, value in expected.items():
    assert got[key].dtype == value.dtype, key
    assert got[key].shape == value.shape, key
    np.testing.assert_array_equal(got[key], value, err_msg=key)


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['tiny_state_dict.pth', 'tiny_state_dict_legacy.pth',
                                  'tiny_state_dict.safetensors'])
def test_reads_files_written_by_torch_and_safetensors(name):
  assert_exactly(pretrained.read_state_dict(fixture(name)), TINY)


@pytest.mark.parametrize('name', ['tiny_extras.pth', 'tiny_extras.safetensors'])
def test_reads_bfloat16_strided_views_parameters_and_unwraps_a_training_checkpoint(name):
  # tiny_extras.pth is {'epoch', 'arch', 'args': argparse.Namespace, 'state_dict':
  # {'module.e.bf16': ..., ...}}; f and g are views into one shared storage.
  assert_exactly(pretrained.read_state_dict(fixture(name)), EXTRAS)


def test_reads_npz_and_strips_the_module_prefix(tmp_path):
  path = str(tmp_path / 'w.npz')
  np.savez(path, **{'module.' + k: v for k, v in TINY.items()})
  assert_exactly(pretrained.read_state_dict(path), TINY)


def _torch_like_zip(path, payload: bytes, extra=()):
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/data.pkl', payload)
    zf.writestr('archive/byteorder', 'little')
    for name, data in extra:
      zf.writestr(name, data)


class _Exploit:
  def __init__(self, func, arg):
    self.func, self.arg = func, arg

  def __reduce__(self):
    return self.func, (self.arg,)


@pytest.mark.parametrize('func', [os.system, exec])
@pytest.mark.parametrize('legacy', [False, True])
def test_refuses_to_unpickle_code(tmp_path, func, legacy):
  marker = tmp_path / 'pwned'
  command = f'touch {marker}' if func is os.system else f'open({str(marker)!r}, "w").close()'
  payload = pickle.dumps({'state_dict': {'a': _Exploit(func, command)}}, protocol=2)
  path = str(tmp_path / 'evil.pth')
  if legacy:
    with open(path, 'wb') as f:
      f.write(payload)
  else:
    _torch_like_zip(path, payload)
  with pytest.raises(UserError, match=r'refusing to unpickle (posix|__builtin__)\.(system|exec)'):
    pretrained.read_state_dict(path)
  assert not marker.exists()


@pytest.mark.parametrize('target', [b'torch._utils\n_rebuild_tensor_v2', b'argparse\nNamespace'])
def test_refuses_pickles_that_modify_the_allowed_globals(tmp_path, target):
  # GLOBAL target; BUILD (None, {'evil': 1}): setattr on our stand-ins for torch's objects.
  payload = b'\x80\x02c' + target + b'\nN}X\x04\x00\x00\x00evilK\x01s\x86b.'
  path = str(tmp_path / 'build.pth')
  _torch_like_zip(path, payload)
  with pytest.raises(UserError, match='build.pth|refusing to unpickle'):
    pretrained.read_state_dict(path)
  assert not hasattr(pretrained._Namespace, 'evil')
  assert not any(hasattr(f, 'evil') for f in pretrained._ALLOWED_GLOBALS.values())


def test_refuses_non_storage_persistent_ids_and_out_of_bounds_views(tmp_path):
  class PidPickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ('module', 'x') if obj == 'ref' else None

  buf = io.BytesIO()
  PidPickler(buf, protocol=2).dump({'a': 'ref'})
  path = str(tmp_path / 'pid.pth')
  _torch_like_zip(path, buf.getvalue())
  with pytest.raises(UserError, match='refusing to unpickle persistent id'):
    pretrained.read_state_dict(path)

  # A well-formed file whose tensor claims more elements than its storage holds.
  good = zipfile.ZipFile(fixture('tiny_state_dict.pth'))
  names = good.namelist()
  pkl = next(n for n in names if n.endswith('data.pkl'))
  prefix = pkl[:-len('data.pkl')]
  truncated = str(tmp_path / 'truncated.pth')
  _torch_like_zip(truncated, good.read(pkl),
                  [('archive/data/' + n[len(prefix + 'data/'):], good.read(n)[:2])
                   for n in names if n.startswith(prefix + 'data/')])
  with pytest.raises(UserError, match='malformed checkpoint'):
    pretrained.read_state_dict(truncated)


def test_reader_errors_name_the_file(tmp_path):
  missing = str(tmp_path / 'nope.pth')
  with pytest.raises(UserError, match='nope.pth does not exist'):
    pretrained.read_state_dict(missing)
  garbage = tmp_path / 'garbage.pth'
  garbage.write_bytes(b'not a checkpoint')
  with pytest.raises(UserError, match='garbage.pth'):
    pretrained.read_state_dict(str(garbage))
  cut = tmp_path / 'cut.safetensors'
  cut.write_bytes(open(fixture('tiny_state_dict.safetensors'), 'rb').read()[:-5])
  with pytest.raises(UserError, match="cut.safetensors: not a readable safetensors file"):
    pretrained.read_state_dict(str(cut))


# ---------------------------------------------------------------------------------------------
# Conversion and parity with torchvision
# ---------------------------------------------------------------------------------------------

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
  state_dict = pretrained.random_torchvision_state_dict(f'resnet{depth}', int(data['seed']))
  floats = [v.astype(np.float64) for v in state_dict.values() if v.dtype == np.float32]
  fingerprint = [sum(v.sum() for v in floats), sum((v * v).sum() for v in floats)]
  np.testing.assert_allclose(fingerprint, data['weights_fingerprint'], rtol=1e-12,
                             err_msg='random_torchvision_state_dict no longer makes the weights '
                                     'the fixture was made with: rerun '
                                     'tools/make_torchvision_fixture.py')
  variables = pretrained.resnet_variables_from_torch(state_dict, depth)
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
  variables = pretrained.resnet_variables_from_torch(
      pretrained.random_torchvision_state_dict(depth), depth)
  shapes = jax.eval_shape(lambda: MODELS[depth]().init(jax.random.key(0), jnp.ones((1, 64, 64, 3)),
                                                       train=False))
  assert set(shapes) == {'params', 'batch_stats'}
  for collection in shapes:
    ours = jax.tree_util.tree_flatten_with_path(variables[collection])[0]
    flax = jax.tree_util.tree_flatten_with_path(shapes[collection])[0]
    assert [(p, v.shape) for p, v in ours] == [(p, v.shape) for p, v in flax]
    assert all(v.dtype == np.float32 for _, v in ours)


def test_conversion_layout_and_dropped_keys():
  sd = pretrained.random_torchvision_state_dict('resnet50', seed=3)
  sd['fc.weight'], sd['fc.bias'] = np.zeros((1000, 2048), np.float32), np.zeros(1000, np.float32)
  v = pretrained.resnet_variables_from_torch(sd, 'resnet50')
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
          for k, v in pretrained.random_torchvision_state_dict(18).items()}
  assert pretrained.resnet_variables_from_torch(half, 18)['params']['bn1']['scale'].dtype == \
      np.float32


def test_conversion_errors_name_the_key():
  sd = pretrained.random_torchvision_state_dict(18)
  missing = {k: v for k, v in sd.items() if k != 'layer3.1.bn2.running_var'}
  with pytest.raises(UserError, match=r'missing key\(s\).*layer3\.1\.bn2\.running_var'):
    pretrained.resnet_variables_from_torch(missing, 18)
  wrong = dict(sd, **{'layer2.0.conv1.weight': np.zeros((128, 64, 1, 1), np.float32)})
  with pytest.raises(UserError, match=r'shape mismatch for layer2\.0\.conv1\.weight: got '
                                      r'\(128, 64, 1, 1\), a ResNet-18 needs \(128, 64, 3, 3\)'):
    pretrained.resnet_variables_from_torch(wrong, 18)
  extra = dict(sd, **{'layer1.0.se.fc1.weight': np.zeros(3, np.float32)})
  with pytest.raises(UserError, match=r'unexpected key\(s\).*layer1\.0\.se\.fc1\.weight'):
    pretrained.resnet_variables_from_torch(extra, 18)
  with pytest.raises(UserError, match='is this a torchvision/timm ResNet-34'):
    pretrained.resnet_variables_from_torch(sd, 34)           # ResNet-18 weights, depth 34
  with pytest.raises(UserError, match='unknown ResNet depth'):
    pretrained.resnet_variables_from_torch(sd, 152)
  ints = dict(sd, **{'bn1.weight': np.ones(64, np.int64)})
  with pytest.raises(UserError, match='bn1.weight has dtype int64'):
    pretrained.resnet_variables_from_torch(ints, 18)


# ---------------------------------------------------------------------------------------------
# Merging into a model's variables
# ---------------------------------------------------------------------------------------------

def test_merge_backbone_at_a_sub_path():
  pre = pretrained.resnet_variables_from_torch(pretrained.random_torchvision_state_dict(18), 18)
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
  pre50 = pretrained.resnet_variables_from_torch(pretrained.random_torchvision_state_dict(50), 50)
  with pytest.raises(UserError, match='the model has no params/head/backbone/layer1_2, '):
    pretrained.merge_backbone(variables, pre50, ('head', 'backbone'))


def test_load_resnet_variables_from_a_file(tmp_path):
  sd = pretrained.random_torchvision_state_dict(18, seed=5)
  path = str(tmp_path / 'resnet18.npz')
  np.savez(path, **sd)
  v = pretrained.load_resnet_variables(path, 18)
  np.testing.assert_array_equal(v['batch_stats']['layer4_1']['bn2']['var'],
                                sd['layer4.1.bn2.running_var'])


# ---------------------------------------------------------------------------------------------
# torchvision URLs and downloads (no network: urlopen is replaced)
# ---------------------------------------------------------------------------------------------

def test_torchvision_urls_and_hash_fragments():
  expected = {18: 'resnet18-f37072fd.pth', 34: 'resnet34-b627a593.pth',
              50: 'resnet50-0676ba61.pth', 101: 'resnet101-63fe2227.pth'}
  for depth, name in expected.items():
    url = pretrained.torchvision_url(f'resnet{depth}')
    assert url == 'https://download.pytorch.org/models/' + name
    assert pretrained.torchvision_url(depth) == url
  assert pretrained.sha256_prefix(pretrained.torchvision_url('resnet50')) == '0676ba61'
  assert pretrained.torchvision_url(50, 'IMAGENET1K_V2').endswith('/resnet50-11ad3fa6.pth')
  with pytest.raises(UserError, match='no IMAGENET1K_V2 weights for resnet18'):
    pretrained.torchvision_url(18, 'IMAGENET1K_V2')
  with pytest.raises(UserError, match='unknown ResNet depth'):
    pretrained.torchvision_url('resnet152')


def test_download_checks_a_sha256_prefix_and_keeps_no_bad_file(tmp_path):
  import hashlib
  from comic_jax import download
  content = b'pretend weights'
  digest = hashlib.sha256(content).hexdigest()
  src = tmp_path / 'src.pth'
  src.write_bytes(content)
  good = str(tmp_path / 'cache' / f'resnet18-{digest[:8]}.pth')
  assert download.fetch(src.as_uri(), good, digest[:8]) == good      # file:// works offline
  assert open(good, 'rb').read() == content
  bad = tmp_path / 'cache' / 'resnet18-f37072fd.pth'
  with pytest.raises(UserError, match='corrupt or incomplete'):
    download.fetch(src.as_uri(), str(bad), 'f37072fd')
  assert not bad.exists() and not os.path.exists(str(bad) + '.partial')


class _Response(io.BytesIO):
  pass


def test_fetch_downloads_once_checks_the_hash_and_explains_failures(tmp_path, monkeypatch):
  import hashlib
  import urllib.error
  import urllib.request
  content = b'pretend resnet18 weights'
  prefix = hashlib.sha256(content).hexdigest()[:8]
  monkeypatch.setitem(pretrained._TORCHVISION_URLS['IMAGENET1K_V1'], 'resnet18',
                      f'https://example.invalid/models/resnet18-{prefix}.pth')
  calls = []

  def serve(body):
    def urlopen(url, timeout=None):
      calls.append(url)
      return _Response(body)
    return urlopen

  cache = str(tmp_path / 'cache')
  monkeypatch.setattr(urllib.request, 'urlopen', serve(content))
  path = pretrained.fetch_torchvision_weights('resnet18', cache)
  assert path == os.path.join(cache, f'resnet18-{prefix}.pth')
  assert open(path, 'rb').read() == content and len(calls) == 1
  assert pretrained.fetch_torchvision_weights(18, cache) == path and len(calls) == 1   # cached

  other = str(tmp_path / 'other')
  monkeypatch.setattr(urllib.request, 'urlopen', serve(b'truncated'))
  with pytest.raises(UserError, match='corrupt or incomplete'):
    pretrained.fetch_torchvision_weights('resnet18', other)
  assert os.listdir(other) == []

  def offline(url, timeout=None):
    raise urllib.error.URLError('Temporary failure in name resolution')

  monkeypatch.setattr(urllib.request, 'urlopen', offline)
  with pytest.raises(UserError) as info:
    pretrained.fetch_torchvision_weights('resnet50', other)
  message = str(info.value)
  assert '\n' not in message and 'download it by hand' in message
  assert 'https://download.pytorch.org/models/resnet50-0676ba61.pth' in message
  assert os.listdir(other) == []


def test_load_into_every_comic_branch_or_a_standalone_backbone(tmp_path):
  import types
  sd = pretrained.random_torchvision_state_dict(18, seed=7)
  path = str(tmp_path / 'resnet18.npz')
  np.savez(path, **{'module.' + k: v for k, v in sd.items()})
  pre = pretrained.resnet_variables_from_torch(sd, 18)
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
