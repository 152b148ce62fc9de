"""The optimizer: Adam or SGD with decoupled weight decay on kernels, a learning-rate schedule,
and per-module learning-rate scales (`config.optim`).

Which module a parameter belongs to is the model's business: `models.networks.param_groups`
labels every parameter with one of `networks.PARAM_GROUPS`.
"""
from __future__ import annotations

import jax
import optax

from comic_jax.errors import require
from comic_jax.models import networks

OPTIMIZERS = ('adam', 'sgd')
SCHEDULES = ('constant', 'cosine', 'step')


def validate_config(optim) -> None:
  """Checks config.optim."""
  require(optim.optimizer in OPTIMIZERS,
          f'config.optim.optimizer={optim.optimizer!r} is not one of: {", ".join(OPTIMIZERS)}')
  require(optim.schedule in SCHEDULES,
          f'config.optim.schedule={optim.schedule!r} is not one of: {", ".join(SCHEDULES)}')
  require(optim.learning_rate > 0,
          f'config.optim.learning_rate={optim.learning_rate!r} must be > 0')
  for name in ('b1', 'b2'):
    require(0.0 <= optim[name] < 1.0, f'config.optim.{name}={optim[name]!r} must be in [0, 1)')
  require(optim.weight_decay >= 0,
          f'config.optim.weight_decay={optim.weight_decay!r} must be >= 0')
  require(optim.warmup_epochs >= 0,
          f'config.optim.warmup_epochs={optim.warmup_epochs!r} must be >= 0')
  for group in optim.lr_scale:
    require(optim.lr_scale[group] >= 0,
            f'config.optim.lr_scale.{group}={optim.lr_scale[group]!r} must be >= 0')
  missing = [g for g in networks.PARAM_GROUPS if g not in optim.lr_scale]
  require(not missing, f'config.optim.lr_scale lacks the groups {", ".join(missing)}')


def create_learning_rate_schedule(optim, steps_per_epoch: int, num_epochs: int) -> optax.Schedule:
  """Base learning rate per step: linear warm-up, then constant, cosine or step decay."""
  base = optim.learning_rate
  total = num_epochs * steps_per_epoch
  warmup = int(round(optim.warmup_epochs * steps_per_epoch))
  if optim.schedule == 'constant':
    main = optax.constant_schedule(base)
  elif optim.schedule == 'cosine':
    main = optax.cosine_decay_schedule(base, max(total - warmup, 1))
  else:
    boundaries = {int(e * steps_per_epoch) - warmup: optim.step_factor for e in optim.step_epochs}
    main = optax.piecewise_constant_schedule(base, boundaries)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])


def create_optimizer(optim, steps_per_epoch: int, num_epochs: int
                     ) -> optax.GradientTransformation:
  """Adam or SGD with decoupled weight decay on kernels, with per-module learning-rate scales
  (`optim.lr_scale`; a scale of 0 freezes the module), from the section `config.optim`."""
  schedule = create_learning_rate_schedule(optim, steps_per_epoch, num_epochs)

  def group_tx(scale: float) -> optax.GradientTransformation:
    if scale == 0:
      return optax.set_to_zero()
    if optim.optimizer == 'adam':
      core = optax.scale_by_adam(b1=optim.b1, b2=optim.b2)
    else:
      core = optax.trace(decay=optim.momentum, nesterov=optim.nesterov)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    return optax.chain(core, optax.add_decayed_weights(optim.weight_decay, decay_mask),
                       optax.scale_by_learning_rate(lambda step: scale * schedule(step)))

  return optax.multi_transform({g: group_tx(optim.lr_scale[g]) for g in networks.PARAM_GROUPS},
                               networks.param_groups)
