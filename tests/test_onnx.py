"""model.onnx, written by the export: run in onnxruntime it gives the probabilities of the
jax.export artifact on the same arrays, with a symbolic batch size, for an image model
(frozen EfficientNet-Lite0 + heads) and a feature-vector model; without the `onnx` package the
export says in one line that it skipped it."""
import json
import os

import numpy as np
import pytest
from test_predictor import features_run  # noqa: F401 - the fixture

from comic_jax import export
from comic_jax.data import sources

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
