"""`benchmarks/audit.py compare`: the audit against cleanlab and against BCE's / Hill's in-sample
scores, on the training set of a PLT-Synth run (its hidden labels are known).

cleanlab (pip install "cleanlab==2.9.*", needed by this command only) is fed as its docs
recommend: out-of-sample predicted probabilities from K-fold cross-validation: the audit's own
fold models (`--folds`; BCE with the BCE run's config on the other folds' training images and
the validation images, each predicting its own fold); the
unobserved labels are ranked by cleanlab's per-class label quality
(`multilabel_classification.rank.get_label_quality_scores_per_class`, self-confidence: low =
likely wrong), and its cut is `filter.find_multilabel_issues_per_class` (prune by noise rate).
Every tool's own cut: the audit's is RLC's threshold; BCE's and Hill's in-sample scores are cut
at 0.5.
"""
import numpy as np

from comic_jax.audit import suspects as audit_lib


def out_of_sample_probs(bce_workdir: str, k: int, folder: str) -> np.ndarray:
  """(N, C) each training image's BCE probabilities from the fold model that did not train on
  it: the audit's own fold models (`comic-jax-audit --folds`, `comic_jax/audit/folds.py`) of the
  BCE run's config, trained in `folder` (reused when finished). With frozen features the folds
  read the run's cached features."""
  from comic_jax.audit import folds
  a = audit_lib.Audit(bce_workdir)
  return folds.out_of_fold_probs(folder, a.model.config, a.images, k)


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
  rows = []
  for folds in (0, args.folds):   # the audit as it is, and with the same fold models (--folds)
    a = audit_lib.Audit(args.workdir, folds=folds, folds_dir=args.scratch)
    found = audit_lib.suspects(a.probs, a.observed, a.negatives, a.cut, a.key)
    rows += scores_table(f'comic-jax audit ({a.method}, rank {audit_lib.DEFAULT_RANK}'
                         + (f', --folds={folds})' if folds else ')'), a.key, a, found)
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
