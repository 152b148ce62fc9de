import json
import os
import shutil

import numpy as np
import pytest

from comic_jax import train
from comic_jax.data import sources, splits
from comic_jax.errors import UserError
from conftest import SHARED_DATA, tiny_config


def _config(tmp_path, **overrides):
  return tiny_config(**{'data.cache_dir': str(tmp_path / 'cache'), **overrides})


# ----------------------------------------------------------------------------- id lists

def test_fetch_checks_the_sha256_of_a_download(tmp_path):
  src = tmp_path / 'ids.txt'
  src.write_text('7\n3\n\n11\n')
  sha = splits.sha256_of(str(src))
  dest = str(tmp_path / 'copy.txt')
  assert splits.fetch(src.as_uri(), dest, sha) == dest        # file:// works offline
  assert splits.parse_id_list(dest) == ['7', '3', '11']
  with pytest.raises(UserError, match='expected'):
    splits.fetch(src.as_uri(), str(tmp_path / 'other.txt'), '0' * 64)
  assert not os.path.exists(tmp_path / 'other.txt')           # a bad download is not kept
  with pytest.raises(UserError, match='download it by hand'):
    splits.fetch((tmp_path / 'absent.txt').as_uri(), str(tmp_path / 'x.txt'), sha)


@pytest.mark.parametrize('dataset,count,first', [('coco', 1909, '554625'),
                                                 ('voc', 1142, '2008_000023')])
def test_published_id_lists_match_their_checksums(tmp_path, dataset, count, first):
  copy = os.path.join(SHARED_DATA, f'{dataset}_mlt', 'img_id.txt')
  if not os.path.exists(copy):
    pytest.skip('../shared/data is not present')
  rel, _ = splits.PUBLISHED_ID_LISTS[dataset]
  shutil.copy(copy, tmp_path / f'{dataset}_mlt_{os.path.basename(rel)}')
  ids = splits.published_ids(dataset, str(tmp_path))     # checksum matches: no download
  assert len(ids) == count and ids[0] == first


def test_label_files(tmp_path):
  (tmp_path / 'a.json').write_text(json.dumps({'x.jpg': [1, 0, 1], 'y.jpg': [0, 0, 1]}))
  names, y = splits.read_label_json(str(tmp_path / 'a.json'))
  assert names == ['x.jpg', 'y.jpg'] and y.tolist() == [[1, 0, 1], [0, 0, 1]]
  (tmp_path / 'bad.json').write_text(json.dumps({'x.jpg': [1, 0, 1], 'y.jpg': [0, 1]}))
  with pytest.raises(UserError, match="labels of 'y.jpg' have 2 entries, expected 3"):
    splits.read_label_json(str(tmp_path / 'bad.json'))
  (tmp_path / 'a.csv').write_text('filename,cat,dog\nx.jpg,1,0\ny.jpg,0,1\n')
  names, y, classes = splits.read_label_csv(str(tmp_path / 'a.csv'))
  assert classes == ['cat', 'dog'] and y.tolist() == [[1, 0], [0, 1]]
  (tmp_path / 'bad.csv').write_text('filename,cat,dog\nx.jpg,1,0\ny.jpg,0\n')
  with pytest.raises(UserError, match='line 3: 2 fields, expected 3'):
    splits.read_label_csv(str(tmp_path / 'bad.csv'))
  with pytest.raises(UserError, match='does not exist'):
    splits.read_labels(str(tmp_path / 'none.json'))


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
    train.Run(config, str(tmp_path / 'run'))


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
