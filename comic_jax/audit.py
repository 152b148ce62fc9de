"""A label audit: which of the training labels are missing? For each training image, the labels
not observed that the trained model scores as present, ranked by score.

    python -m comic_jax.audit --workdir=runs/mine --output=suspects.csv
    comic-jax-audit --workdir=runs/mine --output=suspects.csv --cut=0.5

suspects.csv, one row per suspected missing label, highest score first:

    image,class,score,rlc_threshold,rlc_corrects,rank

`rlc_threshold` is RLC's threshold of the class, max{tau, P_c}: tau = `comic.rlc.tau`, P_c the
mean score of the class over the training images (RLC's running class mean, here of the trained
model). `rlc_corrects` says whether RLC's rule, with the trained model, corrects the label
(score > rlc_threshold): what RLC was doing to it at the end of training. Labels known to be
absent (0 in a training file with -1 entries) are left out; so are the observed positives.

The cut (`--cut`): 'rlc' (the default: the labels RLC corrects), 'val' (the run's validation
thresholds, thresholds.json) or a number for every class. Where the hidden labels are known
(PLT-Synth simulates them), the precision and recall of the hidden labels at the cut are
printed, and `--plot=audit.png` draws the precision-recall curve of the ranking of every
unobserved label, with `--compare` workdirs (other methods) and a random ranking.
"""
from __future__ import annotations

import csv
import io
import os

import numpy as np

from comic_jax import predict
from comic_jax import workdir as workdir_lib
from comic_jax.errors import UserError, require

COLUMNS = ('image', 'class', 'score', 'rlc_threshold', 'rlc_corrects', 'rank')


def training_names(config, n: int) -> list[str]:
  """The file names of the training images (the label file's rows, less the validation ones)
  for an image folder taken as it is; else 'train <i>'."""
  dc = config.data
  if dc.name == 'folder' and dc.longtail == 'as_is':
    from comic_jax.data import sources, splits
    files = splits.read_labels(dc.train_labels, unknown=True)[0]
    keep = sources.split_validation(len(files), dc.val_fraction, dc.seed)[0]
    if len(keep) == n:
      return [str(files[i]) for i in keep]
  return [f'train {i}' for i in range(n)]


def rlc_thresholds(probs: np.ndarray, tau: float) -> np.ndarray:
  """(C,) max{tau, P_c}, P_c the mean score of class c over the images of `probs`."""
  return np.maximum(tau, np.asarray(probs, np.float64).mean(axis=0))


def cut_of(cut: str, model, rlc: np.ndarray) -> np.ndarray:
  """(C,) thresholds of the cut: 'rlc', 'val' or a number."""
  if cut == 'rlc':
    return rlc
  return model.thresholds(threshold=cut)


def suspects(probs: np.ndarray, observed: np.ndarray, negatives: np.ndarray | None,
             cut: np.ndarray) -> np.ndarray:
  """(image, class) pairs of the unobserved, not known-negative labels scored above `cut`,
  highest score first (ties by image, then class)."""
  candidate = (observed == 0) & (probs > cut[None, :])
  if negatives is not None:
    candidate &= ~negatives.astype(bool)
  rows, cols = np.nonzero(candidate)
  order = np.lexsort((cols, rows, -probs[rows, cols]))
  return np.stack([rows[order], cols[order]], axis=1)


def hidden_label_recovery(probs, observed, full, negatives, cut) -> dict:
  """Precision and recall of the hidden labels (full 1, observed 0) among the suspects."""
  found = suspects(probs, observed, negatives, cut)
  hidden = (full > 0) & (observed == 0)
  hits = int(hidden[found[:, 0], found[:, 1]].sum()) if len(found) else 0
  return {'suspects': int(len(found)), 'hidden': int(hidden.sum()), 'hits': hits,
          'precision': hits / len(found) if len(found) else float('nan'),
          'recall': hits / max(int(hidden.sum()), 1)}


def precision_recall(scores: np.ndarray, is_hidden: np.ndarray):
  """(recall, precision) of ranking the unobserved labels by `scores` (one point per rank)."""
  order = np.argsort(-scores, kind='stable')
  hits = np.cumsum(is_hidden[order])
  return hits / max(int(is_hidden.sum()), 1), hits / np.arange(1, len(order) + 1)


class Audit:
  """The audit of one run: its model's scores of every training image, and the cut."""

  def __init__(self, workdir: str, *, cut: str = 'rlc', model: str | None = None):
    from comic_jax import inference
    from comic_jax.data import sources
    self.model = predict.load(workdir, model=model)
    config = self.model.config
    self.data = sources.load_dataset(config.data)
    self.probs = self.model.predict(self.data.x_train).astype(np.float64)
    self.observed = np.asarray(self.data.y_train)
    self.negatives = self.data.neg_train
    self.rlc = rlc_thresholds(self.probs, float(config.comic.rlc.tau))
    self.cut = cut_of(cut, self.model, self.rlc)
    self.names = training_names(config, len(self.probs))
    self.method = inference.load_config(workdir).method

  def rows(self) -> list[tuple]:
    out = []
    for rank, (i, c) in enumerate(suspects(self.probs, self.observed, self.negatives, self.cut)):
      p = self.probs[i, c]
      out.append((self.names[i], self.model.class_names[c], f'{p:.6f}', f'{self.rlc[c]:.6f}',
                  int(p > self.rlc[c]), rank + 1))
    return out

  def hidden_known(self) -> bool:
    """Whether the data set knows its hidden labels (simulated partial labels)."""
    return bool((np.asarray(self.data.y_train_full) != self.observed).any())

  def recovery(self) -> dict:
    return hidden_label_recovery(self.probs, self.observed, np.asarray(self.data.y_train_full),
                                 self.negatives, self.cut)

  def unobserved_hidden(self):
    """(scores, is hidden) of every unobserved label that is not a known negative."""
    unobserved = self.observed == 0
    if self.negatives is not None:
      unobserved &= ~self.negatives.astype(bool)
    hidden = (np.asarray(self.data.y_train_full) > 0) & (self.observed == 0)
    return self.probs[unobserved], hidden[unobserved]


def write_rows(path: str, rows) -> None:
  buffer = io.StringIO(newline='')
  writer = csv.writer(buffer)
  writer.writerow(COLUMNS)
  writer.writerows(rows)
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    workdir_lib.write_text(path, buffer.getvalue())
  except OSError as e:
    raise UserError(f'cannot write {path!r}: {e.strerror or e}') from None


def plot_curves(audits: dict, path: str, seed: int = 0) -> str:
  """audit.png: precision-recall of the hidden labels per run, and of a random ranking."""
  from comic_jax import plots
  curves = {name: precision_recall(*a.unobserved_hidden()) for name, a in audits.items()}
  _, is_hidden = next(iter(audits.values())).unobserved_hidden()
  curves['random'] = precision_recall(np.random.default_rng(seed).random(len(is_hidden)),
                                      is_hidden)
  points = {name: (a.recovery()['recall'], a.recovery()['precision'])
            for name, a in audits.items()}
  return plots.precision_recall(curves, points, path)


# ------------------------------------------------------------------------------- command line

def _define_flags():
  from absl import flags
  flags.DEFINE_string('workdir', None, 'A trained run\'s directory.')
  flags.DEFINE_string('output', None, 'The suspects CSV to write.')
  flags.DEFINE_string('cut', 'rlc', "'rlc' (RLC's threshold max{tau, P_c}), 'val' (the run's "
                      'validation thresholds) or a number for every class.')
  flags.DEFINE_string('model', None, 'Reported model whose scores rank (default: the run\'s).')
  flags.DEFINE_string('plot', None, 'Where the hidden labels are known: write the '
                      'precision-recall picture here (e.g. audit.png).')
  flags.DEFINE_list('compare', [], 'Other workdirs (other methods, same data) drawn in --plot.')
  flags.mark_flags_as_required(['workdir', 'output'])


def main(argv):
  from absl import app, flags, logging

  from comic_jax import cli
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  FLAGS = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  try:
    require(FLAGS.cut in ('rlc', 'val') or _is_number(FLAGS.cut),
            f"--cut={FLAGS.cut!r} is not 'rlc', 'val' or a number")
    predict.use_compilation_cache(FLAGS.workdir)   # a second audit loads the compiled model
    audit = Audit(FLAGS.workdir, cut=FLAGS.cut, model=FLAGS.model)
    rows = audit.rows()
    write_rows(FLAGS.output, rows)
    print(f'{len(rows)} suspected missing labels in {len(audit.names)} training images -> '
          f'{FLAGS.output} ({audit.model.model}, cut {FLAGS.cut})')
    if audit.hidden_known():
      audits = {audit.method: audit}
      for other in FLAGS.compare:
        a = Audit(other, cut=FLAGS.cut)
        audits[a.method] = a
      for name, a in audits.items():
        r = a.recovery()
        print(f'{name}: hidden labels recovered at the cut: precision {100 * r["precision"]:.1f}%'
              f' recall {100 * r["recall"]:.1f}% ({r["hits"]} of {r["suspects"]} suspects; '
              f'{r["hidden"]} hidden labels; a random ranking\'s precision '
              f'{100 * r["hidden"] / max(len(a.unobserved_hidden()[1]), 1):.1f}%)')
      if FLAGS.plot:
        print(f'precision-recall curve -> {plot_curves(audits, FLAGS.plot)}')
  except UserError as e:
    cli.fail(e)


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def run_cli():
  from absl import app
  _define_flags()
  app.run(main, flags_parser=predict.parse_plain_flags)


if __name__ == '__main__':
  run_cli()
