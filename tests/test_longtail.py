import numpy as np
import pytest

from comic_jax.data import longtail


def test_pareto_reference_counts_hand_values():
  # b = 1: x = [1, 100] -> x^-2 = [1, 1e-4] -> floor(990 * [1, 1e-4] + 10) = [1000, 10].
  np.testing.assert_array_equal(longtail.pareto_reference_counts(2, 1000, 10, 1.0), [1000, 10])
  # b = 1, three classes: x = [1, 50.5, 100] -> 990 / 50.5^2 + 10 = 10.388 -> 10.
  np.testing.assert_array_equal(longtail.pareto_reference_counts(3, 1000, 10, 1.0), [1000, 10, 10])
  ref = longtail.pareto_reference_counts(80, 1200, 1, 6.0)   # DB's COCO-MLT curve
  assert ref[0] == 1200 and np.all(np.diff(ref) <= 0)
  x_end = 0.01 ** (-1 / 6)
  assert ref[-1] == int(np.floor(1199 * x_end ** -7 + 1))


def test_pareto_rejects_bad_parameters():
  with pytest.raises(ValueError):
    longtail.pareto_reference_counts(5, 10, 20, 6.0)


def test_cooccurrence_statistics_hand_example():
  y = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]])
  np.testing.assert_array_equal(longtail.cooccurrence_counts(y), [[3, 2, 1], [2, 2, 1], [1, 1, 2]])
  p = longtail.conditional_cooccurrence(y)
  np.testing.assert_allclose(p, [[1, 2 / 3, 1 / 3], [1, 1, 1 / 2], [1 / 2, 1 / 2, 1]])
  # Column sums without the diagonal: class 0: 1 + 1/2, class 1: 2/3 + 1/2, class 2: 1/3 + 1/2.
  np.testing.assert_array_equal(longtail.cooccurrence_ranking(y), [0, 1, 2])
  stats = longtail.class_statistics(y, many_threshold=3, few_threshold=2)
  np.testing.assert_array_equal(stats.counts, [3, 2, 2])
  np.testing.assert_allclose(stats.distribution, [1, 2 / 3, 2 / 3])
  np.testing.assert_array_equal(stats.groups, [longtail.MANY, longtail.MEDIUM, longtail.MEDIUM])


def test_class_group_thresholds():
  groups = longtail.class_groups(np.array([100, 99, 20, 19, 0]), 100, 20)
  np.testing.assert_array_equal(groups, [longtail.MANY, longtail.MEDIUM, longtail.MEDIUM,
                                         longtail.FEW, longtail.FEW])


def test_greedy_subsample_hits_targets_without_cooccurrence():
  # One label per image, 50 images per class: any target <= 50 is reachable exactly.
  y = np.repeat(np.eye(4, dtype=int), 50, axis=0)
  targets = np.array([40, 17, 5, 1])
  idx = longtail.greedy_longtail_subsample(y, targets, seed=0, order=np.array([2, 0, 3, 1]))
  np.testing.assert_array_equal(y[idx].sum(0), [17, 1, 40, 5])
  assert len(np.unique(idx)) == len(idx)


def test_greedy_subsample_prefers_images_that_keep_other_classes_on_target():
  # Class 0 needs 10 images; half of its images also hold class 1, whose target is 0.
  y = np.zeros((40, 2), dtype=int)
  y[:, 0] = 1
  y[:20, 1] = 1
  idx = longtail.greedy_longtail_subsample(y, np.array([10, 0]), seed=3, order=np.array([0, 1]))
  np.testing.assert_array_equal(y[idx].sum(0), [10, 0])
  # Deterministic in the seed, and the seed matters.
  again = longtail.greedy_longtail_subsample(y, np.array([10, 0]), seed=3, order=np.array([0, 1]))
  other = longtail.greedy_longtail_subsample(y, np.array([10, 0]), seed=4, order=np.array([0, 1]))
  np.testing.assert_array_equal(idx, again)
  assert not np.array_equal(idx, other)


def test_greedy_subsample_removes_when_a_class_is_over_target():
  # Every image has classes 0 and 1; class 0 (visited first) wants 30, class 1 wants 12: the
  # second visit must remove 18 images, pulling class 0 down with it (as on real data).
  y = np.ones((50, 2), dtype=int)
  idx = longtail.greedy_longtail_subsample(y, np.array([30, 12]), seed=0, order=np.array([0, 1]))
  np.testing.assert_array_equal(y[idx].sum(0), [12, 12])


def test_drop_positives_rate_and_subset():
  y = (np.random.default_rng(0).random((4000, 10)) < 0.3).astype(np.int8)
  obs = longtail.drop_positives(y, 0.4, seed=1)
  assert obs.dtype == y.dtype
  assert np.all(obs <= y)                        # only positives are dropped
  kept = obs.sum() / y.sum()
  n = y.sum()
  assert abs(kept - 0.6) < 4 * np.sqrt(0.24 / n)  # binomial, 4 sigma
  np.testing.assert_array_equal(longtail.drop_positives(y, 0.0, seed=1), y)
  np.testing.assert_array_equal(obs, longtail.drop_positives(y, 0.4, seed=1))
  with pytest.raises(ValueError):
    longtail.drop_positives(y, 1.0, seed=0)


@pytest.mark.parametrize('name', ['coco_mlt', 'voc_mlt'])
def test_statistics_of_published_splits(name):
  """Our class statistics on DB's published COCO-MLT / VOC-MLT labels reproduce the class
  frequencies and conditional probabilities DB shipped with them."""
  import os

  from conftest import SHARED_DATA
  path = os.path.join(SHARED_DATA, name, 'class_freq.npz')
  if not os.path.exists(path):
    pytest.skip('../shared/data is not present')
  ref = np.load(path)
  stats = longtail.class_statistics(ref['gt_labels'])
  np.testing.assert_array_equal(stats.counts, ref['class_freq'])
  np.testing.assert_allclose(stats.cooccurrence, ref['condition_prob'], atol=1e-6)
