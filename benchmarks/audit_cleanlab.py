"""`benchmarks/audit.py compare`: the audit against cleanlab and against BCE's / Hill's in-sample
scores, on the training set of a PLT-Synth run (its hidden labels are known).

cleanlab (pip install "cleanlab==2.9.*", needed by this command only) is fed as its docs
recommend: out-of-sample predicted probabilities from K-fold cross-validation. Each fold trains
BCE with the BCE run's config on the other folds' training images and predicts its own; the
unobserved labels are ranked by cleanlab's per-class label quality
(`multilabel_classification.rank.get_label_quality_scores_per_class`, self-confidence: low =
likely wrong), and its cut is `filter.find_multilabel_issues_per_class` (prune by noise rate).
Every tool's own cut: the audit's is RLC's threshold; BCE's and Hill's in-sample scores are cut
at 0.5.
"""
import dataclasses
import os

import numpy as np

from comic_jax.audit import suspects as audit_lib


def folds_of(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
  """K disjoint sorted row sets covering range(n)."""
  perm = np.random.default_rng([seed, 34]).permutation(n)
  return [np.sort(perm[f::k]) for f in range(k)]


def out_of_sample_probs(bce_workdir: str, k: int, scratch: str) -> np.ndarray:
  """(N, C) each training image's BCE probabilities from the fold that did not train on it. With
  frozen features, a fold trains on the full set's cached features of its images."""
  from comic_jax.data import sources
  from comic_jax.inference import predict
  from comic_jax.training import features, train
  config = predict.load(bce_workdir).config
  data = sources.load_dataset(config.data)
  n = len(data.y_train)
  out = np.zeros(np.shape(data.y_train), np.float64)
  load, cache = sources.load_dataset, features.cache_features
  for f, held in enumerate(folds_of(n, k)):
    keep = np.setdiff1d(np.arange(n), held)
    workdir = os.path.join(scratch, f'fold{f}')

    def subset(d, keep=keep, **x):
      return dataclasses.replace(
          d, x_train=np.asarray(x.get('x_train', d.x_train))[keep],
          y_train=np.asarray(d.y_train)[keep], y_train_full=np.asarray(d.y_train_full)[keep],
          neg_train=None if d.neg_train is None else d.neg_train[keep],
          **{k_: v for k_, v in x.items() if k_ != 'x_train'})

    def fold_features(model_config, data_config, augment_config, d, mesh, subset=subset,
                      **kwargs):
      full = cache(model_config, data_config, augment_config, data, mesh, **kwargs)
      return subset(data, x_train=full.x_train, x_test=full.x_test, x_val=full.x_val)

    sources.load_dataset = lambda dc, subset=subset: subset(load(dc))
    features.cache_features = fold_features
    try:
      if not os.path.exists(os.path.join(workdir, 'results.json')):
        train.train_and_evaluate(config, workdir)
    finally:
      sources.load_dataset, features.cache_features = load, cache
    out[held] = predict.load(workdir).predict(np.asarray(data.x_train)[held])
  return out


def cleanlab_scores(observed: np.ndarray, probs: np.ndarray):
  """(key, listed cells): cleanlab's per-class label quality turned into a ranking key (1 -
  quality: higher = more likely wrong) and the cells `find_multilabel_issues_per_class` flags."""
  from cleanlab.multilabel_classification import filter as cl_filter
  from cleanlab.multilabel_classification import rank as cl_rank
  labels = [list(np.flatnonzero(row)) for row in observed]
  quality = cl_rank.get_label_quality_scores_per_class(labels, probs)
  issues = np.asarray(cl_filter.find_multilabel_issues_per_class(labels, probs, n_jobs=1))
  issues = issues.T if issues.shape != observed.shape else issues
  return 1.0 - np.asarray(quality, np.float64), np.argwhere(issues & (observed == 0))


def compare(args, scores_table) -> list[dict]:
  """The comparison's rows (`scores_table`: benchmarks/audit.py's, one row per class group)."""
  a = audit_lib.Audit(args.workdir)
  found = audit_lib.suspects(a.probs, a.observed, a.negatives, a.cut, a.key)
  rows = scores_table(f'comic-jax audit ({a.method}, rank {audit_lib.DEFAULT_RANK})', a.key, a,
                      found)
  for name, workdir in (('BCE in-sample', args.bce), ('Hill in-sample', args.hill)):
    probs = audit_lib.Audit(workdir).probs
    cut = np.full(probs.shape[1], 0.5)
    rows += scores_table(name, probs, WithScores(a, probs),
                         audit_lib.suspects(probs, a.observed, a.negatives, cut))
  probs = out_of_sample_probs(args.bce, args.folds, args.scratch)
  key, listed = cleanlab_scores(a.observed, probs)
  rows += scores_table(f'cleanlab ({args.folds}-fold BCE)', key, WithScores(a, probs), listed)
  return rows


class WithScores:
  """An audit's labels with another model's scores (a ranking's ties are broken by these)."""

  def __init__(self, a, probs):
    self.__dict__.update(a.__dict__)
    self.probs = probs
