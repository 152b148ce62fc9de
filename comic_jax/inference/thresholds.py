"""Per-class decision thresholds of a trained run: chosen on its validation split, stored in
`<workdir>/thresholds.json` and read by prediction, the export and the pictures.

    {"class_names": [...], "thresholds": {"<reported model>": [one per class], ...}}
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from comic_jax import atomic
from comic_jax.errors import UserError, require

THRESHOLDS_FILE = 'thresholds.json'


def f1_thresholds(probs: np.ndarray, labels: np.ndarray, default: float = 0.5) -> np.ndarray:
  """Per class, the threshold t maximising the F1 of `p >= t` on a labelled split.

  Candidates are the class's own scores (any t between two consecutive scores predicts the
  same set); among equal F1 the highest t wins (fewest positives predicted). A class without a
  positive in the split has no F1 to maximise and keeps `default`.
  """
  probs, labels = np.asarray(probs), np.asarray(labels) > 0
  out = np.full(probs.shape[1], default, np.float64)
  for c in range(probs.shape[1]):
    num_pos = int(labels[:, c].sum())
    if num_pos == 0:
      continue
    order = np.argsort(-probs[:, c], kind='stable')
    scores, hits = probs[order, c], labels[order, c]
    true_pos = np.cumsum(hits)
    predicted = np.arange(1, len(scores) + 1)
    # t = scores[i] predicts every score >= t: only the last index of a run of ties is a cut.
    is_cut = np.r_[scores[1:] != scores[:-1], True]
    f1 = np.where(is_cut, 2 * true_pos / (predicted + num_pos), -1.0)
    out[c] = scores[int(np.argmax(f1))]
  return out


def write_thresholds(workdir: str, class_names: Sequence[str],
                     thresholds: dict[str, np.ndarray]) -> str:
  """Writes `thresholds.json` in `workdir` (atomically); returns its path."""
  path = os.path.join(workdir, THRESHOLDS_FILE)
  atomic.write_json(path, {'class_names': list(class_names),
                                'thresholds': {k: [float(t) for t in v]
                                               for k, v in thresholds.items()}}, indent=2)
  return path


def read_thresholds(path: str, class_names: Sequence[str]) -> dict[str, np.ndarray]:
  """{model: (C,) thresholds} of a thresholds.json, checked against the run's classes."""
  try:
    with open(path) as f:
      saved = json.load(f)
    names, per_model = saved['class_names'], saved['thresholds']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f'cannot read thresholds {path}: {e}') from None
  require(list(names) == list(class_names),
          f'{path}: its class names differ from the run\'s ({len(names)} vs {len(class_names)})')
  out = {}
  for model, values in per_model.items():
    require(len(values) == len(class_names),
            f'{path}: {model!r} has {len(values)} thresholds for {len(class_names)} classes')
    out[model] = np.asarray(values, np.float64)
    require(bool(np.all(np.isfinite(out[model]))), f'{path}: {model!r} has a threshold that is '
            'not a finite number')
  return out


def of_workdir(workdir: str, class_names: Sequence[str]) -> dict[str, np.ndarray] | None:
  """The thresholds of `<workdir>/thresholds.json`, or None when the run has none."""
  path = os.path.join(workdir, THRESHOLDS_FILE)
  return read_thresholds(path, class_names) if os.path.isfile(path) else None
