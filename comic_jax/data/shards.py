"""A PLT data set as ArrayRecord shards (`comic_jax.data.convert` writes them), streamed with Grain.

A shard folder holds `manifest.json` (class names, counts, splits, the PLT construction applied,
a SHA-256 per file), `labels.npz` (every split's labels: the samplers need all the training
labels on every process; a few bytes per image) and `<split>-NNNNN-of-NNNNN.array_record` per
split ('train', 'val' when the source has one, 'test'). Each record is a msgpack map:

  key       the image's key in its source (file name, TFDS id, row number)
  image     the encoded image: the file's bytes as read ('file'), a PNG of an array ('png'), or
            an .npy of a feature vector ('npy'); the manifest's `encoding` says which
  labels    class indices of the positives (observed ones for 'train' and 'val', full for 'test')
  full      'train': class indices of the full positives (diagnostics only)
  negative  'train': class indices of the known negatives, or None (no known negatives)

With `data.name='shards'` the labels stay in memory and the images are read when used:
training batches and dataset-wide predictions through a Grain `DataLoader` (decoding and the
host-side resize on `data.workers` worker processes, `data.prefetch` batches ahead), anything
else (a few pictures, the feature cache) through `ShardImages`, a read-only array-like view.

The training sampler is the in-memory path's samplers seen by Grain: record position r of
process p is the row p * B / P + (r's place in its batch) of the global batch of its step, so
a step reads the indices `samplers.*.indices(step)` gives, each process only its own rows.
Grain's workers each batch their own slice of the positions (r = w, w + W, ...) and hand the
batches out round-robin, so `shard_samplers.position` lays the steps out in that order.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import grain.python as grain
import numpy as np
from grain import checkpoint as grain_checkpoint

from comic_jax.data import images, shard_check
from comic_jax.data.shard_check import shard_path
from comic_jax.data.shard_samplers import EvalSampler, TrainSampler  # noqa: F401 - re-exported
from comic_jax.data.types import PLTData
from comic_jax.errors import UserError, require

FORMAT = 'comic-jax-shards'
VERSION = 1
MANIFEST = 'manifest.json'
LABELS = 'labels.npz'
SPLITS = ('train', 'val', 'test')
ENCODINGS = ('file', 'png', 'npy')
DAMAGED = b''   # what ShardSource gives Grain for a record it cannot read


# ------------------------------------------------------------------------------- records

def encode_record(key: str, image: bytes, labels, full=None, negative=None) -> bytes:
  """One record (see the module docstring); label rows are 0/1 (or bool) vectors."""
  import msgpack
  classes = lambda row: None if row is None else np.flatnonzero(np.asarray(row)).tolist()
  return msgpack.packb({'key': key, 'image': image, 'labels': classes(labels),
                        'full': classes(full), 'negative': classes(negative)})


def decode_record(raw: bytes) -> dict:
  import msgpack
  return msgpack.unpackb(raw)


@dataclasses.dataclass(frozen=True)
class ImageTransform:
  """Encoded image -> model input, as the in-memory path stores it. Arrays (PLT-Synth, an .npz;
  `resize` False) come back as they were; images of a real source (`resize` True) are resized
  as `sources.image_loader` does: a training image square-resized to `store_size`, an
  evaluation image resized (shorter side `eval_resize`) and centre-cropped to `image_size`."""
  encoding: str             # 'file' | 'png' | 'npy' (ENCODINGS)
  resize: bool
  mode: str                 # 'train' | 'test'
  store_size: int
  eval_resize: int
  image_size: int

  def __call__(self, data: bytes, key: str) -> np.ndarray:
    if self.encoding == 'npy':
      return np.load(io.BytesIO(data), allow_pickle=False)
    image = images.decode_image(data, key)
    if not self.resize:
      return image
    if self.mode == 'train':
      return images.square_resize(image, self.store_size)
    return images.eval_transform(image, self.eval_resize, self.image_size)


def _multi_hot(classes, num_classes: int) -> np.ndarray:
  out = np.zeros(num_classes, np.float32)
  if classes:
    out[classes] = 1.0
  return out


# ------------------------------------------------------------------------------- reading

def read_manifest(root: str) -> dict:
  """The manifest of a shard folder, checked (one-line errors for a wrong folder)."""
  path = shard_path(root, MANIFEST)
  require(path.exists(), f'config.data.path={root!r} has no {MANIFEST}: convert a data set with '
          '`python -m comic_jax.data.convert --config=... --output=DIR` first')
  try:
    manifest = json.loads(path.read_text())
  except (ValueError, OSError) as e:
    raise UserError(f'{path} is unreadable: {" ".join(str(e).split())}') from None
  require(manifest.get('format') == FORMAT and manifest.get('version') == VERSION,
          f'{path} is not a {FORMAT} manifest of version {VERSION}: convert the data set again')
  return manifest


class ShardSource:
  """Grain's random-access source over one split's shards: record i -> its bytes. Opened on
  first use (also in each Grain worker, which gets this object pickled). `reads` counts the
  records this process read."""

  def __init__(self, root: str, split: str, info: dict, rows: np.ndarray | None = None):
    self.root, self.split, self.info = root, split, info
    # rows: the records read (a carve), None: every one
    # 'file[0:count]': the manifest's counts, so no process opens every file to count them.
    self.files = [f"{shard_path(root, s['file'])}[0:{s['count']}]" for s in info['shards']]
    self.rows = None if rows is None else np.asarray(rows, np.int64)
    self.length = int(info['count']) if rows is None else len(self.rows)
    self.digest = info['sha256'][:16] + ('' if rows is None else '/' + hashlib.sha256(
        self.rows.tobytes()).hexdigest()[:16])            # the carve's rows are content too
    self.reads = 0
    self._source = None

  def __getstate__(self):
    return dict(self.__dict__, _source=None)

  def __len__(self) -> int:
    return self.length

  def read(self, index) -> bytes:
    if self._source is None:
      self._source = grain.ArrayRecordDataSource(self.files)
    self.reads += 1
    return self._source[int(index) if self.rows is None else int(self.rows[int(index)])]

  def __getitem__(self, index) -> bytes:   # Grain's: a damaged shard's record is DAMAGED, and
    try:                                      # the batch says so (`_decoded`), no worker fails
      return self.read(index)
    except Exception:  # noqa: BLE001 - ArrayRecord's errors have no common type
      return DAMAGED

  def __repr__(self) -> str:   # Grain checks it when restoring an iterator: the content, not
    return f'ShardSource({self.split}, {self.length}, sha256={self.digest})'   # the place


class ShardImages:
  """A split's model inputs as a read-only array: `len`, `shape`, `dtype`, `ndim` and indexing
  (an int, a slice or an index array) decode the records asked for, on the calling thread. The
  training loop and evaluation stream them through Grain instead (`ShardFeed`, `eval_batches`)."""
  streamed = True

  def __init__(self, source: ShardSource, transform: ImageTransform, shape, dtype,
               workers: int = 0, prefetch: int = 1):
    self.source, self.transform = source, transform
    self.workers, self.prefetch = workers, prefetch   # Grain's, for `eval_batches`
    self.shape, self.dtype = (len(source), *shape), np.dtype(dtype)
    self.ndim = len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def _one(self, i: int) -> np.ndarray:
    try:
      record = decode_record(self.source[i])
      return self.transform(record['image'], record['key'])
    except Exception:  # noqa: BLE001 - named by damaged_record_error
      error = shard_check.damaged_record_error(self.source, decode_record, self.transform, [i])
    raise error from None

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      return self._one(int(index) % len(self))
    rows = np.arange(len(self))[index]
    out = np.empty((len(rows), *self.shape[1:]), self.dtype)
    for k, i in enumerate(rows):
      out[k] = self._one(int(i))
    return out

  def __array__(self, dtype=None, copy=None):
    out = self[:]
    return out if dtype is None else out.astype(dtype)


def _input_shape(manifest: dict, mode: str, dc) -> tuple[tuple[int, ...], str]:
  if not manifest['resize']:
    return tuple(manifest['input_shape']), manifest['input_dtype']
  side = dc.store_size if mode == 'train' else dc.image_size
  return (side, side, 3), 'uint8'


def preprocessing_of(dc) -> dict:
  """`predictor.preprocessing_of` for a run on shards: what the in-memory source would say."""
  manifest = read_manifest(dc.path)
  shape = manifest['input_shape']
  if manifest['encoding'] == 'npy':
    return {'input': 'features', 'dim': int(shape[0])}
  if manifest['resize']:
    return {'input': 'image', 'resize': int(dc.eval_resize), 'height': int(dc.image_size),
            'width': int(dc.image_size)}
  return {'input': 'image', 'resize': int(min(shape[:2])), 'height': int(shape[0]),
          'width': int(shape[1])}


def load_dataset(dc, carve=None) -> PLTData:
  """The PLTData of a shard folder: labels from labels.npz, images as `ShardImages`; without a
  'val' split, one carved from 'train' by `carve` (sources.split_validation), data.val_fraction."""
  manifest = read_manifest(dc.path)
  shard_check.check_files(dc.path, manifest)
  try:
    with shard_path(dc.path, LABELS).open('rb') as f, np.load(f, allow_pickle=False) as z:
      labels = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise UserError(f'{shard_path(dc.path, LABELS)} is unreadable: '
                    f'{" ".join(str(e).split())}') from None
  splits, rows = dict(manifest['splits']), {}
  if 'val' not in splits and dc.val_fraction > 0 and carve:   # observed labels, as in memory
    rows = dict(zip(('train', 'val'), carve(len(labels['y_train']), dc.val_fraction, dc.seed)))
    labels['y_val'], splits['val'] = labels['y_train'][rows['val']], splits['train']
    labels.update({k: v[rows['train']] for k, v in labels.items() if k not in ('y_test', 'y_val')})
  split_images = {}
  for split in SPLITS:
    if split in splits:
      mode = 'train' if split == 'train' else 'test'
      shape, dtype = _input_shape(manifest, mode, dc)
      transform = ImageTransform(manifest['encoding'], manifest['resize'], mode, dc.store_size,
                                 dc.eval_resize, dc.image_size)
      split_images[split] = ShardImages(ShardSource(dc.path, split, splits[split], rows.get(split)),
                                        transform, shape, dtype, dc.workers, dc.prefetch)
  for split, images_ in split_images.items():
    y = labels['y_test' if split == 'test' else f'y_{split}']
    require(len(y) == len(images_), f'{dc.path!r}: {LABELS} has {len(y)} {split} labels for '
            f'{len(images_)} records: convert the data set again')
  return PLTData(name=manifest['name'], class_names=tuple(manifest['class_names']),
                 x_train=split_images['train'], y_train=labels['y_train'],
                 y_train_full=labels['y_train_full'], x_test=split_images['test'],
                 y_test=labels['y_test'], x_val=split_images.get('val'),
                 y_val=labels.get('y_val'), neg_train=labels.get('neg_train'))


# ------------------------------------------------------------------------------- Grain

def _process() -> tuple[int, int]:
  import jax
  return jax.process_index(), jax.process_count()


def _decoded(map_fn):
  """A Grain map of record bytes that never raises: a record that cannot be read or decoded
  gives zeros and 'damaged' 1, so the training process names it (`_checked`) and stops its
  workers cleanly, instead of a worker's traceback and leaked shared memory."""
  def map(self, raw: bytes) -> dict:
    try:
      return {**map_fn(self, decode_record(raw)), 'damaged': np.int8(0)}
    except Exception:  # noqa: BLE001 - read again and named in the training process
      return {**map_fn(self, None), 'damaged': np.int8(1)}
  return map


@dataclasses.dataclass(frozen=True)
class DecodeTraining(grain.MapTransform):
  """Record bytes -> {'image', 'label', 'label_full', 'label_negative'} (what `train_batch`
  gives on the in-memory path), on a Grain worker."""
  transform: ImageTransform
  num_classes: int
  shape: tuple = ()             # of an image, for a damaged record's zeros
  dtype: str = 'uint8'

  @_decoded
  def map(self, rec) -> dict:
    if rec is None:
      zeros = np.zeros(self.num_classes, np.float32)
      return {'image': np.zeros(self.shape, self.dtype), 'label': zeros, 'label_full': zeros,
              'label_negative': zeros}
    label = _multi_hot(rec['labels'], self.num_classes)
    full = label if rec['full'] is None else _multi_hot(rec['full'], self.num_classes)
    return {'image': self.transform(rec['image'], rec['key']), 'label': label,
            'label_full': full, 'label_negative': _multi_hot(rec['negative'], self.num_classes)}


@dataclasses.dataclass(frozen=True)
class DecodeImage(grain.MapTransform):
  """Record bytes -> {'image'}, on a Grain worker."""
  transform: ImageTransform
  shape: tuple = ()
  dtype: str = 'uint8'

  @_decoded
  def map(self, rec) -> dict:
    if rec is None:
      return {'image': np.zeros(self.shape, self.dtype)}
    return {'image': self.transform(rec['image'], rec['key'])}


def _checked(batch: dict, images_: ShardImages, indices, iterator) -> dict:
  """`batch` less its 'damaged' flags; if one is flagged, Grain's `iterator` is closed (its
  worker processes stop now, not in the interpreter's shutdown) and UserError names the first
  damaged record of `indices` (the records of the batch's rows)."""
  damaged = batch.pop('damaged')
  if damaged.any():
    batch.clear()
    shard_check.stop_loader(iterator)
    rows = np.flatnonzero(damaged)
    raise shard_check.damaged_record_error(images_.source, decode_record, images_.transform,
                                           np.asarray(indices)[rows])
  return batch


def _loader(source: ShardSource, sampler, decode, rows: int, workers: int, prefetch: int):
  from absl import flags
  if workers and not flags.FLAGS.is_parsed():   # Grain's workers read its absl flags: outside
    flags.FLAGS.mark_as_parsed()                  # a command (tests, notebooks), the defaults
  p, n = _process()
  return grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[decode, grain.Batch(rows, drop_remainder=True)],
      worker_count=workers, worker_buffer_size=prefetch,
      # Reading a record takes ~10 us: 2 threads keep up, and Grain looks at every buffered read
      # per record (its default buffer of 500 cost ~1 ms a record).
      read_options=grain.ReadOptions(num_threads=2, prefetch_buffer_size=32),
      shard_options=grain.ShardOptions(shard_index=p, shard_count=n, drop_remainder=True))


def eval_batches(images_: ShardImages, batch_size: int):
  """This process's rows of each global batch of `images_` (the last one padded with image 0),
  decoded on Grain's workers: `pipeline.map_dataset` on shards."""
  _, n = _process()
  sampler = EvalSampler(len(images_), batch_size, images_.workers, n)
  decode = DecodeImage(images_.transform, images_.shape[1:], images_.dtype.str)
  iterator = iter(_loader(images_.source, sampler, decode, batch_size // n, images_.workers,
                          images_.prefetch))
  first = _process()[0] * sampler.per
  for b in range(sampler.num_batches):   # the batch's rows: images b * B + p * per + k
    rows = [i if i < len(images_) else 0 for i in range(
        b * batch_size + first, b * batch_size + first + sampler.per)]
    yield _checked(next(iterator), images_, rows, iterator)['image']


class ShardFeed:
  """Training batches of a shard folder, streamed: `batch(step)` is this process's rows of the
  global batch of `step` per stream, as `pipeline.train_batch` gives them in memory.

  Steps are read in order (the training loop's); another step repositions the iterator. The
  iterator state goes into each checkpoint (`checkpoint_args`) and comes back on restore
  (`restore_args`): Grain's orbax handler calls `get_state` / `set_state` here, the state being
  Grain's own plus the next step."""

  def __init__(self, data: PLTData, stream_samplers: dict, num_steps: int, config):
    self.names = list(stream_samplers)
    _, n = _process()
    self.per = config.batch_size // n
    self.dc = config.data
    self.sampler = TrainSampler(list(stream_samplers.values()), config.batch_size, num_steps,
                                self.dc.workers, n)
    self.images = data.x_train
    decode = DecodeTraining(data.x_train.transform, data.num_classes, data.x_train.shape[1:],
                            data.x_train.dtype.str)
    self.loader = _loader(data.x_train.source, self.sampler, decode, self.sampler.rows,
                          self.dc.workers, self.dc.prefetch)
    self._iterator, self._next, self._last = None, 0, (None, None)

  def batch(self, step: int) -> dict:
    if self._last[0] == step:
      return self._last[1]
    if self._iterator is None or step < self._next:
      self._iterator, self._next = iter(self.loader), 0
    while self._next <= step:   # forward to `step` (only after an unusual call order)
      try:
        rows = _checked(next(self._iterator), self.images, self.indices(self._next),
                        self._iterator)
      except UserError:
        self._iterator, self._last = None, (None, None)   # its batches freed now
        raise
      self._next += 1
    out = {name: {k: v[s * self.per:(s + 1) * self.per] for k, v in rows.items()}
           for s, name in enumerate(self.names)}
    p = _process()[0]
    for name, sampler in zip(self.names, self.sampler.stream_samplers):   # as `train_batch`
      out[name]['index'] = sampler.indices(step)[p * self.per:(p + 1) * self.per].astype(np.int32)
    self._last = (step, out)
    return out

  def indices(self, step: int) -> list[int]:
    """The training records of this process's rows of `step`, stream after stream."""
    p, _ = _process()
    return [int(i) for s in range(len(self.names))
            for i in self.sampler.indices(step, s)[p * self.per:(p + 1) * self.per]]

  # Grain's orbax handler (grain.checkpoint.CheckpointSave / CheckpointRestore) calls these.
  def get_state(self) -> bytes:
    grain_state = None if self._iterator is None else self._iterator.get_state().decode()
    return json.dumps({'next_step': self._next, 'grain': grain_state}).encode()

  def set_state(self, state: bytes) -> None:
    saved = json.loads(state)
    self._iterator, self._next, self._last = iter(self.loader), 0, (None, None)
    if saved['grain'] is not None:
      try:
        self._iterator.set_state(saved['grain'].encode())
      except ValueError as e:   # Grain checks the workers, the sampler and the source
        raise UserError('the checkpoint\'s data iterator does not match this run '
                        f'({" ".join(str(e).split()[:12])} ...): resume with the config and '
                        'config.data.workers it was saved with') from None
      self._next = saved['next_step']

  def start_prefetch(self) -> None:
    pass

  def checkpoint_args(self) -> dict:
    """{item name: orbax args} saving the iterator state as it is now."""
    return {'data_iterator': grain_checkpoint.CheckpointSave(_Frozen(self.get_state()))}

  def restore_args(self) -> dict:
    return {'data_iterator': grain_checkpoint.CheckpointRestore(self)}


@dataclasses.dataclass(frozen=True)
class _Frozen:
  """An iterator state taken when the save was asked for (orbax may write it later)."""
  state: bytes

  def get_state(self) -> bytes:
    return self.state

