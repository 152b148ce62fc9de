"""The large-loss baselines LL-R, LL-Ct, LL-Cp [snucml/LargeLossMatters] and BoostLU
[youngwk/BridgeGapExplanationPAMC] (docs/baselines.md, "Partial-label baselines published after
the paper"). The losses are `losses.large_loss`; BoostLU's network is
`models.networks.BoostLUNet`.

LL-Cp keeps the labels it flipped to positive, one (N, C) bool array over the training images in
the method state (checkpointed with it), indexed by the batch's 'index' rows.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from comic_jax.errors import require
from comic_jax.losses import large_loss as ll
from comic_jax.methods import registry
from comic_jax.methods.baselines import SingleBranch
from comic_jax.methods.registry import MethodSpec
from comic_jax.models import backbones, networks

# config.baselines.large_loss and .boostlu with their defaults: plain data, which
# configs/default.py reads without importing this module (its `method_defaults`).
# LL-R / LL-Ct / LL-Cp: k = ceil(B C epoch delta_rel / 100) largest unobserved losses rejected /
# corrected (LL-Cp: ceil(B C delta_rel / 100), flipped for good). delta_rel is per data set
# (authors: one of 0.1 .. 0.5); defaults: the authors' values per scheme (their BoostLU config).
CONFIG_SECTIONS = {
    'baselines.large_loss': {
        'delta_rel_r': 0.5,             # LL-R's delta_rel, percent of B x C per epoch
        'delta_rel_ct': 0.2,            # LL-Ct's
        'delta_rel_cp': 0.1,            # LL-Cp's
    },
    'baselines.boostlu': {
        'alpha': 5.0,                   # positive class-activation values times alpha
        'loss': 'll_ct',                # its loss: 'll_ct' (the authors') | 'll_r' | 'll_cp'
    },
}

# method name -> (scheme, permanent): how the selected large losses are handled.
VARIANTS = {'ll_r': ('reject', False), 'll_ct': ('correct', False), 'll_cp': ('correct', True)}


class LargeLoss(SingleBranch):
  """One network trained with LL-R / LL-Ct / LL-Cp (`variant`), on the linear network of the
  baselines or, for BoostLU, on `networks.BoostLUNet`.

  The step's k (`ll.num_large`) is a pure function of the step, `steps_per_epoch` and delta_rel,
  computed inside the compiled step. With `permanent` (LL-Cp) the method state is
  {'flipped': (N, C) bool, 'true_flips': int32}: a flipped entry is an observed positive from then
  on, and the flips of each step are added (true_flips counts those that are hidden positives,
  from 'label_full': a diagnostic, never used for training)."""

  def __init__(self, config, observed_labels: np.ndarray, variant: str, delta_rel: float,
               steps_per_epoch: int, network=None):
    super().__init__(config, observed_labels, None, reads_negatives=True)
    if network is not None:
      self.network = network
    self.scheme, self.permanent = VARIANTS[variant]
    self.delta_rel, self.steps_per_epoch = delta_rel, steps_per_epoch
    self.num_train, self.num_classes = observed_labels.shape
    entries = config.batch_size * observed_labels.shape[1]
    require(ll.fits_int32(entries, delta_rel),
            f'config.baselines.large_loss: delta_rel={delta_rel!r} has too many decimals for '
            f'batches of {entries} entries; round it')

  def init(self, rng, batch):
    params, batch_stats, _ = super().init(rng, batch)
    state = {}
    if self.permanent:
      state = {'flipped': jnp.zeros((self.num_train, self.num_classes), bool),
               'true_flips': jnp.zeros((), jnp.int32)}
    return params, batch_stats, state

  def loss(self, params, batch_stats, method_state, batch, rng, step):
    del rng
    b = batch['main']
    out, updates = self.network.apply({'params': params, 'batch_stats': batch_stats},
                                      b['image'], train=True, mutable=['batch_stats'])
    labels = b['label']
    if self.permanent:
      labels = jnp.maximum(labels, method_state['flipped'][b['index']].astype(labels.dtype))
    k = ll.num_large(step, self.steps_per_epoch, self.delta_rel, labels.size,
                     permanent=self.permanent)
    loss, selected = ll.large_loss(out['logits'], labels, k, scheme=self.scheme,
                                   negatives=b.get('label_negative'))
    if self.permanent:
      true = jnp.sum(selected & (b['label_full'] > 0)).astype(jnp.int32)
      method_state = {'flipped': method_state['flipped'].at[b['index']].max(selected),
                      'true_flips': method_state['true_flips'] + true}
    metrics = {'loss': loss, 'large_losses': jnp.sum(selected).astype(jnp.float32),
               'llr_rel': ll.llr_rel(step, self.steps_per_epoch, self.delta_rel)}
    return loss, (updates['batch_stats'], method_state, metrics)

  def epoch_summary(self, method_state) -> dict:
    """LL-Cp: the labels flipped so far, and how many of them are hidden positives."""
    if not self.permanent:
      return {}
    flipped = int(np.asarray(method_state['flipped']).sum())
    true = int(np.asarray(method_state['true_flips']))
    return {'ll_cp': {'flipped': flipped, 'true': true, 'false': flipped - true}}


def _delta_rel(config, variant: str) -> float:
  return config.baselines.large_loss[f'delta_rel_{variant.removeprefix("ll_")}']


def _create(variant: str):
  def create(config, observed_labels, steps_per_epoch, class_names):
    del class_names
    return LargeLoss(config, observed_labels, variant, _delta_rel(config, variant),
                     steps_per_epoch)
  return create


def _create_boostlu(config, observed_labels, steps_per_epoch, class_names):
  del class_names
  variant = config.baselines.boostlu.loss
  network = networks.create_boostlu_network(config.model, observed_labels.shape[1],
                                            config.baselines.boostlu.alpha)
  return LargeLoss(config, observed_labels, variant, _delta_rel(config, variant),
                   steps_per_epoch, network=network)


def _validate_large_loss(config):
  for variant in VARIANTS:
    name = f'baselines.large_loss.delta_rel_{variant.removeprefix("ll_")}'
    value = _delta_rel(config, variant)
    require(0.0 <= value <= 100.0, f'config.{name}={value!r} must be in [0, 100] (percent)')


def unsupported_boostlu(config) -> str:
  """Why BoostLU cannot run with `config` ('' when it can): it needs the backbone's spatial
  feature map."""
  problem = backbones.spatial_map_problem(config.model)
  return (f"its class activation map needs the backbone's spatial feature map, but {problem}"
          if problem else '')


def _validate_boostlu(config):
  _validate_large_loss(config)
  b = config.baselines.boostlu
  require(b.loss in VARIANTS,
          f'config.baselines.boostlu.loss={b.loss!r} is not one of: {", ".join(VARIANTS)}')
  require(b.alpha > 0, f'config.baselines.boostlu.alpha={b.alpha!r} must be > 0')
  require(registry.classifier_kind(config) == 'linear',
          "BoostLU's classifier is a 1x1 convolution: config.model.classifier must be 'linear' "
          "or 'auto'")
  problem = unsupported_boostlu(config)
  require(not problem, f'config.method=boostlu: {problem}')


registry.register(MethodSpec('ll_r', 'LL-R', 'PL-MLC', _create('ll_r'),
                             validate=_validate_large_loss,
                             config_sections=('baselines.large_loss',)))
registry.register(MethodSpec('ll_ct', 'LL-Ct', 'PL-MLC', _create('ll_ct'),
                             validate=_validate_large_loss,
                             config_sections=('baselines.large_loss',)))
registry.register(MethodSpec('ll_cp', 'LL-Cp', 'PL-MLC', _create('ll_cp'),
                             validate=_validate_large_loss, state_per_image=True,
                             config_sections=('baselines.large_loss',)))
registry.register(MethodSpec('boostlu', 'BoostLU', 'PL-MLC', _create_boostlu,
                             validate=_validate_boostlu, unsupported=unsupported_boostlu,
                             state_per_image=True,   # with loss='ll_cp'
                             config_sections=('baselines.large_loss', 'baselines.boostlu')))
