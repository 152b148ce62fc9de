import numpy as np
import pytest

from comic_jax.data import longtail, plt_synth, sources, synthetic


@pytest.fixture(scope='module')
def data():
  return synthetic.make_plt_synth(seed=0)


def test_shapes_and_types(data):
  assert data.num_classes == len(synthetic.CLASS_NAMES) >= 20
  assert len(set(data.class_names)) == data.num_classes
  assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (32, 32, 3)
  assert data.x_test.shape[1:] == (32, 32, 3)
  assert data.y_train.shape == data.y_train_full.shape == (len(data.x_train), data.num_classes)
  assert data.y_test.shape == (len(data.x_test), data.num_classes)
  assert not data.x_train.flags.writeable   # shared between runs: read-only


def test_training_counts_follow_the_pareto_curve(data):
  stats = longtail.class_statistics(data.y_train_full)
  ref = longtail.pareto_reference_counts(data.num_classes, 600, 4, 6.0)
  np.testing.assert_array_equal(np.sort(stats.counts)[::-1], ref)
  assert stats.counts.max() / stats.counts.min() >= 50
  sizes = stats.group_sizes()
  assert all(sizes[g] >= 3 for g in ('many', 'medium', 'few')), sizes


def test_missing_labels_are_independent_drops(data):
  full, obs = data.y_train_full, data.y_train
  assert np.all(obs <= full)
  kept = obs.sum() / full.sum()
  assert abs(kept - 0.6) < 4 * np.sqrt(0.24 / full.sum())
  assert (obs.sum(1) == 0).sum() > (full.sum(1) == 0).sum()   # some images lost every label


def test_test_set_is_fully_labelled_with_enough_positives(data):
  assert data.y_test.sum(0).min() >= 10
  assert (data.y_test.sum(1) >= 1).all()     # every test image shows at least one class


def test_labels_cooccur_within_scene_contexts(data):
  contexts = synthetic.scene_contexts()
  same = np.zeros((data.num_classes,) * 2, dtype=bool)
  for members, _ in contexts:
    same[np.ix_(members, members)] = True
  np.fill_diagonal(same, False)
  cross = ~same
  np.fill_diagonal(cross, False)
  p = longtail.conditional_cooccurrence(data.y_test)
  assert p[same].mean() > 3 * p[cross].mean()
  assert all(len(m) == 6 for m, _ in contexts)
  assert set(np.concatenate([m for m, _ in contexts])) == set(range(data.num_classes))


def test_deterministic_in_the_seed():
  small = dict(pool_size=3000, max_count=100, num_test=200)   # the same code, a tenth the size
  data = synthetic.make_plt_synth(seed=0, **small)
  again = synthetic.make_plt_synth(seed=0, **small)
  for field in ('x_train', 'y_train', 'y_train_full', 'x_test', 'y_test', 'x_val', 'y_val'):
    np.testing.assert_array_equal(getattr(data, field), getattr(again, field))
  other = synthetic.make_plt_synth(seed=1, **small)
  assert not np.array_equal(data.y_test, other.y_test)
  assert not np.array_equal(data.x_train, other.x_train)


def test_images_show_their_classes():
  """A class's colour dominates pixels of images that hold it: red images are redder."""
  scenes = [np.array([c]) for c in range(synthetic.NUM_CLASSES)] * 20
  x = synthetic.render_scenes(scenes, 32, seed=0).astype(float)
  colour = np.array([synthetic.CLASS_NAMES[s[0]].split('_')[0] for s in scenes])
  sat = x.max(-1) - x.min(-1)
  vivid = sat > 100                                   # object pixels, not the dull background
  for name, ch in (('red', 0), ('green', 1), ('blue', 2)):
    xs, vs = x[colour == name], vivid[colour == name]
    share = (xs.argmax(-1) == ch)[vs].mean()
    assert share > 0.6, (name, share)


def test_load_dataset_reads_the_config(config):
  config.data.missing_ratio = 0.0
  data = sources.load_dataset(config.data)
  np.testing.assert_array_equal(data.y_train, data.y_train_full)


def test_plt_synth_is_generated_once_per_machine_and_read_back_exactly(config, tmp_path, capsys):
  small = {'data.cache_dir': str(tmp_path), 'data.seed': 5, 'data.synthetic.pool_size': 2000,
           'data.synthetic.num_test': 100, 'data.synthetic.min_test_positives': 3}
  config.update_from_flattened_dict(small)
  plt_synth._plt_synth.cache_clear()
  first = sources.load_dataset(config.data)
  stored, = (tmp_path / 'plt_synth').iterdir()
  plt_synth._plt_synth.cache_clear()                       # a new process: read from the disk
  again = sources.load_dataset(config.data)
  fresh = synthetic.make_plt_synth(seed=5, pool_size=2000, num_test=100, min_test_positives=3)
  for field in ('x_train', 'y_train', 'y_train_full', 'x_test', 'y_test', 'x_val', 'y_val'):
    np.testing.assert_array_equal(getattr(first, field), getattr(fresh, field))
    np.testing.assert_array_equal(getattr(again, field), getattr(fresh, field))
  assert again.class_names == fresh.class_names and not again.x_train.flags.writeable
  # Another missing ratio is another file; a damaged file is generated again, with a warning.
  stored.write_bytes(stored.read_bytes()[:1000])
  plt_synth._plt_synth.cache_clear()
  repaired = sources.load_dataset(config.data)
  assert 'unreadable' in capsys.readouterr().err
  np.testing.assert_array_equal(repaired.x_val, fresh.x_val)
  config.data.missing_ratio = 0.5
  sources.load_dataset(config.data)
  assert len(list((tmp_path / 'plt_synth').iterdir())) == 2
