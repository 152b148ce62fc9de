"""Test set-up: 4 fake CPU devices so every sharded code path runs on several devices."""
import os
import sys

# Must happen before JAX is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data')


def tiny_config(**overrides):
  """The PLT-Synth config cut down to seconds: BCE (the fastest method), 2 epochs, no bar."""
  from configs import synthetic
  config = synthetic.get_config()
  config.method = 'bce'
  config.num_epochs = 2
  config.progress_bar = False
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture
def config():
  return tiny_config()
