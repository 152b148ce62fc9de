"""Data sources: `config.data` -> the run's `PLTData`, through the source registry
(`data.registry`): each source (PLT-Synth, VOC and COCO through TFDS, your own .npz or image
folder, shards) declares its config check, its loader and its one evaluation / prediction
preprocessing in its own module; pool-based sources then go through the PLT construction of
`plt`. This module checks the common fields of `config.data` and answers for every source.
"""
from __future__ import annotations

import numpy as np

# The source modules register their specs when imported, in this order (the order of the
# error message's list).
# isort: off
from comic_jax.data import registry
from comic_jax.data import plt_synth, tfds_data, own_data, shards  # noqa: F401
# isort: on
from comic_jax.data import longtail, plt
from comic_jax.data.registry import SourceSpec
from comic_jax.data.types import PLTData
from comic_jax.errors import require

LONGTAIL = ('published', 'pareto', 'json', 'as_is')


def get(name: str) -> SourceSpec:
  spec = registry.lookup(name)
  require(spec is not None,
          f'config.data.name={name!r} is not one of: {", ".join(registry.names())}')
  return spec


def validate_config(data_config) -> None:
  """Checks config.data: the fields every source reads, then the source's own."""
  dc = data_config
  spec = get(dc.name)
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
  require(dc.folds == 0 or (dc.folds >= 2 and 0 <= dc.fold < dc.folds),
          f'config.data.folds={dc.folds!r} / config.data.fold={dc.fold!r}: folds is 0 (off) or '
          'at least 2, and fold one of 0 .. folds - 1')
  require(not dc.folds or dc.name != 'shards', 'config.data.folds needs the training images in '
          "memory, not streamed from shards (config.data.name='shards')")
  if spec.validate is not None:
    spec.validate(dc)


def load_dataset(data_config) -> PLTData:
  """The data set named by `data_config.name`."""
  validate_config(data_config)
  spec = get(data_config.name)
  if spec.load is not None:
    return spec.load(data_config)
  return plt.load_from_pools(data_config, spec.pools)


def source_pools(dc, cache: str) -> tuple:
  """(class names, training pool, test pool) of a pool-based source; nothing decoded."""
  spec = get(dc.name)
  require(spec.pools is not None, f'config.data.name={dc.name!r} has no pools')
  return spec.pools(dc, cache)


def preprocessing_of(data_config) -> dict:
  """How a new image becomes a model input for a run on `data_config`: the source's evaluation
  preprocessing ({'input': 'image', 'resize': R, 'height': H, 'width': W} or {'input':
  'features', 'dim': D}); `images.model_input` applies it."""
  return get(data_config.name).preprocessing(data_config)


def is_streamed(data_config) -> bool:
  """Whether the source's images are read when used (Grain) rather than held in memory."""
  return get(data_config.name).streamed


def check_model_inputs(data: PLTData, model_config) -> None:
  """Feature vectors need the 'mlp' backbone, images a convolutional one."""
  ndim = len(np.shape(data.x_train))
  require(ndim != 2 or model_config.backbone == 'mlp',
          'the training inputs are feature vectors: use --config.model.backbone=mlp')
  require(ndim == 2 or model_config.backbone != 'mlp',
          f'the training inputs are images {tuple(np.shape(data.x_train)[1:])}, but '
          'config.model.backbone=mlp takes feature vectors (N, D): use a convolutional backbone '
          '(small_cnn, resnet18, ...)')


def training_groups(data: PLTData, data_config) -> np.ndarray:
  """Many / medium / few of each class from the full (default) or observed training counts."""
  y = data.y_train_full if data_config.group_counts == 'full' else data.y_train
  return longtail.class_groups(np.asarray(y).sum(0), data_config.many_threshold,
                          data_config.few_threshold)
