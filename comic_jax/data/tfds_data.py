"""PLT-COCO and PLT-VOC sources through tensorflow-datasets (docs/data.md "PLT-COCO and PLT-VOC").

COCO 2017 train -> the long-tailed training set, COCO 2017 val (5,000) -> test, 80 classes in
category-id order. VOC 2012 trainval -> training set, VOC 2007 test (4,952) -> test, 20 classes in
alphabetical order. Every object, difficult ones included, makes its class positive.

Records are read with `tfds.data_source` (random access, no TensorFlow for VOC; TFDS's COCO
builder needs TensorFlow to prepare the data) with the images left encoded, so scanning the
labels of all 118k COCO images is cheap; only the images that are used get decoded.
"""
from __future__ import annotations

import os

import numpy as np

from comic_jax import progress
from comic_jax.data import plt, registry, splits
from comic_jax.data.types import Pool
from comic_jax.errors import UserError

# dataset -> (train (name, split), test (name, split), key field)
DATASETS = {
    'voc': (('voc/2012', 'train+validation'), ('voc/2007', 'test'), 'image/filename'),
    'coco': (('coco/2017', 'train'), ('coco/2017', 'validation'), 'image/id'),
}


def hide_gpus_from_tensorflow() -> None:
  """Makes TensorFlow see no GPU, so that TFDS (which imports TensorFlow when it is installed)
  does not take the GPU memory JAX needs (Colab's GPU runtime ships TensorFlow with CUDA).
  As the Flax examples do; must run before TensorFlow first touches its devices."""
  import importlib.util
  if importlib.util.find_spec('tensorflow') is None:
    return
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow's devices were initialised already: too late to hide them
    pass


def require_tensorflow(dataset: str) -> None:
  """TFDS's COCO builder needs TensorFlow, an optional dependency: say which extra gives it."""
  import importlib.util
  if dataset == 'coco' and importlib.util.find_spec('tensorflow') is None:
    raise UserError("PLT-COCO needs TensorFlow for TFDS's COCO builder: "
                    "pip install 'comic-jax[coco]' (or pip install tensorflow-cpu)")


def _key(value) -> str:
  """A record's image key: VOC file names without extension ('2008_000023'), COCO ids ('554625')."""
  if isinstance(value, (bytes, np.bytes_)):
    value = value.decode('utf-8')
  if isinstance(value, np.ndarray):
    value = value.item()
  value = str(value)
  return os.path.splitext(os.path.basename(value))[0]


class TfdsSplit:
  """One split of a TFDS data set: image keys, multi-hot labels and images on demand."""

  def __init__(self, name: str, split: str, key_field: str, data_config, cache: str):
    import tensorflow_datasets as tfds  # imported here: only the real-data sources need it
    self.name, self.split, self.key_field = name, split, key_field
    open_source = lambda **kw: tfds.data_source(
        name, split=split, data_dir=data_config.tfds_dir or None,
        download=data_config.download, **kw)
    try:
      self.source = open_source(decoders={'image': tfds.decode.SkipDecoding()})
      try:
        self.source[0]
      except (ValueError, ImportError):
        # TFDS's mock data (tests) cannot serve undecoded images; take them decoded.
        self.source = open_source()
    except Exception as e:  # TFDS raises many kinds; the user needs the one line
      raise UserError(f'cannot open the TFDS data set {name} ({split}): '
                      f'{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}'
                      ) from None
    self.class_names = tuple(self.source.dataset_info.features['objects']['label'].names)
    self.keys, self.labels = self._scan(cache)

  def _scan(self, cache: str) -> tuple[list[str], np.ndarray]:
    """Keys and labels of every record, cached in `cache` after the first scan."""
    n, c = len(self.source), len(self.class_names)
    path = os.path.join(cache, f'{self.name.replace("/", "_")}_{self.split}_{n}_labels.npz')
    if os.path.exists(path):
      with np.load(path) as z:
        return list(z['keys']), z['labels']
    labels = np.zeros((n, c), dtype=np.int8)
    keys = []
    for i in progress.bar(iterable=range(n), desc=f'scanning {self.name} {self.split} labels',
                          unit='img', dynamic_ncols=True, leave=False):
      rec = self.source[i]
      keys.append(_key(rec[self.key_field]))
      labels[i, np.asarray(rec['objects']['label'], dtype=np.int64)] = 1
    splits.save_cached(path, {'keys': np.array(keys), 'labels': labels})
    return keys, labels

  def encoded_image(self, index: int):
    """The record's image: encoded bytes (or an array, under mock data)."""
    return self.source[int(index)]['image']


def open_dataset(dataset: str, data_config, cache: str) -> tuple[TfdsSplit, TfdsSplit]:
  (train_name, train_split), (test_name, test_split), key_field = DATASETS[dataset]
  require_tensorflow(dataset)
  hide_gpus_from_tensorflow()
  train = TfdsSplit(train_name, train_split, key_field, data_config, cache)
  test = TfdsSplit(test_name, test_split, key_field, data_config, cache)
  return train, test


def pools(dc, cache: str) -> tuple:
  """(class names, training Pool, test Pool) of `data.name` 'voc' or 'coco'."""
  train, test = open_dataset(dc.name, dc, cache)
  prep = plt.image_preprocessing(dc)
  loader = lambda split, tag: plt.image_loader(split.encoded_image, split.keys, tag, dc, cache,
                                               prep)
  return (train.class_names,
          Pool(train.keys, train.labels, loader(train, f'{dc.name}_train'),
               encoded=train.encoded_image),
          Pool(test.keys, test.labels, loader(test, f'{dc.name}_test'),
               encoded=test.encoded_image))


for _name in ('voc', 'coco'):
  registry.register(registry.SourceSpec(_name, plt.image_preprocessing, pools=pools,
                                        resized=True))
