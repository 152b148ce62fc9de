"""The PLT construction every pool-based source goes through (voc, coco, npz, folder): choose
the long-tailed training set (`data.longtail`), hide positives (`data.partial`,
`data.missing_ratio`), carve a validation split (`data.val_fraction`), check that every class has
a training positive, and decode the images that are used (cached on disk, so the next run starts
at once). Training labels with -1 (unknown) entries also give known negatives
(`PLTData.neg_train`, see `plan_plt`).

The decoded-image cache of an image folder is keyed by the paths AND the size and modification
time of every file (one `stat` per image on each run, no decoding), so replacing or damaging an
image invalidates the cache and the image is decoded (and checked) again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from comic_jax import progress
from comic_jax.data import images, longtail, splits
from comic_jax.data.types import PLTData, Pool
from comic_jax.errors import require, warn


def image_preprocessing(dc) -> dict:
  """The evaluation preprocessing of a source of real images (voc, coco, folder, their shards):
  the shorter side resized to `data.eval_resize`, then the central `data.image_size` square."""
  return {'input': 'image', 'resize': int(dc.eval_resize), 'height': int(dc.image_size),
          'width': int(dc.image_size)}


def load_from_pools(dc, pools) -> PLTData:
  """The data set of a pool-based source: `pools(dc, cache)` -> (class names, training pool,
  test pool), then the PLT construction."""
  cache = splits.cache_dir(dc.cache_dir)
  names, train_pool, test_pool = pools(dc, cache)
  return make_plt(dc, dc.name, tuple(names), train_pool, test_pool, cache)


def longtail_indices(dc, dataset: str, pool: Pool, cache: str):
  """(indices of the long-tailed training set in the pool, observed labels or None)."""
  if dc.longtail == 'as_is':
    return np.arange(len(pool.keys)), None
  if dc.longtail == 'pareto':
    c = pool.labels.shape[1]
    targets = longtail.pareto_reference_counts(c, dc.pareto.max_count, dc.pareto.min_count,
                                          dc.pareto.shape)
    return longtail.greedy_longtail_subsample(pool.labels, targets, seed=dc.seed), None
  position = {k: i for i, k in enumerate(pool.keys)}
  if dc.longtail == 'published':
    require(dataset in splits.PUBLISHED_ID_LISTS,
            f"config.data.longtail='published' exists for coco and voc, not {dataset!r}")
    ids = splits.published_ids(dataset, cache)
    missing = [i for i in ids if i not in position]
    require(not missing, f'{len(missing)} of the {len(ids)} published {dataset} ids are not in the '
            f'source (e.g. {missing[:3]}): is the TFDS data set complete?')
    return np.array([position[i] for i in ids]), None
  # 'json': the authors' PLT file {"file.jpg": [0/1, ...]}.
  require(bool(dc.plt_json), "config.data.longtail='json' needs config.data.plt_json")
  files, labels = splits.read_label_json(dc.plt_json, pool.labels.shape[1])
  stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
  missing = [f for f, s in zip(files, stems) if s not in position]
  require(not missing, f'{len(missing)} images of {dc.plt_json!r} are not in the source '
          f'(e.g. {missing[:3]})')
  idx = np.array([position[s] for s in stems])
  if dc.plt_json_labels == 'partial':
    return idx, labels
  require(dc.plt_json_labels == 'full',
          f"config.data.plt_json_labels={dc.plt_json_labels!r} is not one of full, partial")
  pool.labels = pool.labels.copy()
  pool.labels[idx] = labels
  return idx, None


@dataclasses.dataclass
class PLTPlan:
  """The PLT construction of a source, labels only: which pool rows train, validate, test."""
  train_rows: np.ndarray              # rows of the training pool that train
  val_rows: np.ndarray                # ... and that validate (data.val_fraction)
  y_train: np.ndarray                 # (len(train_rows), C) observed labels
  y_train_full: np.ndarray
  neg_train: np.ndarray | None
  y_val: np.ndarray | None
  y_test: np.ndarray
  y_val_full: np.ndarray | None = None  # the validation rows' full labels (the audit's)
  neg_val: np.ndarray | None = None     # ... and known negatives


def plan_plt(dc, name: str, class_names: tuple[str, ...], train: Pool, test: Pool,
             cache: str) -> PLTPlan:
  """The PLT construction common to every source (see the module docstring), without images.

  Known negatives (`train.negatives`, from -1 labels) follow their images into the long-tailed
  set and stay known negatives with `data.partial='simulate'`: only positives are hidden, and a
  hidden positive becomes unknown, never a known negative. The validation rows carved with
  `data.val_fraction` keep their observed positives as labels (`y_val`, 0 = not a positive),
  like any validation set of partial labels; their known negatives are not used.
  """
  require(train.negatives is None or dc.longtail != 'json',
          "config.data.longtail='json' takes the labels of config.data.plt_json, which cannot "
          'be combined with training labels that mark labels unknown (-1): use '
          "config.data.longtail='as_is' or 'pareto'")
  idx, observed = longtail_indices(dc, name, train, cache)
  full = train.labels[idx].astype(np.int8)
  if observed is None and train.observed is not None:
    observed = train.observed[idx]
  if observed is None:
    observed = (full if dc.partial == 'as_is'
                else longtail.drop_positives(full, dc.missing_ratio, seed=dc.seed + 1))
  observed = np.asarray(observed, np.int8)
  negatives = None if train.negatives is None else np.asarray(train.negatives, bool)[idx]
  keep, held = split_validation(len(idx), dc.val_fraction, dc.seed)
  absent = [class_names[c] for c in np.flatnonzero(full[keep].sum(0) == 0)]
  require(not absent, f'{len(absent)} classes have no positive in the training set '
          f'({", ".join(absent[:5])}); remove them from the labels'
          + (' or lower config.data.val_fraction' if len(held) else ''))
  require(len(test.keys) > 0, f'the {name} test set is empty: metrics need test images')
  warn_about_labels(class_names, observed[keep], test.labels)
  return PLTPlan(train_rows=idx[keep], val_rows=idx[held], y_train=observed[keep],
                 y_train_full=full[keep], neg_train=None if negatives is None else negatives[keep],
                 y_val=observed[held] if len(held) else None, y_test=test.labels.astype(np.int8),
                 y_val_full=full[held], neg_val=None if negatives is None else negatives[held])


def make_plt(dc, name: str, class_names: tuple[str, ...], train: Pool, test: Pool,
             cache: str) -> PLTData:
  """`plan_plt`'s data set, its images decoded (validation images are evaluated like test
  images; their labels are partial)."""
  plan = plan_plt(dc, name, class_names, train, test, cache)
  x_train = train.load(plan.train_rows, 'train')
  x_test = test.load(np.arange(len(test.keys)), 'test')
  extra = {} if plan.neg_train is None else {'neg_train': plan.neg_train}
  if len(plan.val_rows):
    extra.update(x_val=train.load(plan.val_rows, 'test'), y_val=plan.y_val)
  return PLTData(name=f'plt_{name}', class_names=class_names, x_train=x_train,
                 y_train=plan.y_train, y_train_full=plan.y_train_full, x_test=x_test,
                 y_test=plan.y_test, **extra)


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(training rows, validation rows) of n training images: round(fraction * n) rows drawn
  without replacement from the data seed's own stream, both sorted."""
  n_val = int(round(fraction * n))
  perm = np.random.default_rng([seed, 2]).permutation(n)
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def split_folds(n: int, folds: int, seed: int) -> list[np.ndarray]:
  """`folds` disjoint sorted row sets covering range(n) (their sizes differ by at most one),
  drawn from the data seed's own stream: the audit's out-of-fold models (`data.folds`)."""
  perm = np.random.default_rng([seed, 3]).permutation(n)
  return [np.sort(perm[f::folds]) for f in range(folds)]


def leave_out_fold(data: PLTData, dc) -> PLTData:
  """The training set of the audit's fold model `dc.fold` (`dc.folds` 0: `data` as it is): every
  labelled image outside fold `dc.fold` of `split_folds(len(training images), dc.folds,
  dc.seed)`, that is the other folds' training images and, after them, the validation images
  (their labels as observed; cached features repeated over the training views; not where they
  are stored at another size than the training images, with a warning); no row of the fold.
  Validation and test sets stay (the validation set is then in-sample: its metrics only
  describe the fit)."""
  if not dc.folds:
    return data
  held = split_folds(len(data.y_train), dc.folds, dc.seed)[dc.fold]
  keep = np.setdiff1d(np.arange(len(data.y_train)), held)
  x, y = np.asarray(data.x_train)[keep], np.asarray(data.y_train)[keep]
  full = np.asarray(data.y_train_full)[keep]
  neg = None if data.neg_train is None else np.asarray(data.neg_train)[keep]
  x_val = _validation_rows(data, x)
  if x_val is not None:
    y_val = np.asarray(data.y_val)
    x, y = np.concatenate([x, x_val]), np.concatenate([y, y_val.astype(y.dtype)])
    full = np.concatenate([full, y_val.astype(full.dtype)])
    if neg is not None:          # (a 0 of a validation label counts as unknown)
      neg = np.concatenate([neg, np.zeros(y_val.shape, bool)])
  return dataclasses.replace(data, x_train=x, y_train=y, y_train_full=full, neg_train=neg)


def _validation_rows(data: PLTData, x: np.ndarray) -> np.ndarray | None:
  """The validation images as rows beside the training images `x` (cached (N, D) features
  repeated over the views of (N, views, D)); None without any, or, with a warning, where they
  are stored at another size."""
  if data.x_val is None or not len(data.x_val):
    return None
  x_val = np.asarray(data.x_val)
  if x_val.ndim < x.ndim:
    x_val = np.repeat(x_val[:, None], x.shape[1], axis=1)
  if x_val.shape[1:] != x.shape[1:]:
    warn(f'the validation images are stored at {x_val.shape[1:]}, the training images at '
         f'{x.shape[1:]}: the out-of-fold models train on the training images only')
    return None
  return x_val.astype(x.dtype)


def warn_about_labels(class_names, y_observed: np.ndarray, y_test: np.ndarray) -> None:
  """Warnings for documented but surprising label counts: classes whose training positives are
  all hidden (they train on negatives only) and classes without a test positive (left out of
  mAP, whose mean is over the other classes)."""
  def names(mask):
    picked = [class_names[c] for c in np.flatnonzero(mask)]
    return f'{len(picked)} class(es) ({", ".join(picked[:5])}{", ..." if len(picked) > 5 else ""})'
  unobserved = np.asarray(y_observed).sum(0) == 0
  if unobserved.any():
    warn(f'{names(unobserved)} have no observed training positive (all hidden): they train on '
         'negatives only')
  untested = np.asarray(y_test).sum(0) == 0
  if untested.any():
    warn(f'{names(untested)} have no test positive: they are left out of mAP')


def file_fingerprint(path: str) -> str:
  """What the image cache checks of a file on every run: size and modification time."""
  st = os.stat(path)
  return f'{st.st_size}:{st.st_mtime_ns}'


def image_loader(encoded, keys, tag: str, dc, cache: str, preprocessing: dict, fingerprint=None):
  """load(indices, mode): decoded images of a split, stored on disk after the first decode.

  mode 'train': the whole image resized to store_size x store_size (augmentation crops from it);
  mode 'test': the source's `preprocessing` (`images.model_input`, what prediction does): the
  shorter side resized to eval_resize, centre crop of image_size.
  `encoded(i)` gives record i's encoded image (bytes, a path, or an array). `fingerprint(key)`,
  when given, is part of the cache key (files: size and mtime), so a changed file is decoded
  again; without it the keys alone name the content (TFDS records are versioned).
  """
  def load(indices: np.ndarray, mode: str) -> np.ndarray:
    if mode == 'train':
      fn = lambda i: images.square_resize(images.decode_image(encoded(i), keys[i]), dc.store_size)
      size = f'sq{dc.store_size}'
    else:
      fn = lambda i: images.model_input(encoded(i), preprocessing, keys[i])
      size = f'r{dc.eval_resize}c{dc.image_size}'
    h = hashlib.sha256()
    for i in indices:
      h.update(keys[i].encode() + b'\n')
      if fingerprint is not None:
        h.update(fingerprint(keys[i]).encode() + b'\n')
    digest = h.hexdigest()[:16]
    path = os.path.join(cache, f'{tag}_{mode}_{size}_{len(indices)}_{digest}.npy')
    if os.path.exists(path):
      try:
        cached = np.load(path, mmap_mode='r')
        if cached.shape[0] == len(indices):
          return cached
      except (ValueError, OSError, EOFError) as e:
        warn(f'the image cache {path} is unreadable ({e}): decoding the images again')
    bar = progress.bar(total=len(indices), desc=f'decoding {tag} ({mode})', unit='img',
                       dynamic_ncols=True, leave=False)
    try:
      out = images.map_images(fn, list(indices), dc.num_threads or os.cpu_count() or 1,
                              progress=lambda n=1: bar.update(n))
    except BaseException:
      progress.end_bars()     # the error that follows starts a line of its own
      raise
    bar.close()
    splits.save_cached(path, out)
    return np.load(path, mmap_mode='r')
  return load
