import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from comic_jax.training import benchmark
from conftest import ROOT

# Narrow network, 300 test and validation images: the benchmark's plumbing, not its numbers.
TINY = ('--config.model.small_cnn_widths=(8,16,16,16)', '--config.model.projection_dim=32',
        '--config.data.synthetic.num_test=300')


def _bench(workdir, *extra):
  return subprocess.run(
      [sys.executable, '-m', 'comic_jax.benchmark', '--config=configs/synthetic.py',
       f'--workdir={workdir}', '--config.num_epochs=1', *TINY, *extra],
      cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_tiny_benchmark_writes_the_table_and_pictures(tmp_path, bce_run):
  workdir = tmp_path / 'bench'
  # BCE's run is the shared finished one (a run with results.json is not trained again): only
  # Focal trains here.
  shutil.copytree(bce_run[0], workdir / 'bce' / 'seed0')
  out = _bench(workdir, '--methods=bce,focal', '--seeds=1')
  assert out.returncode == 0, out.stderr[-2000:]
  assert '2 runs, 1 already finished, 1 to train' in out.stdout
  with open(workdir / 'bce' / 'seed0' / 'results.json') as f:
    bce = json.load(f)['BCE']
  with open(workdir / 'focal' / 'seed0' / 'results.json') as f:
    focal = json.load(f)['Focal']
  table = (workdir / 'table.md').read_text().splitlines()
  assert table[0] == '| category | method | end-to-end | many | medium | few | total | seeds |'
  assert table[2] == (f'| MLC | BCE | ✓ | {bce["many"]:.2f} ± 0.00 | {bce["medium"]:.2f} ± 0.00 | '
                      f'{bce["few"]:.2f} ± 0.00 | {bce["total"]:.2f} ± 0.00 | 1 |')
  assert table[3].startswith(f'| MLC | Focal | ✓ | {focal["many"]:.2f}')
  with open(workdir / 'table.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['method'] for r in rows] == ['BCE', 'Focal']
  assert float(rows[0]['total_mean']) == pytest.approx(bce['total'], abs=1e-4)
  for picture in ('per_class_ap.png', 'class_distribution.png'):
    assert (workdir / picture).stat().st_size > 10_000
  assert 'Focal' in (workdir / 'focal' / 'seed0' / 'log.txt').read_text()   # the run's own output
  with open(workdir / 'environment.json') as f:    # what the published tables cite
    env = json.load(f)
  assert env['command'].startswith('python -m comic_jax.benchmark --config=configs/synthetic.py')
  assert (env['runs'], env['runs_trained'], env['backend']) == (2, 1, 'cpu')
  assert env['wall_time_s'] > 0 and env['cpu_cores'] == os.cpu_count()
  # A second call finds both runs finished and trains nothing.
  again = _bench(workdir, '--methods=bce,focal', '--seeds=1')
  assert '2 runs, 2 already finished, 0 to train' in again.stdout
  bad = _bench(workdir, '--methods=bce,nope', '--seeds=1')
  assert bad.returncode == 2 and 'unknown method(s) nope' in bad.stderr


def test_mean_and_sample_std():
  assert benchmark.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
  assert benchmark.mean_std([4.0]) == (4.0, 0.0)
  assert benchmark.mean_std([None, 2.0, 4.0]) == pytest.approx((3.0, np.sqrt(2.0)))


def test_presets_define_the_paper_studies():
  exps = benchmark.experiments('modules', ('comic',))
  assert [e.label for e in exps] == ['COMIC', '-RLC', '-MFM', '-HTB']
  assert dict(exps[1].overrides) == {'comic.lambda_c': 0.0}
  ratios = benchmark.experiments('missing_ratio', ('comic',))
  assert [dict(e.overrides)['data.missing_ratio'] for e in ratios] == [0.0, 0.3, 0.4, 0.5]
  main = benchmark.experiments('main', ('lws', 'comic'))
  assert [e.method for e in main] == ['bce', 'comic', 'lws']     # LWS after the BCE it reuses


def test_a_study_row_that_repeats_the_recipe_is_left_out():
  from configs import synthetic, synthetic_pretrained
  rows = lambda base: [e.label for e in benchmark.experiments('modules', ('comic_plus',), base)]
  every = ['COMIC+', 'product L_htb (the paper)', 'distillation L_htb',
           'per-class distillation L_htb', "L_htb weight 1 (the paper's)",
           "-kappa (paper's kappa)", "MFM teachers (the paper's)", "cosine teachers (the paper's)",
           "teachers' energy term (the paper's)", 'report the fusion',
           'report chosen on validation, one for all classes',
           'report chosen on validation per class group', 'report z_b', '-RLC', '-MFM']
  assert rows(None) == every
  # Both recipes report the model chosen on validation per class group; from scratch COMIC+
  # distils class by class, the frozen recipe reads L_htb as the product: each leaves out the
  # rows equal to its own values.
  per_group = 'report chosen on validation per class group'
  assert rows(synthetic.get_config()) == [
      r for r in every if r not in ('per-class distillation L_htb', per_group)]
  assert rows(synthetic_pretrained.get_config()) == [
      r for r in every if r not in ('product L_htb (the paper)', per_group,
                                    "L_htb weight 1 (the paper's)", "MFM teachers (the paper's)",
                                    "cosine teachers (the paper's)",
                                    "teachers' energy term (the paper's)")]


def test_a_study_of_two_methods_names_each_row_with_its_method(tmp_path):
  """COMIC's and COMIC+'s -RLC rows of one `--preset=modules` table are told apart; the cells
  are the mean and sample std of the seeds' results.json."""
  exps = [e for e in benchmark.experiments('modules', ('comic', 'comic_plus'))
          if e.label in ('COMIC', '-RLC', 'COMIC+')]
  totals = {'comic': (20.0, 22.0), 'comic_no_rlc': (19.0, 19.5), 'comic_plus': (30.0, 31.0),
            'comic_plus_no_rlc': (29.0, 33.0)}
  for e in exps:
    for seed, total in enumerate(totals[e.key]):
      run = tmp_path / e.key / f'seed{seed}'
      run.mkdir(parents=True)
      (run / 'results.json').write_text(json.dumps(
          {e.spec.primary_model: {'total': total, 'average': total + 1, 'recall': 50.0},
           'Other Model': {'total': 0.0, 'average': 0.0, 'recall': 0.0}}))
  header, rows = benchmark.table_rows(str(tmp_path), 'modules', exps, 2)
  assert header == ['setting', 'total', 'average', 'recall', 'seeds']
  assert [r[0] for r in rows] == ['COMIC', 'COMIC -RLC', 'COMIC+', 'COMIC+ -RLC']
  assert rows[3][1] == pytest.approx((31.0, np.sqrt(8.0)))     # (29 + 33) / 2, sample std
  assert rows[1][2] == pytest.approx((20.25, np.sqrt(0.125)))
  assert rows[3][3:] == [(50.0, 0.0), 2]
  _, alone = benchmark.table_rows(str(tmp_path), 'modules', exps[:2], 2)
  assert [r[0] for r in alone] == ['COMIC', '-RLC']      # one method: the labels as defined
