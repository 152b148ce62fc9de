"""Writes the data set a config describes as ArrayRecord shards (format: `comic_jax.data.shards`;
the command, `python -m comic_jax.data.convert`: comic_jax/cli/convert.py).

    python -m comic_jax.data.convert --config=configs/coco.py --output=/data/plt_coco_shards
    comic-jax-convert --config=configs/folder.py --config.data.path=photos ... --output=DIR

Any source (PLT-Synth, folder, npz, TFDS COCO / VOC) goes through the PLT construction of
training (long tail, hidden positives, validation split; `plt.plan_plt`) on its labels
alone; then the images are read, checked (decoded once), encoded and written 256 at a time,
so the converter holds at most 256 records (the arrays of an in-memory source, PLT-Synth or an
.npz, excepted). Files are
written into `<DIR>.partial-<pid>` and renamed to DIR when every shard, the labels and the
manifest are written: a failed or interrupted conversion leaves no DIR behind. Train on the
result with `--config.data.name=shards --config.data.path=DIR`.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import shutil

import numpy as np

from comic_jax import atomic, progress
from comic_jax.data import images, plt, shards, sources, splits
from comic_jax.download import sha256_of
from comic_jax.errors import UserError, require

# Written into the manifest: the fields of config.data that made the PLT construction.
CONSTRUCTION_FIELDS = ('name', 'seed', 'longtail', 'partial', 'missing_ratio', 'val_fraction',
                       'plt_json', 'plt_json_labels', 'path', 'train_labels', 'test_labels')


def encode_image(image, encoding: str) -> bytes:
  """The `image` field of a record: file bytes as read ('file': bytes or a path), a PNG of a
  uint8 (H, W, 3) array ('png', lossless) or an .npy of a feature vector ('npy')."""
  if encoding == 'file':
    if isinstance(image, (bytes, bytearray, memoryview)):
      return bytes(image)
    with open(image, 'rb') as f:
      return f.read()
  buf = io.BytesIO()
  if encoding == 'png':
    from PIL import Image
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format='PNG', compress_level=1)
  else:
    np.save(buf, np.asarray(image), allow_pickle=False)
  return buf.getvalue()



def write_split(directory: str, split: str, rows, records_per_shard: int) -> dict:
  """Writes `rows` (an iterable of record bytes, with a known len) as `<split>-*.array_record`
  shards of `records_per_shard` records; returns the split's manifest entry."""
  from array_record.python.array_record_module import ArrayRecordWriter
  n = len(rows)
  num_shards = max(1, -(-n // records_per_shard))
  entries, writer, count = [], None, 0
  bar = progress.bar(total=n, desc=f'writing {split}', unit='img', dynamic_ncols=True, leave=False)

  def close():
    writer.close()
    path = os.path.join(directory, entries[-1]['file'])
    entries[-1].update(count=count, sha256=sha256_of(path), bytes=os.path.getsize(path))

  for i, record in enumerate(rows):
    if i % records_per_shard == 0:
      if writer is not None:
        close()
      entries.append({'file': f'{split}-{len(entries):05d}-of-{num_shards:05d}.array_record'})
      writer = ArrayRecordWriter(os.path.join(directory, entries[-1]['file']), 'group_size:1')
      count = 0
    writer.write(record)
    count += 1
    bar.update()
  if writer is not None:
    close()
  bar.close()
  digest = hashlib.sha256(''.join(e['sha256'] for e in entries).encode()).hexdigest()
  return {'count': n, 'sha256': digest, 'shards': entries}


class _Records:
  """The records of one split, made `chunk` at a time from `image(i)` and the label rows. The
  images of a real source ('file') are decoded once on `threads` threads, so that a damaged
  image stops the conversion with its name instead of a training run later."""

  def __init__(self, keys, image, encoding, labels, full=None, negative=None):
    self.keys, self.image, self.encoding = keys, image, encoding
    self.labels, self.full, self.negative = labels, full, negative
    self.chunk, self.threads = 256, os.cpu_count() or 1

  def __len__(self) -> int:
    return len(self.keys)

  def _encoded(self, i: int) -> tuple[bytes, str]:
    image, encoding = self.image(i), self.encoding
    if encoding == 'file' and isinstance(image, np.ndarray):   # TFDS's decoded mock data
      encoding = 'png'
    data = encode_image(image, encoding)
    if self.encoding == 'file':
      images.decode_image(data, self.keys[i])   # raises UserError naming a damaged image
    return data, encoding

  def __iter__(self):
    row = lambda y, i: None if y is None else y[i]
    with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
      for start in range(0, len(self.keys), self.chunk):
        rows = range(start, min(start + self.chunk, len(self.keys)))
        for i, (data, _) in zip(rows, pool.map(self._encoded, rows)):
          yield shards.encode_record(self.keys[i], data, self.labels[i], row(self.full, i),
                                     row(self.negative, i))


def _plan(dc):
  """(name, class names, {split: _Records}, labels for labels.npz, resize, encoding): arrays
  (PLT-Synth, an .npz) are taken as they are, images of a real source resized when read."""
  spec = sources.get(dc.name)
  if spec.pools is None:   # PLT-Synth: its data set as generated
    data = sources.load_dataset(dc)
    keys = lambda x: [str(i) for i in range(len(x))]
    records = {'train': _Records(keys(data.x_train), data.x_train.__getitem__, 'png',
                                 data.y_train, data.y_train_full),
               'val': _Records(keys(data.x_val), data.x_val.__getitem__, 'png', data.y_val),
               'test': _Records(keys(data.x_test), data.x_test.__getitem__, 'png', data.y_test)}
    labels = {'y_train': data.y_train, 'y_train_full': data.y_train_full, 'y_val': data.y_val,
              'y_test': data.y_test}
    return data.name, data.class_names, records, labels, False, 'png'
  cache = splits.cache_dir(dc.cache_dir)
  names, train, test = sources.source_pools(dc, cache)
  plan = plt.plan_plt(dc, dc.name, tuple(names), train, test, cache)
  resize = spec.resized
  encoding = 'file' if resize else ('npy' if np.ndim(train.encoded(0)) == 1 else 'png')
  rows = lambda picked: (lambda i: train.encoded(int(picked[i])))
  keys = lambda picked: [train.keys[int(i)] for i in picked]
  records = {'train': _Records(keys(plan.train_rows), rows(plan.train_rows), encoding,
                               plan.y_train, plan.y_train_full, plan.neg_train),
             'test': _Records(list(test.keys), test.encoded, encoding, plan.y_test)}
  labels = {'y_train': plan.y_train, 'y_train_full': plan.y_train_full, 'y_test': plan.y_test}
  if len(plan.val_rows):
    records['val'] = _Records(keys(plan.val_rows), rows(plan.val_rows), encoding, plan.y_val)
    labels['y_val'] = plan.y_val
  if plan.neg_train is not None:
    labels['neg_train'] = plan.neg_train
  return f'plt_{dc.name}', tuple(names), records, labels, resize, encoding


def convert(data_config, output: str, records_per_shard: int = 1024) -> dict:
  """Writes the shards of `data_config`'s data set to `output`; returns the manifest."""
  dc = data_config
  require(not sources.is_streamed(dc), f'config.data.name={dc.name} is already converted: give '
          'the config of the source (synthetic, voc, coco, npz, folder)')
  sources.validate_config(dc)
  require(records_per_shard > 0, f'--records_per_shard={records_per_shard} must be > 0')
  output = os.path.abspath(output)
  require(not os.path.exists(output), f'--output={output!r} exists: remove it or choose '
          'another folder (nothing is overwritten)')
  parent = os.path.dirname(output)
  require(os.path.isdir(parent), f'the folder of --output ({parent!r}) does not exist')
  partial = f'{output}.partial-{os.getpid()}'
  try:
    os.makedirs(partial)
  except OSError as e:
    raise UserError(f'cannot write to {parent!r}: {e.strerror or e}') from None
  try:
    name, class_names, records, labels, resize, encoding = _plan(dc)
    sample = shards.decode_record(next(iter(records['train'])))
    example = shards.ImageTransform(encoding, False, 'train', 0, 0, 0)(sample['image'],
                                                                      sample['key'])
    split_entries = {}
    for split in shards.SPLITS:
      if split in records and len(records[split]):
        split_entries[split] = write_split(partial, split, records[split], records_per_shard)
    labels_path = os.path.join(partial, shards.LABELS)
    np.savez(labels_path, **{k: v for k, v in labels.items() if v is not None})
    counts = lambda y: np.asarray(y).sum(0).astype(int).tolist()
    for split, key in (('train', 'y_train'), ('val', 'y_val'), ('test', 'y_test')):
      if split in split_entries:
        split_entries[split]['positives'] = counts(labels[key])
    split_entries['train']['positives_full'] = counts(labels['y_train_full'])
    manifest = {
        'format': shards.FORMAT, 'version': shards.VERSION, 'name': name, 'source': dc.name,
        'class_names': list(class_names), 'encoding': encoding, 'resize': resize,
        'input_shape': list(example.shape), 'input_dtype': str(example.dtype),
        'splits': split_entries,
        'construction': {k: dc[k] for k in CONSTRUCTION_FIELDS} | {
            'pareto': dc.pareto.to_dict(),
            'synthetic': dc.synthetic.to_dict() if dc.name == 'synthetic' else None},
        'labels': {'file': shards.LABELS, 'sha256': sha256_of(labels_path),
                   'known_negatives': 'neg_train' in labels}}
    atomic.write_json(os.path.join(partial, shards.MANIFEST), manifest, indent=2)
    os.replace(partial, output)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return manifest
