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


def _class_members(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
  y = np.asarray(labels) > 0
  return y.sum(0), [np.flatnonzero(y[:, c]) for c in range(y.shape[1])]


class ClassReversedSampler:
  """COMIC's tail sampler (docs/method.md "HTB"): each sample picks class c with probability
  proportional to max_j n_j / n_c, then a uniformly random image labelled c.

  Counts are of the labels the sampler is given (the observed ones); classes without a positive
  cannot be drawn. Draws for a step depend only on (seed, step).
  """

  def __init__(self, labels: np.ndarray, batch_size: int, seed: int):
    counts, self.members = _class_members(labels)
    if not counts.any():
      raise ValueError('no class has a positive label to sample from')
    weight = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
    self.class_probs = weight / weight.sum()
    self.batch_size, self.seed = batch_size, seed

  def classes_and_indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([self.seed, 1, step])
    classes = rng.choice(len(self.class_probs), size=self.batch_size, p=self.class_probs)
    picks = rng.random(self.batch_size)
    idx = np.array([self.members[c][int(u * len(self.members[c]))] for c, u in zip(classes, picks)])
    return classes, idx

  def indices(self, step: int) -> np.ndarray:
    return self.classes_and_indices(step)[1]


class ClassAwareSampler:
  """Class-aware sampling of the Distribution-Balanced loss (docs/baselines.md, DB / LWS):
  classes are visited round-robin in a shuffled order (reshuffled every cycle); each visit takes
  `per_class` images of the class from its own shuffled stream of images (reshuffled whenever it
  runs out). Every class with a positive is drawn equally often. Pure in (seed, step).
  """

  def __init__(self, labels: np.ndarray, batch_size: int, seed: int, per_class: int = 3):
    counts, members = _class_members(labels)
    self.classes = np.flatnonzero(counts > 0)
    if not len(self.classes):
      raise ValueError('no class has a positive label to sample from')
    self.members = members
    self.batch_size, self.seed, self.per_class = batch_size, seed, per_class

  @functools.lru_cache(maxsize=64)
  def _class_order(self, cycle: int) -> np.ndarray:
    return np.random.default_rng([self.seed, 2, cycle]).permutation(self.classes)

  @functools.lru_cache(maxsize=4096)
  def _image_order(self, cls: int, round_: int) -> np.ndarray:
    return np.random.default_rng([self.seed, 3, cls, round_]).permutation(self.members[cls])

  def classes_and_indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    classes, idx = [], []
    n_cls = len(self.classes)
    for position in range(step * self.batch_size, (step + 1) * self.batch_size):
      visit, within = divmod(position, self.per_class)
      cycle, slot = divmod(visit, n_cls)
      cls = int(self._class_order(cycle)[slot])
      # The class's `cycle`-th visit reads positions cycle*per_class + within of its stream.
      round_, r = divmod(cycle * self.per_class + within, len(self.members[cls]))
      classes.append(cls)
      idx.append(self._image_order(cls, round_)[r])
    return np.array(classes), np.array(idx)

  def indices(self, step: int) -> np.ndarray:
    return self.classes_and_indices(step)[1]


SAMPLERS = {'uniform': lambda labels, batch_size, seed: UniformSampler(len(labels), batch_size,
                                                                       seed),
            'class_reversed': ClassReversedSampler,
            'class_aware': ClassAwareSampler}


def create_sampler(kind: str, labels: np.ndarray, batch_size: int, seed: int):
  """A sampler by name (a key of SAMPLERS) over `labels`, the observed training labels."""
  if kind not in SAMPLERS:
    raise ValueError(f'unknown sampler {kind!r}; choose one of {", ".join(SAMPLERS)}')
  return SAMPLERS[kind](labels, batch_size, seed)
