import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from comic_jax import metrics
from comic_jax.data.longtail import FEW, MANY, MEDIUM


@pytest.mark.parametrize('seed', range(5))
def test_average_precision_matches_sklearn_random(seed):
  rng = np.random.default_rng(seed)
  labels = rng.random((300, 6)) < rng.uniform(0.02, 0.5, 6)
  labels[0] = True  # every class has a positive
  scores = rng.normal(size=(300, 6)) + labels * rng.uniform(0, 2, 6)
  ours = metrics.per_class_average_precision(scores, labels)
  ref = [average_precision_score(labels[:, c], scores[:, c]) for c in range(6)]
  np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('levels', [2, 3, 10])
def test_average_precision_matches_sklearn_with_ties(levels):
  rng = np.random.default_rng(levels)
  labels = rng.random((200, 5)) < 0.3
  scores = np.floor(rng.random((200, 5)) * levels) / levels + 0.2 * labels  # many exact ties
  ours = metrics.per_class_average_precision(scores, labels)
  ref = [average_precision_score(labels[:, c], scores[:, c]) for c in range(5)]
  np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_average_precision_hand_values():
  # Ranking + - + -: precisions at the positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2.
  assert metrics.average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6)
  # All scores tied: one threshold, AP = prevalence.
  assert metrics.average_precision([0.5] * 4, [1, 0, 0, 1]) == pytest.approx(0.5)
  assert np.isnan(metrics.average_precision([0.3, 0.2], [0, 0]))


def test_report_groups_skip_classes_without_test_positives():
  labels = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
  scores = np.array([[.9, .1, .8, .3], [.2, .7, .1, .6], [.6, .4, .3, .2], [.1, .3, .4, .9]])
  groups = np.array([MANY, MEDIUM, FEW, FEW])  # class 3 has no test positive
  report, ap = metrics.multilabel_metrics(scores, labels, groups)
  ref = [100 * average_precision_score(labels[:, c], scores[:, c]) for c in range(3)]
  np.testing.assert_allclose(ap[:3], ref)
  assert np.isnan(ap[3])
  assert report['total'] == pytest.approx(np.mean(ref))
  assert report['many'] == pytest.approx(ref[0])
  assert report['medium'] == pytest.approx(ref[1])
  assert report['few'] == pytest.approx(ref[2])   # class 3 left out of its group too
  assert report['average'] == pytest.approx(np.mean(ref))
  # Threshold 0.5: predicted positives (0,0) (0,2) (1,1) (1,3) (2,0) (3,3); true ones among them
  # (0,0) (0,2) (1,1) (2,0) -> precision 4/6; 6 positives in all -> recall 4/6.
  assert report['precision'] == pytest.approx(100 * 4 / 6)
  assert report['recall'] == pytest.approx(100 * 4 / 6)
  assert report['f1'] == pytest.approx(100 * 4 / 6)


def test_format_table_lists_every_model():
  table = metrics.format_table({'BCE': dict.fromkeys(metrics.METRIC_KEYS, 12.345),
                                'COMIC': dict.fromkeys(metrics.METRIC_KEYS, float('nan'))})
  lines = table.splitlines()
  assert lines[0].split() == ['model', *metrics.METRIC_KEYS]
  assert lines[2].split() == ['BCE'] + ['12.35'] * 8
  assert lines[3].split() == ['COMIC'] + ['n/a'] * 8
