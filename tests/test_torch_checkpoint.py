"""The torch-free checkpoint readers (models/torch_checkpoint.py): files written by torch and
safetensors read back exactly, and pickles that could run code refused.

The fixtures in tests/fixtures/ were written by tools/make_torchvision_fixture.py with torch
2.14.1, torchvision 0.29.1 and safetensors 0.8.0; these tests need none of them.
"""
import io
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest

from comic_jax.errors import UserError
from comic_jax.models import torch_checkpoint

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')

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


@pytest.mark.parametrize('name', ['tiny_state_dict.pth', 'tiny_state_dict_legacy.pth',
                                  'tiny_state_dict.safetensors'])
def test_reads_files_written_by_torch_and_safetensors(name):
  assert_exactly(torch_checkpoint.read_state_dict(fixture(name)), TINY)


@pytest.mark.parametrize('name', ['tiny_extras.pth', 'tiny_extras.safetensors'])
def test_reads_bfloat16_strided_views_parameters_and_unwraps_a_training_checkpoint(name):
  # tiny_extras.pth is {'epoch', 'arch', 'args': argparse.Namespace, 'state_dict':
  # {'module.e.bf16': ..., ...}}; f and g are views into one shared storage.
  assert_exactly(torch_checkpoint.read_state_dict(fixture(name)), EXTRAS)


def test_reads_npz_and_strips_the_module_prefix(tmp_path):
  path = str(tmp_path / 'w.npz')
  np.savez(path, **{'module.' + k: v for k, v in TINY.items()})
  assert_exactly(torch_checkpoint.read_state_dict(path), TINY)


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
    torch_checkpoint.read_state_dict(path)
  assert not marker.exists()


@pytest.mark.parametrize('target', [b'torch._utils\n_rebuild_tensor_v2', b'argparse\nNamespace'])
def test_refuses_pickles_that_modify_the_allowed_globals(tmp_path, target):
  # GLOBAL target; BUILD (None, {'evil': 1}): setattr on our stand-ins for torch's objects.
  payload = b'\x80\x02c' + target + b'\nN}X\x04\x00\x00\x00evilK\x01s\x86b.'
  path = str(tmp_path / 'build.pth')
  _torch_like_zip(path, payload)
  with pytest.raises(UserError, match='build.pth|refusing to unpickle'):
    torch_checkpoint.read_state_dict(path)
  assert not hasattr(torch_checkpoint._Namespace, 'evil')
  assert not any(hasattr(f, 'evil') for f in torch_checkpoint._ALLOWED_GLOBALS.values())


def test_refuses_non_storage_persistent_ids_and_out_of_bounds_views(tmp_path):
  class PidPickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ('module', 'x') if obj == 'ref' else None

  buf = io.BytesIO()
  PidPickler(buf, protocol=2).dump({'a': 'ref'})
  path = str(tmp_path / 'pid.pth')
  _torch_like_zip(path, buf.getvalue())
  with pytest.raises(UserError, match='refusing to unpickle persistent id'):
    torch_checkpoint.read_state_dict(path)

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
    torch_checkpoint.read_state_dict(truncated)


def test_reader_errors_name_the_file(tmp_path):
  missing = str(tmp_path / 'nope.pth')
  with pytest.raises(UserError, match='nope.pth does not exist'):
    torch_checkpoint.read_state_dict(missing)
  garbage = tmp_path / 'garbage.pth'
  garbage.write_bytes(b'not a checkpoint')
  with pytest.raises(UserError, match='garbage.pth'):
    torch_checkpoint.read_state_dict(str(garbage))
  cut = tmp_path / 'cut.safetensors'
  cut.write_bytes(open(fixture('tiny_state_dict.safetensors'), 'rb').read()[:-5])
  with pytest.raises(UserError, match="cut.safetensors: not a readable safetensors file"):
    torch_checkpoint.read_state_dict(str(cut))
