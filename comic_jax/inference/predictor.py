"""A trained model's predictor: the `Predictor` that turns inputs (each image through its run's
source preprocessing, `sources.preprocessing_of` and `images.model_input`) into probabilities
and labels. Built by
`predict.load` (a workdir) or `export.load_export` (an exported folder), which supply the
probabilities function; nothing here knows how the model was trained.

Bad input is refused with a UserError naming the row or file: a feature row or an image array
holding NaN or inf, a wrong feature or image shape, probabilities that come out non-finite.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from comic_jax.data import images as image_ops
from comic_jax.errors import UserError, require
from comic_jax.inference.thresholds import THRESHOLDS_FILE, f1_thresholds, write_thresholds

# ------------------------------------------------------------------------------- the predictor

def _name(names: Sequence[str] | None, i: int) -> str:
  """The name of input row `i`: its given name (a file name), else 'row i'."""
  return names[i] if names and i < len(names) and names[i] is not None else f'row {i}'


class Predictor:
  """Probabilities and labels of a trained model; built by `load` (a workdir) or
  `export.load_export` (an exported folder), which supply `probabilities`."""

  def __init__(self, probabilities: Callable[[np.ndarray], dict], *, class_names,
               model_names, model: str | None, preprocessing: dict,
               saved_thresholds: dict | None, threshold='auto', batch_size: int = 256):
    self._probabilities = probabilities
    self.class_names = tuple(class_names)
    self.model_names = tuple(model_names)
    require(model is None or model in self.model_names,
            f'model {model!r} is not one of this run\'s: {", ".join(self.model_names)}')
    self.model = model or self.model_names[0]
    self.preprocessing = dict(preprocessing)
    self.saved_thresholds = saved_thresholds
    self.threshold = threshold
    self.batch_size = batch_size
    self.thresholds(self.model)  # a bad threshold choice fails here, not at the first image

  # -------------------------------------------------------------- inputs
  def prepare(self, inputs, names: Sequence[str] | None = None) -> np.ndarray:
    """The model inputs of `inputs` (see the module docstring)."""
    prep = self.preprocessing
    if prep['input'] == 'features':
      try:
        x = np.asarray(inputs, np.float32)
      except (TypeError, ValueError) as e:
        raise UserError(f'this model takes feature vectors (N, {prep["dim"]}): {e}') from None
      require(x.ndim == 2 and x.shape[1] == prep['dim'],
              f'this model takes feature vectors (N, {prep["dim"]}), got shape {x.shape}')
      bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
      if len(bad):
        raise UserError(f'feature row {_name(names, bad[0])} holds NaN or inf ({len(bad)} such '
                        'row(s)); nothing was predicted')
      return x
    if isinstance(inputs, np.ndarray):
      require(inputs.ndim == 4, f'images: pass a list of images or an (N, H, W, 3) array, got '
              f'shape {inputs.shape}')
    require(not isinstance(inputs, (str, bytes, os.PathLike)),
            'images: pass a list of images (a single path or image goes in a list)')
    items = list(inputs)
    names = [_name(names, i) for i in range(len(items))]
    if not items:
      return np.zeros((0, prep['height'], prep['width'], 3), np.uint8)
    return np.stack([image_ops.model_input(item, prep, name) for item, name in zip(items, names)])

  # -------------------------------------------------------------- outputs
  def batches(self, inputs, names: Sequence[str] | None = None):
    """(start, batch, n): the inputs prepared (`prepare`) in batches of `batch_size`, each
    padded (with its first row) to one of a few fixed sizes, powers of two up to batch_size, so
    that few programs are compiled; `n` rows of `batch` are real."""
    if not isinstance(inputs, np.ndarray) and self.preprocessing['input'] == 'image':
      inputs = list(inputs)
    n = len(inputs)
    names = [_name(names, i) for i in range(n)]
    features = self.preprocessing['input'] == 'features'
    if features:   # checked whole: a bad shape or row is named before anything is predicted
      inputs = self.prepare(inputs, names)
    for start in range(0, n, self.batch_size):
      part = inputs[start:start + self.batch_size]
      x = part if features else self.prepare(part, names[start:start + self.batch_size])
      size = min(self.batch_size, 1 << max(len(x) - 1, 0).bit_length())
      padded = np.concatenate([x, np.repeat(x[:1], size - len(x), 0)]) if size > len(x) else x
      yield start, padded, len(x)

  def predict_all(self, inputs, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{reported model: (N, C) probabilities}, in batches of `batch_size`."""
    chunks: dict[str, list] = {}
    for start, batch, n in self.batches(inputs, names):
      for key, value in self._probabilities(batch).items():
        value = np.asarray(value, np.float32)[:n]
        bad = np.flatnonzero(~np.isfinite(value).all(axis=1))
        if len(bad):
          raise UserError(f'the model gives non-finite probabilities for '
                          f'{_name(names, start + bad[0])} ({key}); nothing was predicted')
        chunks.setdefault(key, []).append(value)
    if not chunks:
      return {k: np.zeros((0, len(self.class_names)), np.float32) for k in self.model_names}
    return {k: np.concatenate(v) for k, v in chunks.items()}

  def predict(self, inputs, model: str | None = None) -> np.ndarray:
    """(N, C) probabilities of `model` (default: the run's reported model)."""
    model = self._check_model(model)
    return self.predict_all(inputs)[model]

  def thresholds(self, model: str | None = None, threshold=None) -> np.ndarray:
    """(C,) per-class thresholds of `model` for `threshold` (default: the one given to load)."""
    model = self._check_model(model)
    threshold = self.threshold if threshold is None else threshold
    c = len(self.class_names)
    if isinstance(threshold, str) and threshold in ('auto', 'val'):
      if self.saved_thresholds and model in self.saved_thresholds:
        return self.saved_thresholds[model]
      require(threshold == 'auto', f'no validation thresholds for {model!r}: the run has no '
              f'{THRESHOLDS_FILE} (use a fixed threshold such as 0.5)')
      return np.full(c, 0.5)
    try:
      value = float(threshold)
    except (TypeError, ValueError):
      raise UserError(f"threshold={threshold!r} is not 'auto', 'val' or a number") from None
    require(0.0 <= value <= 1.0, f'threshold={value} must be in [0, 1]')
    return np.full(c, value)

  def labels_of(self, probs: np.ndarray, model: str | None = None, threshold=None
                ) -> list[list[str]]:
    """Class names with probability >= threshold, per row of `probs`."""
    t = self.thresholds(model, threshold)
    return [[self.class_names[j] for j in np.flatnonzero(row >= t)] for row in probs]

  def labels(self, inputs, model: str | None = None, threshold=None) -> list[list[str]]:
    """Per image, the names of the classes predicted present."""
    return self.labels_of(self.predict(inputs, model), model, threshold)

  def fit_thresholds(self, inputs, labels, workdir: str | None = None) -> dict[str, np.ndarray]:
    """Per-class F1-maximising thresholds of every reported model on labelled images (a
    validation set, not the test set), used from then on by threshold='auto' / 'val'; written
    to `<workdir>/thresholds.json` when `workdir` is given."""
    labels = np.asarray(labels)
    require(labels.shape == (len(inputs), len(self.class_names)),
            f'labels: expected shape ({len(inputs)}, {len(self.class_names)}), got {labels.shape}')
    probs = self.predict_all(inputs)
    self.saved_thresholds = {k: f1_thresholds(v, labels) for k, v in probs.items()}
    if workdir:
      write_thresholds(workdir, self.class_names, self.saved_thresholds)
    return self.saved_thresholds

  def _check_model(self, model):
    model = model or self.model
    require(model in self.model_names,
            f'model {model!r} is not one of this run\'s: {", ".join(self.model_names)}')
    return model
