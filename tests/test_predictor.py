"""Inference refuses bad input: NaN or inf rows, wrong feature or image shapes, a damaged or
partial export or checkpoint. Each ends in one `error:` line naming the file or row, exit
status 2, and no output file."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from comic_jax.errors import UserError
from comic_jax.inference import export
from comic_jax.training import train
from conftest import assert_one_line, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 16


@pytest.fixture(scope='module')
def features_run(tmp_path_factory):
  """(workdir, test features) of a BCE run on an .npz of (N, 16) feature vectors (the MLP)."""
  folder = tmp_path_factory.mktemp('features_run')
  rng = np.random.default_rng(0)
  y = (rng.random((120, 5)) < 0.3).astype(np.int8)
  x = (rng.normal(size=(120, DIM)) + y @ rng.normal(size=(5, DIM))).astype(np.float32)
  np.savez(folder / 'd.npz', x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
  config = tiny_config(**{'data.name': 'npz', 'data.path': str(folder / 'd.npz'),
                          'data.longtail': 'as_is', 'model.backbone': 'mlp',
                          'augment.kind': 'none', 'batch_size': 16, 'eval_batch_size': 16,
                          'num_epochs': 1})
  train.train_and_evaluate(config, str(folder / 'run'))
  return str(folder / 'run'), x[80:]


def _predict(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'comic_jax.predict', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _refused(result, out, *fragments):
  """Exit 2, one `error:` line holding every fragment, no traceback, no output file."""
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith('error: ') and 'Traceback' not in result.stderr, result.stderr
  for fragment in fragments:
    assert fragment in lines[-1], (fragment, lines[-1])
  assert not os.path.exists(out)


def _refused_in_process(workdir, path, *fragments):
  """The same refusal from `predict.predict_files`, the body of comic_jax/cli/predict.py: a
  UserError of one line holding every fragment. Each refusal below runs the command itself at
  least once; its other inputs are checked in this process, without starting JAX again."""
  from comic_jax.inference import predict
  out = str(path) + '.predictions.csv'
  with pytest.raises(UserError) as excinfo:
    predict.predict_files(workdir, str(path), out)
  assert_one_line(excinfo, *fragments)
  assert not os.path.exists(out)


def test_feature_rows_with_nan_or_inf_and_wrong_shapes_are_refused(features_run, tmp_path):
  workdir, x = features_run
  out = str(tmp_path / 'p.csv')
  np.savez(tmp_path / 'good.npz', x=x)
  assert _predict(f'--workdir={workdir}', f'--input={tmp_path / "good.npz"}',
                  f'--output={out}').returncode == 0
  os.remove(out)
  for row, value in ((3, np.nan), (7, np.inf), (0, -np.inf)):
    bad = x.copy()
    bad[row, 5] = value
    np.savez(tmp_path / 'bad.npz', x=bad)
    if row == 3:
      _refused(_predict(f'--workdir={workdir}', f'--input={tmp_path / "bad.npz"}',
                        f'--output={out}'), out, f'feature row {row} holds NaN or inf')
    else:
      _refused_in_process(workdir, tmp_path / 'bad.npz', f'feature row {row} holds NaN or inf')
  np.savez(tmp_path / 'short.npz', x=x[:, :DIM - 1])
  _refused_in_process(workdir, tmp_path / 'short.npz', f'(N, {DIM})', f'(40, {DIM - 1})')


def test_a_wrong_image_array_shape_is_refused(bce_run, tmp_path):
  workdir, _ = bce_run
  out = str(tmp_path / 'p.csv')
  np.savez(tmp_path / 'flat.npz', x=np.zeros((4, 32, 32), np.uint8))
  _refused(_predict(f'--workdir={workdir}', f'--input={tmp_path / "flat.npz"}',
                    f'--output={out}'), out, '(N, H, W, 3)', '(4, 32, 32)')
  np.savez(tmp_path / 'float.npz', x=np.full((4, 32, 32, 3), np.nan, np.float32))
  _refused_in_process(workdir, tmp_path / 'float.npz', 'image 0', 'expected uint8')


@pytest.mark.parametrize('damage', ['truncate_variables', 'garble_function', 'garble_meta',
                                    'other_variables'])
def test_a_damaged_export_is_refused(features_run, tmp_path, damage):
  workdir, x = features_run
  folder = export.export_model(workdir, str(tmp_path / 'export'))
  name = {'truncate_variables': export.VARIABLES, 'garble_function': export.FUNCTION,
          'garble_meta': export.META, 'other_variables': export.VARIABLES}[damage]
  path = os.path.join(folder, name)
  data = open(path, 'rb').read()
  if damage == 'truncate_variables':
    data = data[:len(data) // 2]
  elif damage == 'other_variables':   # a valid file with one tensor too few
    import safetensors.numpy
    arrays = safetensors.numpy.load_file(path)
    arrays.pop(sorted(arrays)[0])
    data = safetensors.numpy.save(arrays)
  else:
    data = data[:40] + b'\x00garbage' + data[60:]
  with open(path, 'wb') as f:
    f.write(data)
  np.savez(tmp_path / 'x.npz', x=x)
  out = str(tmp_path / 'p.csv')
  if damage == 'truncate_variables':
    _refused(_predict(f'--workdir={folder}', f'--input={tmp_path / "x.npz"}',
                      f'--output={out}'), out, name)
  else:
    _refused_in_process(folder, tmp_path / 'x.npz', name)


def test_a_workdir_whose_checkpoints_are_all_damaged_is_refused(features_run, tmp_path):
  workdir, x = features_run
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  for folder, _, files in os.walk(os.path.join(copy, 'checkpoints')):
    for name in files:
      with open(os.path.join(folder, name), 'r+b') as f:
        f.truncate(max(os.path.getsize(f.name) // 3, 1))
  np.savez(tmp_path / 'x.npz', x=x)
  out = str(tmp_path / 'p.csv')
  result = _predict(f'--workdir={copy}', f'--input={tmp_path / "x.npz"}', f'--output={out}')
  _refused(result, out, 'no checkpoint in', 'can be read')
  assert 'is unreadable' in result.stderr       # the step tried is named in a warning
  result = _predict(f'--workdir={copy}', '--mode=export', f'--output={tmp_path / "export"}')
  _refused(result, str(tmp_path / 'export'), 'can be read')
