"""Pictures of a benchmark (PNG, matplotlib): per-class AP against training frequency, RLC
corrections per epoch, and the class distribution of the training set."""
from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def per_class_ap(runs: dict[str, list[dict]], path: str) -> str:
  """Per-class AP (mean over seeds) of each model, classes ordered head -> tail by their full
  training count, with the count on a log axis behind.

  runs: {reported model name: [per_class_ap.json contents of each seed]}.
  """
  first = next(iter(runs.values()))[0]
  counts = np.array(first['train_count_full'])
  order = np.argsort(-counts, kind='stable')
  fig, ax = plt.subplots(figsize=(max(8, 0.35 * len(counts)), 4.5))
  ax2 = ax.twinx()
  ax2.bar(np.arange(len(order)), counts[order], color='0.88', zorder=0)
  ax2.set_yscale('log')
  ax2.set_ylabel('training positives (full labels)')
  ax.set_zorder(ax2.get_zorder() + 1)
  ax.patch.set_visible(False)
  for model, per_seed in runs.items():
    ap = np.nanmean([[np.nan if v is None else v for v in s['ap'][model]] for s in per_seed], 0)
    ax.plot(np.arange(len(order)), ap[order], marker='o', ms=3,
            label=f'{model} (mAP {np.nanmean(ap):.1f})')
  ax.set_xticks(np.arange(len(order)))
  ax.set_xticklabels([first['class_names'][i] for i in order], rotation=90, fontsize=7)
  ax.set_ylabel('test AP (%)')
  ax.set_title('Per-class AP, classes from head (left) to tail (right)')
  ax.legend(loc='upper right')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def rlc_corrections(metrics_path: str, path: str) -> str | None:
  """RLC corrections per epoch and branch, split into true (a hidden label) and false positives."""
  lines = [json.loads(entry) for entry in open(metrics_path) if entry.strip()]
  lines = [entry for entry in lines if 'rlc' in entry]
  if not lines:
    return None
  branches = list(lines[0]['rlc'])
  epochs = [entry['epoch'] for entry in lines]
  fig, axes = plt.subplots(1, len(branches), figsize=(4.5 * len(branches), 3.5), sharey=True)
  axes = np.atleast_1d(axes)
  for ax, branch in zip(axes, branches):
    true = [entry['rlc'][branch]['true'] for entry in lines]
    false = [entry['rlc'][branch]['false'] for entry in lines]
    ax.bar(epochs, true, color='tab:green', label='true positives (hidden labels)')
    ax.bar(epochs, false, bottom=true, color='tab:red', label='false positives')
    ax.set_title(f'{branch} branch')
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  axes[0].set_ylabel('corrections per epoch')
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def class_distribution(per_class: dict, path: str) -> str:
  """Training positives per class (full and observed labels), head to tail, with the groups."""
  full = np.array(per_class['train_count_full'])
  observed = np.array(per_class['train_count_observed'])
  order = np.argsort(-full, kind='stable')
  colours = {'many': 'tab:blue', 'medium': 'tab:orange', 'few': 'tab:red'}
  fig, ax = plt.subplots(figsize=(max(8, 0.35 * len(full)), 4))
  x = np.arange(len(order))
  ax.bar(x, full[order], color=[colours[per_class['group'][i]] for i in order], alpha=0.45,
         label='full labels (bar colour: many / medium / few)')
  ax.bar(x, observed[order], color=[colours[per_class['group'][i]] for i in order],
         label='observed (partial) labels')
  ax.set_yscale('log')
  ax.set_xticks(x)
  ax.set_xticklabels([per_class['class_names'][i] for i in order], rotation=90, fontsize=7)
  ax.set_ylabel('training positives')
  ax.set_title(f'Training set: max/min = {full.max() / max(full.min(), 1):.0f} (full labels)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def benchmark_plots(workdir: str, runs: list[tuple[str, list[str]]]) -> list[str]:
  """The three pictures of a benchmark; returns the paths written.

  runs: (model to draw, [run directory of each seed]) per method. The RLC picture shows the
  first seed's run whose metrics log has RLC diagnostics.
  """
  written = []
  per_model: dict[str, list[dict]] = {}
  rlc_metrics = None
  for model, directories in runs:
    for d in directories:
      path = os.path.join(d, 'per_class_ap.json')
      if not os.path.exists(path):
        continue
      per_class = _read_json(path)
      if model in per_class['ap']:
        per_model.setdefault(model, []).append(per_class)
    log = os.path.join(directories[0], 'metrics.jsonl') if directories else ''
    if rlc_metrics is None and os.path.exists(log) and _has_rlc(log):
      rlc_metrics = log
  if per_model:
    written.append(per_class_ap(per_model, os.path.join(workdir, 'per_class_ap.png')))
    written.append(class_distribution(next(iter(per_model.values()))[0],
                                      os.path.join(workdir, 'class_distribution.png')))
  if rlc_metrics:
    written.append(rlc_corrections(rlc_metrics, os.path.join(workdir, 'rlc_corrections.png')))
  return written


def _has_rlc(metrics_path: str) -> bool:
  with open(metrics_path) as f:
    return any('rlc' in json.loads(entry) for entry in f if entry.strip())


def precision_recall(curves: dict, points: dict, path: str) -> str:
  """Precision-recall curves {name: (recall, precision)} of the label audit (comic_jax/audit.py),
  with each run's operating point at its cut {name: (recall, precision)}."""
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  for i, (name, (recall, precision)) in enumerate(curves.items()):
    colour = '0.5' if name == 'random' else f'C{i}'
    ax.plot(recall, precision, color=colour, lw=1.4, ls='--' if name == 'random' else '-',
            label=name)
    if name in points and np.isfinite(points[name][1]):
      ax.plot(*points[name], 'o', color=colour, ms=5)
  ax.set_xlabel('recall of the hidden labels')
  ax.set_ylabel('precision')
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.set_title('Label audit: unobserved labels ranked by score (dot: the cut)', fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


# ------------------------------------------------------------------------------- one run

def curves(metrics_path: str, path: str, is_loss=lambda name: True) -> str | None:
  """Loss terms (left) and mAP per reported model (right) per epoch, from metrics.jsonl: test
  mAP solid, validation mAP dashed when the log has a 'val' entry."""
  if not os.path.exists(metrics_path):
    return None
  lines = [json.loads(entry) for entry in open(metrics_path) if entry.strip()]
  if not lines:
    return None
  epochs = [entry['epoch'] for entry in lines]
  fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 3.8))
  for name in [k for k in lines[0]['train'] if is_loss(k)]:
    ax_loss.plot(epochs, [entry['train'].get(name, np.nan) for entry in lines], marker='o', ms=3,
                 lw=2.2 if name == 'loss' else 1.2, label=name)
  ax_loss.set_title('training loss (mean over the epoch)')
  for split, style in (('eval', '-'), ('val', '--')):
    for i, model in enumerate(lines[0].get(split, {})):
      values = [(entry.get(split, {}).get(model) or {}).get('total') for entry in lines]
      ax_map.plot(epochs, [np.nan if v is None else v for v in values], style, marker='o', ms=3,
                  color=f'C{i}', label=f'{model} ({"test" if split == "eval" else "validation"})')
  ax_map.set_title('mAP (%)')
  for ax in (ax_loss, ax_map):
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def examples(images: np.ndarray, probs: np.ndarray, true_labels: np.ndarray, class_names,
             thresholds: np.ndarray, path: str, title: str = '') -> str:
  """A row of test images with their predicted labels (green if true, red if not) and the true
  labels the model missed (grey)."""
  n = len(images)
  fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 3.2))
  for ax, img, p, y in zip(np.atleast_1d(axes), images, probs, true_labels):
    ax.imshow(img)
    ax.set_axis_off()
    predicted = set(np.flatnonzero(p >= thresholds))
    truth = set(np.flatnonzero(y > 0))
    rows = [(class_names[c], 'tab:green' if c in truth else 'tab:red') for c in sorted(predicted)]
    rows += [(class_names[c], '0.55') for c in sorted(truth - predicted)]
    for k, (text, colour) in enumerate(rows[:8]):
      ax.text(0.0, -0.06 - 0.09 * k, text, transform=ax.transAxes, fontsize=7, color=colour,
              va='top')
  fig.suptitle(title or 'predicted (green: true, red: false) and missed (grey) labels',
               fontsize=9)
  fig.subplots_adjust(bottom=0.42, top=0.9, wspace=0.15)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def run_pictures(workdir: str, data, method, test_probabilities,
                 num_examples: int = 6) -> list[str]:
  """curves.png and, for image data, examples.png (the first test images, predicted by the
  method's first reported model at 0.5 or the run's validation thresholds) of a finished run in
  `workdir`; `test_probabilities(n)` gives every model's probabilities of the first n test
  images; the loss panel of curves.png shows the step metrics that `method.is_loss_metric`
  calls losses. Every process predicts (the step is sharded); process 0 draws."""
  import jax

  from comic_jax.inference import thresholds as thresholds_lib
  written, model = [], method.report_names[0]
  x = data.x_test
  if np.asarray(x[:1]).ndim == 4 and np.asarray(x[:1]).shape[-1] == 3:
    x = np.asarray(x[:num_examples])
    probs = test_probabilities(num_examples)
    thresholds = np.full(data.num_classes, 0.5)
    saved = thresholds_lib.of_workdir(workdir, data.class_names)
    if saved is not None:
      thresholds = saved.get(model, thresholds)
    if jax.process_index() == 0:
      written.append(examples(x, probs[model], data.y_test[:num_examples], data.class_names,
                              thresholds, os.path.join(workdir, 'examples.png'),
                              title=f'{model}: predicted (green: true, red: false) and missed '
                                    '(grey) labels'))
  if jax.process_index() == 0:
    out = curves(os.path.join(workdir, 'metrics.jsonl'), os.path.join(workdir, 'curves.png'),
                 method.is_loss_metric)
    written += [out] if out else []
  return written
