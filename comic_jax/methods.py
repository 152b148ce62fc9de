"""Methods: what a model is, how it is trained in one step, and which predictions it reports.

A method object is built once per run and is used inside the jit-compiled train step; every
function it exposes is pure:

- `samplers`: batch-key prefix -> sampler name, e.g. {'': 'uniform'}: the step gets `image`,
  `label` (observed) and `label_full` (diagnostics only) drawn by that sampler.
- `init(rng, batch)` -> (params, batch_stats, method_state).
- `loss(params, batch_stats, method_state, batch, rng, step)` ->
  (scalar loss, (new batch_stats, new method_state, dict of scalar metrics)).
- `predict(params, batch_stats, method_state, images)` -> {report name: logits}.
"""
from __future__ import annotations

import jax
import numpy as np

from comic_jax import comic
from comic_jax.losses import baselines
from comic_jax.models import networks

DISPLAY_NAMES = {'comic': 'COMIC', 'bce': 'BCE'}
METHODS = tuple(DISPLAY_NAMES)


class SingleBranch:
  """One network (backbone + projection + classifier) trained with one multi-label loss."""
  samplers = {'': 'uniform'}

  def __init__(self, config, observed_labels: np.ndarray):
    self.name = config.method
    self.report_names = (DISPLAY_NAMES[config.method],)
    classifier = 'linear' if config.model.classifier == 'auto' else config.model.classifier
    self.network = networks.create_network(config.model, observed_labels.shape[1], classifier)
    self.loss_fn = baselines.LOSSES[config.method]

  def init(self, rng, batch):
    variables = self.network.init({'params': rng}, batch['image'], train=False)
    return variables['params'], variables.get('batch_stats', {}), {}

  def loss(self, params, batch_stats, method_state, batch, rng, step):
    del rng, step
    out, updates = self.network.apply({'params': params, 'batch_stats': batch_stats},
                                      batch['image'], train=True, mutable=['batch_stats'])
    loss = self.loss_fn(out['logits'], batch['label'])
    return loss, (updates['batch_stats'], method_state, {'loss': loss})

  def predict(self, params, batch_stats, method_state, images):
    del method_state
    out = self.network.apply({'params': params, 'batch_stats': batch_stats}, images, train=False)
    return {self.report_names[0]: out['logits']}


def create_method(config, observed_labels: np.ndarray, steps_per_epoch: int):
  """The method named by `config.method`, knowing the observed training labels."""
  if config.method == 'comic':
    return comic.Comic(config, observed_labels, steps_per_epoch)
  if config.method in baselines.LOSSES:
    return SingleBranch(config, observed_labels)
  raise ValueError(f'unknown method {config.method!r}; choose one of {METHODS}')


def sigmoid_predictions(logits: dict) -> dict:
  return {k: jax.nn.sigmoid(v) for k, v in logits.items()}
