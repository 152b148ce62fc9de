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
  lines = [json.loads(l) for l in open(metrics_path) if l.strip()]
  lines = [l for l in lines if 'rlc' in l]
  if not lines:
    return None
  branches = list(lines[0]['rlc'])
  epochs = [l['epoch'] for l in lines]
  fig, axes = plt.subplots(1, len(branches), figsize=(4.5 * len(branches), 3.5), sharey=True)
  axes = np.atleast_1d(axes)
  for ax, branch in zip(axes, branches):
    true = [l['rlc'][branch]['true'] for l in lines]
    false = [l['rlc'][branch]['false'] for l in lines]
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
    return any('rlc' in json.loads(l) for l in f if l.strip())
