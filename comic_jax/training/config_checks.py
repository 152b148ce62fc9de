"""The check of a whole config before a run starts: each factory checks its own section, the
training loop's own fields are checked here. Raises UserError naming the first bad field."""
from __future__ import annotations

import math

import jax
import ml_collections

from comic_jax import versions
from comic_jax.data import augment, sources
from comic_jax.errors import require
from comic_jax.methods import registry
from comic_jax.models import backbones
from comic_jax.training import optim


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError naming the first bad field. Each factory checks its own section (the
  method's spec, the data sources, the backbones, the optimizer, the augmentation); the loop's
  own fields are checked here."""
  for key, value in versions.flatten(config.to_dict()).items():   # inf warm-up, nan betas
    require(not isinstance(value, float) or math.isfinite(value),
            f'config.{key}={value!r} must be a finite number')
  spec = registry.get(config.method)
  if spec.validate is not None:
    spec.validate(config)
  sources.validate_config(config.data)
  backbones.validate_config(config.model)
  optim.validate_config(config.optim)
  augment.validate_config(config.augment)
  for name in ('batch_size', 'eval_batch_size', 'num_epochs', 'eval_every_epochs',
               'checkpoint_every_epochs', 'keep_checkpoints'):
    require(config[name] > 0, f'config.{name}={config[name]!r} must be > 0')
  require(config.num_devices >= 0, f'config.num_devices={config.num_devices!r} must be >= 0')
  cpu_devices = config.get('cpu_devices', 1)
  require(isinstance(cpu_devices, int) and not isinstance(cpu_devices, bool) and cpu_devices >= 1,
          f'config.cpu_devices={cpu_devices!r} must be a whole number >= 1')
  require(config.num_devices <= jax.device_count(),
          f'config.num_devices={config.num_devices} but only {jax.device_count()} devices exist')
  require(config.num_devices == 0 or jax.process_count() == 1,
          'config.num_devices must be 0 (all devices) in a multi-process run')
  n_dev = config.num_devices or jax.device_count()
  split = (f' (config.cpu_devices={cpu_devices})'
           if cpu_devices > 1 and jax.default_backend() == 'cpu' else '')
  for name in ('batch_size', 'eval_batch_size'):
    require(config[name] % n_dev == 0,
            f'config.{name}={config[name]} is not divisible by the {n_dev} devices{split}')
