"""The data-source registry: one `SourceSpec` per value of `config.data.name`, registered by the
source's own module (synthetic.py: PLT-Synth; tfds_data.py: voc, coco; own_data.py: npz, folder;
shards.py: shards). Everything outside those modules asks `sources` (which reads this registry)
and never compares source names. Adding a source is its module, a recipe in configs/ and a
section of docs/data.md (docs/architecture.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """What the rest of the package may know about a data source."""
  name: str                         # the value of config.data.name
  # How an image becomes a model input at evaluation and prediction: (config.data) ->
  # {'input': 'image', 'resize': R, 'height': H, 'width': W} or {'input': 'features', 'dim': D}.
  # Evaluation (`plt.image_loader`), the shards, predict and the export all apply it
  # (`images.model_input`).
  preprocessing: Callable[[Any], dict]
  # (config.data, cache dir) -> (class names, training Pool, test Pool): the labelled pools
  # before the PLT construction (`plt`), nothing decoded. None: the source loads its own data.
  pools: Callable[[Any, str], tuple] | None = None
  # (config.data) -> PLTData, for a source without pools (PLT-Synth, shards).
  load: Callable[[Any], Any] | None = None
  validate: Callable[[Any], None] | None = None   # checks of the source's own config fields
  streamed: bool = False            # images read when used (Grain), not held in memory
  resized: bool = False             # its images are files decoded and resized when read (the
                                    # converter stores the files), not arrays stored as they are


_REGISTRY: dict[str, SourceSpec] = {}


def register(spec: SourceSpec) -> SourceSpec:
  if spec.name in _REGISTRY:
    raise ValueError(f'data source {spec.name!r} is registered twice')
  if (spec.pools is None) == (spec.load is None):
    raise ValueError(f'data source {spec.name!r}: give exactly one of pools and load')
  _REGISTRY[spec.name] = spec
  return spec


def names() -> tuple[str, ...]:
  """Every registered source, in registration order."""
  return tuple(_REGISTRY)


def lookup(name: str) -> SourceSpec | None:
  return _REGISTRY.get(name)
