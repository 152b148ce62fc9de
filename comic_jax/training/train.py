"""Training and evaluation: `train_and_evaluate(config, workdir)` and `evaluate(config, workdir)`,
the two entry points of a run. Each checks the config, locks the workdir for as long as it
works there (`Trainer` as a context manager), builds the run's parts (`build.build`) and hands
them to the trainer that owns the train state (`trainer.Trainer`).

Workdir contents: `config.json`, `metrics.jsonl` (one line per evaluation: validation metrics `val`;
the last line also the test metrics `eval`), `results.json` (final test metrics per
reported model, percent), `val_results.json` (the same on the validation set), `thresholds.json`,
`per_class_ap.json`, `backbone.json` (frozen backbone: `features.weights_record`), `checkpoints/`.
"""
from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from comic_jax import metrics, progress
from comic_jax.errors import UserError, require
from comic_jax.training import build, writers
from comic_jax.training import workdir as workdir_lib
from comic_jax.training.costs import run_line
from comic_jax.training.state import TrainState
from comic_jax.training.trainer import Trainer

log = build.log


def trained_line(images: int, seconds: float) -> str:
  """The line a finished run prints about its training rate (`tools/commands.py` reads it)."""
  return (f'trained {images} images in {seconds:.1f}s ({images / seconds:.0f} img/s, '
          'first-step compile included)')


class _Loop:
  """What a training call holds from its first step to its end: the metrics log, the progress
  bar, the preemption guard, the epoch's metrics and times; released by `close` (idempotent)."""

  def __init__(self, trainer: Trainer, start_step: int):
    config = trainer.config
    self.trainer, self.is_main = trainer, jax.process_index() == 0
    self.log = writers.MetricsLog(trainer.workdir, start_step=start_step, enabled=self.is_main)
    self.bar = progress.bar(total=trainer.total_steps * config.batch_size,
                            initial=start_step * config.batch_size, unit='img', unit_scale=True,
                            dynamic_ncols=True, smoothing=0.1,
                            disable=not (config.progress_bar and self.is_main))
    self.guard = workdir_lib.PreemptionGuard(trainer.manager)   # SIGTERM / SIGINT: save, stop
    self.results = self.per_class = self.val_results = None
    self.epoch_metrics, self.epoch_start, self.epoch_seconds = [], time.time(), 0.0
    self.train_time, self.train_images = 0.0, 0

  def preempt(self, step: int) -> None:
    """Saves the state of `step` (unless saved) and raises errors.Preempted."""
    self.trainer.save(step)
    self.trainer.wait_saved()
    self.close()
    self.guard.stop(step)

  def _summary(self, epoch: int) -> dict:
    """The epoch's mean step metrics (a diverged loss stops the run with one line)."""
    config, metrics_ = self.trainer.config, self.epoch_metrics
    summary = {k: float(np.mean([float(m[k]) for m in metrics_])) for k in metrics_[0]}
    seconds = self.epoch_seconds = time.time() - self.epoch_start
    self.train_time += seconds
    self.train_images += len(metrics_) * config.batch_size
    if not np.isfinite(summary['loss']):
      raise UserError(f'training diverged at epoch {epoch}: the loss is {summary["loss"]}; '
                      'try a lower config.optim.learning_rate')
    self.bar.set_postfix(epoch=epoch, loss=f'{summary["loss"]:.4f}')
    return summary

  def _evaluate(self, epoch: int, step: int, last: bool, summary: dict) -> None:
    """The evaluations of an epoch end (the test set only at the last step), logged."""
    trainer, config = self.trainer, self.trainer.config
    val = self.val_results = trainer.evaluate_val()
    if last:   # the reported model chosen on validation (before the test set is looked at)
      val = self.val_results = trainer.choose_report(val)
    line = {'epoch': epoch, 'step': step + 1, 'train': summary,
            'train_img_per_sec': len(self.epoch_metrics) * config.batch_size / self.epoch_seconds,
            'learning_rate': float(trainer.schedule(step))}
    if val is not None:
      line['val'] = {k: v for k, v in val.items() if k != 'report_choice'}
      line.update({k: v for k, v in val.items() if k == 'report_choice'})
    if last:
      self.results, self.per_class = trainer.evaluate()
      line['eval'] = self.results
    line.update(trainer.epoch_summary())
    self.log.write(line)
    shown = [(split, r) for split, r in (('val', line.get('val')), ('test', self.results))
             if r is not None]
    self.bar.write(f'epoch {epoch}: loss {summary["loss"]:.4f}  ' + '  '.join(
        f'{name} {split} mAP {m["total"]:.2f}' for split, r in shown for name, m in r.items()))

  def end_epoch(self, step: int) -> int:
    """The end of an epoch at `step`: its summary, the evaluations due, the log line, the
    checkpoint due; returns the epoch."""
    trainer, config = self.trainer, self.trainer.config
    epoch, last = (step + 1) // trainer.steps_per_epoch, step + 1 == trainer.total_steps
    summary = self._summary(epoch)
    if epoch % config.eval_every_epochs == 0 or last:
      self._evaluate(epoch, step, last, summary)
    if epoch % config.checkpoint_every_epochs == 0 or last:
      trainer.save(step + 1)
    self.epoch_metrics, self.epoch_start = [], time.time()
    return epoch

  def finish(self) -> None:
    """After the last step: the results, thresholds and pictures written, the table printed."""
    trainer = self.trainer
    trainer.wait_saved()
    self.close()
    if self.results is None:  # nothing left to train: the run had finished; evaluate it
      self.val_results = trainer.choose_report(trainer.evaluate_val())
      self.results, self.per_class = trainer.evaluate()
    trainer.write_results(self.results, self.per_class, self.val_results)
    trainer.write_val_thresholds()
    from comic_jax import plots  # matplotlib only when a run ends
    plots.run_pictures(trainer.workdir, trainer.data, trainer.method, trainer.test_probabilities)
    if self.is_main:
      if self.train_images:
        print(trained_line(self.train_images, self.train_time))
      print(metrics.format_table(self.results))

  def close(self) -> None:
    self.bar.close()
    self.log.close()
    self.guard.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after_epochs: int | None = None) -> TrainState:
  """Trains `config.method` on `config.data`, evaluating and checkpointing at epoch ends.

  Rerunning with the same workdir resumes from the latest checkpoint and ends with the same
  metrics as an uninterrupted run. `stop_after_epochs` ends the call early after that epoch's
  checkpoint (to simulate an interruption in tests)."""
  from comic_jax.training import refit
  if config.refit and refit.carves(config):   # choose on the carve, then train on every image
    return refit.train_and_evaluate(config, workdir, train_and_evaluate, stop_after_epochs)
  with Trainer.open(config, workdir, compile_ahead=True) as trainer:
    start_step = trainer.restore()
    workdir_lib.rewrite_metrics_log(trainer.path('metrics.jsonl'), start_step)
    if start_step:
      log('resumed from step %d (epoch %d)', start_step, start_step // trainer.steps_per_epoch)
    log(run_line(config, trainer.steps_per_epoch, trainer.mesh.size, start_step,
                 jax.default_backend()))
    loop = _Loop(trainer, start_step)
    try:
      if start_step < trainer.total_steps:
        trainer.wait_compiled('train')
      for step in range(start_step, trainer.total_steps):
        if loop.guard.should_stop(step):
          loop.preempt(step)                 # raises errors.Preempted
        loop.epoch_metrics.append(trainer.train(step))
        loop.bar.update(config.batch_size)
        if (step + 1) % trainer.steps_per_epoch:
          continue
        epoch = loop.end_epoch(step)
        if stop_after_epochs is not None and stop_after_epochs <= epoch < config.num_epochs:
          return trainer.state
      loop.finish()
      return trainer.state
    finally:
      loop.close()


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates the latest checkpoint in `workdir`; writes results.json and prints the table."""
  workdir_lib.require_checkpoint(workdir)   # before the trainer creates anything there
  with Trainer.open(config, workdir) as trainer:
    step = trainer.restore()
    require(step > 0, f'workdir {workdir!r} has no checkpoint to evaluate; train first')
    results, per_class = trainer.evaluate()
    trainer.write_results(results, per_class, trainer.evaluate_val())
  if jax.process_index() == 0:
    print(f'evaluated the checkpoint of step {step}')
    print(metrics.format_table(results))
  return results
