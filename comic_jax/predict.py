"""Use a trained run: class probabilities and labels for new images, as an API and a command.

    python -m comic_jax.predict --workdir=runs/demo --input=photos/ --output=predictions.csv
    python -m comic_jax.predict --workdir=runs/demo --input=arrays.npz --output=predictions.json
    python -m comic_jax.predict --workdir=runs/demo --mode=export --output=runs/demo/export

    model = comic_jax.load('runs/demo')      # a workdir or an exported folder
    probs = model.predict(images)            # (N, C) probabilities of the reported model
    names = model.labels(images)             # per image, the class names at or above threshold

`images` are file paths, encoded bytes, uint8 arrays of any size, or an (N, H, W, 3) uint8
array; each goes through the run's evaluation transform (`preprocessing_of`). Feature-vector
runs (npz with `x` of shape (N, D)) take an (N, D) array.

The model is rebuilt from the workdir alone: the config from `config.json` (not the config
file), class names from `per_class_ap.json`, the state restored from the latest checkpoint into
the structure `jax.eval_shape` of the method's init gives. The training data set is not built,
except for ML-GCN, whose label graph is computed from the training labels.

Thresholds (`threshold=`): 'auto' (the validation thresholds of `thresholds.json` when the
workdir has one, else 0.5), 'val' (those of thresholds.json, which must exist) or a number used
for every class. `thresholds.json`, written by a run with a validation split:

    {"class_names": [...], "thresholds": {"<reported model>": [one per class], ...}}

with each class's threshold chosen to maximise F1 on the validation split (`f1_thresholds`).
Which reported model answers (COMIC has three) is the run's first reported one ('COMIC', the
balanced model) unless `model=` names another.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Callable, Sequence

import numpy as np

from comic_jax.data import images as image_ops
from comic_jax.errors import UserError, require

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm')
THRESHOLDS_FILE = 'thresholds.json'
NPZ_INPUT_KEYS = ('x', 'x_test', 'images')


# ------------------------------------------------------------------------------- thresholds

def f1_thresholds(probs: np.ndarray, labels: np.ndarray, default: float = 0.5) -> np.ndarray:
  """Per class, the threshold t maximising the F1 of `p >= t` on a labelled split.

  Candidates are the class's own scores (any t between two consecutive scores predicts the
  same set); among equal F1 the highest t wins (fewest positives predicted). A class without a
  positive in the split has no F1 to maximise and keeps `default`.
  """
  probs, labels = np.asarray(probs), np.asarray(labels) > 0
  out = np.full(probs.shape[1], default, np.float64)
  for c in range(probs.shape[1]):
    num_pos = int(labels[:, c].sum())
    if num_pos == 0:
      continue
    order = np.argsort(-probs[:, c], kind='stable')
    scores, hits = probs[order, c], labels[order, c]
    true_pos = np.cumsum(hits)
    predicted = np.arange(1, len(scores) + 1)
    # t = scores[i] predicts every score >= t: only the last index of a run of ties is a cut.
    is_cut = np.r_[scores[1:] != scores[:-1], True]
    f1 = np.where(is_cut, 2 * true_pos / (predicted + num_pos), -1.0)
    out[c] = scores[int(np.argmax(f1))]
  return out


def write_thresholds(workdir: str, class_names: Sequence[str],
                     thresholds: dict[str, np.ndarray]) -> str:
  """Writes `thresholds.json` ({"class_names", "thresholds": {model: [...]}}) in `workdir`."""
  path = os.path.join(workdir, THRESHOLDS_FILE)
  with open(path, 'w') as f:
    json.dump({'class_names': list(class_names),
               'thresholds': {k: [float(t) for t in v] for k, v in thresholds.items()}},
              f, indent=2)
  return path


def read_thresholds(path: str, class_names: Sequence[str]) -> dict[str, np.ndarray]:
  """{model: (C,) thresholds} of a thresholds.json, checked against the run's classes."""
  try:
    with open(path) as f:
      saved = json.load(f)
    names, per_model = saved['class_names'], saved['thresholds']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f'cannot read thresholds {path}: {e}') from None
  require(list(names) == list(class_names),
          f'{path}: its class names differ from the run\'s ({len(names)} vs {len(class_names)})')
  out = {}
  for model, values in per_model.items():
    require(len(values) == len(class_names),
            f'{path}: {model!r} has {len(values)} thresholds for {len(class_names)} classes')
    out[model] = np.asarray(values, np.float64)
  return out


# ------------------------------------------------------------------------------- preprocessing

def preprocessing_of(config) -> dict:
  """How a new image becomes a model input: the run's evaluation transform, as data.

  {'input': 'image', 'resize': R, 'height': H, 'width': W}: the shorter side resized to R, then
  the central H x W (real images: R = data.eval_resize, H = W = data.image_size; PLT-Synth and
  npz images: the size the model was trained at). {'input': 'features', 'dim': D}: vectors.
  """
  dc = config.data
  if dc.name == 'shards':   # the shards' manifest says what their inputs are
    from comic_jax.data import shards
    return shards.preprocessing_of(dc)
  if dc.name == 'npz':
    shape = _npz_row_shape(dc.path, 'x_test')
    if len(shape) == 1:
      return {'input': 'features', 'dim': int(shape[0])}
    return {'input': 'image', 'resize': int(min(shape[:2])), 'height': int(shape[0]),
            'width': int(shape[1])}
  resize = dc.eval_resize if dc.name in ('voc', 'coco', 'folder') else dc.image_size
  return {'input': 'image', 'resize': int(resize), 'height': int(dc.image_size),
          'width': int(dc.image_size)}


def _npz_row_shape(path: str, key: str) -> tuple[int, ...]:
  """Shape of one row of `key` in an .npz, read from the array header only."""
  import zipfile
  require(bool(path) and os.path.isfile(path), f'the run\'s data file {path!r} is needed to know '
          'its input shape and does not exist (an exported model does not need it)')
  with zipfile.ZipFile(path) as z, z.open(key + '.npy') as f:
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, _ = read_header(f)
  return tuple(shape[1:])


def transform(image, preprocessing: dict, name: str | None = None) -> np.ndarray:
  """One image (path, bytes or uint8 array, any size) -> the model's uint8 (H, W, 3) input."""
  img = image_ops.decode_image(image, name)
  h, w, resize = preprocessing['height'], preprocessing['width'], preprocessing['resize']
  if h == w:
    return image_ops.eval_transform(img, resize, h)
  resized = image_ops.resize_shorter_side(img, resize)
  top, left = (resized.shape[0] - h) // 2, (resized.shape[1] - w) // 2
  require(top >= 0 and left >= 0, f'image {name or ""} is too small for the {h}x{w} input')
  return np.ascontiguousarray(resized[top:top + h, left:left + w])


# ------------------------------------------------------------------------------- the predictor

class Predictor:
  """Probabilities and labels of a trained model; built by `load` (a workdir) or
  `export.load_export` (an exported folder), which supply `probabilities`."""

  def __init__(self, probabilities: Callable[[np.ndarray], dict], *, class_names,
               model_names, model: str | None, preprocessing: dict,
               saved_thresholds: dict | None, threshold='auto', batch_size: int = 256):
    self._probabilities = probabilities
    self.class_names = tuple(class_names)
    self.model_names = tuple(model_names)
    require(model is None or model in self.model_names,
            f'model {model!r} is not one of this run\'s: {", ".join(self.model_names)}')
    self.model = model or self.model_names[0]
    self.preprocessing = dict(preprocessing)
    self.saved_thresholds = saved_thresholds
    self.threshold = threshold
    self.batch_size = batch_size
    self.thresholds(self.model)  # a bad threshold choice fails here, not at the first image

  # -------------------------------------------------------------- inputs
  def prepare(self, inputs, names: Sequence[str] | None = None) -> np.ndarray:
    """The model inputs of `inputs` (see the module docstring)."""
    prep = self.preprocessing
    if prep['input'] == 'features':
      x = np.asarray(inputs, np.float32)
      require(x.ndim == 2 and x.shape[1] == prep['dim'],
              f'this model takes feature vectors (N, {prep["dim"]}), got shape {x.shape}')
      return x
    if isinstance(inputs, np.ndarray):
      require(inputs.ndim == 4, f'images: pass a list of images or an (N, H, W, 3) array, got '
              f'shape {inputs.shape}')
    require(not isinstance(inputs, (str, bytes, os.PathLike)),
            'images: pass a list of images (a single path or image goes in a list)')
    items = list(inputs)
    names = names or [None] * len(items)
    if not items:
      return np.zeros((0, prep['height'], prep['width'], 3), np.uint8)
    return np.stack([transform(item, prep, name) for item, name in zip(items, names)])

  # -------------------------------------------------------------- outputs
  def predict_all(self, inputs, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{reported model: (N, C) probabilities}, in batches of `batch_size`."""
    if not isinstance(inputs, np.ndarray) and self.preprocessing['input'] == 'image':
      inputs = list(inputs)
    chunks: dict[str, list] = {}
    n = len(inputs)
    for start in range(0, n, self.batch_size):
      part = inputs[start:start + self.batch_size]
      x = self.prepare(part, names[start:start + self.batch_size] if names else None)
      # A few fixed batch shapes (powers of two up to batch_size), so few compilations.
      size = min(self.batch_size, 1 << max(len(x) - 1, 0).bit_length())
      padded = np.concatenate([x, np.repeat(x[:1], size - len(x), 0)]) if size > len(x) else x
      for key, value in self._probabilities(padded).items():
        chunks.setdefault(key, []).append(np.asarray(value, np.float32)[:len(x)])
    if not chunks:
      return {k: np.zeros((0, len(self.class_names)), np.float32) for k in self.model_names}
    return {k: np.concatenate(v) for k, v in chunks.items()}

  def predict(self, inputs, model: str | None = None) -> np.ndarray:
    """(N, C) probabilities of `model` (default: the run's reported model)."""
    model = self._check_model(model)
    return self.predict_all(inputs)[model]

  def thresholds(self, model: str | None = None, threshold=None) -> np.ndarray:
    """(C,) per-class thresholds of `model` for `threshold` (default: the one given to load)."""
    model = self._check_model(model)
    threshold = self.threshold if threshold is None else threshold
    c = len(self.class_names)
    if isinstance(threshold, str) and threshold in ('auto', 'val'):
      if self.saved_thresholds and model in self.saved_thresholds:
        return self.saved_thresholds[model]
      require(threshold == 'auto', f'no validation thresholds for {model!r}: the run has no '
              f'{THRESHOLDS_FILE} (use a fixed threshold such as 0.5)')
      return np.full(c, 0.5)
    try:
      value = float(threshold)
    except (TypeError, ValueError):
      raise UserError(f"threshold={threshold!r} is not 'auto', 'val' or a number") from None
    require(0.0 <= value <= 1.0, f'threshold={value} must be in [0, 1]')
    return np.full(c, value)

  def labels_of(self, probs: np.ndarray, model: str | None = None, threshold=None
                ) -> list[list[str]]:
    """Class names with probability >= threshold, per row of `probs`."""
    t = self.thresholds(model, threshold)
    return [[self.class_names[j] for j in np.flatnonzero(row >= t)] for row in probs]

  def labels(self, inputs, model: str | None = None, threshold=None) -> list[list[str]]:
    """Per image, the names of the classes predicted present."""
    return self.labels_of(self.predict(inputs, model), model, threshold)

  def fit_thresholds(self, inputs, labels, workdir: str | None = None) -> dict[str, np.ndarray]:
    """Per-class F1-maximising thresholds of every reported model on labelled images (a
    validation set, not the test set), used from then on by threshold='auto' / 'val'; written
    to `<workdir>/thresholds.json` when `workdir` is given."""
    labels = np.asarray(labels)
    require(labels.shape == (len(inputs), len(self.class_names)),
            f'labels: expected shape ({len(inputs)}, {len(self.class_names)}), got {labels.shape}')
    probs = self.predict_all(inputs)
    self.saved_thresholds = {k: f1_thresholds(v, labels) for k, v in probs.items()}
    if workdir:
      write_thresholds(workdir, self.class_names, self.saved_thresholds)
    return self.saved_thresholds

  def _check_model(self, model):
    model = model or self.model
    require(model in self.model_names,
            f'model {model!r} is not one of this run\'s: {", ".join(self.model_names)}')
    return model


# ------------------------------------------------------------------------------- from a workdir

def load_config(workdir: str):
  """The run's config, rebuilt from `<workdir>/config.json`."""
  import ml_collections
  path = os.path.join(workdir, 'config.json')
  require(os.path.isfile(path), f'{workdir!r} is not a run directory (no config.json)')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def class_names_of(workdir: str, config) -> tuple[str, ...]:
  """From per_class_ap.json (written when training ends); else the data set is loaded."""
  path = os.path.join(workdir, 'per_class_ap.json')
  if os.path.isfile(path):
    with open(path) as f:
      return tuple(json.load(f)['class_names'])
  from comic_jax.data import sources
  return tuple(sources.load_dataset(config.data).class_names)


def restore_model(workdir: str, config, class_names):
  """(method, {'params', 'batch_stats', 'method_state'} on one device, step) of the latest
  checkpoint, restored into the structure of the method's init (no training data needed)."""
  import jax
  import orbax.checkpoint as ocp
  from comic_jax import optim, train
  from comic_jax.methods import registry

  require(not config.model.feature_cache, 'predicting with a frozen-backbone run '
          '(model.feature_cache=True) is not supported: its checkpoint holds only the heads')
  num_classes = len(class_names)
  if registry.get(config.method).model_uses_labels:   # ML-GCN's label graph
    from comic_jax.data import sources
    observed = np.asarray(sources.load_dataset(config.data).y_train)
  else:                           # only the losses use the labels, and no loss runs here
    observed = np.ones((1, num_classes), np.int8)
  method = registry.create_method(config, observed, 1, tuple(class_names))
  prep = preprocessing_of(config)
  if prep['input'] == 'features':
    example = np.zeros((1, prep['dim']), np.float32)
  else:
    example = np.zeros((1, prep['height'], prep['width'], 3), np.uint8)
  tx = optim.create_optimizer(config, 1)

  def init_state(rng):
    params, batch_stats, method_state = method.init(
        rng, {name: {'image': example} for name in method.streams})
    return train.TrainState.create(apply_fn=None, params=params, tx=tx, batch_stats=batch_stats,
                                   method_state=method_state)

  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                          jax.eval_shape(init_state, jax.random.key(config.seed)))
  path = os.path.join(os.path.abspath(workdir), 'checkpoints')
  with ocp.CheckpointManager(path) as manager:
    step = manager.latest_step() if os.path.isdir(path) else None
    require(step is not None, f'workdir {workdir!r} has no checkpoint; train first')
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  variables = {'params': state.params, 'batch_stats': state.batch_stats,
               'method_state': state.method_state}
  return method, variables, int(step)


def probabilities_fn(method) -> Callable:
  """probabilities(variables, images) -> {reported model: sigmoid of its logits}: pure, so it
  can be jit-compiled or exported with jax.export."""
  import jax
  import jax.numpy as jnp

  def probabilities(variables, images):
    logits = method.predict(variables['params'], variables['batch_stats'],
                            variables['method_state'], images)
    return {k: jax.nn.sigmoid(v).astype(jnp.float32) for k, v in logits.items()}
  return probabilities


def load(workdir: str, *, model: str | None = None, threshold='auto',
         batch_size: int | None = None) -> Predictor:
  """A Predictor for a run's workdir (latest checkpoint) or for a folder written by export."""
  from comic_jax import export
  if export.is_export(workdir):
    return export.load_export(workdir, model=model, threshold=threshold,
                              batch_size=batch_size or 256)
  import jax
  config = load_config(workdir)
  names = class_names_of(workdir, config)
  method, variables, _ = restore_model(workdir, config, names)
  fn = jax.jit(probabilities_fn(method))
  path = os.path.join(workdir, THRESHOLDS_FILE)
  saved = read_thresholds(path, names) if os.path.isfile(path) else None
  predictor = Predictor(lambda x: fn(variables, x), class_names=names,
                        model_names=method.report_names, model=model,
                        preprocessing=preprocessing_of(config), saved_thresholds=saved,
                        threshold=threshold, batch_size=batch_size or config.eval_batch_size)
  predictor.method, predictor.variables, predictor.config = method, variables, config
  return predictor


# ------------------------------------------------------------------------------- files

def read_inputs(path: str) -> tuple[list[str], object]:
  """(row names, inputs) of --input: an image folder (its image files, sorted), one image file,
  or an .npz whose `x` (or `x_test`, `images`) holds images (N, H, W, 3) or features (N, D)."""
  require(os.path.exists(path), f'input {path!r} does not exist')
  if os.path.isdir(path):
    files = sorted(f for f in os.listdir(path)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
    require(bool(files), f'input folder {path!r} holds no image files '
            f'({", ".join(IMAGE_EXTENSIONS)})')
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
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
    with open(path, 'w', newline='') as f:
      if path.lower().endswith('.json'):
        json.dump([{'image': n, 'model': model, 'labels': l,
                    'scores': {c: float(p) for c, p in zip(class_names, row)}}
                   for n, l, row in zip(names, labels, probs)], f, indent=1)
      else:
        writer = csv.writer(f)
        writer.writerow(['image', 'labels', *class_names])
        for n, l, row in zip(names, labels, probs):
          writer.writerow([n, ';'.join(l), *(f'{p:.6f}' for p in row)])
  except OSError as e:
    raise UserError(f'cannot write {path!r}: {e.strerror or e}') from None


# ------------------------------------------------------------------------------- command line

def _define_flags():
  from absl import flags
  flags.DEFINE_string('workdir', None, 'A run directory (or an exported folder to predict with).')
  flags.DEFINE_enum('mode', 'predict', ['predict', 'export'], 'predict: scores and labels of '
                    '--input; export: write a self-contained model folder to --output.')
  flags.DEFINE_string('input', None, 'Image folder, image file or .npz (x: images or features).')
  flags.DEFINE_string('output', None, 'predict: .csv or .json file; export: folder '
                      '(default <workdir>/export).')
  flags.DEFINE_string('model', None, 'Reported model to use (default: the run\'s first, e.g. '
                      'COMIC; also "Head Model", "Tail Model").')
  flags.DEFINE_string('threshold', 'auto', "'auto' (validation thresholds if the run has "
                      "thresholds.json, else 0.5), 'val', or a number for every class.")
  flags.DEFINE_integer('batch_size', 0, 'Images per batch (0: the run\'s eval_batch_size).')
  flags.mark_flags_as_required(['workdir'])


def main(argv):
  from absl import app, flags, logging
  from comic_jax import cli
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  FLAGS = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  try:
    if FLAGS.mode == 'export':
      from comic_jax import export
      out = export.export_model(FLAGS.workdir, FLAGS.output or
                                os.path.join(FLAGS.workdir, 'export'))
      print(f'exported the model to {out}')
      return
    require(bool(FLAGS.input), '--input is required (an image folder, an image or an .npz)')
    require(bool(FLAGS.output), '--output is required (a .csv or .json file)')
    names, inputs = read_inputs(FLAGS.input)
    model = load(FLAGS.workdir, model=FLAGS.model, threshold=FLAGS.threshold,
                 batch_size=FLAGS.batch_size or None)
    probs = model.predict_all(inputs, names)[model.model]
    write_predictions(FLAGS.output, names, probs, model.labels_of(probs), model.class_names,
                      model.model)
    print(f'{len(names)} images -> {FLAGS.output} ({model.model})')
  except UserError as e:
    cli.fail(e)


def _parse_flags(argv):
  """absl's flag parsing with one-line errors (there is no config file to load here)."""
  from absl import flags
  from comic_jax import cli
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    cli.fail(e)


def run_cli():
  from absl import app
  _define_flags()
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run_cli()
