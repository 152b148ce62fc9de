"""Versioned runs: a workdir's `config.json` records the comic-jax version that wrote it, and a
run written by an older version is read as that version ran it.

- `stamp(config_dict)`: the dict written as `config.json`, with `comic_jax_version`.
- `upgrade(saved, where)`: the config of an older `config.json` as today's code reads it. A field
  added since takes its current default (configs/default.py), which by the project's rule
  reproduces what older versions did; where it does not, `MIGRATIONS` records the value that
  does. A field no longer known is dropped. One `note:` line says what was filled in.
- `identity(flat_config, method_sections)`: the fields that define a run, compared before a
  run is resumed in the same workdir (`training/workdir.prepare_workdir`). Every field counts
  but `OPERATIONAL_FIELDS`, which change how a run is carried out (bars, devices, caches, how
  often it evaluates and saves) and not what it learns, and the sections only other methods
  read (each method's spec declares its `config_sections`): a field added later counts unless
  it is declared so.
"""
from __future__ import annotations

import json
import os
import sys

__version__ = '0.3.0'   # pyproject.toml's; comic_jax.__version__
VERSION_KEY = 'comic_jax_version'
# A config.json without VERSION_KEY was written by this version (or an earlier one).
UNVERSIONED = '0.2.0'
# Fields added after a release whose default is not what that release did: {release: {field:
# the value a run written by that release (or an earlier one) takes}}. Example: a field
# `model.x` added in 0.4.0 with default 'new', where 0.3.0 behaved as 'old', is recorded as
# {'0.3.0': {'model.x': 'old'}}. A field whose default reproduces older runs needs no entry.
MIGRATIONS: dict[str, dict[str, object]] = {}
# Fields (or whole sections, by their first part) that may differ when a run is resumed: they
# change how it runs, not its result (the device counts only its float rounding).
OPERATIONAL_FIELDS = (
    'progress_bar', 'num_devices', 'cpu_devices', 'eval_batch_size', 'keep_checkpoints',
    'checkpoint_every_epochs', 'eval_every_epochs', 'compilation_cache', 'data.cache_dir',
    'data.tfds_dir', 'data.download', 'data.num_threads', 'data.workers', 'data.prefetch')


def current() -> str:
  """This installation's version (`comic_jax.__version__`)."""
  return __version__


def version_tuple(version: str) -> tuple[int, ...]:
  """'0.2.0' -> (0, 2, 0); what follows the numbers ('0.3.0rc1', '0.3.dev0') is ignored."""
  parts = []
  for part in version.split('.'):
    digits = _leading_digits(part)
    if not digits:
      break
    parts.append(int(digits))
    if digits != part:
      break
  return tuple(parts)


def _leading_digits(part: str) -> str:
  out = ''
  for c in part:
    if not c.isdigit():
      break
    out += c
  return out


def stamp(config_dict: dict) -> dict:
  """`config_dict` (a config's JSON) with this version under VERSION_KEY."""
  return {**config_dict, VERSION_KEY: current()}


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configs_importable() -> None:
  """Makes `configs` (beside comic_jax/ in a source checkout) importable from anywhere: the
  config files import `configs.default`. The one place that touches `sys.path`."""
  if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)


def default_fields() -> dict:
  """{'a.b': value} of every field of configs/default.py, as its config.json holds it."""
  try:
    from configs import default
  except ImportError:      # a source checkout run from elsewhere: configs/ is beside comic_jax/
    configs_importable()
    from configs import default
  return flatten(json.loads(default.get_config().to_json_best_effort()))


def flatten(d: dict) -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  from flax import traverse_util
  return traverse_util.flatten_dict(d, sep='.')


def upgrade(saved: dict, where: str) -> dict:
  """The config dict of a `config.json` (`saved`, as read) for today's code: VERSION_KEY
  removed, the fields added since its version filled in (`MIGRATIONS`, else the current
  default), the fields no longer known dropped, with one `note:` line naming them (`where`
  names the file). A config.json of this version comes back as it is, less VERSION_KEY."""
  saved = dict(saved)
  version = str(saved.pop(VERSION_KEY, UNVERSIONED))
  flat, defaults = flatten(saved), default_fields()
  added = sorted(set(defaults) - set(flat))
  dropped = sorted(set(flat) - set(defaults))
  if not added and not dropped:
    return saved
  migrated = migrations_for(version)
  for key in added:
    flat[key] = migrated.get(key, defaults[key])
  for key in dropped:
    del flat[key]
  _note(f'{where} was written by comic-jax {version}: ' + '; '.join(filter(None, (
      _listed('filled in', added, lambda k: f'{k}={flat[k]!r}'
              + (' (as that version ran)' if k in migrated else ' (default)')),
      _listed('ignored (no longer used)', dropped, str)))))
  from flax import traverse_util
  return traverse_util.unflatten_dict(flat, sep='.')


def migrations_for(version: str) -> dict:
  """{field: value} of `MIGRATIONS` for a run written by `version`: each field's entry of the
  earliest release at or after `version` (that release still ran it the old way)."""
  out = {}
  for release in sorted(MIGRATIONS, key=version_tuple, reverse=True):
    if version_tuple(version) <= version_tuple(release):
      out.update(MIGRATIONS[release])
  return out


def identity(flat_config: dict, method_sections: dict[str, tuple[str, ...]]) -> dict:
  """The fields of a flattened config that define the run: all but OPERATIONAL_FIELDS and the
  sections that only other methods read (`method_sections`: {section: the methods that read
  it}, declared by each method's spec, `methods.registry.method_sections`)."""
  method = flat_config.get('method')
  unread = tuple(s for s, readers in method_sections.items() if method not in readers)
  return {k: v for k, v in flat_config.items()
          if k != VERSION_KEY and not _under(k, OPERATIONAL_FIELDS) and not _under(k, unread)}


def _under(key: str, fields: tuple[str, ...]) -> bool:
  return any(key == f or key.startswith(f + '.') for f in fields)


def _listed(what: str, keys: list, show) -> str:
  if not keys:
    return ''
  return f'{what} {len(keys)} field(s): ' + ', '.join(show(k) for k in keys)


_NOTED: set[str] = set()   # a command that reads a config.json twice says so once


def _note(message: str) -> None:
  from comic_jax.errors import note
  if message not in _NOTED:
    _NOTED.add(message)
    note(message)
