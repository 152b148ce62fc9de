"""How the audit orders the unobserved labels (`comic_jax.audit`'s `--rank`): by the model's
score, by keys comparable across classes, or with evidence that the model's in-sample score of
a training image lacks (the image's other labels, `context_log_ratio`; its features next to the
class's observed positives, `prototype_similarity`). Pure NumPy but for `embeddings`.
"""
from __future__ import annotations

import numpy as np

from comic_jax.errors import require


def logit(p: np.ndarray) -> np.ndarray:
  """log(p / (1 - p)), p clipped to [1e-7, 1 - 1e-7]."""
  p = np.clip(p, 1e-7, 1 - 1e-7)
  return np.log(p) - np.log1p(-p)


def _positive_quantile(probs, observed, training) -> np.ndarray:
  """(N, C) the share of the class's observed training positives scored below each score (ties
  count half): how positive a score looks next to the labels the user gave."""
  out = np.zeros_like(probs, np.float64)
  for c in range(probs.shape[1]):
    pos = np.sort(probs[training & (observed[:, c] > 0), c])
    if len(pos):
      below = np.searchsorted(pos, probs[:, c], 'left')
      upto = np.searchsorted(pos, probs[:, c], 'right')
      out[:, c] = (below + upto) / (2.0 * len(pos))
  return out


def _rank_in_class(probs, candidate) -> np.ndarray:
  """(N, C) each candidate's 0-based rank by score among its class's candidates."""
  out = np.zeros_like(probs, np.float64)
  for c in range(probs.shape[1]):
    rows = np.flatnonzero(candidate[:, c])
    order = np.argsort(-probs[rows, c], kind='stable')
    out[rows[order], c] = np.arange(len(rows))
  return out


def context_log_ratio(observed, training, smoothing: float = 1.0) -> np.ndarray:
  """(N, C) what the image's other labels say of class c: the mean, over the classes j the
  image is observed with (j != c), of log P(c | j) / P(c), both counted on the observed labels
  of the training rows with the image itself left out (a training row's own labels never vouch
  for it). P(c | j) = (n_cj + s P(c)) / (n_j + s), s = `smoothing`: a pair seen on few images
  says little, and a pair never seen pulls towards zero, not to minus infinity. 0 for an image
  with no other observed label, or a class without observed positives."""
  y = (np.asarray(observed) > 0).astype(np.float64)
  own = y * np.asarray(training, bool)[:, None]      # each row's share of the counts
  counts, pairs = own.sum(0), own.T @ own             # n_c, n_cj
  rows = np.asarray(training, np.float64)            # 1 on a training row
  out = np.zeros_like(y)
  for c in range(y.shape[1]):
    prior = (counts[c] - own[:, c]) / np.maximum(rows.sum() - rows, 1)           # (N,)
    given = ((pairs[c][None, :] - own[:, [c]] * own + smoothing * prior[:, None])
             / (counts[None, :] - own + smoothing))                              # (N, C)
    with np.errstate(divide='ignore', invalid='ignore'):
      ratio = np.where(prior[:, None] > 0, np.log(given) - np.log(prior)[:, None], 0.0)
    others = y.copy()
    others[:, c] = 0
    out[:, c] = (others * ratio).sum(1) / np.maximum(others.sum(1), 1)
  return out


def prototype_similarity(features, observed, training, candidate) -> np.ndarray:
  """(N, C) how close each image's features lie to the class's observed positives: the cosine
  of its centred features with the class's prototype (the mean of the unit-length centred
  features of its observed training positives), standardised over the class's candidates (mean
  0, standard deviation 1), so that a rare class's few positives vouch for the images that look
  like them. A candidate is never among its own class's positives: no image vouches for itself.
  0 for a class without observed positives."""
  f = np.asarray(features, np.float64)
  f = f - f.mean(0)
  f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  positives = ((np.asarray(observed) > 0) & np.asarray(training, bool)[:, None]).astype(float)
  prototypes = positives.T @ f                                       # (C, D)
  prototypes /= np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
  cos = f @ prototypes.T
  out = np.zeros_like(cos)
  for c in np.flatnonzero(positives.sum(0) > 0):
    rows = np.asarray(candidate, bool)[:, c]
    if rows.any():
      out[:, c] = (cos[:, c] - cos[rows, c].mean()) / max(cos[rows, c].std(), 1e-12)
  return out


def embeddings(model, x) -> np.ndarray:
  """(N, D) the features the classifiers of a run loaded by `predict.load` read, for images
  (or feature vectors) `x`: the 'features' of every branch of its network, concatenated."""
  import jax
  require(hasattr(model, 'method') and hasattr(model.method, 'network'),
          '--rank=context_prototype needs a trained run\'s workdir whose method has a network '
          '(not an exported folder)')
  config, variables = model.config, model.variables
  heads = variables['heads'] if config.model.feature_cache else variables
  if config.model.feature_cache:
    from comic_jax.training import features as features_lib
    backbone = features_lib.backbone_features_fn(config.model)
  network = model.method.network

  def branch_features(tree):
    if not isinstance(tree, dict):
      return []
    return [v for k, v in tree.items() if k == 'features' and not isinstance(v, dict)] + [
        f for k, v in tree.items() if k != 'features' for f in branch_features(v)]

  @jax.jit
  def run(batch):
    if config.model.feature_cache:
      batch = backbone(variables['backbone'], batch)
    out = network.apply({'params': heads['params'], 'batch_stats': heads['batch_stats']},
                        batch, train=False)
    return jax.numpy.concatenate(branch_features(out), axis=1)

  out = [np.asarray(run(batch))[:n] for _, batch, n in model.batches(x)]
  return np.concatenate(out).astype(np.float64)


# How the unobserved labels are ordered (all comparable across classes except 'score').
RANKINGS = ('score', 'quota', 'threshold', 'positives', 'class_rank', 'context',
            'context_prototype')
NEEDS_FEATURES = ('context_prototype',)
DEFAULT_RANK = 'context_prototype'   # docs/results.md "Rankings per class group"


def ranking_help() -> str:
  return ("'score' (the model's score), 'quota' (each class's suspects, best first, in "
          "proportion to its observed positives), 'threshold' (its logit over the class's RLC "
          "threshold's),"
          " 'positives' (the share of the class's observed positives it outscores), 'class_rank' "
          "(its rank within the class, as a share), 'context' (its logit plus what the image's "
          "other labels say of the class, from how often the classes go together), "
          "'context_prototype' (the same plus how close the image's features lie to the "
          "class's observed positives)")


def ranking_scores(kind: str, probs, observed, candidate, training, thresholds,
                   features=None) -> np.ndarray:
  """(N, C) the ranking key of every label (higher = more likely missing); ties by raw score.
  'quota': -(r + 1/2) / n_c, r its rank by score among the class's candidates, n_c the class's
  observed training positives (at least 1): the classes take turns in proportion to their size,
  so a class with 10 positives has its best suspect beside the 100th of a class with 1,000;
  'score': the model's score; 'threshold': its logit minus that of the class's threshold;
  'positives': the share of the class's observed positives scored below it; 'class_rank': its
  rank among the class's candidates, as a share; 'context': logit(score) + `context_log_ratio`,
  the model's log-odds with the evidence of the image's other observed labels added (naive
  Bayes): a rare class's missing label gains where the image holds classes seen with it;
  'context_prototype': 'context' + `prototype_similarity` of `features` (N, D), the run's
  features of the images (`embeddings`)."""
  if kind == 'quota':
    positives = np.maximum((np.asarray(observed)[training] > 0).sum(0), 1)
    return -(_rank_in_class(probs, candidate) + 0.5) / positives[None, :]
  if kind == 'score':
    return probs
  if kind == 'threshold':
    return logit(probs) - logit(np.asarray(thresholds, np.float64))[None, :]
  if kind == 'positives':
    return _positive_quantile(probs, observed, training)
  if kind in ('context', 'context_prototype'):
    key = logit(probs) + context_log_ratio(observed, training)
    if kind == 'context':
      return key
    require(features is not None, f'--rank={kind} needs the images\' features')
    return key + prototype_similarity(features, observed, training, candidate)
  require(kind == 'class_rank', f'--rank={kind!r} is not one of {", ".join(RANKINGS)}')
  return 1.0 - _rank_in_class(probs, candidate) / np.maximum(candidate.sum(0), 1)[None, :]
