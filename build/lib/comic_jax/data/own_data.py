"""Your own data: arrays in an .npz, or an image folder with JSON / CSV labels.

- `npz`: `x_train, y_train, x_test, y_test` (+ optional `y_train_full`, `class_names`). `x` is
  either uint8 images (N, H, W, 3) or feature vectors (N, D) (train those with
  `--config.model.backbone=mlp`: a user with precomputed embeddings trains in seconds). With
  `y_train_full`, `y_train` are the observed (partial) labels and `y_train_full` the full ones.
- `folder`: images under `data.path`, labels in `data.train_labels` / `data.test_labels`
  (JSON {"relative/path.jpg": [0/1, ...]} or CSV with a header `filename,class1,class2,...`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from comic_jax.data import splits
from comic_jax.errors import UserError, require


@dataclasses.dataclass
class Pool:
  """One split of a source before the PLT construction."""
  keys: list[str]
  labels: np.ndarray                                   # (N, C) labels (full, as far as known)
  load: Callable[[np.ndarray, str], np.ndarray]        # (indices, 'train' | 'test') -> x
  observed: np.ndarray | None = None                   # labels that are already partial


def _binary(name: str, y: np.ndarray, path: str) -> np.ndarray:
  require(y.ndim == 2, f'{path!r}: {name} must be 2-D (N, C), it has shape {y.shape}')
  require(np.isin(y, (0, 1)).all(), f'{path!r}: {name} must hold only 0 and 1')
  return y.astype(np.int8)


def npz_pools(data_config) -> tuple[tuple[str, ...], Pool, Pool]:
  path = data_config.path
  require(bool(path), 'config.data.path must name the .npz file')
  require(os.path.exists(path), f'data file {path!r} does not exist')
  try:
    z = dict(np.load(path, allow_pickle=False))
  except (ValueError, OSError) as e:
    raise UserError(f'cannot read {path!r} as an .npz of arrays: {e}') from None
  missing = [k for k in ('x_train', 'y_train', 'x_test', 'y_test') if k not in z]
  require(not missing, f'{path!r} lacks the arrays {", ".join(missing)}')
  y_train = _binary('y_train', z['y_train'], path)
  y_test = _binary('y_test', z['y_test'], path)
  c = y_train.shape[1]
  require(y_test.shape[1] == c, f'{path!r}: y_train has {c} classes, y_test {y_test.shape[1]}')
  for x, y, split in ((z['x_train'], y_train, 'train'), (z['x_test'], y_test, 'test')):
    require(len(x) == len(y), f'{path!r}: x_{split} has {len(x)} rows, y_{split} {len(y)}')
    require(x.ndim in (2, 4), f'{path!r}: x_{split} must be images (N, H, W, 3) or features '
            f'(N, D), not shape {x.shape}')
  require(z['x_train'].shape[1:] == z['x_test'].shape[1:],
          f'{path!r}: x_train rows {z["x_train"].shape[1:]} differ from x_test rows '
          f'{z["x_test"].shape[1:]}')
  full, observed = y_train, None
  if 'y_train_full' in z:
    full = _binary('y_train_full', z['y_train_full'], path)
    require(full.shape == y_train.shape, f'{path!r}: y_train_full must have the shape of y_train')
    require((y_train <= full).all(), f'{path!r}: y_train has a positive that y_train_full lacks')
    observed = y_train
  names = (tuple(str(n) for n in z['class_names']) if 'class_names' in z
           else tuple(data_config.class_names) or tuple(f'class_{i}' for i in range(c)))
  require(len(names) == c, f'{len(names)} class names for {c} classes')
  x_train, x_test = z['x_train'], z['x_test']
  if x_train.ndim == 2:
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
  train = Pool([str(i) for i in range(len(y_train))], full, lambda idx, mode: x_train[idx],
               observed)
  test = Pool([str(i) for i in range(len(y_test))], y_test, lambda idx, mode: x_test[idx])
  return names, train, test


def folder_pools(data_config, image_loader) -> tuple[tuple[str, ...], Pool, Pool]:
  """Pools of an image folder; `image_loader(paths, tag)` makes the load function."""
  root = data_config.path
  require(bool(root) and os.path.isdir(root), f'image folder {root!r} does not exist')
  require(bool(data_config.train_labels) and bool(data_config.test_labels),
          'config.data.train_labels and config.data.test_labels must name label files')
  files, labels, names = splits.read_labels(data_config.train_labels)
  test_files, test_labels, test_names = splits.read_labels(data_config.test_labels,
                                                           labels.shape[1])
  require(test_labels.shape[1] == labels.shape[1],
          f'the label files disagree on the number of classes ({labels.shape[1]} vs '
          f'{test_labels.shape[1]})')
  names = names or test_names or tuple(data_config.class_names) or tuple(
      f'class_{i}' for i in range(labels.shape[1]))
  require(len(names) == labels.shape[1], f'{len(names)} class names for {labels.shape[1]} classes')
  pools = []
  for split, f, y in (('train', files, labels), ('test', test_files, test_labels)):
    paths = [os.path.join(root, name) for name in f]
    absent = [p for p in paths if not os.path.exists(p)]
    require(not absent, f'{len(absent)} {split} images are missing, e.g. {absent[:3]}')
    pools.append(Pool(list(f), y, image_loader(paths, f'folder_{split}')))
  return tuple(names), pools[0], pools[1]
