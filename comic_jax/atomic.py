"""Files that a crash cannot leave half-written: every write goes to a temp file beside the
target, is flushed to disk, and replaces the target with a rename, so readers (and a crash) see
the old file or the new one, never a prefix. The ground floor of the package: it imports nothing
of it (and no JAX), so a module that only writes a file stays light.
"""
from __future__ import annotations

import json
import os


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` through a temp file and a rename: readers (and a crash) see the old
  file or the new one, never a prefix."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """`write_bytes` of `text` (UTF-8)."""
  write_bytes(path, text.encode())


def write_json(path: str, obj, **kwargs) -> None:
  write_text(path, json.dumps(obj, **kwargs))


def append_line(path: str, obj) -> None:
  """Appends one JSON line by rewriting the file atomically (a log of one line per evaluation is
  small), so a crash leaves the old log or the new one. `read_metrics_log` still drops a
  partial last line, which older versions (plain appends) could leave."""
  old = ''
  if os.path.exists(path):
    with open(path) as f:
      old = f.read()
    if old and not old.endswith('\n'):
      old += '\n'
  write_text(path, old + json.dumps(obj) + '\n')
