"""LWS, learnable weight scaling (docs/baselines.md "Choices and facts worth knowing", LWS):
the second stage of a two-stage method. The network of a finished BCE run is frozen and
per-class scales s (init 1) are learned on z_j = s_j (w_j . f + b_j) with class-aware sampling.
`method=lws` through `comic_jax.main` needs `baselines.lws.stage1_workdir` and trains
`num_epochs`; the benchmark runner sets both (stage 1 = its BCE run, `baselines.lws.epochs`)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from comic_jax.data import samplers
from comic_jax.errors import UserError, require
from comic_jax.losses import baselines as losses
from comic_jax.methods import registry
from comic_jax.methods.baselines import SingleBranch
from comic_jax.methods.registry import MethodSpec
from comic_jax.training import checkpoint

# config.baselines.lws with its defaults: plain data, which configs/default.py reads without
# importing this module (its `method_defaults`).
CONFIG_SECTIONS = {'baselines.lws': {
    'stage1_workdir': '',               # a finished BCE run with the same model config
    'sampler': 'class_aware',
    'epochs': 5,                        # stage-2 epochs (the benchmark runner uses this)
}}


class LearnableWeightScaling(SingleBranch):
  """The frozen stage-1 variables live in the method state (checkpointed, never
  differentiated); the only parameters are the scales."""

  def __init__(self, config, observed_labels, steps_per_epoch, class_names):
    del steps_per_epoch, class_names
    super().__init__(config, observed_labels, lambda z, y, step: losses.bce(z, y),
                     sampler=config.baselines.lws.sampler)
    stage1 = config.baselines.lws.stage1_workdir
    require(bool(stage1), 'LWS needs a finished BCE run: set config.baselines.lws.stage1_workdir '
            '(the benchmark runner does this for you)')
    try:
      self.stage1 = checkpoint.load_variables(stage1)
    except FileNotFoundError as e:
      raise UserError(f'LWS stage 1: {e}') from None

  def init(self, rng, batch):
    params, batch_stats, _ = super().init(rng, batch)
    frozen = jax.tree.map(jnp.asarray, self.stage1)
    expected = jax.tree.map(jnp.shape, {'params': params, 'batch_stats': batch_stats})
    if jax.tree.map(jnp.shape, frozen) != expected:
      raise UserError('LWS stage 1 run has another network than this config builds; use the '
                      'same model config for both stages')
    scales = jnp.ones((self.network.classifier.num_classes,), jnp.float32)
    return {'scales': scales}, {}, {'frozen': frozen}

  def _logits(self, params, method_state, images):
    frozen = jax.lax.stop_gradient(method_state['frozen'])
    out = self.network.apply(frozen, images, train=False)
    return params['scales'] * out['logits']

  def loss(self, params, batch_stats, method_state, batch, rng, step):
    b = batch['main']
    loss = self.loss_fn(self._logits(params, method_state, b['image']), b['label'], step)
    return loss, (batch_stats, method_state, {'loss': loss})

  def predict(self, params, batch_stats, method_state, images):
    return {self.report_names[0]: self._logits(params, method_state, images)}


def _validate(config):
  sampler = config.baselines.lws.sampler
  require(sampler in samplers.SAMPLERS, f'config.baselines.lws.sampler={sampler!r} is not one of: '
          f'{", ".join(samplers.SAMPLERS)}')


def _benchmark_config(config, stage1_workdir: str) -> None:
  """The benchmark runs stage 2 on the BCE run of the same seed, for `lws.epochs` epochs."""
  config.baselines.lws.stage1_workdir = stage1_workdir
  config.num_epochs = config.baselines.lws.epochs


registry.register(MethodSpec(
    'lws', 'LWS', 'LT-MLC', LearnableWeightScaling, end_to_end=False, validate=_validate,
    builds_on='bce', benchmark_config=_benchmark_config,
    config_sections=('baselines.lws',)))
