"""The label audit's pure parts against brute-force references."""
import numpy as np
from sklearn.metrics import precision_recall_curve

from comic_jax import audit


def _case(seed=0, n=40, c=5):
  rng = np.random.default_rng(seed)
  full = (rng.random((n, c)) < 0.4).astype(np.int8)
  observed = full * (rng.random((n, c)) < 0.5)
  negatives = (full == 0) & (rng.random((n, c)) < 0.3)
  probs = np.clip(0.5 * full + 0.6 * rng.random((n, c)), 0, 1).round(2)   # ties
  return probs, observed, full, negatives


def test_suspects_are_the_unobserved_unknown_labels_above_the_cut_ranked_by_score():
  probs, observed, _, negatives = _case()
  cut = np.array([0.5, 0.6, 0.3, 0.9, 0.7])
  got = audit.suspects(probs, observed, negatives, cut)
  expected = sorted(((i, c) for i in range(len(probs)) for c in range(5)
                     if observed[i, c] == 0 and not negatives[i, c] and probs[i, c] > cut[c]),
                    key=lambda ic: (-probs[ic], ic[0], ic[1]))
  assert [tuple(r) for r in got] == expected


def test_hidden_label_recovery_and_the_precision_recall_curve():
  probs, observed, full, negatives = _case(1)
  cut = audit.rlc_thresholds(probs, tau=0.6)
  np.testing.assert_array_equal(cut, np.maximum(0.6, probs.mean(0)))
  r = audit.hidden_label_recovery(probs, observed, full, negatives, cut)
  found = audit.suspects(probs, observed, negatives, cut)
  hits = sum(full[i, c] for i, c in found)
  hidden = int(((full == 1) & (observed == 0)).sum())
  assert (r['hits'], r['suspects'], r['hidden']) == (hits, len(found), hidden)
  assert r['precision'] == hits / len(found) and r['recall'] == hits / hidden
  # The curve at each distinct score equals scikit-learn's.
  mask = (observed == 0) & ~negatives
  scores, is_hidden = probs[mask], ((full == 1) & (observed == 0))[mask]
  recall, precision = audit.precision_recall(scores, is_hidden)
  order = np.argsort(-scores, kind='stable')
  last_of_tie = np.r_[scores[order][1:] != scores[order][:-1], True]
  ref_p, ref_r, _ = precision_recall_curve(is_hidden, scores)
  got = sorted(zip(recall[last_of_tie], precision[last_of_tie]))
  want = sorted(zip(ref_r[:-1], ref_p[:-1]))
  np.testing.assert_allclose(got, want)
