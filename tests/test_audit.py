"""The label audit's pure parts against brute-force references."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve

from comic_jax.audit import rankings
from comic_jax.audit import review as audit_review
from comic_jax.audit import suspects as audit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _case(seed=0, n=40, c=5):
  rng = np.random.default_rng(seed)
  full = (rng.random((n, c)) < 0.4).astype(np.int8)
  observed = full * (rng.random((n, c)) < 0.5)
  negatives = (full == 0) & (rng.random((n, c)) < 0.3)
  probs = np.clip(0.5 * full + 0.6 * rng.random((n, c)), 0, 1).round(2)   # ties
  return probs, observed, full, negatives


def test_suspects_are_the_unobserved_unknown_labels_above_the_cut_ranked_by_score():
  probs, observed, _, negatives = _case()
  cut = np.array([0.5, 0.6, 0.3, 0.9, 0.7])
  got = audit.suspects(probs, observed, negatives, cut)
  expected = sorted(((i, c) for i in range(len(probs)) for c in range(5)
                     if observed[i, c] == 0 and not negatives[i, c] and probs[i, c] > cut[c]),
                    key=lambda ic: (-probs[ic], ic[0], ic[1]))
  assert [tuple(r) for r in got] == expected


def test_hidden_label_recovery_and_the_precision_recall_curve():
  probs, observed, full, negatives = _case(1)
  cut = audit.rlc_thresholds(probs, tau=0.6)
  np.testing.assert_array_equal(cut, np.maximum(0.6, probs.mean(0)))
  r = audit.hidden_label_recovery(probs, observed, full, negatives, cut)
  found = audit.suspects(probs, observed, negatives, cut)
  hits = sum(full[i, c] for i, c in found)
  hidden = int(((full == 1) & (observed == 0)).sum())
  assert (r['hits'], r['suspects'], r['hidden']) == (hits, len(found), hidden)
  assert r['precision'] == hits / len(found) and r['recall'] == hits / hidden
  # The curve at each distinct score equals scikit-learn's.
  mask = (observed == 0) & ~negatives
  scores, is_hidden = probs[mask], ((full == 1) & (observed == 0))[mask]
  recall, precision = audit.precision_recall(scores, is_hidden)
  order = np.argsort(-scores, kind='stable')
  last_of_tie = np.r_[scores[order][1:] != scores[order][:-1], True]
  ref_p, ref_r, _ = precision_recall_curve(is_hidden, scores)
  got = sorted(zip(recall[last_of_tie], precision[last_of_tie]))
  want = sorted(zip(ref_r[:-1], ref_p[:-1]))
  np.testing.assert_allclose(got, want)


def test_apply_verdicts_gives_the_unknown_format():
  labels = np.array([[1, 0, 0], [0, 0, 1]], np.int8)          # no -1: every 0 is unknown
  got = audit_review.apply_verdicts(labels, [(0, 1), (1, 0)], [True, False])
  np.testing.assert_array_equal(got, [[1, 1, -1], [0, -1, 1]])
  with_unknown = np.array([[1, 0, -1], [-1, -1, 1]], np.int8)  # 0 = known negative, kept
  got = audit_review.apply_verdicts(with_unknown, [(0, 2), (1, 1)], [False, True])
  np.testing.assert_array_equal(got, [[1, 0, 0], [-1, 1, 1]])


# ------------------------------------------------------------------ the command line, tiny npz

def _npz(path, seed=0, n=48, c=3, d=6):
  rng = np.random.default_rng(seed)
  def split(m):
    y = (rng.random((m, c)) < 0.4).astype(np.int8)
    y[np.arange(m), rng.integers(0, c, m)] = 1
    x = (y @ rng.normal(size=(c, d)) * 2 + rng.normal(size=(m, d))).astype(np.float32)
    return x, y
  x_train, y_full = split(n)
  x_test, y_test = split(20)
  y_train = y_full * (rng.random(y_full.shape) < 0.6)    # partial labels
  y_train[np.arange(n), y_full.argmax(1)] = 1            # one positive per image
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return x_train, y_train


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'comic_jax.audit', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def npz_run(tmp_path_factory):
  """A 1-epoch BCE MLP run on a tiny .npz of features, a quarter held out for validation."""
  from comic_jax.training import train
  from configs import npz
  root = tmp_path_factory.mktemp('npz_run')
  path = str(root / 'data.npz')
  x_train, y_train = _npz(path)
  config = npz.get_config()
  config.update_from_flattened_dict({
      'method': 'bce', 'num_epochs': 1, 'batch_size': 16, 'eval_batch_size': 32,
      'progress_bar': False, 'data.path': path, 'data.partial': 'as_is',
      'data.val_fraction': 0.25, 'data.cache_dir': str(root / 'cache'),
      'model.mlp_widths': (8,), 'model.projection_dim': 8})
  train.train_and_evaluate(config, str(root / 'run'))
  return str(root / 'run'), path, x_train, y_train


def test_audit_names_every_labelled_row_of_the_npz_validation_rows_included(npz_run, tmp_path):
  from comic_jax.data import plt
  from comic_jax.inference import predict
  workdir, _, x_train, y_train = npz_run
  out = str(tmp_path / 'suspects.csv')
  result = _cli(f'--workdir={workdir}', f'--output={out}', '--cut=0', '--rank=score',
                '--plot=' + str(tmp_path / 'a.png'))
  assert result.returncode == 0, result.stderr
  # No hidden labels are known: --plot says it cannot apply, and draws nothing.
  assert 'warning: --plot' in result.stderr and not os.path.exists(tmp_path / 'a.png')
  with open(out) as f:
    rows = list(csv.DictReader(f))
  probs = predict.load(workdir).predict(x_train)          # every row of the user's x_train
  keep, held = plt.split_validation(len(y_train), 0.25, 0)
  assert len(held) == 12
  threshold = np.maximum(0.7, probs[keep].mean(0))        # RLC's: the training rows' mean
  classes = [f'class_{j}' for j in range(3)]
  want = {(str(i), classes[j]) for i in range(len(y_train)) for j in range(3)
          if y_train[i, j] == 0}
  assert {(r['image'], r['class']) for r in rows} == want
  for r in rows:
    i, j = int(r['image']), classes.index(r['class'])
    assert r['split'] == ('val' if i in held else 'train')
    assert float(r['score']) == pytest.approx(probs[i, j], abs=2e-6)
    assert float(r['rlc_threshold']) == pytest.approx(threshold[j], abs=2e-6)
    assert r['verdict'] == ''


def test_review_writes_the_new_labels_and_refuses_a_label_file_of_another_run(npz_run, tmp_path):
  workdir, path, _, y_train = npz_run
  out = str(tmp_path / 'suspects.csv')
  # The suspects file, written in-process as `--workdir=W --output=O --cut=0` writes it (the
  # test above runs that command); the reviews below run the command.
  from comic_jax.audit import suspects
  suspects.write_rows(out, suspects.Audit(workdir, cut='0').rows())
  with open(out) as f:
    rows = list(csv.DictReader(f))
  for k, r in enumerate(rows[:9]):                        # yes, no, unreviewed, ...
    r['verdict'] = ('yes', 'no', '')[k % 3]
  reviewed = str(tmp_path / 'reviewed.csv')
  with open(reviewed, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  new = str(tmp_path / 'new.npz')
  result = _cli(f'--workdir={workdir}', f'--review={reviewed}', f'--labels={path}',
                f'--output={new}')
  assert result.returncode == 0, result.stderr
  expected = np.where(y_train > 0, 1, -1)
  for k, r in enumerate(rows[:9]):
    if r['verdict']:
      expected[int(r['image']), int(r['class'].split('_')[1])] = int(r['verdict'] == 'yes')
  with np.load(new) as z, np.load(path) as old:
    np.testing.assert_array_equal(z['y_train'], expected)
    for k in ('x_train', 'x_test', 'y_test'):
      np.testing.assert_array_equal(z[k], old[k])
  # The new file trains as documented: the rejected labels are known negatives.
  from comic_jax.data import own_data
  from configs import npz
  dc = npz.get_config().data
  dc.path = new
  _, pool, _ = own_data.npz_pools(dc)
  np.testing.assert_array_equal(pool.negatives, expected == 0)
  np.testing.assert_array_equal(pool.labels, expected == 1)
  # A label file that already gives a reviewed label is another run's: refused, nothing written.
  bad = str(tmp_path / 'bad.npz')
  with np.load(path) as z:
    arrays = dict(z)
  first = rows[0]
  arrays['y_train'][int(first['image']), int(first['class'].split('_')[1])] = 1
  np.savez(bad, **arrays)
  result = _cli(f'--workdir={workdir}', f'--review={reviewed}', f'--labels={bad}',
                f'--output={tmp_path / "no.npz"}')
  assert result.returncode == 2 and result.stderr.startswith('error: ')
  assert 'does not match the run' in result.stderr and len(result.stderr.splitlines()) == 1
  assert not os.path.exists(tmp_path / 'no.npz')


def test_ranking_ap_is_scikit_learn_s_and_the_class_relative_rankings():
  probs, observed, full, negatives = _case(2, n=60, c=4)
  probs = probs + np.arange(probs.size).reshape(probs.shape) * 1e-6      # no ties
  mask = audit.unobserved(observed, negatives)
  hidden = (full == 1) & (observed == 0)
  key = audit.ranking_scores('score', probs, observed, mask, np.ones(60, bool), None)
  assert audit.ranking_ap(key[mask], probs[mask], hidden[mask]) == pytest.approx(
      average_precision_score(hidden[mask], probs[mask]))
  # 'positives': the share of the class's observed positives scored below, by brute force.
  training = np.arange(60) % 4 != 0
  key = audit.ranking_scores('positives', probs, observed, mask, training, None)
  for i, c in [(0, 0), (5, 1), (17, 3)]:
    pos = probs[training & (observed[:, c] == 1), c]
    assert key[i, c] == pytest.approx((pos < probs[i, c]).mean())
  # 'threshold': logit(p) - logit(t_c); 'class_rank': 1 - rank / (the class's candidates).
  t = np.array([0.7, 0.8, 0.75, 0.9])
  key = audit.ranking_scores('threshold', probs, observed, mask, training, t)
  logit = lambda p: np.log(p / (1 - p))
  np.testing.assert_allclose(key, logit(np.clip(probs, 1e-7, 1 - 1e-7)) - logit(t), atol=1e-9)
  key = audit.ranking_scores('class_rank', probs, observed, mask, training, t)
  for c in range(4):
    rows = np.flatnonzero(mask[:, c])
    ranks = np.argsort(np.argsort(-probs[rows, c]))
    np.testing.assert_allclose(key[rows, c], 1 - ranks / len(rows))


@pytest.mark.parametrize('ext', ['csv', 'json'])
def test_reviewed_folder_labels_read_back_with_their_known_negatives(tmp_path, ext):
  from comic_jax.data import own_data, splits
  labels = np.array([[1, -1, 0], [-1, 1, -1]], np.int8)
  path = str(tmp_path / f'new.{ext}')
  with open(path, 'wb') as f:
    f.write(audit_review.label_file_bytes(path, ['a.jpg', 'sub/b.png'], labels,
                                          ('cat', 'dog', 'sky'), None))
  files, read, names = splits.read_labels(path, unknown=True)
  assert files == ['a.jpg', 'sub/b.png'] and names in (None, ['cat', 'dog', 'sky'])
  np.testing.assert_array_equal(read, labels)
  positives, negatives = own_data.split_unknown(read)
  np.testing.assert_array_equal(negatives, labels == 0)
  np.testing.assert_array_equal(positives, labels == 1)


def test_context_log_ratio_counts_the_other_rows_and_the_other_labels():
  """By hand: each (image, class) from counts over the OTHER training rows."""
  probs, observed, _, negatives = _case(3, n=30, c=4)
  training = np.arange(30) % 5 != 0                 # every fifth row held out for validation
  s = 0.7
  got = rankings.context_log_ratio(observed, training, smoothing=s)
  for i in range(30):
    others = [r for r in range(30) if training[r] and r != i]
    y = observed[others] > 0
    for c in range(4):
      prior = y[:, c].mean()
      js = [j for j in range(4) if j != c and observed[i, j] > 0]
      if not js or prior == 0:
        assert got[i, c] == 0
        continue
      ratios = [np.log((np.sum(y[:, c] & y[:, j]) + s * prior) / (y[:, j].sum() + s) / prior)
                for j in js]
      assert got[i, c] == pytest.approx(np.mean(ratios), abs=1e-12)
  # Hand-counted case: classes 0 and 1 always together, 2 alone; the image (row 3) holds 1.
  observed = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]])
  got = rankings.context_log_ratio(observed, np.ones(4, bool), smoothing=1.0)
  prior = 2 / 3                                     # class 0 on 2 of the 3 other rows
  assert got[3, 0] == pytest.approx(np.log((2 + prior) / (2 + 1) / prior))
  assert got[3, 2] == pytest.approx(np.log((0 + 1 / 3) / (2 + 1) / (1 / 3)))   # never together
  mask = audit.unobserved(observed, None)
  key = audit.ranking_scores('context', np.full((4, 3), 0.25), observed, mask, np.ones(4, bool),
                             None)
  np.testing.assert_allclose(key, np.log(1 / 3) + got)


def test_prototype_similarity_is_the_standardised_cosine_with_the_positives_mean():
  rng = np.random.default_rng(4)
  features = rng.normal(size=(25, 6))
  _, observed, _, negatives = _case(4, n=25, c=3)
  observed[:, 2] = 0                                  # a class without positives: 0
  training = np.arange(25) % 6 != 0
  candidate = audit.unobserved(observed, negatives)
  got = rankings.prototype_similarity(features, observed, training, candidate)
  centred = features - features.mean(0)
  unit = [v / np.linalg.norm(v) for v in centred]
  for c in range(2):
    proto = sum(unit[i] for i in range(25) if training[i] and observed[i, c])
    cos = np.array([u @ proto / np.linalg.norm(proto) for u in unit])
    ref = (cos - cos[candidate[:, c]].mean()) / cos[candidate[:, c]].std()
    np.testing.assert_allclose(got[:, c], ref, atol=1e-12)
  np.testing.assert_array_equal(got[:, 2], 0)
  key = audit.ranking_scores('context_prototype', np.full((25, 3), 0.5), observed, candidate,
                             training, None, features)
  np.testing.assert_allclose(key, rankings.context_log_ratio(observed, training) + got)


def test_embeddings_are_what_the_run_s_classifier_reads(npz_run):
  from comic_jax import predict
  workdir, _, x_train, _ = npz_run
  model = predict.load(workdir)
  f = rankings.embeddings(model, x_train)
  dense = model.variables['params']['classifier']['dense']
  logits = f @ np.asarray(dense['kernel']) + np.asarray(dense['bias'])
  np.testing.assert_allclose(1 / (1 + np.exp(-logits)), model.predict(x_train), atol=1e-5)


def test_split_folds_cover_the_rows_once_and_leave_out_fold_drops_them():
  from comic_jax.data import plt, types
  folds = plt.split_folds(23, 4, seed=5)
  assert sorted(np.concatenate(folds).tolist()) == list(range(23))
  assert sorted(len(f) for f in folds) == [5, 6, 6, 6]
  assert all((np.diff(f) > 0).all() for f in folds)
  assert any(not np.array_equal(a, b) for a, b in zip(folds, plt.split_folds(23, 4, seed=6)))
  y = np.arange(23 * 2).reshape(23, 2) % 2
  data = types.PLTData(name='t', class_names=('a', 'b'), x_train=np.arange(23)[:, None],
                       y_train=y, y_train_full=y, x_test=np.zeros((1, 1)), y_test=y[:1])
  dc = type('DC', (), {'folds': 4, 'fold': 2, 'seed': 5})
  out = plt.leave_out_fold(data, dc)
  np.testing.assert_array_equal(out.x_train[:, 0], np.setdiff1d(np.arange(23), folds[2]))
  np.testing.assert_array_equal(out.y_train, y[out.x_train[:, 0]])
  dc.folds = 0
  assert plt.leave_out_fold(data, dc) is data


def test_a_fold_model_trains_on_the_validation_images_too():
  """Every labelled image outside the fold: the other folds' training rows, then the validation
  rows (cached (N, D) features repeated over the training set's views; their 0s unknown)."""
  from comic_jax.data import plt, types
  rng = np.random.default_rng(0)
  x = rng.normal(size=(10, 3, 4)).astype(np.float32)          # 10 images x 3 views x 4 features
  y, y_full = rng.integers(0, 2, (10, 2)), np.ones((10, 2), int)
  neg = (y == 0) & (rng.random((10, 2)) < 0.5)
  x_val, y_val = rng.normal(size=(3, 4)).astype(np.float32), np.array([[1, 0], [0, 1], [1, 1]])
  data = types.PLTData(name='t', class_names=('a', 'b'), x_train=x, y_train=y,
                       y_train_full=y_full, x_test=x_val, y_test=y_val, x_val=x_val, y_val=y_val,
                       neg_train=neg)
  dc = type('DC', (), {'folds': 5, 'fold': 1, 'seed': 0})
  keep = np.setdiff1d(np.arange(10), plt.split_folds(10, 5, 0)[1])
  out = plt.leave_out_fold(data, dc)
  assert out.x_train.shape == (len(keep) + 3, 3, 4)
  np.testing.assert_array_equal(out.x_train[:len(keep)], x[keep])
  for view in range(3):
    np.testing.assert_array_equal(out.x_train[len(keep):, view], x_val)
  np.testing.assert_array_equal(out.y_train, np.concatenate([y[keep], y_val]))
  np.testing.assert_array_equal(out.y_train_full, np.concatenate([y_full[keep], y_val]))
  np.testing.assert_array_equal(out.neg_train[:len(keep)], neg[keep])
  assert not out.neg_train[len(keep):].any()
  np.testing.assert_array_equal(out.x_val, x_val)      # the validation set stays


def test_validation_images_stored_at_another_size_stay_out_of_the_folds(capsys):
  from comic_jax.data import plt, types
  y = np.eye(2, dtype=np.int8)[np.arange(8) % 2]
  data = types.PLTData(name='t', class_names=('a', 'b'), x_train=np.zeros((8, 6, 6, 3), np.uint8),
                       y_train=y, y_train_full=y, x_test=np.zeros((2, 4, 4, 3), np.uint8),
                       y_test=y[:2], x_val=np.zeros((2, 4, 4, 3), np.uint8), y_val=y[:2])
  out = plt.leave_out_fold(data, type('DC', (), {'folds': 2, 'fold': 0, 'seed': 0}))
  assert out.x_train.shape == (4, 6, 6, 3) and len(out.y_train) == 4
  err = capsys.readouterr().err
  assert 'warning:' in err and 'train on the training images only' in err


def test_folds_score_each_training_row_with_the_model_that_never_saw_it(npz_run, tmp_path):
  """--folds=2: two BCE models, each trained without one half of the training rows (and with the
  validation rows); a training row's score is the sigmoid of the mean log-odds of the run's score
  and its fold model's, in closed form sqrt(pq) / (sqrt(pq) + sqrt((1-p)(1-q))); a validation
  row keeps the run's."""
  from comic_jax.data import plt
  from comic_jax.inference import predict
  workdir, _, x_train, _ = npz_run
  out = str(tmp_path / 'suspects.csv')
  result = _cli(f'--workdir={workdir}', f'--output={out}', '--cut=0', '--rank=score',
                '--folds=2')
  assert result.returncode == 0, result.stderr
  assert 'with 2 out-of-fold models' in result.stdout
  run = predict.load(workdir).predict(x_train).astype(np.float64)
  keep, held = plt.split_validation(len(x_train), 0.25, 0)
  want = run.copy()
  for k, fold in enumerate(plt.split_folds(len(keep), 2, 0)):
    fold_dir = os.path.join(workdir, 'folds', str(k))
    # 18 of the 36 training rows and the 12 validation rows at batch 16: one step per epoch
    assert sorted(os.listdir(os.path.join(fold_dir, 'checkpoints'))) == ['1']
    rows = keep[fold]
    q = predict.load(fold_dir).predict(x_train[rows]).astype(np.float64)
    p = run[rows]
    want[rows] = np.sqrt(p * q) / (np.sqrt(p * q) + np.sqrt((1 - p) * (1 - q)))
  with open(out) as f:
    rows = list(csv.DictReader(f))
  assert {r['split'] for r in rows} == {'train', 'val'}
  for r in rows:
    i, j = int(r['image']), int(r['class'].split('_')[1])
    assert float(r['score']) == pytest.approx(want[i, j], abs=2e-6)
  assert not np.allclose(want[keep], run[keep])
  bad = _cli(f'--workdir={workdir}', f'--output={out}', '--folds=1')
  assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].endswith(
      '--folds=1 must be 0 (off) or at least 2')
