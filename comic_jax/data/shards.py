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
training batches and dataset-wide predictions through a Grain `DataLoader` (`shard_feed`:
decoding and the host-side resize on `data.workers` worker processes, `data.prefetch` batches
ahead), anything else (a few pictures, the feature cache) through `ShardImages`, a read-only
array-like view.

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

import numpy as np

from comic_jax.data import images, plt, registry, shard_check
from comic_jax.data.shard_check import shard_path
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
  as `plt.image_loader` does: a training image square-resized to `store_size`, an
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
    return images.model_input(image, {'resize': self.eval_resize, 'height': self.image_size,
                                      'width': self.image_size})


def multi_hot(classes, num_classes: int) -> np.ndarray:
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
      import grain.python as grain  # here: importing Grain takes seconds
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
  training loop and evaluation stream them through Grain instead (`shard_feed.ShardFeed`,
  `shard_feed.eval_batches`)."""

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
  """A run on shards preprocesses as its source would: the manifest says what that is."""
  manifest = read_manifest(dc.path)
  shape = manifest['input_shape']
  if manifest['encoding'] == 'npy':
    return {'input': 'features', 'dim': int(shape[0])}
  if manifest['resize']:
    return {'input': 'image', 'resize': int(dc.eval_resize), 'height': int(dc.image_size),
            'width': int(dc.image_size)}
  return {'input': 'image', 'resize': int(min(shape[:2])), 'height': int(shape[0]),
          'width': int(shape[1])}


def load_dataset(dc, carve=plt.split_validation) -> PLTData:
  """The PLTData of a shard folder: labels from labels.npz, images as `ShardImages`; without a
  'val' split, one carved from 'train' by `carve` (as in memory), data.val_fraction."""
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


def validate(dc) -> None:
  require(bool(dc.path),
          "config.data.name='shards' needs config.data.path: the folder comic-jax-convert wrote")


registry.register(registry.SourceSpec('shards', preprocessing_of, load=load_dataset,
                                      validate=validate, streamed=True))
