"""A trained model as a self-contained folder, usable without the config, the code of the
method or the training data:

    model.json          class names, reported models (the first answers by default), the
                        preprocessing (`sources.preprocessing_of`), validation thresholds or
                        null, the input signature, the platforms exported for and, for a
                        frozen-backbone run, its backbone weights (package, sha256)
    variables.safetensors  every variable the prediction reads (parameters, batch statistics,
                        the method's state such as COMIC's energies), named by their tree path
    model.jaxexport     `jax.export` of probabilities(variables, images) -> {model: (N, C)},
                        batch size symbolic, lowered for CPU, CUDA and TPU where possible
    model.onnx          with the optional `onnx` package: the reported model's probabilities
                        as an ONNX graph (`onnx_export`), input `images` uint8 (N, H, W, 3)
                        (`features` float32 (N, D) for a feature-vector run), output
                        `probabilities` (N, C); model.json's `onnx` names them (null: skipped)

    python -m comic_jax.predict --workdir=runs/demo --mode=export --output=runs/demo/export
    model = comic_jax.load('runs/demo/export')      # or export.load_export(...)

Loading needs only JAX, NumPy and Pillow (for image files): the exported function carries the
network, so a changed or missing model definition does not matter.
"""
from __future__ import annotations

import json
import os

import numpy as np
import safetensors.numpy

from comic_jax import atomic
from comic_jax.data import sources
from comic_jax.errors import UserError, require, warn
from comic_jax.inference import onnx as onnx_export
from comic_jax.inference import predictor, thresholds

FORMAT = 'comic-jax-export/1'
META, VARIABLES, FUNCTION = 'model.json', 'variables.safetensors', 'model.jaxexport'
_PLATFORMS = ('cpu', 'cuda', 'tpu')
_ONNX_INPUT = {'image': 'images', 'features': 'features'}   # model.onnx's input, by input kind


def is_export(path: str) -> bool:
  return os.path.isfile(os.path.join(path, META)) and os.path.isfile(os.path.join(path, FUNCTION))


# ------------------------------------------------------------------------------- trees

def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def flatten_variables(tree) -> tuple[dict[str, np.ndarray], list[str], object]:
  """({'a/b/c': array}, names in leaf order, treedef) of a pytree of arrays."""
  import jax
  with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
  names = ['/'.join(_key_name(k) for k in path) for path, _ in with_path]
  require(len(set(names)) == len(names), 'variable names collide when flattened')
  return {n: np.asarray(v) for n, (_, v) in zip(names, with_path)}, names, treedef


# ------------------------------------------------------------------------------- export

def _write_folder(out_dir: str, tensors: bytes, function: bytes, onnx_model: bytes | None,
                  meta: dict) -> None:
  """The export's files, model.json last (an earlier export's model.json goes first)."""
  try:
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, META)):
      os.remove(os.path.join(out_dir, META))
    atomic.write_bytes(os.path.join(out_dir, VARIABLES), tensors)
    atomic.write_bytes(os.path.join(out_dir, FUNCTION), function)
    onnx_path = os.path.join(out_dir, onnx_export.FILE)
    if onnx_model is not None:
      atomic.write_bytes(onnx_path, onnx_model)
    elif os.path.exists(onnx_path):   # an earlier export's: not this model's
      os.remove(onnx_path)
    atomic.write_json(os.path.join(out_dir, META), meta, indent=2)
  except OSError as e:
    raise UserError(f'cannot write the export to {out_dir!r}: {e.strerror or e}') from None


def export_model(workdir: str, out_dir: str, log=print) -> str:
  """Writes the folder described in the module docstring for the latest checkpoint of
  `workdir`; returns `out_dir`. A frozen-backbone run's export holds its backbone too: the
  function maps images to probabilities. Without the optional `onnx` package (or with an
  operation it cannot convert) model.onnx is skipped, and `log` says so in one line."""
  import jax
  from jax import export as jax_export

  from comic_jax.inference import restore as inference  # the model code: only to export

  config = inference.load_config(workdir)
  names = inference.class_names_of(workdir, config)
  method, variables, step = inference.restore_model(workdir, config, names)
  flat, order, treedef = flatten_variables(variables)
  probabilities = inference.probabilities_fn(method, config)

  def exported_fn(flat_vars: dict, images):
    tree = jax.tree_util.tree_unflatten(treedef, [flat_vars[n] for n in order])
    return probabilities(tree, images)

  prep = sources.preprocessing_of(config.data)
  (batch,) = jax_export.symbolic_shape('batch')
  if prep['input'] == 'features':
    image_spec = jax.ShapeDtypeStruct((batch, prep['dim']), np.float32)
  else:
    image_spec = jax.ShapeDtypeStruct((batch, prep['height'], prep['width'], 3), np.uint8)
  var_spec = {n: jax.ShapeDtypeStruct(v.shape, v.dtype) for n, v in flat.items()}
  try:      # one file for every accelerator; some ops lower only for some platforms
    exported = jax_export.export(jax.jit(exported_fn), platforms=_PLATFORMS)(var_spec, image_spec)
  except Exception as e:  # noqa: BLE001 (then the platform this runs on, said in a warning)
    exported = jax_export.export(jax.jit(exported_fn))(var_spec, image_spec)
    warn(f'the export could not be lowered for {", ".join(_PLATFORMS)} ({type(e).__name__}: '
         f'{str(e)[:200]}); it runs on {", ".join(exported.platforms)} only (model.json, '
         '"platforms")')
  reported = list(method.report_names)[0]   # the model that answers by default
  onnx_model = _onnx_model(exported_fn, flat, image_spec, reported, prep['input'], log)
  saved = thresholds.of_workdir(workdir, names)
  meta = {
      'format': FORMAT, 'method': config.method, 'step': step, 'class_names': list(names),
      'models': list(method.report_names), 'preprocessing': prep,
      'thresholds': None if saved is None else {k: v.tolist() for k, v in saved.items()},
      'input': {'shape': ['batch', *image_spec.shape[1:]], 'dtype': str(image_spec.dtype)},
      'platforms': list(exported.platforms), 'batch_size': int(config.eval_batch_size)}
  meta['onnx'] = None if onnx_model is None else {
      'file': onnx_export.FILE, 'model': reported, 'input': _ONNX_INPUT[prep['input']],
      'output': 'probabilities'}
  if config.model.feature_cache:
    meta['backbone'] = inference.read_backbone_record(workdir)
  # Everything serialised before any file is written; model.json goes last, so a folder whose
  # writing stopped half-way is not an export (`is_export`).
  tensors = safetensors.numpy.save({k: np.asarray(v, order='C') for k, v in flat.items()})
  _write_folder(out_dir, tensors, bytes(exported.serialize()), onnx_model, meta)
  return out_dir


def _onnx_model(exported_fn, flat: dict, input_spec, reported: str, kind: str, log):
  """model.onnx's bytes: `reported`'s probabilities of the inputs (`onnx_export`); None, with
  one line to `log`, when the `onnx` package is absent or an operation cannot be converted."""
  if not onnx_export.available():
    log("model.onnx skipped: the optional 'onnx' package is not installed "
        "(pip install 'comic-jax[onnx]' or pip install onnx, then export again)")
    return None
  try:
    return onnx_export.convert(lambda v, x: exported_fn(v, x)[reported], flat, input_spec,
                               _ONNX_INPUT[kind])
  except onnx_export.Unsupported as e:
    log(f'model.onnx skipped: the operation {e} has no ONNX conversion here')
    return None


def _read(path: str, what: str, read):
  """read(path), with anything a damaged or partial file raises turned into one line."""
  try:
    return read(path)
  except Exception as e:  # noqa: BLE001 - each reader raises its own kinds
    raise UserError(f'{path}: damaged or partial {what} ({" ".join(str(e).split())[:200]}); '
                    'export the model again') from None


def load_export(path: str, *, model: str | None = None, threshold='auto',
                batch_size: int | None = None):
  """A `predictor.Predictor` over an exported folder (no config, no model code)."""
  import jax
  from jax import export as jax_export

  require(is_export(path), f'{path!r} is not an exported model ({META} and {FUNCTION} missing)')

  def read_meta(p):
    with open(p) as f:
      meta = json.load(f)
    for key in ('class_names', 'models', 'preprocessing', 'thresholds', 'input'):
      meta[key]   # noqa: B018 - a KeyError names the missing field
    return meta

  meta = _read(os.path.join(path, META), 'model description', read_meta)
  require(meta.get('format') == FORMAT, f'{path!r}: unknown export format {meta.get("format")!r}')

  def read_function(p):
    with open(p, 'rb') as f:
      return jax_export.deserialize(bytearray(f.read()))

  exported = _read(os.path.join(path, FUNCTION), 'exported function', read_function)
  arrays = _read(os.path.join(path, VARIABLES), 'variables file', safetensors.numpy.load_file)
  expected = exported.in_avals[:len(arrays)]
  require(len(exported.in_avals) == len(arrays) + 1 and all(
      tuple(a.shape) == tuple(arrays[n].shape) for n, a in
      zip(sorted(arrays), expected)), f'{os.path.join(path, VARIABLES)} does not hold the '
      'variables the exported function takes; export the model again')
  variables = {n: jax.device_put(v) for n, v in arrays.items()}
  saved = meta['thresholds']
  saved = None if saved is None else {k: np.asarray(v) for k, v in saved.items()}
  call = jax.jit(exported.call)
  out = predictor.Predictor(lambda x: call(variables, x), class_names=meta['class_names'],
                            model_names=meta['models'], model=model,
                            preprocessing=meta['preprocessing'], saved_thresholds=saved,
                            threshold=threshold,
                            batch_size=batch_size or int(meta.get('batch_size') or 64))
  out.meta = meta
  return out
