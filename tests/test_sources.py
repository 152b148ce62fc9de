import json

import numpy as np
import pytest

from comic_jax.data import plt, sources
from comic_jax.errors import UserError
from comic_jax.training import train
from conftest import assert_one_line, tiny_config


def _config(tmp_path, **overrides):
  return tiny_config(**{'data.cache_dir': str(tmp_path / 'cache'), **overrides})


# ----------------------------------------------------------------------------- id lists

# ----------------------------------------------------------------------------- npz

def _npz(path, *, features=True, n=120, c=5, seed=0, **extra):
  rng = np.random.default_rng(seed)
  y = (rng.random((n, c)) < 0.3).astype(np.int8)
  y[0] = 1
  shape = (n, 16) if features else (n, 12, 12, 3)
  x = rng.normal(size=shape).astype(np.float32) + y @ rng.normal(size=(c,) + shape[1:]) \
      if features else rng.integers(0, 255, shape).astype(np.uint8)
  arrays = dict(x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
  arrays.update(extra)
  np.savez(path, **arrays)
  return arrays


def test_npz_features_train_end_to_end_with_the_mlp(tmp_path):
  _npz(tmp_path / 'd.npz')
  config = _config(tmp_path, **{'data.name': 'npz', 'data.path': str(tmp_path / 'd.npz'),
                                'data.longtail': 'as_is', 'model.backbone': 'mlp',
                                'augment.kind': 'none', 'batch_size': 16,
                                'eval_batch_size': 16, 'num_epochs': 3})
  data = sources.load_dataset(config.data)
  assert data.x_train.shape == (80, 16) and data.class_names[0] == 'class_0'
  assert (data.y_train <= data.y_train_full).all() and data.y_train.sum() < data.y_train_full.sum()
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  with open(tmp_path / 'run' / 'results.json') as f:
    assert json.load(f)['BCE']['total'] > 50           # the features carry the labels


def test_npz_with_full_labels_takes_the_partial_ones_as_observed(tmp_path):
  arrays = _npz(tmp_path / 'd.npz')
  observed = arrays['y_train'].copy()
  observed[:, 0] = 0
  observed[0] = arrays['y_train'][0]
  _npz(tmp_path / 'e.npz', y_train_full=arrays['y_train'], **{'y_train': observed})
  data = sources.load_dataset(_config(tmp_path, **{'data.name': 'npz', 'data.longtail': 'as_is',
                                                   'data.path': str(tmp_path / 'e.npz')}).data)
  np.testing.assert_array_equal(data.y_train, observed)
  np.testing.assert_array_equal(data.y_train_full, arrays['y_train'])


@pytest.mark.parametrize('change,message', [
    (dict(y_train=np.zeros((79, 5), np.int8)), 'x_train has 80 rows, y_train 79'),
    (dict(y_test=np.full((40, 5), 2)), 'y_test must hold only 0 and 1'),
    (dict(y_train=np.zeros((80, 5), np.int8)), '5 classes have no positive'),
    (dict(y_test=np.zeros((40, 4), np.int8)), 'y_train has 5 classes, y_test 4'),
])
def test_npz_bad_inputs_are_named(tmp_path, change, message):
  arrays = _npz(tmp_path / 'd.npz')
  arrays.update(change)
  np.savez(tmp_path / 'bad.npz', **arrays)
  config = _config(tmp_path, **{'data.name': 'npz', 'data.path': str(tmp_path / 'bad.npz'),
                                'data.longtail': 'as_is'})
  with pytest.raises(UserError, match=message.replace('(', r'\(')):
    sources.load_dataset(config.data)


def test_feature_vectors_need_the_mlp_backbone(tmp_path):
  _npz(tmp_path / 'd.npz')
  config = _config(tmp_path, **{'data.name': 'npz', 'data.path': str(tmp_path / 'd.npz'),
                                'data.longtail': 'as_is', 'augment.kind': 'none'})
  with pytest.raises(UserError, match='backbone=mlp'):
    train.Trainer.open(config, str(tmp_path / 'run'))


def test_npz_missing_file(tmp_path):
  config = _config(tmp_path, **{'data.name': 'npz', 'data.path': str(tmp_path / 'no.npz')})
  with pytest.raises(UserError, match='does not exist'):
    sources.load_dataset(config.data)


# ----------------------------------------------------------------------------- image folders

def _folder(tmp_path, n_train=40, n_test=12, c=3):
  from PIL import Image
  rng = np.random.default_rng(0)
  root = tmp_path / 'images'
  root.mkdir()
  rows = {}
  for split, n in (('train', n_train), ('test', n_test)):
    lines = ['filename,' + ','.join(f'c{k}' for k in range(c))]
    for i in range(n):
      name = f'{split}_{i}.png'
      Image.fromarray(rng.integers(0, 255, (30 + i % 7, 40, 3)).astype(np.uint8)).save(root / name)
      y = (rng.random(c) < 0.5).astype(int)
      y[i % c] = 1
      lines.append(name + ',' + ','.join(map(str, y)))
      rows[name] = y
    (tmp_path / f'{split}.csv').write_text('\n'.join(lines) + '\n')
  return root, rows


def _folder_config(tmp_path, root):
  return _config(tmp_path, **{'data.name': 'folder', 'data.path': str(root),
                              'data.longtail': 'as_is', 'data.image_size': 24,
                              'data.store_size': 28, 'data.eval_resize': 26,
                              'data.train_labels': str(tmp_path / 'train.csv'),
                              'data.test_labels': str(tmp_path / 'test.csv')})


def test_image_folder_with_csv_labels(tmp_path):
  from comic_jax.data import images
  root, rows = _folder(tmp_path)
  data = sources.load_dataset(_folder_config(tmp_path, root).data)
  assert data.class_names == ('c0', 'c1', 'c2')
  assert data.x_train.shape == (40, 28, 28, 3) and data.x_test.shape == (12, 24, 24, 3)
  np.testing.assert_array_equal(data.y_test, np.array([rows[f'test_{i}.png'] for i in range(12)]))
  ref = images.eval_transform(images.decode_image(str(root / 'test_3.png')), 26, 24)
  np.testing.assert_array_equal(data.x_test[3], ref)


def test_image_folder_bad_inputs(tmp_path):
  root, _ = _folder(tmp_path)
  (root / 'train_5.png').write_bytes(b'not an image')
  with pytest.raises(UserError, match='train_5.png'):
    sources.load_dataset(_folder_config(tmp_path, root).data)
  (root / 'train_5.png').unlink()
  with pytest.raises(UserError, match='1 train images are missing'):
    sources.load_dataset(_folder_config(tmp_path, root).data)


# ----------------------------------------------------------------------------- known negatives

def _with_unknown(y, seed=1):
  """Training labels in {1, 0, -1}: about half of the 0 entries of `y` become -1 (unknown)."""
  out = np.asarray(y, np.int8).copy()
  out[(out == 0) & (np.random.default_rng(seed).random(out.shape) < 0.5)] = -1
  return out


def test_npz_minus_one_gives_observed_positives_and_known_negatives(tmp_path):
  arrays = _npz(tmp_path / 'd.npz')
  raw = _with_unknown(arrays['y_train'])
  _npz(tmp_path / 'e.npz', y_train=raw)
  cfg = lambda **o: _config(tmp_path, **{'data.name': 'npz', 'data.longtail': 'as_is',
                                         'data.path': str(tmp_path / 'e.npz'), **o}).data
  data = sources.load_dataset(cfg(**{'data.partial': 'as_is'}))
  np.testing.assert_array_equal(data.y_train, (raw == 1).astype(np.int8))
  np.testing.assert_array_equal(data.neg_train, raw == 0)
  np.testing.assert_array_equal(data.y_train_full, data.y_train)
  assert data.neg_train.any()
  # 'simulate': positives are hidden and become unknown; the known negatives stay as they are.
  data = sources.load_dataset(cfg())
  np.testing.assert_array_equal(data.neg_train, raw == 0)
  assert (data.y_train <= (raw == 1)).all() and data.y_train.sum() < (raw == 1).sum()
  assert not (data.neg_train & (raw == 1)).any()
  # Validation carving: the kept rows keep their mask; validation labels are the observed
  # positives of the held rows.
  data = sources.load_dataset(cfg(**{'data.partial': 'as_is', 'data.val_fraction': 0.25}))
  keep, held = plt.split_validation(80, 0.25, 0)
  np.testing.assert_array_equal(data.neg_train, raw[keep] == 0)
  np.testing.assert_array_equal(data.y_train, (raw[keep] == 1).astype(np.int8))
  np.testing.assert_array_equal(data.y_val, (raw[held] == 1).astype(np.int8))
  # Without any -1 every 0 is unknown, as before: no mask.
  data = sources.load_dataset(_config(tmp_path, **{'data.name': 'npz', 'data.longtail': 'as_is',
                                                   'data.path': str(tmp_path / 'd.npz')}).data)
  assert data.neg_train is None
  # With y_train_full: the 0 entries of y_train must be absent there too.
  _npz(tmp_path / 'f.npz', y_train=raw, y_train_full=arrays['y_train'])
  data = sources.load_dataset(cfg(**{'data.path': str(tmp_path / 'f.npz')}))
  np.testing.assert_array_equal(data.y_train_full, arrays['y_train'])
  np.testing.assert_array_equal(data.neg_train, raw == 0)


@pytest.mark.parametrize('change,fragments', [
    (lambda a: dict(y_test=_with_unknown(a['y_test'])),
     ['y_test holds -1 (unknown) entries', 'y_test must hold only 0 and 1']),
    (lambda a: dict(y_train_full=_with_unknown(a['y_train'])),
     ['y_train_full holds -1 (unknown) entries']),
    (lambda a: dict(y_train=np.where(a['y_train'] == 1, 0, -1), y_train_full=a['y_train']),
     ['y_train marks a label absent (0) that y_train_full has as positive']),
    (lambda a: dict(y_train=np.full((80, 5), -2)),
     ['y_train must hold only 1 (positive), 0 and -1']),
])
def test_npz_minus_one_outside_y_train_is_refused_in_one_line(tmp_path, change, fragments):
  arrays = _npz(tmp_path / 'd.npz')
  arrays.update(change(arrays))
  np.savez(tmp_path / 'bad.npz', **arrays)
  config = _config(tmp_path, **{'data.name': 'npz', 'data.path': str(tmp_path / 'bad.npz'),
                                'data.longtail': 'as_is'})
  with pytest.raises(UserError) as e:
    sources.load_dataset(config.data)
  assert_one_line(e, str(tmp_path / 'bad.npz'), *fragments)


def test_known_negatives_refuse_the_plt_json_long_tail(tmp_path):
  arrays = _npz(tmp_path / 'd.npz')
  _npz(tmp_path / 'e.npz', y_train=_with_unknown(arrays['y_train']))
  (tmp_path / 'plt.json').write_text(json.dumps({'0': [1, 0, 0, 0, 0]}))
  config = _config(tmp_path, **{'data.name': 'npz', 'data.path': str(tmp_path / 'e.npz'),
                                'data.longtail': 'json',
                                'data.plt_json': str(tmp_path / 'plt.json')})
  with pytest.raises(UserError) as e:
    sources.load_dataset(config.data)
  assert_one_line(e, "longtail='json'", 'unknown (-1)')


@pytest.mark.parametrize('kind', ['csv', 'json'])
def test_image_folder_with_minus_one_labels(tmp_path, kind):
  root, rows = _folder(tmp_path, n_train=12, n_test=6)
  raw = {n: y for n, y in rows.items() if n.startswith('train_')}
  raw = dict(zip(raw, _with_unknown(np.array(list(raw.values()))).tolist()))
  if kind == 'json':
    (tmp_path / 'train.json').write_text(json.dumps(raw))
  else:
    (tmp_path / 'train.csv').write_text('filename,c0,c1,c2\n' + ''.join(
        f'{n},{",".join(map(str, y))}\n' for n, y in raw.items()))
  config = _folder_config(tmp_path, root)
  config.data.train_labels = str(tmp_path / f'train.{kind}')
  config.data.partial = 'as_is'
  data = sources.load_dataset(config.data)
  expected = np.array(list(raw.values()))
  np.testing.assert_array_equal(data.y_train, (expected == 1).astype(np.int8))
  np.testing.assert_array_equal(data.neg_train, expected == 0)
  # -1 in the test labels: refused, naming the file and the image.
  lines = (tmp_path / 'test.csv').read_text().splitlines()
  lines[1] = lines[1].rsplit(',', 1)[0] + ',-1'
  (tmp_path / 'test.csv').write_text('\n'.join(lines) + '\n')
  with pytest.raises(UserError) as e:
    sources.load_dataset(config.data)
  assert_one_line(e, str(tmp_path / 'test.csv'), "'test_0.png' hold -1 (unknown)")


def test_pasl_trains_on_npz_with_known_negatives(tmp_path, capsys):
  arrays = _npz(tmp_path / 'd.npz')
  _npz(tmp_path / 'e.npz', y_train=_with_unknown(arrays['y_train']))
  config = _config(tmp_path, **{'method': 'pasl', 'data.name': 'npz',
                                'data.path': str(tmp_path / 'e.npz'), 'data.longtail': 'as_is',
                                'data.partial': 'as_is', 'data.val_fraction': 0.2,
                                'model.backbone': 'mlp', 'model.mlp_widths': (16,),
                                'model.projection_dim': 16, 'augment.kind': 'none',
                                'batch_size': 16, 'eval_batch_size': 16, 'num_epochs': 2})
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 'known negatives' in capsys.readouterr().out
  text = (tmp_path / 'run' / 'metrics.jsonl').read_text()
  lines = [json.loads(line) for line in text.splitlines()]
  assert [entry['epoch'] for entry in lines] == [1, 2] and np.isfinite(lines[-1]['train']['loss'])
  assert 'P-ASL' in lines[-1]['eval'] and 'P-ASL' in lines[-1]['val']
  with open(tmp_path / 'run' / 'results.json') as f:
    results = json.load(f)
  assert 0 < results['P-ASL']['total'] <= 100
  # Interrupted after epoch 1 and resumed: the same run.
  train.train_and_evaluate(config, str(tmp_path / 'resumed'), stop_after_epochs=1)
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  with open(tmp_path / 'resumed' / 'results.json') as f:
    assert json.load(f) == results


# ----------------------------------------------------------------------------- the registry

def _predicted_inputs(config, paths_or_rows):
  """What `comic_jax.load(...).predict` feeds the model for each input: the source's
  preprocessing, applied by `images.model_input`."""
  from comic_jax.data import images
  prep = sources.preprocessing_of(config.data)
  return np.stack([images.model_input(x, prep, str(i)) for i, x in enumerate(paths_or_rows)])


def test_evaluation_and_prediction_preprocess_every_registered_source_identically(tmp_path):
  """For each registered source, the test images as evaluation reads them equal the same images
  put through prediction's preprocessing; a source added to the registry fails here until it
  is covered."""
  from comic_jax.data import registry
  from comic_jax.data import shard_writer as convert
  covered = {'synthetic', 'npz', 'folder', 'shards', 'voc', 'coco'}
  assert set(registry.names()) == covered
  # PLT-Synth: the images are generated at image_size.
  synth = tiny_config(**{'data.cache_dir': str(tmp_path / 'cache')})
  data = sources.load_dataset(synth.data)
  np.testing.assert_array_equal(_predicted_inputs(synth, data.x_test[:5]), data.x_test[:5])
  # An .npz of images: its rows as they are.
  _npz(tmp_path / 'd.npz', features=False)
  npz = _config(tmp_path, **{'data.name': 'npz', 'data.path': str(tmp_path / 'd.npz'),
                             'data.longtail': 'as_is', 'data.image_size': 12})
  data = sources.load_dataset(npz.data)
  np.testing.assert_array_equal(_predicted_inputs(npz, data.x_test[:5]), data.x_test[:5])
  # An image folder of odd sizes (shorter side eval_resize, the central image_size square) ...
  root, _ = _folder(tmp_path)
  folder = _folder_config(tmp_path, root)
  data = sources.load_dataset(folder.data)
  paths = [str(root / f'test_{i}.png') for i in range(12)]
  np.testing.assert_array_equal(_predicted_inputs(folder, paths), data.x_test)
  # ... and its shards, read back through the manifest.
  convert.convert(folder.data, str(tmp_path / 'shards'), records_per_shard=8)
  shards_config = _config(tmp_path, **{'data.name': 'shards', 'data.path': str(tmp_path / 'shards'),
                                       'data.image_size': 24, 'data.store_size': 28,
                                       'data.eval_resize': 26})
  streamed = sources.load_dataset(shards_config.data)
  assert sources.is_streamed(shards_config.data) and not sources.is_streamed(folder.data)
  np.testing.assert_array_equal(_predicted_inputs(shards_config, paths), streamed.x_test[:12])
  # VOC and COCO (TFDS, not read here) preprocess with the folder's function.
  for name in ('voc', 'coco'):
    assert sources.get(name).preprocessing is sources.get('folder').preprocessing
