"""Nothing lost, nothing silently wrong: bad inputs end in one line naming the problem (and change
nothing in the workdir), damaged or contended workdirs are detected, interrupted runs resume to
bit-identical results.

Most cases call the functions in-process; a few run the CLI for what only a process boundary
shows (exit status, one line on stderr, signals).
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from comic_jax.data import pipeline, sources, splits
from comic_jax.errors import UserError
from comic_jax.training import config_checks, step, train, trainer
from comic_jax.training import workdir as wd
from conftest import ROOT, assert_one_line, tiny_config

PY = sys.executable


# ----------------------------------------------------------------------------- helpers

def _snapshot(path) -> dict:
  """{relative path: sha256} of every file under `path` (empty if it does not exist)."""
  out = {}
  for dirpath, _, files in os.walk(path):
    for name in files:
      full = os.path.join(dirpath, name)
      with open(full, 'rb') as f:
        out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _arrays(n_train=64, n_test=32, c=4, d=8, seed=0):
  """Feature vectors that carry their labels, every class positive in both splits."""
  rng = np.random.default_rng(seed)
  y = (rng.random((n_train + n_test, c)) < 0.4).astype(np.int8)
  y[:c] = np.eye(c, dtype=np.int8)
  y[n_train:n_train + c] = np.eye(c, dtype=np.int8)
  x = rng.normal(size=(len(y), d)).astype(np.float32) + y @ rng.normal(size=(c, d)).astype(
      np.float32)
  return dict(x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])


def _npz_config(tmp_path, path, **overrides):
  """BCE on an MLP over 8-d features: trains in about a second."""
  return tiny_config(**{'data.name': 'npz', 'data.path': str(path), 'data.longtail': 'as_is',
                        'data.cache_dir': str(tmp_path / 'cache'), 'model.backbone': 'mlp',
                        'model.mlp_widths': (16,), 'model.projection_dim': 0,
                        'augment.kind': 'none', 'batch_size': 16, 'eval_batch_size': 32,
                        'num_epochs': 2, **overrides})


def _cli_args(tmp_path, npz, workdir, *extra):
  return [PY, '-m', 'comic_jax.main', '--config=configs/npz.py', f'--workdir={workdir}',
          f'--config.data.path={npz}', f'--config.data.cache_dir={tmp_path / "cache"}',
          '--config.method=bce', '--config.model.mlp_widths=(16,)',
          '--config.model.projection_dim=0', '--config.batch_size=16',
          '--config.eval_batch_size=32', '--config.progress_bar=False', *extra]


def _cli(args, timeout=120):
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ))


def _assert_cli_error(result, *fragments):
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert 'Traceback' not in result.stderr, result.stderr
  assert lines[-1].startswith('error: '), result.stderr
  errors = [line for line in lines if line.startswith('error: ')]
  assert len(errors) == 1
  for fragment in fragments:
    assert fragment in lines[-1], (fragment, lines[-1])


# ----------------------------------------------------------------------------- bad data

def _nan_row(a):
  a['x_test'][3, 2] = np.nan


def _inf_train(a):
  a['x_train'][5, 0] = np.inf


def _empty_test(a):
  a['x_test'], a['y_test'] = a['x_test'][:0], a['y_test'][:0]


def _no_classes(a):
  a['y_train'], a['y_test'] = a['y_train'][:, :0], a['y_test'][:, :0]


def _channels_first(a):
  a['x_train'] = np.zeros((64, 3, 6, 6), np.uint8)
  a['x_test'] = np.zeros((32, 3, 6, 6), np.uint8)


def _float_images_out_of_range(a):
  a['x_train'] = np.full((64, 6, 6, 3), 300.5, np.float32)
  a['x_test'] = np.full((32, 6, 6, 3), 3.5, np.float32)


def _pickled(a):
  a['class_names'] = np.array([{'a': 1}] * 4, dtype=object)


@pytest.mark.parametrize('change,fragments', [
    (_nan_row, ['x_test holds NaN or inf in 1 row(s)', 'row 3']),
    (_inf_train, ['x_train holds NaN or inf', 'row 5']),
    (_empty_test, ['y_test has no rows', 'test set is empty']),
    (_no_classes, ['y_train has 0 classes']),
    (_channels_first, ['channels-last', 'np.transpose']),
    (_float_images_out_of_range, ['x_train images have dtype float32', 'save uint8 images']),
    (_pickled, ['cannot read', 'allow_pickle']),
])
def test_bad_npz_contents_are_named(tmp_path, change, fragments):
  arrays = _arrays()
  change(arrays)
  path = tmp_path / 'd.npz'
  np.savez(path, **arrays)
  before = _snapshot(tmp_path)
  with pytest.raises(UserError) as e:
    sources.load_dataset(_npz_config(tmp_path, path).data)
  assert_one_line(e, str(path), *fragments)
  after = _snapshot(tmp_path)
  assert {k: v for k, v in after.items() if not k.startswith('cache')} == before


@pytest.mark.parametrize('damage', ['truncate', 'bitflip'])
def test_damaged_npz_files_are_named(tmp_path, damage):
  path = tmp_path / 'd.npz'
  np.savez(path, **_arrays())
  raw = bytearray(path.read_bytes())
  if damage == 'truncate':
    raw = raw[:len(raw) // 2]
  else:
    raw[len(raw) // 3] ^= 0x40           # inside x_train's data: the zip CRC catches it
  path.write_bytes(bytes(raw))
  with pytest.raises(UserError) as e:
    sources.load_dataset(_npz_config(tmp_path, path).data)
  assert_one_line(e, str(path), 'cannot read', 'written again')


def test_float_images_in_0_1_are_scaled_to_uint8(tmp_path):
  rng = np.random.default_rng(1)
  arrays = _arrays()
  arrays['x_train'] = rng.random((64, 6, 6, 3)).astype(np.float32)
  arrays['x_test'] = rng.random((32, 6, 6, 3)).astype(np.float32)
  np.savez(tmp_path / 'd.npz', **arrays)
  data = sources.load_dataset(_npz_config(tmp_path, tmp_path / 'd.npz').data)
  assert data.x_train.dtype == np.uint8
  np.testing.assert_array_equal(data.x_train, np.round(arrays['x_train'] * 255).astype(np.uint8))
  # ... which the mlp backbone refuses (it takes feature vectors), in one line.
  with pytest.raises(UserError) as e:
    sources.check_model_inputs(data, _npz_config(tmp_path, 'x').model)
  assert_one_line(e, 'config.model.backbone=mlp takes feature vectors')


def test_classes_without_test_or_observed_positives_warn(tmp_path, capsys):
  arrays = _arrays()
  arrays['y_test'][:, 2] = 0
  arrays['y_train_full'] = arrays['y_train'].copy()
  arrays['y_train'][:, 1] = 0
  np.savez(tmp_path / 'd.npz', **arrays)
  sources.load_dataset(_npz_config(tmp_path, tmp_path / 'd.npz',
                                   **{'data.partial': 'as_is'}).data)
  err = capsys.readouterr().err.splitlines()
  assert ('warning: 1 class(es) (class_2) have no test positive: they are left out of mAP'
          in err), err
  assert any(line.startswith('warning: 1 class(es) (class_1) have no observed training positive')
             for line in err), err


# ----------------------------------------------------------------------------- label files

@pytest.mark.parametrize('name,text,fragments', [
    ('nohead.csv', 'a.png,1,0\nb.png,0,1\n', ['line 1 (a.png,1,0) is a label row, not a header']),
    ('dup.csv', 'filename,c0,c1\na.png,1,0\nb.png,0,1\na.png,0,1\n',
     ["line 4: 'a.png' is listed again (first on line 2)"]),
    ('dupcol.csv', 'filename,c0,c0\na.png,1,0\n', ['names the class(es) c0 twice']),
    ('dup.json', '{"a.png": [1, 0], "b.png": [0, 1], "a.png": [0, 1]}', ["lists 'a.png' twice"]),
    ('zero.json', '{"a.png": [], "b.png": []}', ['0 classes']),
])
def test_label_files_that_would_parse_wrongly_are_refused(tmp_path, name, text, fragments):
  path = tmp_path / name
  path.write_text(text)
  with pytest.raises(UserError) as e:
    splits.read_labels(str(path))
  assert_one_line(e, str(path), *fragments)


def _folder(tmp_path, n=8, c=2, seed=0):
  from PIL import Image
  rng = np.random.default_rng(seed)
  root = tmp_path / 'images'
  root.mkdir(exist_ok=True)
  for split in ('train', 'test'):
    lines = ['filename,' + ','.join(f'c{k}' for k in range(c))]
    for i in range(n):
      name = f'{split}_{i}.png'
      Image.fromarray(rng.integers(0, 255, (10, 12, 3)).astype(np.uint8)).save(root / name)
      y = [int(i % c == k) for k in range(c)]
      lines.append(name + ',' + ','.join(map(str, y)))
    (tmp_path / f'{split}.csv').write_text('\n'.join(lines) + '\n')
  return root


def _folder_config(tmp_path, root):
  return tiny_config(**{'data.name': 'folder', 'data.path': str(root), 'data.longtail': 'as_is',
                        'data.image_size': 8, 'data.store_size': 10, 'data.eval_resize': 9,
                        'data.num_threads': 1, 'data.cache_dir': str(tmp_path / 'cache'),
                        'data.train_labels': str(tmp_path / 'train.csv'),
                        'data.test_labels': str(tmp_path / 'test.csv')})


def test_test_labels_with_columns_in_another_order_are_refused(tmp_path):
  root = _folder(tmp_path)
  lines = (tmp_path / 'test.csv').read_text().splitlines()
  lines[0] = 'filename,c1,c0'
  (tmp_path / 'test.csv').write_text('\n'.join(lines) + '\n')
  with pytest.raises(UserError) as e:
    sources.load_dataset(_folder_config(tmp_path, root).data)
  assert_one_line(e, 'test.csv', 'the same classes in another order')


# ----------------------------------------------------------------------------- image cache

def test_image_cache_notices_replaced_and_damaged_images(tmp_path):
  from PIL import Image

  from comic_jax.data import images
  root = _folder(tmp_path)
  config = _folder_config(tmp_path, root)
  first = np.array(sources.load_dataset(config.data).x_train)
  # Overwrite every image with other pixels (same names, same sizes).
  rng = np.random.default_rng(7)
  for i in range(8):
    for split in ('train', 'test'):
      p = root / f'{split}_{i}.png'
      Image.fromarray(rng.integers(0, 255, (10, 12, 3)).astype(np.uint8)).save(p)
      st = os.stat(p)
      os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # coarse-mtime file systems
  second = np.array(sources.load_dataset(config.data).x_train)
  expected = np.stack([images.square_resize(images.decode_image(str(root / f'train_{i}.png')), 10)
                       for i in range(8)])
  np.testing.assert_array_equal(second, expected)
  assert not np.array_equal(first, second)
  # An image damaged after caching is decoded again, and refused by name.
  (root / 'train_3.png').write_bytes(b'\x89PNG broken')
  with pytest.raises(UserError) as e:
    sources.load_dataset(config.data)
  assert_one_line(e, 'train_3.png', 'cannot decode')


# ----------------------------------------------------------------------------- config values

# ----------------------------------------------------------------------------- the workdir

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 2-epoch run (checkpoints at steps 4 and 8) and its config; tests copy it."""
  import shutil
  tmp = tmp_path_factory.mktemp('trained')
  np.savez(tmp / 'd.npz', **_arrays())
  config = _npz_config(tmp, tmp / 'd.npz')
  train.train_and_evaluate(config, str(tmp / 'run'))
  assert not (tmp / 'run' / 'lock').exists()        # released when the run ends

  def copy(dest):
    shutil.copytree(tmp / 'run', dest)
    return str(dest), config
  return copy


def _other_live_process():
  return subprocess.Popen([PY, '-c', 'import time; time.sleep(60)'])


@pytest.mark.parametrize('case,fragments', [
    ('config_deleted', ['has checkpoints but no config.json', 'new --workdir']),
    ('config_truncated', ['config.json is unreadable', 'new --workdir']),
    ('locked_here', ['is in use by pid', 'wait for that run to end']),
    ('locked_elsewhere', ['is in use by pid 1 on host other-host']),
    ('other_config', ["optim.learning_rate: 0.001 there, 0.5 now", 'new --workdir']),
])
def test_workdir_problems_are_refused_and_nothing_changes(tmp_path, trained, case, fragments):
  workdir, config = trained(tmp_path / 'run')
  holder = None
  if case == 'config_deleted':
    os.remove(os.path.join(workdir, 'config.json'))
  elif case == 'config_truncated':
    path = os.path.join(workdir, 'config.json')
    text = open(path).read()
    with open(path, 'w') as f:
      f.write(text[:len(text) // 2])
  elif case == 'locked_here':
    holder = _other_live_process()
    with open(os.path.join(workdir, 'lock'), 'w') as f:
      json.dump({'pid': holder.pid, 'host': socket.gethostname(), 'since': 'now'}, f)
  elif case == 'locked_elsewhere':
    with open(os.path.join(workdir, 'lock'), 'w') as f:
      json.dump({'pid': 1, 'host': 'other-host', 'since': 'now'}, f)
  elif case == 'other_config':
    config = _npz_config(tmp_path, config.data.path, **{'optim.learning_rate': 0.5})
  before = _snapshot(workdir)
  try:
    with pytest.raises(UserError) as e:
      train.train_and_evaluate(config, workdir)
  finally:
    if holder is not None:
      holder.kill()
      holder.wait()
  assert_one_line(e, *fragments)
  assert _snapshot(workdir) == before


def test_eval_of_a_missing_or_empty_workdir_creates_nothing(tmp_path):
  with pytest.raises(UserError) as e:
    train.evaluate(tiny_config(), str(tmp_path / 'absent'))
  assert_one_line(e, 'does not exist; train first')
  assert not (tmp_path / 'absent').exists()
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError) as e:
    train.evaluate(tiny_config(), str(tmp_path / 'empty'))
  assert_one_line(e, 'has no checkpoint to evaluate; train first')
  assert os.listdir(tmp_path / 'empty') == []


# ----------------------------------------------------------------------------- faults

def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  steps = [entry['step'] for entry in wd.read_metrics_log(os.path.join(workdir, 'metrics.jsonl'))]
  return results, steps


def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, trained, capsys):
  # A finished 2-epoch run whose last checkpoint (step 8) was damaged by a crash while it was
  # written (every file truncated), before results.json was written.
  straight, config = trained(tmp_path / 'straight')
  resumed, _ = trained(tmp_path / 'resumed')
  os.remove(os.path.join(resumed, 'results.json'))
  for dirpath, _, files in os.walk(os.path.join(resumed, 'checkpoints', '8')):
    for name in files:
      with open(os.path.join(dirpath, name), 'r+b') as f:
        f.truncate(os.path.getsize(f.name) // 3)
  capsys.readouterr()
  train.train_and_evaluate(config, resumed)
  err = [line for line in capsys.readouterr().err.splitlines() if line.startswith('warning:')]
  assert len(err) == 1 and 'checkpoint of step 8 is unreadable' in err[0], err
  assert 'falling back to step 4' in err[0]
  assert os.path.isdir(os.path.join(resumed, 'checkpoints', 'unreadable_8'))   # kept, not lost
  assert sorted(n for n in os.listdir(os.path.join(resumed, 'checkpoints'))
                if n.isdigit()) == ['4', '8']
  assert _results(resumed) == _results(straight)             # bit-identical, steps [4, 8]


def test_a_run_with_a_checkpoint_is_restored_without_its_initialisation(tmp_path, trained,
                                                                        monkeypatch):
  """The trainer of a run with a readable checkpoint holds only the state's shapes until it is
  restored (nothing initialised); with every checkpoint unreadable it starts from the initial
  state, that of a new run."""
  from comic_jax.training import trainer as trainer_lib
  resumed, config = trained(tmp_path / 'resumed')
  initialised = []
  real = trainer_lib.Trainer._initial_state
  monkeypatch.setattr(trainer_lib.Trainer, '_initial_state',
                      lambda self: initialised.append(1) or real(self))
  with train.Trainer.open(config, resumed) as run:
    assert isinstance(jax.tree.leaves(run.state)[0], jax.ShapeDtypeStruct)
    assert run.restore() == 8 and not initialised
    saved = jax.device_get(jax.tree.leaves(run.state))
  with train.Trainer.open(config, str(tmp_path / 'new')) as run:
    fresh = jax.device_get(jax.tree.leaves(run.state))
  assert initialised == [1]
  for saved_step in ('4', '8'):
    for dirpath, _, files in os.walk(os.path.join(resumed, 'checkpoints', saved_step)):
      for name in files:
        with open(os.path.join(dirpath, name), 'r+b') as f:
          f.truncate(os.path.getsize(f.name) // 3)
  with train.Trainer.open(config, resumed) as run:
    assert run.restore() == 0 and initialised == [1, 1]
    for got, expected in zip(jax.device_get(jax.tree.leaves(run.state)), fresh, strict=True):
      np.testing.assert_array_equal(got, expected)
  assert not all(np.array_equal(a, b) for a, b in zip(saved, fresh))   # trained != initial


def test_ctrl_c_mid_epoch_saves_and_resumes_bit_identically(tmp_path, trained, monkeypatch):
  """SIGINT in-process (SIGTERM takes the same path; the CLI test sends a real SIGTERM)."""
  straight, config = trained(tmp_path / 'straight')
  resumed = str(tmp_path / 'resumed')
  real = pipeline.host_to_global

  def signal_at_step_5(batch, sharding):   # Ctrl-C while step 5 trains
    if signal_at_step_5.calls == 5:
      os.kill(os.getpid(), signal.SIGINT)
    signal_at_step_5.calls += 1
    return real(batch, sharding)
  signal_at_step_5.calls = 0
  monkeypatch.setattr(trainer, 'host_to_global', signal_at_step_5)
  # Python's own Ctrl-C handler, also when pytest runs in a background job (SIGINT ignored).
  original = signal.signal(signal.SIGINT, signal.default_int_handler)
  previous = signal.getsignal(signal.SIGINT)
  try:
    with pytest.raises(wd.Preempted) as e:
      train.train_and_evaluate(config, resumed)
    assert signal.getsignal(signal.SIGINT) is previous         # handlers restored
  finally:
    signal.signal(signal.SIGINT, original)
  assert e.value.step == 6 and e.value.exit_code == 128 + signal.SIGINT
  assert str(e.value).startswith('stopped at step 6 (SIGINT), checkpoint saved; rerun')
  assert sorted(int(s) for s in os.listdir(os.path.join(resumed, 'checkpoints'))) == [4, 6]
  monkeypatch.setattr(trainer, 'host_to_global', real)
  train.train_and_evaluate(config, resumed)
  assert _results(resumed) == _results(straight)


# ----------------------------------------------------------------------------- the CLI

def test_cli_mistakes_print_one_line(tmp_path):
  extra = _cli([PY, '-m', 'comic_jax.main', '--config=configs/npz.py', f'--workdir={tmp_path}/w',
                'oops'])
  _assert_cli_error(extra, 'unexpected argument(s) oops')
  typo = _cli([PY, '-m', 'comic_jax.main', '--config=configs/npz.py', f'--workdir={tmp_path}/w',
               '--config.num_epochs=1', '--config.optim.lr=1', '--config.optim.b1=0.5'])
  _assert_cli_error(typo, 'error: --config.optim.lr: no such config field')
  assert 'num_epochs' not in typo.stderr and 'b1' not in typo.stderr
  assert not (tmp_path / 'w').exists()


def test_cli_refuses_a_locked_workdir(tmp_path):
  np.savez(tmp_path / 'd.npz', **_arrays())
  (tmp_path / 'busy').mkdir()
  holder = _other_live_process()
  try:
    (tmp_path / 'busy' / 'lock').write_text(json.dumps(
        {'pid': holder.pid, 'host': socket.gethostname(), 'since': 'now'}))
    before = _snapshot(tmp_path / 'busy')
    locked = _cli(_cli_args(tmp_path, tmp_path / 'd.npz', tmp_path / 'busy'))
  finally:
    holder.kill()
    holder.wait()
  _assert_cli_error(locked, f'is in use by pid {holder.pid}')
  assert _snapshot(tmp_path / 'busy') == before


def _start_long_cli_run(tmp_path, command='main'):
  """(process, run directory) of a 500-epoch CLI run on a tiny npz, to be stopped by a signal:
  `python -m comic_jax.main`, or the benchmark runner training that run (BCE, seed 0)."""
  np.savez(tmp_path / 'd.npz', **_arrays())
  workdir = tmp_path / 'w'
  args = _cli_args(tmp_path, tmp_path / 'd.npz', workdir, '--config.num_epochs=500')
  if command == 'benchmark':
    args[2] = 'comic_jax.benchmark'
    args += ['--methods=bce', '--seeds=1']
  proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  return proc, workdir / 'bce' / 'seed0' if command == 'benchmark' else workdir


@pytest.mark.parametrize('command', ['main', 'benchmark'])
def test_cli_sigterm_saves_a_checkpoint_and_says_so(tmp_path, command):
  signum = signal.SIGTERM
  proc, workdir = _start_long_cli_run(tmp_path, command)
  deadline = time.time() + 90
  ckpt = workdir / 'checkpoints'
  while time.time() < deadline and not (ckpt.is_dir() and any(
      n.isdigit() for n in os.listdir(ckpt))):
    time.sleep(0.2)
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signum, err
  last = err.strip().splitlines()[-1]
  assert last.startswith('stopped at step ') and 'checkpoint saved; rerun the same command' in last
  assert 'Traceback' not in err
  assert 'Type handler registry' not in err     # checkpoint.py's handler choice is not shown
  step = int(last.split()[3])
  assert step in [int(n) for n in os.listdir(ckpt) if n.isdigit()]
  assert not (workdir / 'lock').exists()
  assert all(entry['step'] <= step for entry in wd.read_metrics_log(str(workdir / 'metrics.jsonl')))


def test_an_unreadable_feature_cache_is_computed_again(tmp_path, capsys):
  from comic_jax.data.types import PLTData
  from comic_jax.training import features
  rng = np.random.default_rng(0)
  y = np.eye(4, dtype=np.int8)[np.arange(8) % 4]
  data = PLTData(name='t', class_names=tuple('abcd'), y_train=y, y_train_full=y, y_test=y[:4],
                 x_train=rng.normal(size=(8, 3)).astype(np.float32),
                 x_test=rng.normal(size=(4, 3)).astype(np.float32))
  config = tiny_config(**{'model.backbone_trainable': False, 'model.feature_cache': True,
                          'model.backbone': 'mlp', 'model.mlp_widths': (5,),
                          'augment.kind': 'none', 'model.feature_views': 1,
                          'eval_batch_size': 4, 'data.cache_dir': str(tmp_path)})
  mesh = step.create_mesh(0)
  first = features.cache_features(config.model, config.data, config.augment, data, mesh,
                                  seed=config.seed, batch_size=config.eval_batch_size,
                                  log=lambda *a: None)
  path = features.cache_path(config.model, config.data, config.augment, data.x_train,
                            views=1)
  with open(path, 'rb') as f:
    head = f.read(100)
  with open(path, 'wb') as f:                               # a crash mid-write
    f.write(head)
  capsys.readouterr()
  again = features.cache_features(config.model, config.data, config.augment, data, mesh,
                                  seed=config.seed, batch_size=config.eval_batch_size,
                                  log=lambda *a: None)
  assert f'{path} is unreadable' in capsys.readouterr().err
  np.testing.assert_array_equal(first.x_train, again.x_train)
  np.testing.assert_array_equal(first.x_test, again.x_test)


def test_cli_sigterm_before_the_training_steps_ends_in_one_line(tmp_path):
  proc, workdir = _start_long_cli_run(tmp_path)
  deadline = time.time() + 90
  while time.time() < deadline and not (workdir / 'config.json').exists():
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)      # data loading or compilation (rarely: the first steps)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert 'Traceback' not in err
  last = err.strip().splitlines()[-1]
  assert last.startswith('stopped ') and 'rerun the same command to resume' in last, err
  assert not (workdir / 'lock').exists()                   # released before exiting


@pytest.mark.parametrize('value', [0, -1])
def test_bad_cpu_devices_is_one_line(value, tmp_path):
  config = tiny_config()
  config.cpu_devices = value
  with pytest.raises(UserError) as excinfo:
    config_checks.validate_config(config)
  assert_one_line(excinfo, 'config.cpu_devices=', 'whole number >= 1')


def test_batch_not_divisible_names_cpu_devices():
  config = tiny_config(cpu_devices=4, batch_size=6)   # the tests' 4 CPU devices
  with pytest.raises(UserError) as excinfo:
    config_checks.validate_config(config)
  assert_one_line(excinfo, 'config.batch_size=6 is not divisible by the 4 devices',
                  '(config.cpu_devices=4)')
