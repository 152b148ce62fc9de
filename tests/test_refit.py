"""config.refit: choose on the carved validation split, then train on every training image."""
import json
import os

import numpy as np
import pytest
from test_comic_plus import _config, _npz

from comic_jax.training import train


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def _steps(workdir):
  return [json.loads(line)['step'] for line in open(os.path.join(workdir, 'metrics.jsonl'))]


def test_refit_chooses_on_the_carve_and_trains_on_every_image(tmp_path):
  _npz(tmp_path / 'd.npz')                 # 120 training images, 30 of them carved (0.25)
  config = _config(tmp_path, num_epochs=1, refit=True, **{'comic_plus.report': 'auto',
                                                          'comic_plus.report_per_group': False})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  choice = os.path.join(workdir, 'choice')
  # The carve run: 90 images, 5 steps of 16; the final run: all 120, 7 steps.
  assert _steps(choice) == [5] and _steps(workdir) == [7]
  assert _read(choice, 'config.json')['data']['val_fraction'] == 0.25
  assert _read(workdir, 'config.json')['data']['val_fraction'] == 0.0
  # The final run reports the candidate chosen on the carve; its validation results and
  # thresholds are the carve run's.
  carve_val = _read(choice, 'val_results.json')
  picked = carve_val['report_choice']['COMIC+']
  results = _read(workdir, 'results.json')
  assert results['COMIC+'] == results[picked]
  assert _read(workdir, 'val_results.json') == carve_val
  assert _read(workdir, 'thresholds.json') == _read(choice, 'thresholds.json')
  # Trained on other images, the final model is another model.
  assert results[picked]['total'] != pytest.approx(_read(choice, 'results.json')[picked]['total'],
                                                   abs=1e-9)


def test_refit_without_a_carve_is_one_run(tmp_path):
  _npz(tmp_path / 'd.npz')
  config = _config(tmp_path, num_epochs=1, refit=True, method='bce',
                   **{'data.val_fraction': 0.0})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'choice')) and _steps(workdir) == [7]
  assert np.isfinite(_read(workdir, 'results.json')['BCE']['total'])
