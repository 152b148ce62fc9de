"""A user's messy data through the command lines, read line by line as a person reads them: each
mistake ends in one `error:` line of its own naming the file (exit status 2, no traceback), and
`--config.progress_bar=False` leaves no bar. Each case stops before training, so the suite stays
fast; the in-process tests of the same checks are in test_reliability.py and test_sources.py."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'run_0_2_0')   # a trained run (0.2.0)


def _command(module, *args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _train(tmp_path, *overrides):
  return _command('comic_jax.main', '--config=configs/synthetic.py', '--config.method=bce',
                  '--config.num_epochs=1', '--config.batch_size=8', '--config.cpu_devices=1',
                  f'--config.data.cache_dir={tmp_path / "cache"}',
                  f'--workdir={tmp_path / "run"}', *overrides)


def _error_line(result, *fragments) -> str:
  """The command failed with one `error:` line, the last of stderr, on a line of its own (no
  bar before it on that line), naming every fragment; no traceback, no leaked shared memory."""
  assert result.returncode == 2, result.stderr
  lines = result.stderr.rstrip('\n').split('\n')
  assert lines[-1].startswith('error: '), repr(lines[-3:])
  assert sum(line.startswith('error: ') for line in lines) == 1, result.stderr
  assert 'Traceback' not in result.stderr and 'leaked' not in result.stderr, result.stderr
  for fragment in fragments:
    assert fragment in lines[-1], (fragment, lines[-1])
  return lines[-1]


# ----------------------------------------------------------------------------- image folders

def _folder(tmp_path, n=8):
  """A folder of JPEGs with CSV labels for train and test, 2 classes."""
  from PIL import Image
  rng = np.random.default_rng(0)
  root = tmp_path / 'images'
  root.mkdir()
  for split in ('train', 'test'):
    rows = [['filename', 'c0', 'c1']]
    for i in range(n):
      name = f'{split}_{i}.jpg'
      Image.fromarray(rng.integers(0, 255, (40, 48, 3)).astype(np.uint8)).save(root / name)
      rows.append([name, int(i % 2 == 0), int(i % 2 == 1)])
    with open(tmp_path / f'{split}.csv', 'w', newline='') as f:
      csv.writer(f).writerows(rows)
  return root


def _folder_args(tmp_path, root):
  return ('--config.data.name=folder', f'--config.data.path={root}',
          '--config.data.longtail=as_is', '--config.data.partial=as_is',
          '--config.data.store_size=40', '--config.data.eval_resize=36',
          f'--config.data.train_labels={tmp_path / "train.csv"}',
          f'--config.data.test_labels={tmp_path / "test.csv"}')


def test_a_truncated_jpeg_ends_the_decoding_bar_before_its_error_line(tmp_path):
  root = _folder(tmp_path)
  data = (root / 'train_3.jpg').read_bytes()
  (root / 'train_3.jpg').write_bytes(data[:len(data) // 2])
  result = _train(tmp_path, *_folder_args(tmp_path, root), '--config.progress_bar=True')
  _error_line(result, 'cannot decode image', 'train_3.jpg')
  assert 'decoding' in result.stderr                    # the bar was on, and ended its line
  # With the bars off there is no bar at all, and the same line.
  result = _train(tmp_path, *_folder_args(tmp_path, root), '--config.progress_bar=False')
  _error_line(result, 'cannot decode image', 'train_3.jpg')
  assert '%|' not in result.stderr + result.stdout and '\r' not in result.stderr


@pytest.mark.parametrize('case,fragments', [
    ('missing_labels', ['train.csv']),
    ('bad_value', ['train.csv', "'train_1.jpg' are not all 0, 1 or -1"]),
    ('missing_image', ['1 train images are missing']),
])
def test_label_and_image_mistakes_are_one_line(tmp_path, case, fragments):
  root = _folder(tmp_path)
  if case == 'missing_labels':
    os.remove(tmp_path / 'train.csv')
  elif case == 'bad_value':
    text = (tmp_path / 'train.csv').read_text().splitlines()
    text[2] = text[2].rsplit(',', 1)[0] + ',2'
    (tmp_path / 'train.csv').write_text('\n'.join(text) + '\n')
  else:
    os.remove(root / 'train_5.jpg')
  _error_line(_train(tmp_path, *_folder_args(tmp_path, root)), *fragments)


# ----------------------------------------------------------------------------- predict

def test_predict_reads_every_image_mode_and_file_name(tmp_path):
  from PIL import Image
  folder = tmp_path / 'in'
  folder.mkdir()
  rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 24, 3)).astype(np.uint8))
  rgb.convert('L').save(folder / 'grey.png')
  rgb.convert('CMYK').save(folder / 'cmyk.jpg')
  rgb.convert('RGBA').save(folder / 'rgba.png')
  rgb.convert('P').save(folder / 'palette.png')
  Image.fromarray((np.arange(480).reshape(20, 24) * 100).astype(np.uint16)).save(
      folder / 'sixteen.png')
  rgb.save(folder / 'a name with spaces é.png')
  (folder / 'notes.txt').write_text('not an image, not read')
  out = tmp_path / 'p.json'
  result = _command('comic_jax.predict', f'--workdir={FIXTURE}', f'--input={folder}',
                    f'--output={out}')
  assert result.returncode == 0, result.stderr
  names = sorted(p['image'] for p in json.loads(out.read_text()))
  assert names == sorted(['grey.png', 'cmyk.jpg', 'rgba.png', 'palette.png', 'sixteen.png',
                          'a name with spaces é.png'])
  # An empty folder is one error line.
  (tmp_path / 'empty').mkdir()
  _error_line(_command('comic_jax.predict', f'--workdir={FIXTURE}',
                       f'--input={tmp_path / "empty"}', f'--output={out}'), 'empty')


# ----------------------------------------------------------------------------- shards

@pytest.fixture(scope='module')
def npz_shards(tmp_path_factory):
  """A small .npz data set (16 px images) converted to shards of 10 records."""
  from comic_jax.data import shard_writer as convert
  from conftest import tiny_config
  tmp = tmp_path_factory.mktemp('npz_shards')
  rng = np.random.default_rng(0)
  y = (rng.random((60, 3)) < 0.4).astype(np.int8)
  y[:, 0] = 1
  x = rng.integers(0, 255, (60, 16, 16, 3)).astype(np.uint8)
  np.savez(tmp / 'd.npz', x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
  config = tiny_config(**{'data.name': 'npz', 'data.path': str(tmp / 'd.npz'),
                          'data.longtail': 'as_is', 'data.partial': 'as_is',
                          'data.image_size': 16, 'data.cache_dir': str(tmp / 'cache')})
  convert.convert(config.data, str(tmp / 'shards'), records_per_shard=10)
  return tmp / 'shards'


def _shard_args(path, workers=0):
  return ('--config.data.name=shards', f'--config.data.path={path}', '--config.data.image_size=16',
          f'--config.data.workers={workers}', '--config.progress_bar=True')


@pytest.mark.parametrize('damage,workers,fragments', [
    ('overwritten', 0, ['train-00001-of-00004.array_record is damaged', 'SHA-256']),
    ('overwritten', 2, ['train-00001-of-00004.array_record is damaged']),
    ('missing', 0, ['train-00002-of-00004.array_record is missing']),
    ('truncated', 0, ['train-00002-of-00004.array_record has', 'manifest.json records']),
])
def test_a_damaged_or_missing_shard_is_one_line(tmp_path, npz_shards, damage, workers,
                                                fragments):
  path = tmp_path / 'shards'
  shutil.copytree(npz_shards, path)
  if damage == 'overwritten':           # the same size, other bytes in the middle
    shard = path / 'train-00001-of-00004.array_record'
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 200] = np.random.default_rng(0).integers(0, 255, 200, np.uint8).tobytes()
    shard.write_bytes(bytes(data))
  elif damage == 'missing':
    os.remove(path / 'train-00002-of-00004.array_record')
  else:
    shard = path / 'train-00002-of-00004.array_record'
    shard.write_bytes(shard.read_bytes()[:-100])
  # With Grain's worker processes (workers > 0) too: their batches in shared memory are freed
  # before the error (no "leaked shared_memory objects" from Python's resource tracker).
  _error_line(_train(tmp_path, *_shard_args(path, workers)), *fragments)


# ----------------------------------------------------------------------------- bars and messages

def test_messages_take_lines_of_their_own_beside_an_open_bar(capsys):
  from comic_jax import progress
  from comic_jax.cli import prologue as cli
  from comic_jax.errors import warn
  progress.configure(True)
  bar = progress.bar(total=10, desc='decoding', file=sys.stderr)
  bar.update(3)
  warn('something odd')                       # the bar is cleared, the line written, the bar
  err = capsys.readouterr().err               # drawn again below it
  line = next(line for line in err.split('\n') if 'warning:' in line)
  assert line.split('\r')[-1] == 'warning: something odd', repr(err)
  with pytest.raises(SystemExit) as e:
    cli.fail('bad value')                     # the bar's line is ended, the error is the last
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.split('\n')[-2] == 'error: bad value', repr(err)
  assert 'decoding' in err.split('\n')[-3]    # the bar's last state stays above it
  progress.configure(False)                   # config.progress_bar=False: no bar is drawn
  quiet = progress.bar(total=10, desc='quiet', file=sys.stderr)
  quiet.update(5)
  quiet.close()
  progress.configure(True)
  assert quiet.disable and 'quiet' not in capsys.readouterr().err
