"""Building a PLT-MLC training set: long tail + partial labels (pure NumPy).

The same functions build PLT-Synth, PLT-COCO and PLT-VOC, so the embedded data set is made by the
procedure the benchmark uses on real data (BASELINES.md, "Benchmark protocol"):

1. `pareto_reference_counts`: the target per-class positive counts, a Pareto curve.
2. `cooccurrence_ranking`: which class gets which target (classes that co-occur most are ranked
   first, so they become the head).
3. `greedy_longtail_subsample`: pick images of a source set so that class counts follow the
   targets.
4. `drop_positives`: hide each positive label independently with probability r.
5. `class_statistics` / `class_groups`: counts, max-normalised distribution, co-occurrence and the
   many / medium / few groups used for reporting.
"""
from __future__ import annotations

import dataclasses

import numpy as np

MANY, MEDIUM, FEW = 0, 1, 2
GROUP_NAMES = ('many', 'medium', 'few')


def pareto_reference_counts(num_classes: int, max_count: int, min_count: int,
                            shape: float) -> np.ndarray:
  """Target positive counts per rank: floor((max-min) * x_i^-(b+1) + min).

  x_i is evenly spaced from 1 to 0.01^(-1/b) (b = `shape`), the curve of the Distribution-Balanced
  loss paper that COMIC reuses (DB: b=6, max 1200 on COCO; COMIC: b=10 / 12, max 1400). Rank 0 gets
  `max_count`; the last rank gets about `min_count`.
  """
  if num_classes < 1 or shape <= 0 or min_count < 0 or max_count < min_count:
    raise ValueError(f'bad Pareto parameters: num_classes={num_classes}, max={max_count}, '
                     f'min={min_count}, shape={shape}')
  x = np.linspace(1.0, 0.01 ** (-1.0 / shape), num_classes)
  return np.floor((max_count - min_count) * x ** (-(shape + 1.0)) + min_count).astype(np.int64)


def cooccurrence_counts(labels: np.ndarray) -> np.ndarray:
  """M[i, j] = number of images with both i and j positive (the diagonal holds n_i)."""
  y = np.asarray(labels, dtype=np.float64)
  return y.T @ y


def conditional_cooccurrence(labels: np.ndarray) -> np.ndarray:
  """P[i, j] = P(j positive | i positive) = M_ij / n_i (rows of absent classes are 0)."""
  m = cooccurrence_counts(labels)
  n = np.diag(m).copy()
  with np.errstate(divide='ignore', invalid='ignore'):
    p = np.where(n[:, None] > 0, m / np.maximum(n[:, None], 1), 0.0)
  return p


def cooccurrence_ranking(labels: np.ndarray) -> np.ndarray:
  """Classes by descending column sum of P(j|i) (ties by class index).

  A class that appears beside many others ranks first and receives the head targets: it would be
  over-represented anyway by images picked for other classes.
  """
  p = conditional_cooccurrence(labels)
  np.fill_diagonal(p, 0.0)
  score = p.sum(axis=0)
  return np.lexsort((np.arange(len(score)), -score))


def greedy_longtail_subsample(labels: np.ndarray, targets: np.ndarray, *, seed: int,
                              order: np.ndarray | None = None) -> np.ndarray:
  """Indices of a subset of `labels`' rows whose class counts follow `targets`.

  Classes are visited in `order` (default `cooccurrence_ranking`); `targets[k]` is the count wanted
  for the k-th visited class. A class that is short gets random images with it added, one at a
  time; one with too many gets random images with it removed. Each pick prefers the images that
  move the fewest other classes the wrong way (an added image should not push another class above
  its target, a removed one should not pull another below it); ties are broken at random. Classes
  visited late (the tail) can still end above their target when they co-occur with the head.

  Args:
    labels: (N, C) 0/1 full labels of the source set.
    targets: (C,) wanted counts per rank (e.g. `pareto_reference_counts`).
    seed: seeds the random choices; the result is deterministic given it.
    order: optional (C,) class visiting order.
  Returns:
    Sorted int64 indices of the selected rows.
  """
  y = np.asarray(labels) > 0
  n, c = y.shape
  targets = np.asarray(targets, dtype=np.int64)
  if targets.shape != (c,):
    raise ValueError(f'targets has shape {targets.shape}, expected ({c},)')
  order = cooccurrence_ranking(y) if order is None else np.asarray(order)
  target_of = np.empty(c, dtype=np.int64)
  target_of[order] = targets
  rng = np.random.default_rng(seed)
  yi = y.astype(np.int64)
  selected = np.zeros(n, dtype=bool)
  counts = np.zeros(c, dtype=np.int64)
  for cls in order:
    adding = counts[cls] < target_of[cls]
    cand = np.flatnonzero(y[:, cls] & (~selected if adding else selected))
    cand = cand[rng.permutation(len(cand))]
    cand_labels = yi[cand]
    alive = np.ones(len(cand), dtype=bool)
    for _ in range(abs(int(target_of[cls] - counts[cls]))):
      if not alive.any():
        break
      # Classes that one more (adding) / one fewer (removing) image would move off target.
      harmed = counts >= target_of if adding else counts <= target_of
      harmed[cls] = False
      cost = np.where(alive, cand_labels @ harmed, np.iinfo(np.int64).max)
      pick = int(np.argmin(cost))  # the first minimum: random among ties (cand is shuffled)
      alive[pick] = False
      selected[cand[pick]] = adding
      counts += cand_labels[pick] if adding else -cand_labels[pick]
  return np.flatnonzero(selected)


def drop_positives(labels: np.ndarray, ratio: float, *, seed: int) -> np.ndarray:
  """Observed labels: each positive of `labels` is set to 0 independently with prob. `ratio`."""
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f'missing ratio must be in [0, 1), got {ratio}')
  y = np.asarray(labels)
  keep = np.random.default_rng(seed).random(y.shape) >= ratio
  return (y * keep).astype(y.dtype)


def class_groups(counts: np.ndarray, many_threshold: int = 100,
                 few_threshold: int = 20) -> np.ndarray:
  """Group per class: MANY (n >= many_threshold), FEW (n < few_threshold), else MEDIUM."""
  counts = np.asarray(counts)
  return np.where(counts >= many_threshold, MANY,
                  np.where(counts < few_threshold, FEW, MEDIUM)).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class ClassStatistics:
  """Per-class statistics of a label matrix."""
  counts: np.ndarray          # (C,) positives per class, n_c
  distribution: np.ndarray    # (C,) n_c / max_j n_j, the D of METHOD.md
  cooccurrence: np.ndarray    # (C, C) P(j | i)
  groups: np.ndarray          # (C,) MANY / MEDIUM / FEW

  def group_sizes(self) -> dict[str, int]:
    return {name: int((self.groups == g).sum()) for g, name in enumerate(GROUP_NAMES)}


def class_statistics(labels: np.ndarray, many_threshold: int = 100,
                     few_threshold: int = 20) -> ClassStatistics:
  y = np.asarray(labels) > 0
  counts = y.sum(axis=0).astype(np.int64)
  return ClassStatistics(
      counts=counts,
      distribution=counts / max(int(counts.max()), 1),
      cooccurrence=conditional_cooccurrence(y),
      groups=class_groups(counts, many_threshold, few_threshold))
