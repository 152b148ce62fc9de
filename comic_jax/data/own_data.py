"""Your own data: arrays in an .npz, or an image folder with JSON / CSV labels.

- `npz`: `x_train, y_train, x_test, y_test` (+ optional `y_train_full`, `class_names`). `x` is
  either images (N, H, W, 3) or feature vectors (N, D) (train those with
  `--config.model.backbone=mlp`: a user with precomputed embeddings trains in seconds). With
  `y_train_full`, `y_train` are the observed (partial) labels and `y_train_full` the full ones.
  Images are uint8 (0-255); float images in [0, 1] are scaled to uint8 (the augmentation and the
  backbones expect 0-255); other ranges, channels-first images, NaN / inf values and empty sets
  are refused with the array and row named.
- `folder`: images under `data.path`, labels in `data.train_labels` / `data.test_labels`
  (JSON {"relative/path.jpg": [0/1, ...]} or CSV with a header `filename,class1,class2,...`).

Known negatives: the training labels (`y_train`, the train label file) may hold -1 = unknown.
If they hold any -1, their 0 entries are labels known to be absent (known negatives) and their
-1 entries unknown; without any -1, every 0 is unknown (a true negative or a hidden positive),
as before. The pool keeps the observed positives as 0/1 labels and the known negatives as a
separate mask (`Pool.negatives`, then `PLTData.neg_train`). Test labels and `y_train_full` are
full labels: they must be 0 / 1.
"""
from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from comic_jax.data import plt, registry, splits
from comic_jax.data.types import Pool
from comic_jax.errors import UserError, require


def split_unknown(y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """Training labels in {1, 0, -1} -> (0/1 observed positives, known-negative mask or None).

  With any -1 (unknown) entry, the 0 entries are known negatives; without one, every 0 is unknown
  and the mask is None (the labels are returned as they are)."""
  y = np.asarray(y, np.int8)
  if not (y < 0).any():
    return y, None
  return (y == 1).astype(np.int8), y == 0


def _binary(name: str, y: np.ndarray, path: str, unknown: bool = False) -> np.ndarray:
  """Checked (N, C) int8 labels: 0 / 1, and also -1 (unknown) with `unknown`."""
  require(y.ndim == 2, f'{path!r}: {name} must be 2-D (N, C), it has shape {y.shape}')
  require(y.shape[1] > 0, f'{path!r}: {name} has 0 classes (shape {y.shape}): give one column '
          'per class')
  require(len(y) > 0, f'{path!r}: {name} has no rows: the {name.split("_")[1]} set is empty')
  if unknown:
    require(np.isin(y, (0, 1, -1)).all(),
            f'{path!r}: {name} must hold only 1 (positive), 0 and -1 (unknown)')
  else:
    require(not (y == -1).any(), f'{path!r}: {name} holds -1 (unknown) entries; only y_train may '
            f'mark labels unknown, {name} must hold only 0 and 1')
    require(np.isin(y, (0, 1)).all(), f'{path!r}: {name} must hold only 0 and 1')
  return y.astype(np.int8)


def npz_pools(data_config, cache: str = '') -> tuple[tuple[str, ...], Pool, Pool]:
  """Pools of an .npz (docs/data.md); its arrays are the model inputs as they are."""
  del cache
  path = data_config.path
  require(bool(path), 'config.data.path must name the .npz file')
  require(os.path.exists(path), f'data file {path!r} does not exist')
  try:
    with np.load(path, allow_pickle=False) as npz:
      z = dict(npz)
  except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    # Pickled arrays (ValueError), a truncated or bit-flipped file (BadZipFile, EOFError, a
    # CRC or zlib error): one line, not a traceback.
    text = ' '.join(str(e).split()) or type(e).__name__
    raise UserError(f'cannot read {path!r} as an .npz of arrays ({text}); a truncated or '
                    'damaged file must be written again') from None
  except AttributeError:  # np.load of a non-archive returned an array
    raise UserError(f'{path!r} is not an .npz archive (np.savez)') from None
  missing = [k for k in ('x_train', 'y_train', 'x_test', 'y_test') if k not in z]
  require(not missing, f'{path!r} lacks the arrays {", ".join(missing)}')
  y_train, negatives = split_unknown(_binary('y_train', z['y_train'], path, unknown=True))
  y_test = _binary('y_test', z['y_test'], path)
  c = y_train.shape[1]
  require(y_test.shape[1] == c, f'{path!r}: y_train has {c} classes, y_test {y_test.shape[1]}')
  for x, y, split in ((z['x_train'], y_train, 'train'), (z['x_test'], y_test, 'test')):
    require(len(x) == len(y), f'{path!r}: x_{split} has {len(x)} rows, y_{split} {len(y)}')
    require(x.ndim in (2, 4), f'{path!r}: x_{split} must be images (N, H, W, 3) or features '
            f'(N, D), not shape {x.shape}')
  z['x_train'] = _inputs('x_train', z['x_train'], path)
  z['x_test'] = _inputs('x_test', z['x_test'], path)
  require(z['x_train'].shape[1:] == z['x_test'].shape[1:],
          f'{path!r}: x_train rows {z["x_train"].shape[1:]} differ from x_test rows '
          f'{z["x_test"].shape[1:]}')
  full, observed = y_train, None
  if 'y_train_full' in z:
    full = _binary('y_train_full', z['y_train_full'], path)
    require(full.shape == y_train.shape, f'{path!r}: y_train_full must have the shape of y_train')
    require((y_train <= full).all(), f'{path!r}: y_train has a positive that y_train_full lacks')
    require(negatives is None or not (negatives & (full > 0)).any(),
            f'{path!r}: y_train marks a label absent (0) that y_train_full has as positive')
    observed = y_train
  names = (tuple(str(n) for n in z['class_names']) if 'class_names' in z
           else tuple(data_config.class_names) or tuple(f'class_{i}' for i in range(c)))
  require(len(names) == c, f'{len(names)} class names for {c} classes')
  x_train, x_test = z['x_train'], z['x_test']
  if x_train.ndim == 2:
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
  train = Pool([str(i) for i in range(len(y_train))], full, lambda idx, mode: x_train[idx],
               observed, negatives, encoded=x_train.__getitem__)
  test = Pool([str(i) for i in range(len(y_test))], y_test, lambda idx, mode: x_test[idx],
              encoded=x_test.__getitem__)
  return names, train, test


def _inputs(name: str, x: np.ndarray, path: str) -> np.ndarray:
  """Checked model inputs: finite numbers; images channels-last, as uint8."""
  require(x.dtype.kind in 'uif', f'{path!r}: {name} has dtype {x.dtype}, expected numbers')
  if x.dtype.kind == 'f' and len(x):
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    require(not bad.any(), f'{path!r}: {name} holds NaN or inf in {int(bad.sum())} row(s) '
            f'(first: row {int(np.argmax(bad))}); remove or fix them')
  if x.ndim != 4 or not len(x):
    return x
  require(x.shape[-1] == 3, f'{path!r}: {name} images have shape {x.shape[1:]}; expected '
          f'channels-last (H, W, 3)' + (': use np.transpose(x, (0, 2, 3, 1))'
                                        if x.shape[1] == 3 else ''))
  if x.dtype == np.uint8:
    return x
  lo, hi = float(x.min()), float(x.max())
  if x.dtype.kind == 'f' and lo >= 0.0 and hi <= 1.0:
    return np.round(x * 255.0).astype(np.uint8)       # [0, 1] floats -> 0-255
  require(lo >= 0 and hi <= 255 and (x.dtype.kind != 'f' or bool(np.all(x == np.round(x)))),
          f'{path!r}: {name} images have dtype {x.dtype} with values in [{lo:g}, {hi:g}]; '
          'save uint8 images (0-255) or floats in [0, 1]')
  return x.astype(np.uint8)


def folder_pools(data_config, cache: str) -> tuple[tuple[str, ...], Pool, Pool]:
  """Pools of an image folder, its images decoded when used and cached (`plt.image_loader`,
  keyed by each file's size and modification time too)."""
  prep = plt.image_preprocessing(data_config)
  image_loader = lambda paths, tag: plt.image_loader(lambda i: paths[i], paths, tag, data_config,
                                                     cache, prep, fingerprint=plt.file_fingerprint)
  root = data_config.path
  require(bool(root) and os.path.isdir(root), f'image folder {root!r} does not exist')
  require(bool(data_config.train_labels) and bool(data_config.test_labels),
          'config.data.train_labels and config.data.test_labels must name label files')
  files, labels, names = splits.read_labels(data_config.train_labels, unknown=True)
  labels, negatives = split_unknown(labels)
  test_files, test_labels, test_names = splits.read_labels(data_config.test_labels,
                                                           labels.shape[1])
  require(test_labels.shape[1] == labels.shape[1],
          f'the label files disagree on the number of classes ({labels.shape[1]} vs '
          f'{test_labels.shape[1]})')
  if names is not None and test_names is not None and list(names) != list(test_names):
    order = ' (the same classes in another order)' if sorted(names) == sorted(test_names) else ''
    raise UserError(f'the class columns of {data_config.test_labels!r} ({", ".join(test_names[:5])}'
                    f'{", ..." if len(test_names) > 5 else ""}) differ from those of '
                    f'{data_config.train_labels!r} ({", ".join(names[:5])}'
                    f'{", ..." if len(names) > 5 else ""}){order}: use the same header')
  names = names or test_names or tuple(data_config.class_names) or tuple(
      f'class_{i}' for i in range(labels.shape[1]))
  require(len(names) == labels.shape[1], f'{len(names)} class names for {labels.shape[1]} classes')
  pools = []
  for split, f, y, neg in (('train', files, labels, negatives),
                           ('test', test_files, test_labels, None)):
    paths = [os.path.join(root, name) for name in f]
    absent = [p for p in paths if not os.path.exists(p)]
    require(not absent, f'{len(absent)} {split} images are missing, e.g. {absent[:3]}')
    pools.append(Pool(list(f), y, image_loader(paths, f'folder_{split}'), negatives=neg,
                      encoded=paths.__getitem__))
  return tuple(names), pools[0], pools[1]


def npz_row_shape(path: str, key: str) -> tuple[int, ...]:
  """Shape of one row of `key` in an .npz, read from the array header only."""
  require(bool(path) and os.path.isfile(path), f'the run\'s data file {path!r} is needed to know '
          'its input shape and does not exist (an exported model does not need it)')
  with zipfile.ZipFile(path) as z, z.open(key + '.npy') as f:
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, _ = read_header(f)
  return tuple(shape[1:])


def npz_preprocessing(dc) -> dict:
  """An .npz's rows are the model inputs: feature vectors, or images at their stored size."""
  shape = npz_row_shape(dc.path, 'x_test')
  if len(shape) == 1:
    return {'input': 'features', 'dim': int(shape[0])}
  return {'input': 'image', 'resize': int(min(shape[:2])), 'height': int(shape[0]),
          'width': int(shape[1])}


registry.register(registry.SourceSpec('npz', npz_preprocessing, pools=npz_pools))
registry.register(registry.SourceSpec('folder', plt.image_preprocessing, pools=folder_pools,
                                      resized=True))
