"""A label audit: which of the training labels are missing? For every image the user labelled
(the validation rows carved by `data.val_fraction` included), the labels not given that the
trained model scores as present, ranked.

    python -m comic_jax.audit --workdir=runs/mine --output=suspects.csv
    comic-jax-audit --workdir=runs/mine --output=suspects.csv --cut=0.5

(The command: comic_jax/cli/audit.py.)

suspects.csv, one row per suspected missing label, most likely first:

    image,split,class,score,rlc_threshold,rlc_corrects,rank,verdict

`image` is the image as the user knows it: its file name (image folders), its row in the .npz's
`x_train`, its id (VOC, COCO), else 'train <i>' (PLT-Synth, shards: the training set's row).
`split` is 'train' or 'val' (held out for validation). `rlc_threshold` is RLC's threshold of the
class, max{tau, P_c}: tau = `comic.rlc.tau`, P_c the mean score of the class over the training
images (RLC's running class mean, here of the trained model). `rlc_corrects` says whether RLC's
rule, with the trained model, corrects the label (score > rlc_threshold). Labels known to be
absent (0 in a training file with -1 entries) are left out; so are the observed positives.
`verdict` is empty, for the reviewer: yes / no, then `--review` writes the new label file
(comic_jax/audit/review.py).

The cut (`--cut`) says which labels are listed: 'rlc' (the default: the labels RLC corrects),
'val' (the run's validation thresholds, thresholds.json) or a number for every class. The
ranking (`--rank`, `comic_jax/audit/rankings.py`) orders them: by default 'context_prototype', the
model's log-odds plus what the image's other labels and its features next to the class's
observed positives say (evidence the model's in-sample score of a training image lacks: it was
trained on that image's missing labels as negatives); else by raw score, or by a key comparable
across classes, so that the missing labels of rare classes do not sink below those of head
classes (`RANKINGS`). Where the hidden labels are known (PLT-Synth simulates them), the
precision and recall of the hidden labels at the cut are printed, and `--plot=audit.png`
draws the precision-recall curve of the ranking of every unobserved label, with `--compare`
workdirs (other methods) and a random ranking; elsewhere these two flags say, in a warning,
that they cannot apply.

With `--folds=K` (`comic_jax/audit/folds.py`) the audit first trains K out-of-fold BCE models
and scores each training image with the mean, in log-odds, of the run's score and the score of
the model that never saw it: `score`, the cut and every ranking then read that score.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os

import numpy as np

from comic_jax import atomic
from comic_jax.audit import folds as folds_lib
from comic_jax.audit.rankings import (
  DEFAULT_RANK,
  NEEDS_FEATURES,
  embeddings,
  logit,
  ranking_scores,
)
from comic_jax.errors import UserError
from comic_jax.inference import predict

COLUMNS = ('image', 'split', 'class', 'score', 'rlc_threshold', 'rlc_corrects', 'rank',
           'verdict')


@dataclasses.dataclass
class Images:
  """Every image the user labelled for training, as the user knows it: `names` are the file
  names (image folders), the rows of the user's `x_train` (npz), 'train <i>' elsewhere; `training`
  says which trained (False: held out for validation by `data.val_fraction`)."""
  names: list
  x: object
  observed: np.ndarray                 # (N, C) observed positives
  negatives: np.ndarray | None         # (N, C) known negatives, or None
  full: np.ndarray                     # (N, C) full labels (= observed unless simulated)
  training: np.ndarray                 # (N,) bool
  train_position: np.ndarray           # (N,) the row among the run's training images, or -1


def labelled_images(data_config) -> Images:
  """The training and validation rows of the user's label file, in the file's order."""
  from comic_jax.data import plt, sources, splits
  dc = data_config
  if dc.name in ('synthetic', 'shards'):   # no user's file rows: the training set
    data = sources.load_dataset(dc)
    n = len(data.y_train)
    return Images([f'train {i}' for i in range(n)], data.x_train, np.asarray(data.y_train),
                  data.neg_train, np.asarray(data.y_train_full), np.ones(n, bool), np.arange(n))
  sources.validate_config(dc)
  cache = splits.cache_dir(dc.cache_dir)
  class_names, train, test = sources.source_pools(dc, cache)
  plan = plt.plan_plt(dc, dc.name, tuple(class_names), train, test, cache)
  rows = np.concatenate([plan.train_rows, plan.val_rows])
  order = np.argsort(rows, kind='stable')
  stack = lambda a, b: np.concatenate([a, b])[order]
  c = len(class_names)
  val = lambda a: np.zeros((len(plan.val_rows), c), np.int8) if a is None else a
  negatives = None
  if plan.neg_train is not None:
    negatives = stack(plan.neg_train, np.zeros((len(plan.val_rows), c), bool)
                      if plan.neg_val is None else plan.neg_val)
  rows = rows[order]
  x = ([train.encoded(r) for r in rows] if dc.name == 'folder' else train.load(rows, 'train'))
  return Images([str(train.keys[r]) for r in rows], x, stack(plan.y_train, val(plan.y_val)),
                negatives, stack(plan.y_train_full, val(plan.y_val_full)),
                np.r_[np.ones(len(plan.train_rows), bool),
                      np.zeros(len(plan.val_rows), bool)][order],
                np.r_[np.arange(len(plan.train_rows)), np.full(len(plan.val_rows), -1)][order])


def rlc_thresholds(probs: np.ndarray, tau: float) -> np.ndarray:
  """(C,) max{tau, P_c}, P_c the mean score of class c over the images of `probs`."""
  return np.maximum(tau, np.asarray(probs, np.float64).mean(axis=0))


def cut_of(cut: str, model, rlc: np.ndarray) -> np.ndarray:
  """(C,) thresholds of the cut: 'rlc', 'val' or a number."""
  if cut == 'rlc':
    return rlc
  return model.thresholds(threshold=cut)


def unobserved(observed, negatives) -> np.ndarray:
  """(N, C) the labels neither observed nor known negative: the audit's candidates."""
  out = np.asarray(observed) == 0
  if negatives is not None:
    out &= ~np.asarray(negatives, bool)
  return out


def suspects(probs: np.ndarray, observed: np.ndarray, negatives: np.ndarray | None,
             cut: np.ndarray, key: np.ndarray | None = None) -> np.ndarray:
  """(image, class) pairs of the unobserved, not known-negative labels scored above `cut`,
  highest `key` (default: the score) first, ties by score, then image, then class."""
  candidate = unobserved(observed, negatives) & (probs > cut[None, :])
  rows, cols = np.nonzero(candidate)
  key = probs if key is None else key
  order = np.lexsort((cols, rows, -probs[rows, cols], -key[rows, cols]))
  return np.stack([rows[order], cols[order]], axis=1)


def hidden_label_recovery(probs, observed, full, negatives, cut) -> dict:
  """Precision and recall of the hidden labels (full 1, observed 0) among the suspects."""
  found = suspects(probs, observed, negatives, cut)
  hidden = (full > 0) & (observed == 0)
  hits = int(hidden[found[:, 0], found[:, 1]].sum()) if len(found) else 0
  return {'suspects': int(len(found)), 'hidden': int(hidden.sum()), 'hits': hits,
          'precision': hits / len(found) if len(found) else float('nan'),
          'recall': hits / max(int(hidden.sum()), 1)}


def precision_recall(scores: np.ndarray, is_hidden: np.ndarray):
  """(recall, precision) of ranking the unobserved labels by `scores` (one point per rank)."""
  order = np.argsort(-scores, kind='stable')
  hits = np.cumsum(is_hidden[order])
  return hits / max(int(is_hidden.sum()), 1), hits / np.arange(1, len(order) + 1)


def ranking_ap(key: np.ndarray, probs: np.ndarray, is_hidden: np.ndarray) -> float:
  """Average precision of ranking labels by `key` (ties by `probs`): the mean over the hidden
  labels of the precision at each one's rank; nan without hidden labels."""
  if not is_hidden.any():
    return float('nan')
  order = np.lexsort((-probs, -key))
  hits = is_hidden[order]
  precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
  return float(precision[hits].mean())


def with_out_of_fold(probs: np.ndarray, out_of_fold: np.ndarray) -> np.ndarray:
  """The audit's scores with out-of-fold ones (`folds.out_of_fold_probs`, NaN where none): the
  sigmoid of the mean of the two log-odds, the run's score alone where there is none."""
  mean = np.where(np.isnan(out_of_fold), logit(probs),
                  (logit(probs) + logit(np.nan_to_num(out_of_fold, nan=0.5))) / 2)
  return 1.0 / (1.0 + np.exp(-mean))


class Audit:
  """The audit of one run: its model's scores of every image the user labelled for training
  (validation rows included), the cut and the ranking."""

  def __init__(self, workdir: str, *, cut: str = 'rlc', model: str | None = None,
               rank: str = DEFAULT_RANK, folds: int = 0, folds_dir: str | None = None):
    from comic_jax.inference import restore as inference
    self.model = predict.load(workdir, model=model)
    config = self.model.config
    self.images = labelled_images(config.data)
    self.probs = self.model.predict(self.images.x).astype(np.float64)
    if folds:
      self.probs = with_out_of_fold(self.probs, folds_lib.out_of_fold_probs(
          folds_dir or os.path.join(workdir, folds_lib.FOLDS_DIR), config, self.images, folds))
    self.observed = np.asarray(self.images.observed)
    self.negatives = self.images.negatives
    self.full = np.asarray(self.images.full)
    self.names = self.images.names
    self.rlc = rlc_thresholds(self.probs[self.images.training], float(config.comic.rlc.tau))
    self.cut = cut_of(cut, self.model, self.rlc)
    self._features = None
    self.key = ranking_scores(rank, self.probs, self.observed,
                              unobserved(self.observed, self.negatives), self.images.training,
                              self.rlc, self.features() if rank in NEEDS_FEATURES else None)
    self.method = inference.load_config(workdir).method

  def features(self) -> np.ndarray:
    """(N, D) the run's features of the labelled images (`embeddings`), computed once."""
    if self._features is None:
      self._features = embeddings(self.model, self.images.x)
    return self._features

  def rows(self) -> list[tuple]:
    out = []
    found = suspects(self.probs, self.observed, self.negatives, self.cut, self.key)
    for rank, (i, c) in enumerate(found):
      p = self.probs[i, c]
      out.append((self.names[i], 'train' if self.images.training[i] else 'val',
                  self.model.class_names[c], f'{p:.6f}', f'{self.rlc[c]:.6f}',
                  int(p > self.rlc[c]), rank + 1, ''))
    return out

  def hidden_known(self) -> bool:
    """Whether the data set knows its hidden labels (simulated partial labels)."""
    return bool((self.full != self.observed).any())

  def recovery(self) -> dict:
    return hidden_label_recovery(self.probs, self.observed, self.full, self.negatives, self.cut)

  def unobserved_hidden(self):
    """(ranking keys, is hidden) of every unobserved label that is not a known negative."""
    mask = unobserved(self.observed, self.negatives)
    hidden = (self.full > 0) & (self.observed == 0)
    return self.key[mask], hidden[mask]


def write_rows(path: str, rows) -> None:
  buffer = io.StringIO(newline='')
  writer = csv.writer(buffer)
  writer.writerow(COLUMNS)
  writer.writerows(rows)
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_text(path, buffer.getvalue())
  except OSError as e:
    raise UserError(f'cannot write {path!r}: {e.strerror or e}') from None


def plot_curves(audits: dict, path: str, seed: int = 0) -> str:
  """audit.png: precision-recall of the hidden labels per run, and of a random ranking."""
  from comic_jax import plots
  curves = {name: precision_recall(*a.unobserved_hidden()) for name, a in audits.items()}
  _, is_hidden = next(iter(audits.values())).unobserved_hidden()
  curves['random'] = precision_recall(np.random.default_rng(seed).random(len(is_hidden)),
                                      is_hidden)
  points = {name: (a.recovery()['recall'], a.recovery()['precision'])
            for name, a in audits.items()}
  return plots.precision_recall(curves, points, path)
