"""Data sources: turn `config.data` into a `PLTData` held in memory."""
from __future__ import annotations

import functools

import numpy as np

from comic_jax.data import plt, synthetic
from comic_jax.data.synthetic import PLTData
from comic_jax.errors import require

SOURCES = ('synthetic',)


def load_dataset(data_config) -> PLTData:
  """The data set named by `data_config.name`."""
  require(data_config.name in SOURCES,
          f'config.data.name={data_config.name!r} is not one of {", ".join(SOURCES)}')
  if data_config.name == 'synthetic':
    s = data_config.synthetic
    return _plt_synth(
        seed=data_config.seed, image_size=data_config.image_size,
        missing_ratio=data_config.missing_ratio, pool_size=s.pool_size,
        pareto_shape=s.pareto_shape, max_count=s.max_count, min_count=s.min_count,
        num_test=s.num_test, min_test_positives=s.min_test_positives)
  raise AssertionError(data_config.name)


# Runs in one process (tests, the benchmark runner) share the arrays; nothing writes to them.
_plt_synth = functools.lru_cache(maxsize=4)(synthetic.make_plt_synth)


def training_groups(data: PLTData, data_config) -> np.ndarray:
  """Many / medium / few of each class from the full (default) or observed training counts."""
  y = data.y_train_full if data_config.group_counts == 'full' else data.y_train
  return plt.class_groups(np.asarray(y).sum(0), data_config.many_threshold,
                          data_config.few_threshold)
