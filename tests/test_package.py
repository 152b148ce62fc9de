"""Packaging: the console scripts of pyproject.toml exist, TensorFlow stays off the GPU on the
TFDS data path, and PLT-COCO without TensorFlow names the extra to install."""
import importlib
import os
import tomllib

import pytest

from comic_jax.data import tfds_data
from comic_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)


def test_console_scripts_and_dependencies():
  project = _pyproject()['project']
  scripts = project['scripts']
  assert sorted(scripts) == ['comic-jax-audit', 'comic-jax-benchmark', 'comic-jax-predict',
                             'comic-jax-train']
  for target in scripts.values():
    module, function = target.split(':')
    assert callable(getattr(importlib.import_module(module), function))
  # Lower bounds only (no pin that would replace a preinstalled stack); TensorFlow is an extra.
  assert all('==' not in d for d in project['dependencies'])
  assert not any(d.startswith('tensorflow') and not d.startswith('tensorflow-datasets')
                 for d in project['dependencies'])
  assert project['optional-dependencies']['coco'][0].startswith('tensorflow')
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    pins = [l.split('#')[0].strip() for l in f if l.split('#')[0].strip()]
  assert pins and all('==' in p for p in pins)       # exact pins for reproduction and CI


def test_coco_without_tensorflow_names_the_extra(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'tensorflow' else real(name, *a))
  with pytest.raises(UserError, match=r"comic-jax\[coco\]"):
    tfds_data.open_dataset('coco', None, '')


def test_tfds_data_path_leaves_tensorflow_no_gpu(tmp_path, monkeypatch):
  """GPUs are hidden from TensorFlow before TFDS first runs (on a CPU-only TensorFlow the list
  is empty anyway, so the order of the calls is what is checked)."""
  tf = pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  from configs import voc
  events = []
  real_hide, real_source = tf.config.set_visible_devices, tfds.data_source

  def hide(devices, device_type=None):
    events.append(('hide', list(devices), device_type))
    return real_hide(devices, device_type)

  def source(*args, **kwargs):
    events.append(('tfds',))
    return real_source(*args, **kwargs)

  monkeypatch.setattr(tf.config, 'set_visible_devices', hide)
  monkeypatch.setattr(tfds, 'data_source', source)
  config = voc.get_config()
  config.data.cache_dir, config.data.tfds_dir = str(tmp_path / 'cache'), str(tmp_path / 'tfds')
  os.makedirs(config.data.cache_dir)
  with tfds.testing.mock_data(num_examples=8):
    train, test = tfds_data.open_dataset('voc', config.data, config.data.cache_dir)
  assert len(train.keys) == 8 and events[0] == ('hide', [], 'GPU') and ('tfds',) in events
  assert tf.config.get_visible_devices('GPU') == []
