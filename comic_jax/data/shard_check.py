"""A shard folder's files checked against its manifest, so that a missing or damaged shard ends in
one `error:` line naming the file, never in a traceback from a Grain worker.

- `check_files` (when the folder is opened): every shard the manifest lists exists and, where
  the manifest records it (conversions since 0.3.0), has its size. One `stat` per file.
- `damaged_record_error` (when a record cannot be read or decoded): reads the record again in
  this process and names what failed: its shard, whose SHA-256 is then compared with the
  manifest's (a damaged or replaced file), or the image inside it.

The SHA-256 of every shard is not checked when the folder is opened: that reads the whole data
set before the first step (SHA-256 ran at 314-378 MiB/s on one core of the project's shared
2-core AMD EPYC, files in the page cache: ~40 s for COCO-2014's 13 GB of JPEGs before any disk
or network time, a full download from gs://), while a damaged chunk already fails ArrayRecord's
own check when it is read. Only the shard that failed is hashed.
"""
from __future__ import annotations

from comic_jax.errors import UserError, require


def shard_path(root: str, name: str):
  """`root / name` as a path of local disk, NFS or gs:// (etils' epath, Grain's file layer)."""
  from etils import epath
  return epath.Path(root) / name


def _files(root: str, manifest: dict):
  for split, info in manifest['splits'].items():
    for entry in info['shards']:
      yield split, entry, shard_path(root, entry['file'])


def check_files(root: str, manifest: dict) -> None:
  """Every shard of the manifest exists, with the size it records (if it does)."""
  for _, entry, path in _files(root, manifest):
    require(path.exists(), f'{path} is missing: manifest.json lists it; copy the whole folder '
            'again, or convert the data set again')
    if 'bytes' in entry:
      size = path.stat().length
      require(size == entry['bytes'], f'{path} has {size} bytes where manifest.json records '
              f'{entry["bytes"]}: the file is damaged or not the one converted; copy it again, or '
              'convert the data set again')


def shard_of(info: dict, index: int) -> tuple[dict, int]:
  """(manifest entry of the shard holding record `index` of a split, its place in that shard)."""
  for entry in info['shards']:
    if index < entry['count']:
      return entry, index
    index -= entry['count']
  raise IndexError(index)


def read_error(root: str, info: dict, index: int, error: Exception) -> UserError:
  """The one-line error of a record that could not be read from its shard."""
  from comic_jax.download import sha256_of
  entry, place = shard_of(info, index)
  path = shard_path(root, entry['file'])
  reason = ' '.join(str(error).split(';')[0].split())
  reason = reason if len(reason) <= 100 else reason[:97] + '...'
  try:
    matches = sha256_of(str(path)) == entry['sha256']
  except OSError as e:
    return UserError(f'cannot read {path}: {e.strerror or e}')
  if matches:
    return UserError(f'{path} does not hold record {place} that manifest.json lists ({reason}): '
                     'the manifest does not match its files; convert the data set again')
  return UserError(f'{path} is damaged: its SHA-256 differs from manifest.json\'s ({reason}); '
                   'copy it again, or convert the data set again')


def damaged_record_error(source, decode, transform, indices) -> UserError:
  """The error of the first of `indices` (records of `source`, a shards.ShardSource) that cannot
  be read, decoded (`decode`: bytes -> record) or turned into a model input by `transform`:
  read again in this process."""
  for index in indices:
    try:
      raw = source.read(int(index))
    except Exception as e:  # noqa: BLE001 - ArrayRecord's errors have no common type
      return read_error(source.root, source.info, int(index), e)
    try:
      record = decode(raw)
      transform(record['image'], record['key'])
    except UserError as e:
      return e
    except Exception as e:  # noqa: BLE001 - msgpack's or NumPy's
      return read_error(source.root, source.info, int(index), e)
  return UserError(f'a record of {source.root!r} ({source.split}) could not be read, and reads '
                   'again now: rerun the command')


def stop_loader(iterator) -> None:
  """Stops a Grain DataLoader iterator before an error ends the process: its worker processes
  stop now (not in the interpreter's shutdown, where Grain's clean-up can fail) and the batches
  they had prepared in shared memory are freed, which Grain 0.2 leaves to threads that the
  process's exit cuts short (Python's resource tracker then reports them "leaked"). Best effort
  over Grain's internals: where they differ, the iterator is only closed."""
  import gc
  inner = getattr(iterator, '_iterator', iterator)   # DataLoaderIterator holds the dataset's
  if hasattr(inner, 'close'):
    inner.close()
  try:
    from grain._src.python.ipc import shared_memory_array
    arrays = shared_memory_array.SharedMemoryArray
    pool = arrays._del_thread_pool
    arrays._disable_async_del()          # from now on an array frees its memory when dropped
  except (ImportError, AttributeError):
    return
  if pool is not None:
    pool.close()
    pool.join()                          # the frees already queued
  gc.collect()
