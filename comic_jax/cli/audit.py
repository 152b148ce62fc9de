"""`python -m comic_jax.audit` (`comic-jax-audit`): which training labels are missing, as a
suspects file to review; with --review, the reviewed file applied to the run's label file.

    python -m comic_jax.audit --workdir=runs/mine --output=suspects.csv
    python -m comic_jax.audit --workdir=runs/mine --review=suspects.csv --labels=data.npz \\
        --output=reviewed.npz

The audit itself: comic_jax/audit/suspects.py (its orders: rankings.py; the review: review.py).
"""
from absl import flags

from comic_jax.audit.rankings import DEFAULT_RANK, RANKINGS, ranking_help
from comic_jax.cli import prologue
from comic_jax.errors import require

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('workdir', None, 'A trained run\'s directory.')
  flags.DEFINE_string('output', None, 'The suspects CSV to write (with --review: the new label '
                      'file).')
  flags.DEFINE_string('cut', 'rlc', "'rlc' (RLC's threshold max{tau, P_c}), 'val' (the run's "
                      'validation thresholds) or a number for every class.')
  flags.DEFINE_enum('rank', DEFAULT_RANK, RANKINGS, 'How suspects are ordered: ' + ranking_help())
  flags.DEFINE_integer('folds', 0, 'Train this many out-of-fold BCE models first (in '
                       'WORKDIR/folds; at least 2), each on every labelled image outside its '
                       'fold (validation images included), and score each training image with '
                       'the mean, in log-odds, of the run\'s score and that of the model that '
                       'never saw it (K more trainings): ranks the missing labels better, rare '
                       'classes\' too where the validation images hold them (docs/results.md); '
                       '0: off.')
  flags.DEFINE_string('model', None, 'Reported model whose scores rank (default: the run\'s).')
  flags.DEFINE_string('plot', None, 'Where the hidden labels are known: write the '
                      'precision-recall picture here (e.g. audit.png).')
  flags.DEFINE_list('compare', [], 'Other workdirs (other methods, same data) drawn in --plot.')
  flags.DEFINE_string('review', None, 'A suspects CSV whose verdict column is filled in: write '
                      'the run\'s label file (--labels) after the review to --output.')
  flags.DEFINE_string('labels', None, 'With --review: the label file the run trained on (the '
                      '.npz, or the folder\'s .csv / .json).')
  flags.mark_flags_as_required(['workdir', 'output'])


def main(argv):
  prologue.no_arguments(argv)
  prologue.quiet_logs()
  from comic_jax.audit.suspects import Audit, write_rows
  from comic_jax.inference import predict
  with prologue.user_errors():
    if FLAGS.review is not None or FLAGS.labels is not None:
      _review(FLAGS)
      return
    require(FLAGS.cut in ('rlc', 'val') or _is_number(FLAGS.cut),
            f"--cut={FLAGS.cut!r} is not 'rlc', 'val' or a number")
    predict.use_compilation_cache(FLAGS.workdir)   # a second audit loads the compiled model
    require(FLAGS.folds == 0 or FLAGS.folds >= 2, f'--folds={FLAGS.folds} must be 0 (off) '
            'or at least 2')
    audit = Audit(FLAGS.workdir, cut=FLAGS.cut, model=FLAGS.model, rank=FLAGS.rank,
                  folds=FLAGS.folds)
    rows = audit.rows()
    write_rows(FLAGS.output, rows)
    held = int((~audit.images.training).sum())
    print(f'{len(rows)} suspected missing labels in {len(audit.names)} labelled images'
          + (f' ({held} held out for validation)' if held else '')
          + f' -> {FLAGS.output} ({audit.model.model}'
          + (f' with {FLAGS.folds} out-of-fold models' if FLAGS.folds else '')
          + f', cut {FLAGS.cut}, ranked by {FLAGS.rank});'
          " fill in its 'verdict' column (yes / no) and apply it with --review")
    if audit.hidden_known():
      _report_hidden(audit, FLAGS)
    elif FLAGS.plot or FLAGS.compare:
      from comic_jax.errors import warn
      warn('--plot and --compare score the ranking against hidden labels, which this data set '
           'does not know (every unobserved label may be missing or absent): nothing drawn')


def _report_hidden(audit, FLAGS) -> None:
  from comic_jax.audit.suspects import Audit, plot_curves
  audits = {audit.method: audit}
  for other in FLAGS.compare:
    a = Audit(other, cut=FLAGS.cut, rank=FLAGS.rank)
    audits[a.method] = a
  for name, a in audits.items():
    r = a.recovery()
    print(f'{name}: hidden labels recovered at the cut: precision {100 * r["precision"]:.1f}%'
          f' recall {100 * r["recall"]:.1f}% ({r["hits"]} of {r["suspects"]} suspects; '
          f'{r["hidden"]} hidden labels; a random ranking\'s precision '
          f'{100 * r["hidden"] / max(len(a.unobserved_hidden()[1]), 1):.1f}%)')
  if FLAGS.plot:
    print(f'precision-recall curve -> {plot_curves(audits, FLAGS.plot)}')


def _review(FLAGS) -> None:
  from comic_jax.audit import review
  require(FLAGS.review is not None and FLAGS.labels is not None,
          '--review (the reviewed suspects CSV) and --labels (the run\'s label file) go together')
  counts = review.review(FLAGS.workdir, FLAGS.review, FLAGS.labels, FLAGS.output)
  print(f'{counts["accepted"]} accepted (now positive), {counts["rejected"]} rejected (now known '
        f'negative) -> {FLAGS.output} ({counts["images"]} images, {counts["unknown"]} labels '
        'unknown (-1)); train on it with data.partial=\'as_is\'')


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def run() -> None:
  define_flags()
  prologue.run(main, config_file=False)
