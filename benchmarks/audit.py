"""The label audit measured on PLT-Synth, whose hidden training labels are known (the audit is
scored on the TRAINING set's hidden labels; the test set is read only by the review loop's
retraining, for its test mAP).

    # How each ranking (--rank) finds the hidden labels, overall and per class group, for
    # finished runs (one row per run and ranking):
    python benchmarks/audit.py rankings --workdirs=runs/comic_plus,runs/bce --output=rankings.csv
    # ... with the audit's 5 out-of-fold BCE models (comic-jax-audit --folds=5), trained once in
    # --folds_dir for runs of the same data and model (the fold models are BCE whatever the
    # run's method):
    python benchmarks/audit.py rankings --workdirs=runs/comic_plus,runs/bce --folds=5 \
        --folds_dir=/tmp/folds --output=rankings_folds.csv

    # The review loop: a simulated reviewer accepts exactly the hidden labels among the top N
    # suspects of --workdir's audit and rejects the others; the run's config retrains on the
    # reviewed labels (seed as the run), and the test mAP is compared with N = 0 (the same
    # labels, retrained in this process) and with the run itself:
    python benchmarks/audit.py review --workdir=runs/comic_plus --n=0,100,300,1000 \
        --output=review.csv --scratch=/tmp/review_runs

    # The audit against cleanlab (pip install cleanlab==2.9.*, for this command only): cleanlab's
    # per-class label quality from K-fold out-of-sample BCE probabilities (each fold a BCE run of
    # the run's config on the other folds' and the validation images), and BCE's / Hill's
    # in-sample scores:
    python benchmarks/audit.py compare --workdir=runs/comic_plus --bce=runs/bce --hill=runs/hill \
        --folds=5 --output=compare.csv --scratch=/tmp/folds

PLT-Synth has no label file of the user's: the review command puts the reviewed labels in place
of PLT-Synth's observed training labels inside this process (accepted -> positive, rejected ->
known negative, through `review.apply_verdicts`, as `comic-jax-audit --review` writes them to an
.npz or a label file).
"""
import argparse
import csv
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from comic_jax import atomic  # noqa: E402
from comic_jax.audit import rankings as rankings_lib  # noqa: E402
from comic_jax.audit import review as review_lib  # noqa: E402
from comic_jax.audit import suspects as audit_lib  # noqa: E402
from comic_jax.data import longtail  # noqa: E402

GROUPS = ('all', *longtail.GROUP_NAMES)


def groups_of(a) -> np.ndarray:
  """(C,) many / medium / few of each class, from the training set's full label counts."""
  dc = a.model.config.data
  return longtail.class_groups(a.full[a.images.training].sum(0), dc.many_threshold,
                               dc.few_threshold)


def scores_table(name: str, key: np.ndarray, a, cut_found=None) -> list[dict]:
  """One row per class group: AP of ranking the unobserved labels by `key` (ties by score),
  precision at k (k = the group's hidden labels), and precision / recall at the cut `cut_found`
  ((K, 2) listed cells) where given."""
  mask = audit_lib.unobserved(a.observed, a.negatives)
  hidden = (a.full > 0) & (a.observed == 0)
  groups = groups_of(a)
  rows = []
  for g, group in enumerate(GROUPS):
    in_group = mask & (np.ones_like(mask) if group == 'all' else (groups == g - 1)[None, :])
    k = int(hidden[in_group].sum())
    order = np.lexsort((-a.probs[in_group], -key[in_group]))
    row = {'scores': name, 'group': group, 'hidden': k, 'unobserved': int(in_group.sum()),
           'ap': audit_lib.ranking_ap(key[in_group], a.probs[in_group], hidden[in_group]),
           'precision_at_k': float(hidden[in_group][order][:k].mean()) if k else float('nan')}
    if cut_found is not None:
      listed = np.zeros_like(mask)
      listed[cut_found[:, 0], cut_found[:, 1]] = True
      listed &= in_group
      hits = int((listed & hidden).sum())
      row.update(listed=int(listed.sum()), precision=hits / max(int(listed.sum()), 1),
                 recall=hits / max(k, 1))
    rows.append(row)
  return rows


def rankings(args) -> list[dict]:
  out = []
  for workdir in args.workdirs.split(','):
    a = audit_lib.Audit(workdir, folds=args.folds, folds_dir=args.folds_dir or None)
    mask = audit_lib.unobserved(a.observed, a.negatives)
    for kind in rankings_lib.RANKINGS:
      key = audit_lib.ranking_scores(
          kind, a.probs, a.observed, mask, a.images.training, a.rlc,
          a.features() if kind in rankings_lib.NEEDS_FEATURES else None)
      for row in scores_table(kind, key, a):
        out.append({'run': os.path.basename(workdir.rstrip('/')), 'method': a.method,
                    'folds': args.folds, **row})
  return out


# ------------------------------------------------------------------------------- review loop

def reviewed_labels(a, n: int):
  """(y_train, neg_train, accepted, rejected) after a reviewer who accepts exactly the hidden
  labels among the top n suspects of the audit `a` and rejects the others."""
  found = audit_lib.suspects(a.probs, a.observed, a.negatives, a.cut, a.key)[:n]
  accepted = (a.full > 0)[found[:, 0], found[:, 1]]
  labels = a.observed.astype(np.int8)
  if a.negatives is not None:
    labels = np.where(a.negatives, 0, np.where(labels > 0, 1, -1)).astype(np.int8)
  new = review_lib.apply_verdicts(labels, found, accepted)
  return (new == 1).astype(np.int8), new == 0, int(accepted.sum()), int((~accepted).sum())


def retrain(config, workdir: str, y_train, neg_train) -> dict:
  """Trains `config` with PLT-Synth's observed training labels replaced; its results.json."""
  from comic_jax.data import sources
  from comic_jax.training import train
  original = sources.load_dataset

  def reviewed(dc):
    return dataclasses.replace(original(dc), y_train=y_train, neg_train=neg_train)

  sources.load_dataset = reviewed
  try:
    if not os.path.exists(os.path.join(workdir, 'results.json')):
      train.train_and_evaluate(config, workdir)
  finally:
    sources.load_dataset = original
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def review_loop(args) -> list[dict]:
  a = audit_lib.Audit(args.workdir, rank=args.rank)
  config = a.model.config
  with open(os.path.join(args.workdir, 'results.json')) as f:
    before = json.load(f)
  report = 'COMIC+' if 'COMIC+' in before else a.model.model    # the method's reported model
  before = before[report]
  rows = [{'n': 'run', 'accepted': 0, 'rejected': 0, 'seconds': '', 'model': report,
           **{g: before[g] for g in ('total', 'many', 'medium', 'few')}}]
  for n in (int(v) for v in args.n.split(',')):
    y_train, negatives, accepted, rejected = reviewed_labels(a, n)
    start = time.time()
    results = retrain(config, os.path.join(args.scratch, f'n{n}'), y_train,
                      negatives if negatives.any() else None)[report]
    rows.append({'n': n, 'accepted': accepted, 'rejected': rejected,
                 'seconds': round(time.time() - start), 'model': report,
                 **{g: results[g] for g in ('total', 'many', 'medium', 'few')}})
    print(rows[-1], flush=True)
  return rows


def write_csv(path: str, rows: list[dict]) -> None:
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: (f'{v:.4f}' if isinstance(v, float) else v) for k, v in r.items()})


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  p = sub.add_parser('rankings')
  p.add_argument('--workdirs', required=True)
  p.add_argument('--folds', type=int, default=0, help='the audit\'s out-of-fold models (--folds)')
  p.add_argument('--folds_dir', default='', help='where they are trained (default: each '
                 'workdir\'s folds/); runs on the same data and model share them')
  p = sub.add_parser('review')
  p.add_argument('--workdir', required=True)
  p.add_argument('--n', default='0,100,300,1000')
  p.add_argument('--rank', default=audit_lib.DEFAULT_RANK)
  p.add_argument('--scratch', required=True)
  p = sub.add_parser('compare')
  p.add_argument('--workdir', required=True)
  p.add_argument('--bce', required=True)
  p.add_argument('--hill', required=True)
  p.add_argument('--folds', type=int, default=5)
  p.add_argument('--scratch', required=True)
  for p in sub.choices.values():
    p.add_argument('--output', required=True)
  args = parser.parse_args()
  start = time.time()
  if args.command == 'compare':
    import audit_cleanlab  # benchmarks/audit_cleanlab.py, beside this script
    rows = audit_cleanlab.compare(args, scores_table)
  else:
    rows = rankings(args) if args.command == 'rankings' else review_loop(args)
  write_csv(args.output, rows)
  print(f'-> {args.output}, {write_environment(args.output, args.command, time.time() - start)}')


def write_environment(output: str, command: str, wall_s: float) -> str:
  """environment_<command>.json beside the output: the command, date, wall time, machine."""
  import datetime

  from comic_jax.training import machine
  path = os.path.join(os.path.dirname(os.path.abspath(output)), f'environment_{command}.json')
  atomic.write_json(path, {
      'command': ' '.join(['python benchmarks/audit.py', *sys.argv[1:]]),
      'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d'),
      'wall_time_s': round(wall_s, 1), **machine.machine_description()}, indent=2)
  return path


if __name__ == '__main__':
  main()
