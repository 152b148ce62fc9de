"""model.onnx, written by the export: run in onnxruntime it gives the probabilities of the
jax.export artifact on the same arrays, with a symbolic batch size, for an image model
(frozen EfficientNet-Lite0 + heads) and a feature-vector model; without the `onnx` package the
export says in one line that it skipped it."""
import json
import os

import numpy as np
import pytest
from test_predictor import features_run  # noqa: F401 - the fixture

from comic_jax.data import sources
from comic_jax.inference import export

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')


def _onnx_probabilities(folder: str, x: np.ndarray) -> np.ndarray:
  session = ort.InferenceSession(os.path.join(folder, 'model.onnx'),
                                 providers=['CPUExecutionProvider'])
  (inp,) = session.get_inputs()
  assert inp.shape[0] == 'batch'
  return session.run(['probabilities'], {inp.name: x})[0]


def test_onnx_of_a_frozen_backbone_run_agrees_with_its_jax_export(frozen_run, tmp_path):
  workdir, config = frozen_run
  out = export.export_model(workdir, str(tmp_path / 'export'))
  with open(os.path.join(out, 'model.json')) as f:
    meta = json.load(f)
  assert meta['onnx'] == {'file': 'model.onnx', 'model': meta['models'][0], 'input': 'images',
                          'output': 'probabilities'}
  x = np.asarray(sources.load_dataset(config.data).x_test[:9])
  assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
  expected = export.load_export(out).predict(x)
  for rows in (x[:2], x):    # two batch sizes through the one graph
    got = _onnx_probabilities(out, rows)
    assert got.shape == (len(rows), len(meta['class_names'])) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected[:len(rows)], atol=1e-4, rtol=0)
  assert expected.std() > 1e-3     # not a constant


def test_onnx_of_a_feature_vector_run_agrees_with_its_jax_export(features_run, tmp_path):  # noqa: F811
  workdir, x = features_run
  out = export.export_model(workdir, str(tmp_path / 'export'))
  with open(os.path.join(out, 'model.json')) as f:
    assert json.load(f)['onnx']['input'] == 'features'
  np.testing.assert_allclose(_onnx_probabilities(out, x), export.load_export(out).predict(x),
                             atol=1e-4, rtol=0)


def test_export_without_the_onnx_package_skips_model_onnx_in_one_line(
    features_run, tmp_path, monkeypatch):  # noqa: F811
  workdir, x = features_run
  folder = tmp_path / 'export'
  folder.mkdir()
  (folder / 'model.onnx').write_bytes(b'an earlier export')
  monkeypatch.setattr(export.onnx_export, 'available', lambda: False)
  lines = []
  out = export.export_model(workdir, str(folder), log=lines.append)
  assert len(lines) == 1 and lines[0].startswith('model.onnx skipped') and 'pip install' in lines[0]
  assert not os.path.exists(os.path.join(out, 'model.onnx'))   # no stale graph left behind
  with open(os.path.join(out, 'model.json')) as f:
    assert json.load(f)['onnx'] is None
  assert export.load_export(out).predict(x).shape == (len(x), 5)


def test_operations_beyond_the_models_convert_to_the_same_numbers(tmp_path):
  """dot_general with batch dimensions (an Einsum), reductions, where, concatenate, clamp,
  dynamic_slice, cumulative-free elementwise maths: onnxruntime against JAX on random rows."""
  import jax
  import jax.numpy as jnp

  from comic_jax.inference import onnx as onnx_export

  def fn(v, x):   # x: (batch, 4, 3) float32
    y = jnp.einsum('bij,jk->bik', x, v['w'])                     # (batch, 4, 2)
    z = jnp.einsum('bij,bkj->bik', y, y)                          # batch dimensions
    z = jnp.where(z > 0.1, jnp.tanh(z), jnp.exp(-z ** 2))
    m = z.max(axis=2) + jnp.log1p(jnp.abs(z)).sum(axis=2)         # (batch, 4)
    m = jax.lax.dynamic_slice_in_dim(m, v['start'], 3, axis=1)   # (batch, 3)
    m = jnp.concatenate([jnp.clip(m, -1.0, 2.0), jax.lax.rsqrt(1 + m ** 2)], axis=1)
    return jax.nn.sigmoid(m)

  rng = np.random.default_rng(0)
  variables = {'w': rng.normal(size=(3, 2)).astype(np.float32), 'start': np.int32(1)}
  (batch,) = jax.export.symbolic_shape('batch')
  data = onnx_export.convert(fn, variables, jax.ShapeDtypeStruct((batch, 4, 3), np.float32),
                             'features')
  (tmp_path / 'm.onnx').write_bytes(data)
  session = ort.InferenceSession(str(tmp_path / 'm.onnx'), providers=['CPUExecutionProvider'])
  for n in (1, 5):
    x = rng.normal(size=(n, 4, 3)).astype(np.float32)
    got = session.run(['probabilities'], {'features': x})[0]
    np.testing.assert_allclose(got, np.asarray(fn(variables, x)), atol=1e-5, rtol=0)
