"""Published long-tailed splits and label files: downloads with checksums, parsers.

- DB's COCO-MLT and VOC-MLT image-id lists (docs/data.md "PLT-COCO and PLT-VOC"), fetched at
  run time from the Distribution-Balanced loss repository at a fixed commit and checked against
  sha256. They are read as text (the COCO one is named .pkl but is plain text); nothing is
  unpickled.
- The authors' released PLT JSON files: {"file.jpg": [0/1, ...]}.
- Label files of your own data: JSON ({"file": [0/1, ...]}) or CSV (filename, class1, ...);
  training label files may also hold -1 (unknown), see `own_data`.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from comic_jax.download import fetch, sha256_of  # noqa: F401  (part of this module's API)
from comic_jax.errors import UserError, require

DB_COMMIT = '14460d0acda6a3e77a8a6a5999b9746243cb1535'
DB_RAW = f'https://raw.githubusercontent.com/wutong16/DistributionBalancedLoss/{DB_COMMIT}/appendix/'
PUBLISHED_ID_LISTS = {
    'coco': ('coco/longtail2017/img_id.pkl',
             'f31e853d2c7b69512c62b65ff1db067a49b3ab86a62f685c7da86b7c3dd04768'),
    'voc': ('VOCdevkit/longtail2012/img_id.txt',
            '6e49185d5421236718f7393e952f5790e5c0cfeb1694892b1b971f59725d5ebc'),
}


def cache_dir(configured: str = '') -> str:
  path = os.path.expanduser(configured or os.path.join('~', '.cache', 'comic_jax'))
  os.makedirs(path, exist_ok=True)
  return path


def save_cached(path: str, arrays) -> None:
  """Stores a cache file: `np.save` of an array (`.npy`) or `np.savez` of a dict of arrays
  (`.npz`), through a per-process temp file and a rename, so a reader, a crash or another process
  writing the same file meets either no file or a whole one."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}'
  if isinstance(arrays, dict):
    np.savez(tmp, **arrays)
  else:
    np.save(tmp, arrays)
  os.replace(tmp, path)


def published_ids(dataset: str, directory: str) -> list[str]:
  """DB's long-tailed image ids of 'coco' (2017 train ids) or 'voc' (2012 trainval names)."""
  rel, sha = PUBLISHED_ID_LISTS[dataset]
  dest = os.path.join(directory, f'{dataset}_mlt_{os.path.basename(rel)}')
  path = fetch(DB_RAW + rel, dest, sha)
  return parse_id_list(path)


def parse_id_list(path: str) -> list[str]:
  """One id per line (blank lines skipped); ids are kept as strings."""
  with open(path, encoding='utf-8') as f:
    ids = [line.strip() for line in f if line.strip()]
  require(len(set(ids)) == len(ids), f'{path!r} lists an image id twice')
  return ids


def _check_rows(path: str, rows: dict[str, list], num_classes: int | None,
                unknown: bool = False) -> np.ndarray:
  """(N, C) int8 labels of `rows`; with `unknown`, -1 (label unknown) is allowed beside 0 / 1."""
  require(rows, f'{path!r} holds no labels')
  first = next(iter(rows.values()))
  width = num_classes if num_classes is not None else (
      len(first) if isinstance(first, (list, tuple)) else 0)
  require(width > 0, f'{path!r}: the labels have 0 classes; give one 0/1 entry per class')
  allowed = (0, 1, -1) if unknown else (0, 1)
  for name, row in rows.items():
    is_row = isinstance(row, (list, tuple))
    require(is_row and len(row) == width, f'{path!r}: the labels of {name!r} have '
            f'{len(row) if is_row else "no"} entries, expected {width}')
    if all(v in allowed for v in row):
      continue
    if not unknown and all(v in (0, 1, -1) for v in row):
      raise UserError(f'{path!r}: the labels of {name!r} hold -1 (unknown); only the training '
                      'labels may mark labels unknown, these must be 0 or 1')
    raise UserError(f'{path!r}: the labels of {name!r} are not all '
                    + ('0, 1 or -1 (unknown)' if unknown else '0 or 1'))
  return np.array(list(rows.values()), dtype=np.int8)


def read_label_json(path: str, num_classes: int | None = None, *,
                    unknown: bool = False) -> tuple[list[str], np.ndarray]:
  """(file names, (N, C) 0/1 labels) from {"file.jpg": [0/1, ...], ...}; with `unknown`, the
  entries may also be -1 (label unknown)."""
  require(os.path.exists(path), f'label file {path!r} does not exist')
  def unique_keys(pairs):
    seen = {}
    for key, value in pairs:
      require(key not in seen, f'{path!r} lists {key!r} twice; keep one entry per image')
      seen[key] = value
    return seen

  try:
    with open(path, encoding='utf-8') as f:
      rows = json.load(f, object_pairs_hook=unique_keys)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f'{path!r} is not valid JSON: {e}') from None
  require(isinstance(rows, dict), f'{path!r} must hold an object {{"file.jpg": [0/1, ...]}}')
  return list(rows), _check_rows(path, rows, num_classes, unknown)


def read_label_csv(path: str, *, unknown: bool = False) -> tuple[list[str], np.ndarray, list[str]]:
  """(file names, (N, C) labels, class names) from a CSV with a header: filename, class1, ...;
  with `unknown`, the entries may also be -1 (label unknown)."""
  require(os.path.exists(path), f'label file {path!r} does not exist')
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    require(header is not None and len(header) >= 2,
            f'{path!r} needs a header row: filename,class1,class2,...')
    # A file without a header would silently lose its first image and name the classes "0",
    # "1": a header made only of 0 / 1 / -1 entries is a label row.
    require(not all(v.strip() in ('0', '1', '-1') for v in header[1:]),
            f'{path!r} line 1 ({",".join(header[:4])}{",..." if len(header) > 4 else ""}) is a '
            'label row, not a header: add a header row filename,class1,class2,...')
    names = [h.strip() for h in header[1:]]
    repeated = sorted({n for n in names if names.count(n) > 1})
    require(not repeated, f'{path!r}: the header names the class(es) {", ".join(repeated)} twice')
    rows, first_line = {}, {}
    for line_no, row in enumerate(reader, start=2):
      if not row:
        continue
      require(len(row) == len(header), f'{path!r} line {line_no}: {len(row)} fields, '
              f'expected {len(header)}')
      require(row[0] not in rows, f'{path!r} line {line_no}: {row[0]!r} is listed again (first '
              f'on line {first_line.get(row[0])}); keep one row per image')
      first_line[row[0]] = line_no
      try:
        rows[row[0]] = [int(v) for v in row[1:]]
      except ValueError:
        raise UserError(f'{path!r} line {line_no}: labels must be 0 or 1'
                        + (' or -1 (unknown)' if unknown else '')) from None
  return list(rows), _check_rows(path, rows, len(header) - 1, unknown), names


def read_labels(path: str, num_classes: int | None = None, *, unknown: bool = False):
  """(file names, labels, class names or None) from a .json or .csv label file; with `unknown`
  (training labels), -1 marks a label unknown (then 0 is a known negative)."""
  if path.lower().endswith('.csv'):
    return read_label_csv(path, unknown=unknown)
  names, labels = read_label_json(path, num_classes, unknown=unknown)
  return names, labels, None
