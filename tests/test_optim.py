"""The optimizer (optim.py): learning-rate schedules, per-module learning rates, decoupled
weight decay, and the checks of config.optim."""
import jax
import numpy as np
import optax
import pytest

from comic_jax.errors import UserError
from comic_jax.training import config_checks, optim
from conftest import assert_one_line, tiny_config


def test_schedules_and_module_learning_rates():
  oc = tiny_config().optim
  oc.learning_rate, oc.warmup_epochs = 1.0, 1
  oc.schedule, oc.step_epochs, oc.step_factor = 'step', (3, 5), 0.1
  sched = optim.create_learning_rate_schedule(oc, steps_per_epoch=10, num_epochs=6)
  np.testing.assert_allclose([sched(s) for s in (0, 5, 10, 29, 30, 49, 50)],
                             [0, 0.5, 1, 1, 0.1, 0.1, 0.01], rtol=1e-6)
  oc.schedule, oc.warmup_epochs = 'cosine', 0
  sched = optim.create_learning_rate_schedule(oc, steps_per_epoch=10, num_epochs=2)
  np.testing.assert_allclose([sched(0), sched(10), sched(20)], [1, 0.5, 0], atol=1e-6)

  config = tiny_config(**{'optim.optimizer': 'sgd', 'optim.momentum': 0.0,
                          'optim.weight_decay': 0.0, 'optim.schedule': 'constant',
                          'optim.learning_rate': 0.1, 'optim.lr_scale.backbone': 0.0,
                          'optim.lr_scale.classifier': 0.5})
  tx = optim.create_optimizer(config.optim, steps_per_epoch=10, num_epochs=config.num_epochs)
  params = {'backbone': {'w': np.ones(2)}, 'classifier': {'w': np.ones(2)},
            'attention': {'w': np.ones(2)}}
  updates, _ = tx.update(jax.tree.map(np.ones_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates['backbone']['w'], 0)          # frozen
  np.testing.assert_allclose(updates['classifier']['w'], -0.05)    # 0.5 x lr
  np.testing.assert_allclose(updates['attention']['w'], -0.1)      # 'other'


def test_decoupled_weight_decay_applies_to_kernels_only():
  config = tiny_config(**{'optim.optimizer': 'sgd', 'optim.momentum': 0.0,
                          'optim.weight_decay': 0.1, 'optim.schedule': 'constant',
                          'optim.learning_rate': 1.0})
  tx = optim.create_optimizer(config.optim, steps_per_epoch=1, num_epochs=config.num_epochs)
  params = {'projection': {'kernel': 2 * np.ones((2, 2)), 'bias': 2 * np.ones(2)}}
  zero = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates['projection']['kernel'], -0.2)
  np.testing.assert_allclose(updates['projection']['bias'], 0.0)
  assert isinstance(tx, optax.GradientTransformation)


@pytest.mark.parametrize('field,value,fragment', [
    ('optim.warmup_epochs', float('inf'), 'config.optim.warmup_epochs=inf must be a finite'),
    ('optim.b1', float('nan'), 'config.optim.b1=nan must be a finite number'),
    ('optim.b2', 2.0, 'config.optim.b2=2.0 must be in [0, 1)'),
])
def test_bad_optimizer_values_are_named(field, value, fragment):
  with pytest.raises(UserError) as e:
    config_checks.validate_config(tiny_config(**{field: value}))
  assert_one_line(e, fragment)
