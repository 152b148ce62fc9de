"""The PLT-Synth source (`data.name='synthetic'`): `synthetic.make_plt_synth`'s data set,
generated once per machine and cached, with its own fully-labelled validation set."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile

import numpy as np

from comic_jax.data import longtail, registry, splits, synthetic
from comic_jax.data.types import PLTData
from comic_jax.errors import require, warn

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


def load(dc) -> PLTData:
  return _plt_synth(
      splits.cache_dir(dc.cache_dir), seed=dc.seed, image_size=dc.image_size,
      missing_ratio=dc.missing_ratio, pool_size=dc.synthetic.pool_size,
      pareto_shape=dc.pareto.shape, max_count=dc.pareto.max_count, min_count=dc.pareto.min_count,
      num_test=dc.synthetic.num_test, min_test_positives=dc.synthetic.min_test_positives)


def preprocessing(dc) -> dict:
  """The images are generated at `data.image_size`: a new image is resized to it."""
  return {'input': 'image', 'resize': int(dc.image_size), 'height': int(dc.image_size),
          'width': int(dc.image_size)}


def validate(dc) -> None:
  require(dc.val_fraction == 0.0,
          'config.data.val_fraction: PLT-Synth has its own fully-labelled validation set; '
          'leave it at 0')


registry.register(registry.SourceSpec('synthetic', preprocessing, load=load, validate=validate))
