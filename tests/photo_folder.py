"""A folder of real photos with partial, long-tailed multi-label labels, built offline from
scikit-image's bundled photos: each image is a 2 x 2 mosaic of random crops, each tile a photo
(its class) or a blank tile, the classes drawn with long-tailed frequencies. The training CSV
hides a share of the positives (written 0), as partially labelled data does; the full labels
are returned (and written to train_full.csv, which comic_jax does not read) to score an audit.
"""
from __future__ import annotations

import csv
import os

import numpy as np
from PIL import Image

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera', 'coins', 'moon', 'brick',
          'grass', 'gravel', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'page',
          'text', 'clock', 'colorwheel', 'cell')


def photos(num_classes: int) -> list[np.ndarray]:
  """The first `num_classes` photos as uint8 RGB."""
  import skimage.data
  out = []
  for name in PHOTOS[:num_classes]:
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
      img = np.repeat(img[..., None], 3, axis=-1)
    out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
  return out


def _tile(photo: np.ndarray, size: int, rng) -> np.ndarray:
  h, w = photo.shape[:2]
  side = int(min(h, w) * rng.uniform(0.35, 1.0))
  top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
  crop = Image.fromarray(photo[top:top + side, left:left + side]).resize(
      (size, size), Image.Resampling.BILINEAR)
  tile = np.asarray(crop)
  return tile[:, ::-1] if rng.random() < 0.5 else tile


def mosaics(n: int, size: int, num_classes: int, seed: int, decay: float = 0.75):
  """(n mosaics (N, size, size, 3) uint8, labels (N, C) int8): each of the 4 tiles is blank
  with probability 0.3, else a crop of photo c drawn with weight decay**c (the first tile
  always a photo)."""
  rng = np.random.default_rng(seed)
  source = photos(num_classes)
  weights = decay ** np.arange(num_classes)
  weights /= weights.sum()
  half = size // 2
  x = np.zeros((n, size, size, 3), np.uint8)
  y = np.zeros((n, num_classes), np.int8)
  for i in range(n):
    for t in range(4):
      r, c = divmod(t, 2)
      if t and rng.random() < 0.3:
        tile = np.full((half, half, 3), rng.integers(0, 256), np.uint8)
      else:
        k = rng.choice(num_classes, p=weights)
        y[i, k] = 1
        tile = _tile(source[k], half, rng)
      x[i, r * half:(r + 1) * half, c * half:(c + 1) * half] = tile
  return x, y


def write_labels(path: str, names, labels, class_names) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['filename', *class_names])
    for name, row in zip(names, labels):
      writer.writerow([name, *(int(v) for v in row)])


def make_folder(root: str, *, n_train: int = 160, n_test: int = 60, size: int = 64,
                num_classes: int = 8, missing: float = 0.4, seed: int = 0) -> dict:
  """Writes `root/images/*.png|jpg`, `root/train.csv` (partial), `root/train_full.csv` and
  `root/test.csv`; returns their paths, the class names and the full training labels."""
  x, y = mosaics(n_train + n_test, size, num_classes, seed)
  rng = np.random.default_rng(seed + 1)
  observed = y.copy()
  hide = (rng.random(y[:n_train].shape) < missing) & (y[:n_train] == 1)
  observed[:n_train][hide] = 0
  os.makedirs(os.path.join(root, 'images'), exist_ok=True)
  names = []
  for i, img in enumerate(x):
    name = f'img{i:04d}.{"jpg" if i % 3 == 0 else "png"}'
    Image.fromarray(img).save(os.path.join(root, 'images', name), quality=95)
    names.append(name)
  classes = list(PHOTOS[:num_classes])
  paths = {k: os.path.join(root, f'{k}.csv') for k in ('train', 'train_full', 'test')}
  write_labels(paths['train'], names[:n_train], observed[:n_train], classes)
  write_labels(paths['train_full'], names[:n_train], y[:n_train], classes)
  write_labels(paths['test'], names[n_train:], y[n_train:], classes)
  return {'images': os.path.join(root, 'images'), **paths, 'class_names': classes,
          'train_names': names[:n_train], 'y_train_full': y[:n_train],
          'y_train': observed[:n_train], 'test_names': names[n_train:], 'y_test': y[n_train:]}
