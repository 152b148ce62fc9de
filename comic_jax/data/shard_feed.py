"""A shard folder's batches streamed through Grain: training batches (`ShardFeed`, whose
iterator state a checkpoint keeps) and dataset-wide prediction batches (`eval_batches`), decoded
and resized on `data.workers` worker processes, `data.prefetch` batches ahead. The records, the
manifest and the array-like view of the images are `shards`.
"""
from __future__ import annotations

import dataclasses
import json

import grain.python as grain
import jax
import numpy as np
from grain import checkpoint as grain_checkpoint

from comic_jax.data import shard_check, shards
from comic_jax.data.shard_samplers import EvalSampler, TrainSampler
from comic_jax.data.types import PLTData
from comic_jax.errors import UserError


def _process() -> tuple[int, int]:
  return jax.process_index(), jax.process_count()


def _decoded(map_fn):
  """A Grain map of record bytes that never raises: a record that cannot be read or decoded
  gives zeros and 'damaged' 1, so the training process names it (`_checked`) and stops its
  workers cleanly, instead of a worker's traceback and leaked shared memory."""
  def map(self, raw: bytes) -> dict:
    try:
      return {**map_fn(self, shards.decode_record(raw)), 'damaged': np.int8(0)}
    except Exception:  # noqa: BLE001 - read again and named in the training process
      return {**map_fn(self, None), 'damaged': np.int8(1)}
  return map


@dataclasses.dataclass(frozen=True)
class DecodeTraining(grain.MapTransform):
  """Record bytes -> {'image', 'label', 'label_full', 'label_negative'} (what `train_batch`
  gives on the in-memory path), on a Grain worker."""
  transform: shards.ImageTransform
  num_classes: int
  shape: tuple = ()             # of an image, for a damaged record's zeros
  dtype: str = 'uint8'

  @_decoded
  def map(self, rec) -> dict:
    if rec is None:
      zeros = np.zeros(self.num_classes, np.float32)
      return {'image': np.zeros(self.shape, self.dtype), 'label': zeros, 'label_full': zeros,
              'label_negative': zeros}
    label = shards.multi_hot(rec['labels'], self.num_classes)
    full = label if rec['full'] is None else shards.multi_hot(rec['full'], self.num_classes)
    return {'image': self.transform(rec['image'], rec['key']), 'label': label,
            'label_full': full,
            'label_negative': shards.multi_hot(rec['negative'], self.num_classes)}


@dataclasses.dataclass(frozen=True)
class DecodeImage(grain.MapTransform):
  """Record bytes -> {'image'}, on a Grain worker."""
  transform: shards.ImageTransform
  shape: tuple = ()
  dtype: str = 'uint8'

  @_decoded
  def map(self, rec) -> dict:
    if rec is None:
      return {'image': np.zeros(self.shape, self.dtype)}
    return {'image': self.transform(rec['image'], rec['key'])}


def _checked(batch: dict, images_: shards.ShardImages, indices, iterator) -> dict:
  """`batch` less its 'damaged' flags; if one is flagged, Grain's `iterator` is closed (its
  worker processes stop now, not in the interpreter's shutdown) and UserError names the first
  damaged record of `indices` (the records of the batch's rows)."""
  damaged = batch.pop('damaged')
  if damaged.any():
    batch.clear()
    shard_check.stop_loader(iterator)
    rows = np.flatnonzero(damaged)
    raise shard_check.damaged_record_error(images_.source, shards.decode_record, images_.transform,
                                           np.asarray(indices)[rows])
  return batch


def _loader(source: shards.ShardSource, sampler, decode, rows: int, workers: int, prefetch: int):
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


def eval_batches(images_: shards.ShardImages, batch_size: int):
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

  def __init__(self, data: PLTData, stream_samplers: dict, num_steps: int, data_config,
               batch_size: int):
    self.names = list(stream_samplers)
    _, n = _process()
    self.per = batch_size // n
    self.dc = data_config
    self.sampler = TrainSampler(list(stream_samplers.values()), batch_size, num_steps,
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
