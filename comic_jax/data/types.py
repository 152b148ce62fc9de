"""The in-memory data set every source produces and every run trains on."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass
class PLTData:
  """A PLT-MLC data set held in memory.

  Images are uint8 (N, H, W, 3) (or float feature vectors for feature sources). `y_train` holds the
  observed (partial) labels the methods train on: 1 = observed positive, 0 = not observed;
  `y_train_full` the full labels, for diagnostics (correction accuracy, class groups) only.

  `neg_train` (bool (N, C), or None) marks the training labels known to be absent: the 0 entries
  of a user's training labels that also hold -1 (unknown) entries (docs/data.md, "Known negatives").
  None (every source without -1 labels) means every 0 of `y_train` is unknown: a true negative
  or a hidden positive. Where it is set, an entry is an observed positive (`y_train` 1), a known
  negative (`neg_train` True) or unknown (neither); never both.
  """
  name: str
  class_names: tuple[str, ...]
  x_train: np.ndarray
  y_train: np.ndarray
  y_train_full: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  x_val: np.ndarray | None = None
  y_val: np.ndarray | None = None
  neg_train: np.ndarray | None = None

  def __post_init__(self):
    if self.neg_train is not None:
      self.neg_train = np.asarray(self.neg_train, bool)
      if self.neg_train.shape != np.shape(self.y_train):
        raise ValueError(f'neg_train has shape {self.neg_train.shape}, y_train '
                         f'{np.shape(self.y_train)}')
      if (self.neg_train & (np.asarray(self.y_train) > 0)).any():
        raise ValueError('neg_train marks an observed positive of y_train as a known negative')
    for field in dataclasses.fields(self):  # shared between runs in one process: read-only
      value = getattr(self, field.name)
      if isinstance(value, np.ndarray):
        value.setflags(write=False)

  @property
  def has_val(self) -> bool:
    return self.x_val is not None and len(self.x_val) > 0

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


@dataclasses.dataclass
class Pool:
  """One split of a source before the PLT construction."""
  keys: list[str]
  labels: np.ndarray                                   # (N, C) labels (full, as far as known)
  load: Callable[[np.ndarray, str], np.ndarray]        # (indices, 'train' | 'test') -> x
  observed: np.ndarray | None = None                   # labels that are already partial
  negatives: np.ndarray | None = None                  # (N, C) bool: labels known to be absent
  encoded: Callable[[int], object] | None = None       # row -> its image as stored (file bytes,
                                                       # a path or an array): the converter's
