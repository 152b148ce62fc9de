"""Out-of-fold scores for the audit (`comic-jax-audit --folds=K`).

A run's own score of a training image is in-sample: the model was trained to call that image's
missing labels negative, and a rare class, with few positives to outweigh them, learns it best.
With `--folds=K` the audit trains K models that each never saw one K-th of the training images
and scores every training image with the model that did not train on it, as cleanlab recommends
for its label-quality scores. Each fold model is BCE (the fastest method: it only needs to score
images it has not seen) with the run's config otherwise (data, model, epochs, seed), trained on
every labelled image outside its fold: the other folds' training images and the validation
images (`data.folds`, `data.fold`; `plt.leave_out_fold`), in `<workdir>/folds/<k>/`; a finished
fold is reused, an interrupted one resumes, and one trained with another config is refused. The
rows held out for validation are out of sample for the run already: they keep its own score.
"""
from __future__ import annotations

import os

import numpy as np

FOLDS_DIR = 'folds'


def fold_config(config, folds: int, fold: int):
  """The run's config for fold model `fold` of `folds`: BCE, no refit, its fold left out."""
  out = config.copy_and_resolve_references()
  out.unlock()
  out.method = 'bce'
  out.refit = False
  out.data.folds, out.data.fold = folds, fold
  out.lock()
  return out


def _rows(x, rows: np.ndarray):
  return [x[i] for i in rows] if isinstance(x, list) else np.asarray(x)[rows]


def out_of_fold_probs(folder: str, config, images, folds: int) -> np.ndarray:
  """(N, C) each training image's scores by the fold model that did not train on it, the fold
  models trained in `folder`/<k> (reused when finished); NaN on the rows held out for
  validation. `images`: the audit's `suspects.Images` of the run whose config is `config`."""
  from comic_jax.data import plt
  from comic_jax.inference import predict
  from comic_jax.training import train
  positions = np.asarray(images.train_position)
  out = np.full(np.shape(images.observed), np.nan)
  n = int((positions >= 0).sum())
  for fold, held in enumerate(plt.split_folds(n, folds, config.data.seed)):
    fold_dir = os.path.join(folder, str(fold))
    print(f'out-of-fold model {fold + 1} of {folds} (BCE without {len(held)} of the {n} '
          f'training images) -> {fold_dir}', flush=True)
    # (a finished fold is only evaluated again; one of another config is refused)
    train.train_and_evaluate(fold_config(config, folds, fold), fold_dir)
    rows = np.flatnonzero(np.isin(positions, held))
    out[rows] = predict.load(fold_dir).predict(_rows(images.x, rows))
  return out
