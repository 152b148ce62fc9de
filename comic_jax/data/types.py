"""The in-memory data set every source produces and every run trains on."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class PLTData:
  """A PLT-MLC data set held in memory.

  Images are uint8 (N, H, W, 3) (or float feature vectors for feature sources). `y_train` holds the
  observed (partial) labels the methods train on; `y_train_full` the full labels, for diagnostics
  (correction accuracy, class groups) only.
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

  def __post_init__(self):
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
