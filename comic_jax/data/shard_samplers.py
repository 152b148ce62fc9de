"""Grain samplers of a shard folder (`shards.py`): the training sampler replays the in-memory
path's samplers, the evaluation sampler walks the images in order; both lay the steps out in
the order in which Grain's workers hand out their batches."""
from __future__ import annotations

import math

import grain.python as grain
import numpy as np


def position(r: int, rows: int, workers: int) -> tuple[int, int]:
  """(step, row within the step's batch) of a process's record position r, when `workers`
  Grain workers (0 = in process) each batch positions w, w + W, ... and hand out their batches
  round-robin: worker w's j-th batch is step j * W + w."""
  w = max(workers, 1)
  j, row = divmod(r // w, rows)
  return j * w + r % w, row


def num_positions(num_steps: int, rows: int, workers: int) -> int:
  """Positions that cover `num_steps` steps: every worker's last batch is full."""
  w = max(workers, 1)
  return math.ceil(num_steps / w) * w * rows


class TrainSampler:
  """Grain sampler of the training records: global position g = r * P + p (Grain's sharding
  over P processes) is row p * per + row of stream s of `step` (see `position`), where a
  step's batch holds the streams one after the other, `per` = global batch / P rows each."""

  def __init__(self, stream_samplers: list, batch_size: int, num_steps: int, workers: int,
               processes: int):
    self.stream_samplers = stream_samplers
    self.per = batch_size // processes
    self.rows = self.per * len(stream_samplers)
    self.workers, self.processes, self.num_steps = workers, processes, num_steps
    self.length = num_positions(num_steps, self.rows, workers) * processes
    self._drawn = {}

  def __len__(self) -> int:
    return self.length

  def indices(self, step: int, stream: int) -> np.ndarray:
    """The stream's global batch of `step`, drawn once for the rows of the step (Grain asks
    from its reading threads: one `get`, then at most a redundant draw)."""
    drawn = self._drawn.get((step, stream))
    if drawn is None:
      drawn = self.stream_samplers[stream].indices(step)
      if len(self._drawn) >= 16:
        self._drawn.clear()
      self._drawn[step, stream] = drawn
    return drawn

  def __getitem__(self, g: int):
    if not 0 <= g < self.length:
      raise IndexError(g)
    r, p = divmod(g, self.processes)
    step, row = position(r, self.rows, self.workers)
    stream, k = divmod(row, self.per)
    key = int(self.indices(step, stream)[p * self.per + k])
    return grain.RecordMetadata(index=g, record_key=key)

  def __repr__(self) -> str:   # Grain checks it when restoring an iterator
    kinds = ','.join(type(s).__name__ for s in self.stream_samplers)
    seeds = ','.join(str(s.seed) for s in self.stream_samplers)
    return (f'TrainSampler({kinds}, seeds={seeds}, batch={self.per * self.processes}, '
            f'steps={self.num_steps}, processes={self.processes})')


class EvalSampler:
  """Grain sampler of dataset-wide inference: batch b holds images b * B .. b * B + B - 1 (B the
  global batch), each process its rows; rows past the end are image 0 (padding, dropped)."""

  def __init__(self, num_images: int, batch_size: int, workers: int, processes: int):
    self.n, self.batch_size, self.workers, self.processes = (num_images, batch_size, workers,
                                                             processes)
    self.per = batch_size // processes
    self.num_batches = -(-num_images // batch_size)
    self.length = num_positions(self.num_batches, self.per, workers) * processes

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, g: int):
    if not 0 <= g < self.length:
      raise IndexError(g)
    r, p = divmod(g, self.processes)
    b, k = position(r, self.per, self.workers)
    i = b * self.batch_size + p * self.per + k
    return grain.RecordMetadata(index=g, record_key=i if i < self.n else 0)

  def __repr__(self) -> str:
    return f'EvalSampler({self.n}, batch={self.batch_size}, processes={self.processes})'
