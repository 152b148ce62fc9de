"""PyTorch checkpoints read without torch: `read_state_dict(path)` reads the zip-based
`torch.save` format, the legacy pre-1.6 one, a `.safetensors` file or an `.npz` into
`{name: np.ndarray}`.

PyTorch files are pickles: they go through a restricted unpickler that knows only tensors,
storages and plain containers and refuses every other global, so a checkpoint can never run code.
Also the names that the converters of torch state dicts share (`BATCHNORM_LEAVES`, `some_names`).

Only the standard library and NumPy at import time (ml_dtypes only for bfloat16/float8 data), so
the tools that write the test fixtures can use it from a torch-only virtualenv.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterable

import numpy as np

from comic_jax.errors import UserError, require

# torch BatchNorm tensor -> (flax collection, flax name)
BATCHNORM_LEAVES = (('weight', 'params', 'scale'), ('bias', 'params', 'bias'),
                    ('running_mean', 'batch_stats', 'mean'), ('running_var', 'batch_stats', 'var'))


def some_names(keys: Iterable[str], n: int = 4) -> str:
  """The first `n` of `keys` (sorted) for an error message: 'a, b, c, d and 7 more'."""
  keys = sorted(keys)
  return ', '.join(keys[:n]) + (f' and {len(keys) - n} more' if len(keys) > n else '')

# torch.<Name>Storage -> little-endian NumPy dtype of its elements ('bfloat16' via ml_dtypes).
_TORCH_STORAGES = {
    'DoubleStorage': '<f8', 'FloatStorage': '<f4', 'HalfStorage': '<f2',
    'BFloat16Storage': 'bfloat16', 'LongStorage': '<i8', 'IntStorage': '<i4',
    'ShortStorage': '<i2', 'CharStorage': 'i1', 'ByteStorage': 'u1', 'BoolStorage': '?',
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c       # torch.serialization.MAGIC_NUMBER (pre-1.6 files)
_LEGACY_PROTOCOL = 1001


def to_flax_variables(state_dict: Mapping[str, Any], expected: Mapping[str, tuple],
                      model: str, hint: str, ignored: Callable[[str], bool]) -> dict:
  """A PyTorch state dict -> {'params': ..., 'batch_stats': ...} (nested dicts of float32
  ndarrays), checked against `expected` ({torch key: (shape, collection, flax path)}).

  Keys for which `ignored` holds are dropped; an unexpected or missing key, a wrong shape or a
  non-float tensor raises UserError naming the key and `model`, with `hint`. Conv kernels go
  OIHW -> HWIO (a depthwise (C, 1, k, k) becomes Flax's (k, k, 1, C) by the same transpose),
  Linear weights (out, in) -> (in, out)."""
  unexpected = [k for k in state_dict if k not in expected and not ignored(k)]
  require(not unexpected, f'unexpected key(s) in the {model} state dict: '
                          f'{some_names(unexpected)} {hint}')
  missing = [k for k in expected if k not in state_dict]
  require(not missing, f'missing key(s) in the {model} state dict: {some_names(missing)} '
                       f'{hint}')
  variables: Dict[str, Dict[str, Any]] = {'params': {}, 'batch_stats': {}}
  for key, (shape, collection, flax_path) in expected.items():
    value = np.asarray(state_dict[key])
    require(value.shape == shape, f'shape mismatch for {key}: got {value.shape}, {model} needs '
                                  f'{shape} {hint}')
    require('float' in value.dtype.name,        # also ml_dtypes' bfloat16 / float8
            f'{key} has dtype {value.dtype}, expected floating point')
    value = value.astype(np.float32)
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)                   # OIHW -> HWIO
    elif value.ndim == 2:
      value = value.T                                       # Linear (out, in) -> (in, out)
    node = variables[collection]
    for part in flax_path[:-1]:
      node = node.setdefault(part, {})
    node[flax_path[-1]] = np.ascontiguousarray(value)
  return variables


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
  """A .safetensors file with the safetensors library (bfloat16 / float8 through ml_dtypes)."""
  import safetensors.numpy
  try:
    return dict(safetensors.numpy.load_file(path))
  except Exception as e:  # safetensors' Rust errors have no Python base class to name
    raise UserError(f'{path}: not a readable safetensors file ({" ".join(str(e).split())})'
                    ) from None


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

