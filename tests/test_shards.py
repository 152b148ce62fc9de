"""ArrayRecord shards (comic_jax.data.convert, comic_jax.data.shards): the converted data set is
the in-memory one, and training on it streamed through Grain gives the in-memory run's numbers,
resumes to the uninterrupted run's, and reads on each process only that process's rows."""
import collections
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from test_multihost import _free_port
from test_sources import _folder, _folder_config, _with_unknown

from comic_jax import metrics
from comic_jax.data import pipeline, samplers, shard_feed, sources
from comic_jax.data import shard_writer as convert
from comic_jax.errors import UserError
from comic_jax.training import train
from comic_jax.training import workdir as workdir_lib
from conftest import ROOT, assert_one_line, tiny_config, xla_flags


def _streamed(path, **overrides):
  """tiny_config on the shards at `path`, decoded in the training process (no workers)."""
  return tiny_config(**{'data.name': 'shards', 'data.path': str(path), 'data.workers': 0,
                        **overrides})


@pytest.fixture(scope='module')
def synth_shards(tmp_path_factory):
  """PLT-Synth of tiny_config converted (1387 train, 2000 val, 2000 test images)."""
  path = tmp_path_factory.mktemp('synth') / 'shards'
  convert.convert(tiny_config().data, str(path), records_per_shard=500)
  return path


def test_converted_synth_is_the_in_memory_data_set(synth_shards):
  manifest = json.loads((synth_shards / 'manifest.json').read_text())
  memory = sources.load_dataset(tiny_config().data)
  assert {s: e['count'] for s, e in manifest['splits'].items()} == {
      'train': len(memory.x_train), 'val': len(memory.x_val), 'test': len(memory.x_test)}
  assert len(manifest['splits']['train']['shards']) == 3          # 1387 records, 500 a shard
  assert manifest['splits']['train']['positives'] == memory.y_train.sum(0).tolist()
  assert manifest['construction']['missing_ratio'] == 0.4
  streamed = sources.load_dataset(_streamed(synth_shards).data)
  for field in ('y_train', 'y_train_full', 'y_test', 'y_val'):
    np.testing.assert_array_equal(getattr(streamed, field), getattr(memory, field))
  rows = np.array([0, 7, 1386])
  np.testing.assert_array_equal(streamed.x_train[rows], memory.x_train[rows])   # PNG: lossless
  np.testing.assert_array_equal(streamed.x_test[-3:], memory.x_test[-3:])
  # The shards' checksums are those of the files.
  entry = manifest['splits']['test']['shards'][0]
  assert entry['sha256'] == convert.sha256_of(str(synth_shards / entry['file']))


def test_streamed_training_equals_in_memory(synth_shards, bce_run, tmp_path):
  """1 epoch of BCE: the same batches, the same metrics, bit for bit (PNG is lossless)."""
  single, config = bce_run
  workdir = tmp_path / 'streamed'
  train.train_and_evaluate(_streamed(synth_shards, num_epochs=config.num_epochs), str(workdir))
  for name in ('results.json', 'val_results.json', 'per_class_ap.json'):
    assert json.loads((workdir / name).read_text()) == json.loads(
        (pathlib.Path(single) / name).read_text()), name


def test_grain_batches_match_the_samplers(synth_shards):
  """Grain's batches (in process and on 2 workers) are the in-memory path's, per stream, for
  the uniform and the class-reversed sampler; evaluation batches count every image once."""
  config = _streamed(synth_shards, batch_size=8, eval_batch_size=96)
  data = sources.load_dataset(config.data)
  memory = sources.load_dataset(tiny_config().data)
  streams = {'a': samplers.create_sampler('uniform', data.y_train, 8, 3),
             'b': samplers.create_sampler('class_reversed', data.y_train, 8, 3)}
  specs = {'a': None, 'b': None}
  expected = [pipeline.train_batch(memory, streams, specs, step) for step in range(5)]
  for workers in (0, 2):
    config.data.workers = workers
    data.x_test.workers = workers
    feed = pipeline.create_feed(data, streams, specs, config.data, batch_size=config.batch_size,
                                seed=config.seed, num_steps=5)
    got = [feed.batch(step) for step in (0, 0, 1, 2, 3, 4)][1:]   # step 0 twice: the cache
    for step, (a, b) in enumerate(zip(got, expected)):
      for name in streams:
        for key in b[name]:
          np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f'{step} {key}')
    batches = list(shard_feed.eval_batches(data.x_test, 96))
    assert len(batches) == 21 and all(len(b) == 96 for b in batches)   # 2000 = 20 x 96 + 80
    np.testing.assert_array_equal(np.concatenate(batches)[:2000], memory.x_test)
    np.testing.assert_array_equal(batches[-1][80:], np.repeat(memory.x_test[:1], 16, 0))


def test_resumed_equals_uninterrupted(synth_shards, tmp_path):
  config = _streamed(synth_shards)
  train.train_and_evaluate(config, str(tmp_path / 'whole'))
  resumed = tmp_path / 'resumed'
  train.train_and_evaluate(config, str(resumed), stop_after_epochs=1)
  # The checkpoint keeps the data iterator's state: at the next step, Grain's own state inside.
  saved = json.loads((resumed / 'checkpoints' / '43' / 'data_iterator' /
                      'process_0-of-1.json').read_text())
  assert saved['next_step'] == 43 and saved['grain'] is not None
  run = train.Trainer.open(config, str(resumed))
  assert run.restore() == 43 and run.feed._next == 43
  assert json.loads(run.feed._iterator.get_state()) == json.loads(saved['grain'])
  workdir_lib.release_lock(str(resumed))
  train.train_and_evaluate(config, str(resumed))
  # Readers of the state alone (predict, export, LWS's stage 1) read it as from any run.
  from comic_jax.training import checkpoint
  assert set(checkpoint.load_variables(str(resumed))) == {'params', 'batch_stats'}
  for name in ('results.json', 'val_results.json'):
    assert json.loads((resumed / name).read_text()) == json.loads(
        (tmp_path / 'whole' / name).read_text()), name


def test_a_foreign_iterator_state_is_refused_not_moved_aside(synth_shards, tmp_path):
  """A checkpoint whose data iterator belongs to another sampler (another seed here) stops the
  restore with one line, and the checkpoint stays where it is."""
  import jax.numpy as jnp

  from comic_jax.training import checkpoint
  config = _streamed(synth_shards)
  data = sources.load_dataset(config.data)
  feed = lambda seed: pipeline.create_feed(
      data, {'m': samplers.create_sampler('uniform', data.y_train, 32, seed)}, {'m': None},
      config.data, batch_size=config.batch_size, seed=config.seed, num_steps=10)
  saved = feed(0)
  saved.batch(0), saved.batch(1)
  manager = checkpoint.create_manager(str(tmp_path), 2)
  state = {'a': jnp.zeros(3)}
  checkpoint.save(manager, 2, state, saved.checkpoint_args())
  checkpoint.wait(manager)
  same = feed(0)
  assert checkpoint.restore_latest(manager, state, same.restore_args())[1] == 2
  assert same._next == 2
  with pytest.raises(UserError) as e:
    checkpoint.restore_latest(manager, state, feed(5).restore_args())
  assert_one_line(e, 'data iterator does not match this run')
  assert os.listdir(tmp_path / 'checkpoints') == ['2']


def test_converted_folder_is_the_in_memory_data_set(tmp_path):
  """Files are stored as read and resized when read, as the in-memory path does; known
  negatives (-1 labels) and the validation split come through."""
  root, rows = _folder(tmp_path, n_train=24, n_test=6)
  raw = {n: y for n, y in rows.items() if n.startswith('train_')}
  raw = dict(zip(raw, _with_unknown(np.array(list(raw.values()))).tolist()))
  (tmp_path / 'train.json').write_text(json.dumps(raw))
  config = _folder_config(tmp_path, root)
  config.data.train_labels = str(tmp_path / 'train.json')
  config.data.partial = 'as_is'
  config.data.val_fraction = 0.25
  out = tmp_path / 'shards'
  manifest = convert.convert(config.data, str(out), records_per_shard=10)
  assert manifest['encoding'] == 'file' and manifest['labels']['known_negatives']
  memory = sources.load_dataset(config.data)
  config.data.name, config.data.path = 'shards', str(out)
  streamed = sources.load_dataset(config.data)
  for field in ('x_train', 'x_test', 'x_val', 'y_train', 'y_train_full', 'y_test', 'y_val',
                'neg_train'):
    np.testing.assert_array_equal(np.asarray(getattr(streamed, field)),
                                  np.asarray(getattr(memory, field)), err_msg=field)
  assert streamed.x_train.shape == (18, 28, 28, 3) and streamed.x_test.shape == (6, 24, 24, 3)


def test_convert_errors_leave_nothing_behind(tmp_path):
  root, _ = _folder(tmp_path, n_train=12, n_test=4)
  (root / 'train_5.png').write_bytes(b'not an image')
  config = _folder_config(tmp_path, root)
  out = tmp_path / 'out'
  with pytest.raises(UserError) as e:
    convert.convert(config.data, str(out))
  assert_one_line(e, 'cannot decode image train_5.png')
  assert not [name for name in os.listdir(tmp_path) if name.startswith('out')]   # no partial
  out.mkdir()
  with pytest.raises(UserError) as e:
    convert.convert(tiny_config().data, str(out))
  assert_one_line(e, 'exists', 'nothing is overwritten')
  with pytest.raises(UserError) as e:
    sources.load_dataset(_streamed(tmp_path).data)
  assert_one_line(e, 'has no manifest.json', 'comic_jax.data.convert')
  proc = subprocess.run([sys.executable, '-m', 'comic_jax.data.convert',
                         '--config=configs/synthetic.py', f'--output={out}'],
                        check=False, cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith('error: ')


# The training of one process of the two-process test: JAX's distributed run of comic_jax.main,
# with every record the process reads through Grain counted (split, record) and written to
# reads_<id>.json, and the records read outside Grain (the pictures' first test images) apart.
_COUNTING_PROCESS = '''
import collections, json, sys, threading
sys.path.insert(0, ROOT)
import jax
from comic_jax.training import train
from comic_jax.data import shards
from configs import synthetic

if __name__ == '__main__':
  pid = int(sys.argv[1])
  jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2, process_id=pid)
  reads, direct = collections.Counter(), collections.Counter()
  read, one = shards.ShardSource.__getitem__, shards.ShardImages._one
  lock = threading.Lock()   # Grain reads on threads
  def counted(self, i):
    with lock:
      reads[self.split, int(i)] += 1
    return read(self, i)
  def counted_directly(self, i):
    with lock:
      direct[self.source.split, int(i)] += 1
      reads[self.source.split, int(i)] -= 1
    return one(self, i)
  shards.ShardSource.__getitem__ = counted
  shards.ShardImages._one = counted_directly
  config = synthetic.get_config()
  config.update_from_flattened_dict(OVERRIDES)
  train.train_and_evaluate(config, sys.argv[3])
  with open(sys.argv[4], 'w') as f:
    json.dump({'grain': [[s, i, n] for (s, i), n in reads.items() if n],
               'direct': [[s, i, n] for (s, i), n in direct.items()]}, f)
'''


def test_two_processes_read_only_their_rows(synth_shards, bce_run, tmp_path):
  single, config = bce_run
  overrides = {'method': 'bce', 'num_epochs': 1, 'progress_bar': False, 'data.name': 'shards',
               'data.path': str(synth_shards), 'data.workers': 0}
  script = tmp_path / 'process.py'
  script.write_text(f'ROOT, OVERRIDES = {ROOT!r}, {overrides!r}\n' + _COUNTING_PROCESS)
  address = f'127.0.0.1:{_free_port()}'
  env = dict(os.environ, XLA_FLAGS=xla_flags(2), JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen([sys.executable, str(script), str(i), address, str(tmp_path / 'w'),
                             str(tmp_path / f'reads_{i}.json')],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
  assert 'on 4 device(s)' in outs[0]
  # Each process read exactly its half of each global batch, every record once.
  data = sources.load_dataset(tiny_config().data)
  uniform = samplers.UniformSampler(len(data.y_train), config.batch_size, config.seed)
  steps = uniform.steps_per_epoch * config.num_epochs
  half = config.batch_size // 2
  for p in range(2):
    reads = json.loads((tmp_path / f'reads_{p}.json').read_text())
    got = collections.Counter({(split, i): n for split, i, n in reads['grain']})
    assert {(split, i) for split, i, _ in reads['direct']} <= {('test', i) for i in range(6)}
    want = collections.Counter(('train', int(i)) for s in range(steps)
                               for i in uniform.indices(s)[p * half:(p + 1) * half])
    for split, n_images in (('val', len(data.y_val)), ('test', len(data.y_test))):
      batch = config.eval_batch_size
      for b in range(-(-n_images // batch)):
        for i in range(b * batch + p * batch // 2, b * batch + (p + 1) * batch // 2):
          want[split, i if i < n_images else 0] += 1
    assert got == want, p
  # The metrics are the one-process run's, to the rounding of reductions split over processes
  # (test_multihost.py): the streamed one-process run is the in-memory one exactly.
  multi = json.loads((tmp_path / 'w' / 'results.json').read_text())['BCE']
  ref = json.loads((pathlib.Path(single) / 'results.json').read_text())['BCE']
  for key in metrics.METRIC_KEYS:
    tolerance = 0.05 if key in ('total', 'many', 'medium', 'few', 'average') else 0.6
    assert multi[key] == pytest.approx(ref[key], abs=tolerance), key


def test_converted_voc_is_the_in_memory_data_set(tmp_path):
  """A TFDS source (VOC under TFDS's mock data, whose images come decoded: stored as PNG and
  resized when read, as the in-memory path resizes them)."""
  tfds = pytest.importorskip('tensorflow_datasets')
  from test_tfds import small

  from configs import voc
  config = small(voc.get_config(), tmp_path)
  with tfds.testing.mock_data(num_examples=40):
    memory = sources.load_dataset(config.data)
    manifest = convert.convert(config.data, str(tmp_path / 'shards'))
  assert manifest['source'] == 'voc' and manifest['resize']
  config.data.name, config.data.path = 'shards', str(tmp_path / 'shards')
  streamed = sources.load_dataset(config.data)
  assert streamed.class_names == memory.class_names
  for field in ('x_train', 'x_test', 'y_train', 'y_train_full', 'y_test'):
    np.testing.assert_array_equal(np.asarray(getattr(streamed, field)),
                                  np.asarray(getattr(memory, field)), err_msg=field)


def test_shards_without_a_validation_split_carve_the_in_memory_one(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
  y = (rng.random((50, 3)) < 0.5).astype(np.int8)
  np.savez(tmp_path / 'd.npz', x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
  dc = tiny_config(**{'data.name': 'npz', 'data.path': str(tmp_path / 'd.npz'),
                      'data.longtail': 'as_is', 'data.image_size': 8,
                      'data.cache_dir': str(tmp_path / 'cache')}).data
  convert.convert(dc, str(tmp_path / 'shards'))               # no validation split
  dc.val_fraction = 0.25
  memory = sources.load_dataset(dc)
  streamed = sources.load_dataset(_streamed(tmp_path / 'shards', **{
      'data.val_fraction': 0.25}).data)
  assert len(streamed.x_train) == 30 and len(streamed.x_val) == 10
  for field in ('y_train', 'y_train_full', 'y_val', 'y_test'):
    np.testing.assert_array_equal(getattr(streamed, field), getattr(memory, field))
  np.testing.assert_array_equal(streamed.x_train[:], memory.x_train)
  np.testing.assert_array_equal(streamed.x_val[:], memory.x_val)
