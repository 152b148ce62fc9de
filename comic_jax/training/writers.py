"""The run's metric log: `metrics.jsonl` (one JSON line per evaluation) and TensorBoard event
files in the workdir (`tensorboard --logdir runs/`).

The event files are written with TensorBoard's own record framing and event protos, without
TensorFlow. CLU's metric writers (what the Flax examples use) and TensorBoard's EventFileWriter
were not taken: both import TensorFlow when it is installed (11 s per process on the 2-core
machine), and TensorFlow is optional for this package (only TFDS's COCO builder needs it). The
interface mirrors CLU's `MetricWriter`: `write_scalars(step, {name: value})`, `flush()`,
`close()`.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
from flax import traverse_util

from comic_jax import atomic


def json_safe(x):
  """NaN -> None (JSON null), NumPy scalars -> Python."""
  if isinstance(x, dict):
    return {k: json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_safe(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return None if math.isnan(x) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  return x


def scalars_of(line: dict) -> dict[str, float]:
  """The numbers of a metrics.jsonl line as flat TensorBoard tags ('eval/COMIC/total', ...)."""
  flat = traverse_util.flatten_dict(line, sep='/')
  return {k: float(v) for k, v in flat.items()
          if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
          and k not in ('epoch', 'step') and v is not None and np.isfinite(v)}


class TensorBoardWriter:
  """Scalars to a TensorBoard event file in `logdir`, written synchronously.

  TensorBoard's `EventFileWriter` is not used: it opens its file through `tensorboard.compat.tf`,
  which imports TensorFlow whenever it is installed (11 s per process on the 2-core machine,
  measured). Its record framing (`RecordWriter`) and the event protos are TensorFlow-free.
  """

  def __init__(self, logdir: str, start_step: int = 0):
    import socket

    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
    self._event_pb2 = event_pb2
    os.makedirs(logdir, exist_ok=True)
    # TensorBoard's file name pattern; the pid keeps two processes (or a resume) apart.
    name = f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.{id(self)}'
    self.path = os.path.join(logdir, name)
    self._writer = RecordWriter(open(self.path, 'wb'))
    self._add(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))
    # A resumed run redoes the steps after its checkpoint: TensorBoard drops the events of the
    # earlier attempt past `start_step` when it reads this marker.
    self._add(event_pb2.Event(
        wall_time=time.time(), step=start_step,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self.flush()

  def _add(self, event) -> None:
    self._writer.write(event.SerializeToString())

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    from tensorboard.compat.proto import summary_pb2
    values = [summary_pb2.Summary.Value(tag=tag, simple_value=value)
              for tag, value in scalars.items()]
    self._add(self._event_pb2.Event(
        wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    if not self._writer.closed:
      self._writer.close()


class MetricsLog:
  """metrics.jsonl plus TensorBoard scalars of the same numbers; a no-op off process 0."""

  def __init__(self, workdir: str, *, start_step: int = 0, enabled: bool = True):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.enabled = enabled
    self.tensorboard = TensorBoardWriter(workdir, start_step) if enabled else None

  def write(self, line: dict) -> None:
    if not self.enabled:
      return
    line = json_safe(line)
    atomic.append_line(self.path, line)
    self.tensorboard.write_scalars(line['step'], scalars_of(line))
    self.tensorboard.flush()

  def close(self) -> None:
    if self.enabled:
      self.tensorboard.close()
