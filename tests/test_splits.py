"""Published split files and label files (data/splits.py)."""
import json
import os
import shutil

import pytest

from comic_jax.data import splits
from comic_jax.errors import UserError
from conftest import SHARED_DATA, assert_one_line


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


def test_label_files_with_minus_one(tmp_path):
  (tmp_path / 'a.json').write_text(json.dumps({'x.jpg': [1, -1, 0], 'y.jpg': [0, 1, -1]}))
  _, y = splits.read_label_json(str(tmp_path / 'a.json'), unknown=True)
  assert y.tolist() == [[1, -1, 0], [0, 1, -1]]
  with pytest.raises(UserError) as e:                         # test labels: 0 / 1 only
    splits.read_labels(str(tmp_path / 'a.json'))
  assert_one_line(e, "the labels of 'x.jpg' hold -1 (unknown)", 'must be 0 or 1')
  (tmp_path / 'a.csv').write_text('filename,cat,dog\nx.jpg,1,-1\ny.jpg,0,1\n')
  _, y, classes = splits.read_labels(str(tmp_path / 'a.csv'), unknown=True)
  assert classes == ['cat', 'dog'] and y.tolist() == [[1, -1], [0, 1]]
  with pytest.raises(UserError) as e:
    splits.read_label_csv(str(tmp_path / 'a.csv'))
  assert_one_line(e, "the labels of 'x.jpg' hold -1 (unknown)")
  (tmp_path / 'b.csv').write_text('filename,cat,dog\nx.jpg,1,2\n')
  with pytest.raises(UserError, match=r'not all 0, 1 or -1 \(unknown\)'):
    splits.read_label_csv(str(tmp_path / 'b.csv'), unknown=True)
  (tmp_path / 'nohead.csv').write_text('x.jpg,1,-1\ny.jpg,0,1\n')      # a label row, not a header
  with pytest.raises(UserError, match='is a label row, not a header'):
    splits.read_label_csv(str(tmp_path / 'nohead.csv'), unknown=True)
