import numpy as np
import pytest

from comic_jax.data import samplers


def single_label(counts):
  """Each image has exactly one label, so a drawn image tells which class was drawn."""
  y = np.zeros((sum(counts), len(counts)), dtype=np.int8)
  y[np.arange(sum(counts)), np.repeat(np.arange(len(counts)), counts)] = 1
  return y


def test_uniform_sampler_is_a_permutation_per_epoch_and_deterministic():
  s = samplers.UniformSampler(100, 32, seed=0)
  assert s.steps_per_epoch == 3
  epoch0 = np.concatenate([s.indices(i) for i in range(3)])
  assert len(np.unique(epoch0)) == 96
  assert not np.array_equal(s.indices(0), s.indices(3))          # a new epoch, a new order
  np.testing.assert_array_equal(samplers.UniformSampler(100, 32, seed=0).indices(4), s.indices(4))


def test_class_reversed_sampler_frequencies():
  counts = [400, 100, 20, 0, 5]
  y = single_label(counts)
  s = samplers.ClassReversedSampler(y, 64, seed=0)
  expected = np.array([400 / 400, 400 / 100, 400 / 20, 0, 400 / 5])
  expected /= expected.sum()
  np.testing.assert_allclose(s.class_probs, expected)
  drawn = np.concatenate([y[s.indices(step)].argmax(1) for step in range(400)])   # 25,600 draws
  freq = np.bincount(drawn, minlength=5) / len(drawn)
  sigma = np.sqrt(expected * (1 - expected) / len(drawn))
  assert np.all(np.abs(freq - expected) <= 4 * sigma + 1e-12), (freq, expected)
  assert freq[3] == 0
  classes, idx = s.classes_and_indices(7)
  assert np.all(y[idx, classes] == 1)                            # each image has its class
  np.testing.assert_array_equal(samplers.ClassReversedSampler(y, 64, seed=0).indices(9),
                                s.indices(9))


def test_class_aware_sampler_visits_classes_equally_three_images_at_a_time():
  y = single_label([300, 40, 7, 0, 2])
  s = samplers.ClassAwareSampler(y, 12, seed=1)
  stream = [s.classes_and_indices(step) for step in range(40)]   # 480 draws = 40 full cycles
  classes = np.concatenate([c for c, _ in stream])
  idx = np.concatenate([i for _, i in stream])
  np.testing.assert_array_equal(np.bincount(classes, minlength=5), [120, 120, 120, 0, 120])
  assert np.all(classes.reshape(-1, 3) == classes.reshape(-1, 3)[:, :1])   # runs of 3
  assert np.all(y[idx, classes] == 1)
  # The 2 images of class 4 are cycled through, each used equally often.
  np.testing.assert_array_equal(np.unique(idx[classes == 4], return_counts=True)[1], [60, 60])
  # A step's batch depends on (seed, step) only.
  fresh = samplers.ClassAwareSampler(y, 12, seed=1)
  np.testing.assert_array_equal(fresh.indices(17), stream[17][1])


def test_samplers_refuse_labels_without_positives():
  with pytest.raises(ValueError):
    samplers.ClassReversedSampler(np.zeros((5, 3)), 2, seed=0)
  with pytest.raises(ValueError):
    samplers.create_sampler('nope', np.ones((5, 3)), 2, seed=0)
