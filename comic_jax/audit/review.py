"""The audit's review loop: a reviewed suspects file + the run's label file -> new labels.

    comic-jax-audit --workdir=runs/mine --review=suspects.csv --labels=labels.csv \
        --output=labels_reviewed.csv

The reviewer fills the `verdict` column of the audit's suspects.csv: `yes` (the label is
present: accepted), `no` (absent: rejected), empty (not reviewed). The new label file is the
original in the -1 "unknown" format of docs/data.md: accepted labels become positives (1),
rejected ones known negatives (0), every other entry keeps its meaning (an original without
any -1 has its 0 entries, all unknown, written as -1). The format follows the run's: an `.npz`
(a copy of every array, `y_train` replaced) for `data.name='npz'`, a `.csv` or `.json` label file
for an image folder. A label file that does not match the run (other classes, other images,
or a reviewed label that the file already gives) is refused, and nothing is written.
"""
from __future__ import annotations

import csv
import io
import json
import os
import zipfile

import numpy as np

from comic_jax import atomic
from comic_jax.errors import UserError, require

ACCEPT = ('yes', 'y', 'accept', 'accepted', '1', 'true')
REJECT = ('no', 'n', 'reject', 'rejected', '0', 'false')


def read_verdicts(path: str) -> list[tuple[str, str, bool]]:
  """(image, class, accepted) of every reviewed row of a suspects file."""
  require(os.path.isfile(path), f'reviewed suspects file {path!r} does not exist')
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    missing = [c for c in ('image', 'class', 'verdict') if c not in (reader.fieldnames or ())]
    require(not missing, f'{path!r} lacks the column(s) {", ".join(missing)}: review the '
            "suspects.csv written by comic-jax-audit (its 'verdict' column)")
    out = []
    for line, row in enumerate(reader, start=2):
      verdict = (row['verdict'] or '').strip().lower()
      if not verdict:
        continue
      require(verdict in ACCEPT + REJECT, f'{path!r} line {line}: verdict {row["verdict"]!r} is '
              'neither yes (the label is present) nor no (absent); leave it empty if unreviewed')
      out.append((row['image'], row['class'], verdict in ACCEPT))
  return out


def apply_verdicts(labels: np.ndarray, cells: np.ndarray, accepted: np.ndarray) -> np.ndarray:
  """(N, C) labels in {1, 0, -1} after the review. `labels`: the original training labels (0/1,
  or 1 / 0 / -1 where any -1 marks the unknown ones); `cells`: (K, 2) (row, class) reviewed;
  `accepted`: (K,) bool. Accepted -> 1, rejected -> 0 (known negative), the rest keep their
  meaning (without any -1 in the original, its 0 entries are unknown: -1)."""
  labels = np.asarray(labels, np.int8)
  out = labels.copy() if (labels < 0).any() else np.where(labels > 0, 1, -1).astype(np.int8)
  cells = np.asarray(cells, np.int64).reshape(-1, 2)
  out[cells[:, 0], cells[:, 1]] = np.where(np.asarray(accepted, bool), 1, 0)
  return out


# ------------------------------------------------------------------------------- label files

def read_label_file(path: str) -> tuple[list[str], np.ndarray, tuple | None, dict | None]:
  """(image names, (N, C) training labels, class names or None, all arrays of an .npz or None):
  an .npz's rows are named by their index, a label file's by its file names."""
  require(os.path.isfile(path), f'label file {path!r} does not exist')
  from comic_jax.data import splits
  if path.lower().endswith('.npz'):
    try:
      with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
      raise UserError(f'cannot read {path!r} as an .npz of arrays ({e})') from None
    require('y_train' in arrays and np.ndim(arrays['y_train']) == 2,
            f'{path!r} has no (N, C) y_train')
    names = tuple(str(n) for n in arrays['class_names']) if 'class_names' in arrays else None
    y = arrays['y_train'].astype(np.int8)
    return [str(i) for i in range(len(y))], y, names, arrays
  files, labels, names = splits.read_labels(path, unknown=True)
  return list(files), labels, None if names is None else tuple(names), None


def label_file_bytes(path: str, files, labels: np.ndarray, class_names, arrays) -> bytes:
  """The new label file's content in the format its name says (.npz, .csv or .json)."""
  lower = path.lower()
  if arrays is not None:
    require(lower.endswith('.npz'), f'--output={path!r}: the labels are an .npz, write an .npz')
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{**arrays, 'y_train': labels.astype(np.int8)})
    return buffer.getvalue()
  require(lower.endswith(('.csv', '.json')),
          f'--output={path!r}: write the folder\'s labels as .csv or .json')
  if lower.endswith('.json'):
    return json.dumps({f: [int(v) for v in row] for f, row in zip(files, labels)}).encode()
  text = io.StringIO(newline='')
  writer = csv.writer(text)
  writer.writerow(['filename', *class_names])
  writer.writerows([f, *map(int, row)] for f, row in zip(files, labels))
  return text.getvalue().encode()


def review(workdir: str, reviewed: str, labels_path: str, output: str) -> dict:
  """Writes `output`, the run's label file `labels_path` after the review `reviewed`; returns
  the counts {'accepted', 'rejected', 'images', 'unknown'}."""
  from comic_jax.inference import restore as inference
  config = inference.load_config(workdir)
  class_names = tuple(inference.class_names_of(workdir, config))
  dc = config.data
  require(dc.name in ('npz', 'folder'), f"the run's data ({dc.name!r}) has no label file of the "
          "user's: the review loop is for data.name='npz' or 'folder'")
  require(labels_path.lower().endswith('.npz') == (dc.name == 'npz'),
          f'--labels={labels_path!r} is not the run\'s kind of label file '
          f'({"an .npz" if dc.name == "npz" else "a .csv or .json"})')
  require(os.path.abspath(output) != os.path.abspath(labels_path),
          '--output must be a new file, not --labels itself')
  files, labels, names, arrays = read_label_file(labels_path)
  mismatch = f'--labels={labels_path!r} does not match the run {workdir!r}'
  require(labels.shape[1] == len(class_names), f'{mismatch}: {labels.shape[1]} classes, the run '
          f'has {len(class_names)}')
  require(names is None or names == class_names, f'{mismatch}: its classes differ from the run\'s')
  row_of = {f: i for i, f in enumerate(files)}
  class_of = {c: j for j, c in enumerate(class_names)}
  verdicts = read_verdicts(reviewed)
  cells, accepted = [], []
  for image, name, ok in verdicts:
    require(name in class_of, f'{reviewed!r}: class {name!r} is not one of the run\'s classes')
    require(image in row_of, f'{mismatch}: it has no image {image!r}')
    i, j = row_of[image], class_of[name]
    known = labels[i, j] == 1 or (labels[i, j] == 0 and (labels < 0).any())
    require(not known, f'{mismatch}: it already labels {image!r} {name!r} '
            f'({"present" if labels[i, j] == 1 else "absent"}), which the run had as unknown'
            + (" (the run hid positives: data.partial='simulate')" if dc.partial == 'simulate'
               else ''))
    cells.append((i, j))
    accepted.append(ok)
  require(len(set(cells)) == len(cells), f'{reviewed!r} reviews a label twice')
  new = apply_verdicts(labels, np.array(cells, np.int64), np.array(accepted, bool))
  data = label_file_bytes(output, files, new, names or class_names, arrays)
  try:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    atomic.write_bytes(output, data)
  except OSError as e:
    raise UserError(f'cannot write {output!r}: {e.strerror or e}') from None
  return {'accepted': int(sum(accepted)), 'rejected': int(len(accepted) - sum(accepted)),
          'images': len(files), 'unknown': int((new < 0).sum())}
