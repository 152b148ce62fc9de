"""Batch samplers: the global batch of indices for each training step.

A sampler is deterministic given its seed and the step, so a resumed run draws exactly the batches
an uninterrupted run would have drawn, on any number of devices or hosts.
"""
from __future__ import annotations

import functools

import numpy as np


class UniformSampler:
  """Uniform over images: each epoch is a fresh permutation, cut into full batches.

  The last partial batch of an epoch is skipped (a different remainder each epoch).
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples < batch_size:
      raise ValueError(f'{num_examples} training examples are fewer than one batch of {batch_size}')
    self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
    self.steps_per_epoch = num_examples // batch_size

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def indices(self, step: int) -> np.ndarray:
    epoch, i = divmod(step, self.steps_per_epoch)
    return self._permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
