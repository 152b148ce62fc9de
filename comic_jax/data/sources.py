"""Data sources: turn `config.data` into a `PLTData` held in memory.

Every source (PLT-Synth, VOC and COCO through TFDS, your own .npz or image folder) goes through
the same PLT construction: choose the long-tailed training set (`data.longtail`), hide positives
(`data.partial`, `data.missing_ratio`), check that every class has a training positive, and
decode the images that are used (cached on disk, so the next run starts at once). Training
labels with -1 (unknown) entries also give known negatives (`PLTData.neg_train`, see
`make_plt`).

The decoded-image cache of an image folder is keyed by the paths AND the size and modification
time of every file (one `stat` per image on each run, no decoding), so replacing or damaging an
image invalidates the cache and the image is decoded (and checked) again.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import zipfile

import numpy as np

from comic_jax import progress
from comic_jax.data import images, longtail, own_data, splits, synthetic
from comic_jax.data.own_data import Pool
from comic_jax.data.types import PLTData
from comic_jax.errors import require, warn

SOURCES = ('synthetic', 'voc', 'coco', 'npz', 'folder', 'shards')
LONGTAIL = ('published', 'pareto', 'json', 'as_is')

# Runs in one process (tests, the benchmark runner) share the arrays; nothing writes to them.
_PLT_SYNTH_FIELDS = ('x_train', 'y_train', 'y_train_full', 'x_test', 'y_test', 'x_val', 'y_val')


@functools.lru_cache(maxsize=4)
def _plt_synth(cache: str, **kwargs) -> PLTData:
  """PLT-Synth for `kwargs` (`synthetic.make_plt_synth`'s arguments), generated once per machine:
  stored in `<cache>/plt_synth/` (7 s of generation per process at 32 px on the 2-core machine;
  ~0.1 s to read). The key holds the arguments, the NumPy version and the source code of the
  generator and of the long-tail construction, so a change to any of them generates it again."""
  key = {'args': kwargs, 'numpy': np.__version__, 'code': [
      hashlib.sha256(open(m.__file__, 'rb').read()).hexdigest() for m in (synthetic, longtail)]}
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
  path = os.path.join(cache, 'plt_synth', f'{digest}.npz')
  if os.path.exists(path):
    try:
      with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in _PLT_SYNTH_FIELDS}
      return PLTData(name='plt_synth', class_names=synthetic.CLASS_NAMES, **arrays)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
      warn(f'the PLT-Synth cache {path} is unreadable ({" ".join(str(e).split())}): '
           'generating it again')
  data = synthetic.make_plt_synth(**kwargs)
  splits.save_cached(path, {k: getattr(data, k) for k in _PLT_SYNTH_FIELDS})
  return data


def validate_config(data_config) -> None:
  """Checks config.data."""
  dc = data_config
  require(dc.name in SOURCES, f'config.data.name={dc.name!r} is not one of: {", ".join(SOURCES)}')
  require(dc.longtail in LONGTAIL,
          f'config.data.longtail={dc.longtail!r} is not one of: {", ".join(LONGTAIL)}')
  require(dc.partial in ('simulate', 'as_is'),
          f"config.data.partial={dc.partial!r} is not one of: simulate, as_is")
  require(dc.group_counts in ('full', 'observed'),
          f"config.data.group_counts={dc.group_counts!r} is not one of: full, observed")
  require(0.0 <= dc.missing_ratio < 1.0,
          f'config.data.missing_ratio={dc.missing_ratio!r} must be in [0, 1)')
  require(0 < dc.few_threshold < dc.many_threshold,
          f'config.data.few_threshold={dc.few_threshold!r} must be > 0 and below '
          f'config.data.many_threshold={dc.many_threshold!r}')
  require(dc.image_size > 0, f'config.data.image_size={dc.image_size!r} must be > 0')
  require(0.0 <= dc.val_fraction < 1.0,
          f'config.data.val_fraction={dc.val_fraction!r} must be in [0, 1)')
  require(dc.name != 'shards' or bool(dc.path),
          "config.data.name='shards' needs config.data.path: the folder comic-jax-convert wrote")
  require(dc.name != 'synthetic' or dc.val_fraction == 0.0,
          'config.data.val_fraction: PLT-Synth has its own fully-labelled validation set; '
          'leave it at 0')


def load_dataset(data_config) -> PLTData:
  """The data set named by `data_config.name`."""
  dc = data_config
  validate_config(dc)
  if dc.name == 'shards':   # labels in memory, images read from the shards when used
    from comic_jax.data import shards
    return shards.load_dataset(dc, split_validation)
  if dc.name == 'synthetic':
    return _plt_synth(
        splits.cache_dir(dc.cache_dir), seed=dc.seed, image_size=dc.image_size,
        missing_ratio=dc.missing_ratio, pool_size=dc.synthetic.pool_size,
        pareto_shape=dc.pareto.shape, max_count=dc.pareto.max_count, min_count=dc.pareto.min_count,
        num_test=dc.synthetic.num_test, min_test_positives=dc.synthetic.min_test_positives)
  cache = splits.cache_dir(dc.cache_dir)
  names, train_pool, test_pool = source_pools(dc, cache)
  return make_plt(dc, dc.name, tuple(names), train_pool, test_pool, cache)


def source_pools(dc, cache: str) -> tuple[tuple[str, ...], Pool, Pool]:
  """(class names, training pool, test pool) of a source other than PLT-Synth; nothing decoded."""
  if dc.name in ('voc', 'coco'):
    from comic_jax.data import tfds_data
    train, test = tfds_data.open_dataset(dc.name, dc, cache)
    loader = lambda split, tag: image_loader(split.encoded_image, split.keys, tag, dc, cache)
    return (train.class_names,
            Pool(train.keys, train.labels, loader(train, f'{dc.name}_train'),
                 encoded=train.encoded_image),
            Pool(test.keys, test.labels, loader(test, f'{dc.name}_test'),
                 encoded=test.encoded_image))
  if dc.name == 'npz':
    return own_data.npz_pools(dc)
  folder_loader = lambda paths, tag: image_loader(lambda i: paths[i], paths, tag, dc, cache,
                                                  fingerprint=file_fingerprint)
  return own_data.folder_pools(dc, folder_loader)


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


def check_model_inputs(data: PLTData, model_config) -> None:
  """Feature vectors need the 'mlp' backbone, images a convolutional one."""
  ndim = len(np.shape(data.x_train))
  require(ndim != 2 or model_config.backbone == 'mlp',
          'the training inputs are feature vectors: use --config.model.backbone=mlp')
  require(ndim == 2 or model_config.backbone != 'mlp',
          f'the training inputs are images {tuple(np.shape(data.x_train)[1:])}, but '
          'config.model.backbone=mlp takes feature vectors (N, D): use a convolutional backbone '
          '(small_cnn, resnet18, ...)')


def file_fingerprint(path: str) -> str:
  """What the image cache checks of a file on every run: size and modification time."""
  st = os.stat(path)
  return f'{st.st_size}:{st.st_mtime_ns}'


def image_loader(encoded, keys, tag: str, dc, cache: str, fingerprint=None):
  """load(indices, mode): decoded images of a split, stored on disk after the first decode.

  mode 'train': the whole image resized to store_size x store_size (augmentation crops from it);
  mode 'test': shorter side resized to eval_resize, centre crop of image_size.
  `encoded(i)` gives record i's encoded image (bytes, a path, or an array). `fingerprint(key)`,
  when given, is part of the cache key (files: size and mtime), so a changed file is decoded
  again; without it the keys alone name the content (TFDS records are versioned).
  """
  def load(indices: np.ndarray, mode: str) -> np.ndarray:
    if mode == 'train':
      fn = lambda i: images.square_resize(images.decode_image(encoded(i), keys[i]), dc.store_size)
      size = f'sq{dc.store_size}'
    else:
      fn = lambda i: images.eval_transform(images.decode_image(encoded(i), keys[i]),
                                           dc.eval_resize, dc.image_size)
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


def training_groups(data: PLTData, data_config) -> np.ndarray:
  """Many / medium / few of each class from the full (default) or observed training counts."""
  y = data.y_train_full if data_config.group_counts == 'full' else data.y_train
  return longtail.class_groups(np.asarray(y).sum(0), data_config.many_threshold,
                          data_config.few_threshold)
