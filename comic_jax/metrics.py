"""Evaluation metrics for PLT-MLC (docs/results.md, "Metrics"); NumPy, on the host.

- Per-class average precision, equal to scikit-learn's `average_precision_score` (tied scores
  form one threshold, as there); classes without a test positive get NaN and are left out of
  every mean.
- mAP over all classes ("total"), over the many / medium / few groups of the training set, and the
  mean of the three group mAPs ("average").
- Overall (micro) precision, recall and F1 with a positive predicted where p >= `threshold`.
All reported numbers are percentages.
"""
from __future__ import annotations

import numpy as np

from comic_jax.data.longtail import GROUP_NAMES

METRIC_KEYS = ('total', 'many', 'medium', 'few', 'average', 'precision', 'recall', 'f1')


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """Non-interpolated AP of one class: sum_k (R_k - R_{k-1}) P_k over distinct score thresholds.

  Equals scikit-learn's `average_precision_score`; NaN when `labels` has no positive.
  """
  scores = np.asarray(scores, dtype=np.float64)
  labels = np.asarray(labels) > 0
  n_pos = int(labels.sum())
  if n_pos == 0:
    return float('nan')
  order = np.argsort(-scores, kind='mergesort')
  s, y = scores[order], labels[order]
  # The last index of each run of equal scores is where that threshold's counts are read.
  last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
  tp = np.cumsum(y)[last]
  precision = tp / (last + 1)
  recall = tp / n_pos
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def per_class_average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(C,) AP of each column; NaN for classes with no positive in `labels`."""
  scores, labels = np.asarray(scores), np.asarray(labels)
  if scores.shape != labels.shape or scores.ndim != 2:
    raise ValueError(f'scores {scores.shape} and labels {labels.shape} must be equal (N, C)')
  return np.array([average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])])


def _nanmean(x: np.ndarray) -> float:
  x = np.asarray(x, dtype=np.float64)
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float('nan')


def multilabel_metrics(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                       threshold: float = 0.5) -> tuple[dict[str, float], np.ndarray]:
  """The report of one model: ({METRIC_KEYS: percent}, per-class AP in percent).

  Args:
    scores: (N, C) probabilities (any monotone score works for AP; thresholds need p).
    labels: (N, C) 0/1 full test labels.
    groups: (C,) MANY / MEDIUM / FEW of each class (from the training set).
    threshold: a positive is predicted where scores >= threshold.
  """
  ap = per_class_average_precision(scores, labels) * 100.0
  groups = np.asarray(groups)
  out = {'total': _nanmean(ap)}
  for g, name in enumerate(GROUP_NAMES):
    out[name] = _nanmean(ap[groups == g])
  out['average'] = _nanmean(np.array([out[name] for name in GROUP_NAMES]))
  pred = np.asarray(scores) >= threshold
  truth = np.asarray(labels) > 0
  tp = float(np.sum(pred & truth))
  precision = tp / max(float(pred.sum()), 1.0)
  recall = tp / max(float(truth.sum()), 1.0)
  f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  out.update(precision=100.0 * precision, recall=100.0 * recall, f1=100.0 * f1)
  return out, ap


def format_table(results: dict[str, dict[str, float]], keys=METRIC_KEYS) -> str:
  """A plain-text table, one row per model, columns `keys` (percent, 2 decimals)."""
  name_w = max([len('model')] + [len(n) for n in results])
  head = f"{'model':<{name_w}}  " + '  '.join(f'{k:>9}' for k in keys)
  rows = [head, '-' * len(head)]
  for name, m in results.items():
    cells = ('      n/a' if m.get(k) is None or np.isnan(m[k]) else f'{m[k]:9.2f}' for k in keys)
    rows.append(f'{name:<{name_w}}  ' + '  '.join(cells))
  return '\n'.join(rows)
