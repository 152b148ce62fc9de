"""VOC and COCO through TFDS (data/tfds_data.py), offline, under `tfds.testing.mock_data` (random
records); TensorFlow stays off the GPU on that path, and PLT-COCO without TensorFlow names the
extra to install."""
import importlib.util
import json
import os

import numpy as np
import pytest

from comic_jax.data import sources, tfds_data
from comic_jax.errors import UserError
from comic_jax.training import train

tfds = pytest.importorskip('tensorflow_datasets')
HAS_TF = importlib.util.find_spec('tensorflow') is not None


def small(config, tmp_path, **overrides):
  """A real-data config shrunk to seconds on a CPU: small CNN, 32 px, one epoch, no weights."""
  values = {
      'data.cache_dir': str(tmp_path / 'cache'), 'data.tfds_dir': str(tmp_path / 'tfds'),
      'data.longtail': 'as_is', 'data.image_size': 32, 'data.store_size': 40,
      'data.eval_resize': 36, 'model.backbone': 'small_cnn', 'model.pretrained': '',
      'model.small_cnn_widths': (8, 16, 16, 16), 'model.projection_dim': 32,
      'comic.htb.attention_dim': 16, 'batch_size': 16,
      'eval_batch_size': 16, 'num_epochs': 1, 'progress_bar': False, **overrides}
  config.update_from_flattened_dict(values)
  return config


@pytest.mark.parametrize('name', ['voc', 'coco'])
def test_sources_read_labels_keys_and_images(tmp_path, name):
  if name == 'coco' and not HAS_TF:
    pytest.skip("TFDS's COCO builder needs TensorFlow")
  from configs import coco, voc
  config = small((voc if name == 'voc' else coco).get_config(), tmp_path)
  with tfds.testing.mock_data(num_examples=120):
    data = sources.load_dataset(config.data)
    again = sources.load_dataset(config.data)           # from the on-disk caches
  c = 20 if name == 'voc' else 80
  assert data.num_classes == c and data.y_train_full.shape == (120, c)
  assert data.x_train.shape == (120, 40, 40, 3) and data.x_train.dtype == np.uint8
  assert data.x_test.shape == (120, 32, 32, 3)
  assert (data.y_train <= data.y_train_full).all()
  np.testing.assert_array_equal(again.x_test, data.x_test)
  cached = os.listdir(tmp_path / 'cache')
  assert any(f.endswith('_labels.npz') for f in cached) and any(f.endswith('.npy') for f in cached)


@pytest.mark.parametrize('name,method', [('voc', 'comic'), ('coco', 'bce')])
def test_config_runs_end_to_end_under_mock_data(tmp_path, name, method):
  """configs/voc.py and configs/coco.py (resized crops, RandAugment on COMIC's tail batch). VOC
  runs the config's COMIC; COCO, whose source, not method, differs, runs BCE, which compiles in a
  fraction of COMIC's time (the slowest part of this test)."""
  if name == 'coco' and not HAS_TF:
    pytest.skip("TFDS's COCO builder needs TensorFlow")
  from configs import coco, voc
  config = small((voc if name == 'voc' else coco).get_config(), tmp_path, method=method)
  assert config.augment.kind == 'resized_crop' and config.augment.rand_augment_tail
  with tfds.testing.mock_data(num_examples=120):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  with open(tmp_path / 'run' / 'results.json') as f:
    results = json.load(f)
  expected = {'comic': ['COMIC', 'Head Model', 'Tail Model'], 'bce': ['BCE']}[method]
  assert list(results) == expected
  assert all(0 < r['total'] <= 100 for r in results.values())


def test_pareto_long_tail_from_a_mock_source(tmp_path):
  """Greedy subsampling on a TFDS source. Mock records carry ~14 of VOC's 20 classes each, so
  the curve can only be approached: fewer images, a spread of counts, every class kept."""
  from configs import voc
  config = small(voc.get_config(), tmp_path, **{'data.longtail': 'pareto',
                                                'data.pareto.max_count': 120,
                                                'data.pareto.min_count': 60,
                                                'data.pareto.shape': 1.0})
  with tfds.testing.mock_data(num_examples=200):
    data = sources.load_dataset(config.data)
  assert 0 < len(data.x_train) < 200
  counts = data.y_train_full.sum(0)
  assert counts.min() > 0 and np.median(counts) < 100   # the pool has ~140 per class


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
