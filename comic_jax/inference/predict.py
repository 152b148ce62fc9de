"""Use a trained run: class probabilities and labels for new images, as an API and a command.

    python -m comic_jax.predict --workdir=runs/demo --input=photos/ --output=predictions.csv
    python -m comic_jax.predict --workdir=runs/demo --input=photos/ --recursive --output=p.csv
    python -m comic_jax.predict --workdir=runs/demo --input=arrays.npz --output=predictions.json
    python -m comic_jax.predict --workdir=runs/demo --mode=export --output=runs/demo/export

    model = comic_jax.load('runs/demo')      # a workdir or an exported folder
    probs = model.predict(images)            # (N, C) probabilities of the reported model
    names = model.labels(images)             # per image, the class names at or above threshold

`images` are file paths, encoded bytes, uint8 arrays of any size, or an (N, H, W, 3) uint8
array; each goes through the run's evaluation transform (`preprocessing_of`). Feature-vector
runs (npz with `x` of shape (N, D)) take an (N, D) array.

The model is rebuilt from the workdir alone (`restore.restore_model`); a frozen-backbone run's
model is its backbone followed by its trained heads. Bad input (a NaN row, a wrong shape, an
image that cannot be decoded, a damaged checkpoint or export) ends in one `error:` line naming
the file or row, exit status 2, and no output file.

Thresholds (`threshold=`): 'auto' (the validation thresholds of `thresholds.json` when the
workdir has one, else 0.5), 'val' (those of thresholds.json, which must exist) or a number used
for every class. `thresholds.json`, written by a run with a validation split:

    {"class_names": [...], "thresholds": {"<reported model>": [one per class], ...}}

with each class's threshold chosen to maximise F1 on the validation split
(`thresholds.f1_thresholds`).
Which reported model answers (COMIC has three) is the one the results table calls the method
('COMIC', the balanced model; 'COMIC+', whatever `comic_plus.report` makes it) unless `model=`
names another.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Sequence

import numpy as np

from comic_jax import atomic
from comic_jax.data import sources
from comic_jax.errors import UserError, require, warn
from comic_jax.inference import export, predictor, thresholds
from comic_jax.inference import restore as inference

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm')
NPZ_INPUT_KEYS = ('x', 'x_test', 'images')


def load(workdir: str, *, model: str | None = None, threshold='auto',
         batch_size: int | None = None) -> predictor.Predictor:
  """A Predictor for a run's workdir (latest checkpoint) or for a folder written by export."""
  if export.is_export(workdir):
    return export.load_export(workdir, model=model, threshold=threshold, batch_size=batch_size)
  import jax
  config = inference.load_config(workdir)
  names = inference.class_names_of(workdir, config)
  method, variables, _ = inference.restore_model(workdir, config, names)
  fn = jax.jit(inference.probabilities_fn(method, config))
  out = predictor.Predictor(
      lambda x: fn(variables, x), class_names=names, model_names=method.report_names,
      model=model, preprocessing=sources.preprocessing_of(config.data),
      saved_thresholds=thresholds.of_workdir(workdir, names), threshold=threshold,
      batch_size=batch_size or config.eval_batch_size)
  out.method, out.variables, out.config = method, variables, config
  return out


def use_compilation_cache(path: str) -> str | None:
  """The persistent compilation cache for a command that predicts with `path` (a workdir: its
  run's `runtime.use_compilation_cache`; an exported folder: the default data cache's), so that
  a second predict or audit loads the compiled model instead of compiling it again. Call before
  the first compilation."""
  from comic_jax.cli import runtime
  if export.is_export(path):
    return runtime.compilation_cache_in('')
  return runtime.use_compilation_cache(inference.load_config(path))


# ------------------------------------------------------------------------------- files

def _images_in(folder: str, recursive: bool) -> tuple[list[str], int]:
  """(image files under `folder` as sorted relative paths: its top level, or every sub-folder
  with `recursive`; images in sub-folders left out). Hidden files and folders are skipped."""
  is_image = lambda f: f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')
  found, skipped = [], 0
  for directory, subdirs, files in os.walk(folder):
    subdirs[:] = sorted(d for d in subdirs if not d.startswith('.'))
    images = [os.path.relpath(os.path.join(directory, f), folder) for f in files if is_image(f)]
    if recursive or directory == folder:
      found += images
    else:
      skipped += len(images)
  return sorted(found), skipped


def read_inputs(path: str, recursive: bool = False) -> tuple[list[str], object]:
  """(row names, inputs) of --input: an image folder (its image files, sorted; with `recursive`
  also those of its sub-folders, named by their relative paths), one image file, or an .npz
  whose `x` (or `x_test`, `images`) holds images (N, H, W, 3) or features (N, D). Images in the
  sub-folders of a folder read without `recursive` are counted in a warning, never read."""
  require(os.path.exists(path), f'input {path!r} does not exist')
  if os.path.isdir(path):
    files, skipped = _images_in(path, recursive)
    hint = f'; {skipped} image(s) in its sub-folders: add --recursive to read them' \
        if skipped else ''
    require(bool(files), f'input folder {path!r} holds no image files '
            f'({", ".join(IMAGE_EXTENSIONS)}){hint}')
    if skipped:
      warn(f'{skipped} image(s) in the sub-folders of {path!r} are not read: add --recursive '
           'to predict them too')
    return files, [os.path.join(path, f) for f in files]
  if path.lower().endswith('.npz'):
    try:
      with np.load(path, allow_pickle=False) as z:
        key = next((k for k in NPZ_INPUT_KEYS if k in z.files), None)
        require(key is not None, f'{path!r} has none of the arrays {", ".join(NPZ_INPUT_KEYS)} '
                f'(it has {", ".join(z.files)})')
        x = z[key]
    except (OSError, ValueError) as e:
      raise UserError(f'cannot read {path!r}: {e}') from None
    return [str(i) for i in range(len(x))], x
  return [os.path.basename(path)], [path]


def write_predictions(path: str, names: Sequence[str], probs: np.ndarray,
                      labels: list[list[str]], class_names: Sequence[str], model: str) -> None:
  """One row per image: its name, predicted labels and every class's score. `.json`: a list of
  {"image", "model", "labels", "scores": {class: p}}; anything else: CSV with the header
  image,labels,<class>... (labels joined by ';')."""
  if path.lower().endswith('.json'):
    text = json.dumps([{'image': n, 'model': model, 'labels': labels_,
                        'scores': {c: float(p) for c, p in zip(class_names, row)}}
                       for n, labels_, row in zip(names, labels, probs)], indent=1)
  else:
    buffer = io.StringIO(newline='')
    writer = csv.writer(buffer)
    writer.writerow(['image', 'labels', *class_names])
    for n, labels_, row in zip(names, labels, probs):
      writer.writerow([n, ';'.join(labels_), *(f'{p:.6f}' for p in row)])
    text = buffer.getvalue()
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_text(path, text)
  except OSError as e:
    raise UserError(f'cannot write {path!r}: {e.strerror or e}') from None


def predict_files(workdir: str, inputs: str, output: str, *, recursive: bool = False,
                  model: str | None = None, threshold='auto',
                  batch_size: int | None = None) -> tuple[int, str]:
  """What `comic-jax-predict --workdir --input --output` does: reads `inputs` (`read_inputs`),
  predicts them with `load(workdir, ...)` and writes `output` (`write_predictions`); returns
  (number of images, the model that predicted)."""
  names, x = read_inputs(inputs, recursive)
  loaded = load(workdir, model=model, threshold=threshold, batch_size=batch_size)
  probs = loaded.predict_all(x, names)[loaded.model]
  write_predictions(output, names, probs, loaded.labels_of(probs), loaded.class_names,
                    loaded.model)
  return len(names), loaded.model
