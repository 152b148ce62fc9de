"""The batches of a train step (data/pipeline.py)."""
import numpy as np
import pytest


def test_train_batches_carry_the_known_negatives():
  from comic_jax.data import pipeline, samplers
  from comic_jax.data.types import PLTData
  from comic_jax.methods.registry import MAIN
  rng = np.random.default_rng(0)
  raw = rng.integers(-1, 2, size=(24, 3))
  y = (raw == 1).astype(np.int8)
  x = rng.normal(size=(24, 4)).astype(np.float32)
  stream = {'main': samplers.create_sampler('uniform', y, 8, 0)}
  for neg in (raw == 0, None):
    data = PLTData(name='t', class_names=('a', 'b', 'c'), x_train=x, y_train=y, y_train_full=y,
                   x_test=x, y_test=y, neg_train=neg)
    b = pipeline.train_batch(data, stream, MAIN, step=4)['main']
    idx = stream['main'].indices(4)
    assert b['label_negative'].dtype == np.float32 and b['label_negative'].shape == (8, 3)
    expected = np.zeros((8, 3)) if neg is None else neg[idx]
    np.testing.assert_array_equal(b['label_negative'], expected)
    np.testing.assert_array_equal(b['label'], y[idx])
  with pytest.raises(ValueError, match='observed positive'):
    PLTData(name='t', class_names=('a', 'b', 'c'), x_train=x, y_train=y, y_train_full=y,
            x_test=x, y_test=y, neg_train=raw >= 0)
