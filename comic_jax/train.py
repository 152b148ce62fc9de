"""Training and evaluation: `train_and_evaluate(config, workdir)` and `evaluate(config, workdir)`.

One jit-compiled train step, sharded over a 1-D device mesh with axis 'data': the global batch is
split over the devices, the train state is replicated. The same code runs on one CPU, N GPUs or
the hosts of a TPU pod (each host feeds its slice of every global batch).

Workdir contents: `config.json`, `metrics.jsonl` (one line per evaluation: validation metrics `val`;
the last line also the test metrics `eval`), `results.json` (final test metrics per
reported model, percent), `val_results.json` (the same on the validation set), `thresholds.json`,
`per_class_ap.json`, `backbone.json` (frozen backbone: `features.weights_record`), `checkpoints/`.
"""
from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from comic_jax import checkpoint, features, machine, metrics, optim, progress, thresholds, writers
from comic_jax import workdir as workdir_lib
from comic_jax.config_checks import validate_config
from comic_jax.costs import run_line
from comic_jax.data import augment, longtail, pipeline, samplers, sources
from comic_jax.data.pipeline import host_to_global
from comic_jax.errors import UserError, require
from comic_jax.methods import registry
from comic_jax.models import pretrained
from comic_jax.state import TrainState, create_state


def create_mesh(num_devices: int = 0) -> Mesh:
  devices = jax.devices()[:num_devices] if num_devices else jax.devices()
  return Mesh(np.array(devices), ('data',))


def create_samplers(method, data, config) -> dict[str, Any]:
  """One sampler per batch stream of the method, over the observed labels."""
  out = {}
  for name, stream in method.streams.items():
    try:
      out[name] = samplers.create_sampler(stream.sampler, data.y_train, config.batch_size,
                                          config.seed)
    except ValueError as e:
      raise UserError(f'cannot sample training batches ({stream.sampler}): {e}') from None
  return out


def make_train_step(method, config) -> Callable:
  """train_step(state, batch, key) -> (state, metrics): augment, loss, one gradient update.

  `key` is the run's training key, `jax.random.key(config.seed)` (`Run.train_key`); each step
  folds its step number into it. It is an argument, not a constant of the program, so runs that
  differ only in their seed (the benchmark's seeds) share one compiled step: a later seed loads
  it from the compilation cache instead of compiling it again.
  """
  def train_step(state: TrainState, batch: dict, key: jax.Array):
    rng = jax.random.fold_in(key, state.step)
    aug_rng, loss_rng = jax.random.split(rng)
    batch = {name: dict(b) for name, b in batch.items()}
    for name, stream in method.streams.items():
      batch[name]['image'] = augment.augment_images(
          batch[name]['image'], jax.random.fold_in(aug_rng, stream.rng_index), config.augment,
          config.data.image_size, with_rand_augment=stream.rand_augment)

    def loss_fn(params):
      return method.loss(params, state.batch_stats, state.method_state, batch, loss_rng,
                         state.step)

    (_, (batch_stats, method_state, step_metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats, method_state=method_state)
    return state, step_metrics
  return train_step


def make_predict_step(method) -> Callable:
  def predict_step(state: TrainState, images):
    logits = method.predict(state.params, state.batch_stats, state.method_state, images)
    return {name: jax.nn.sigmoid(z) for name, z in logits.items()}
  return predict_step


def predict_dataset(predict_step, state, images, batch_size: int,
                    sharding: NamedSharding) -> dict[str, np.ndarray]:
  """Probabilities of every reported model for every image, each counted exactly once."""
  out = pipeline.map_dataset(lambda st, x, _: predict_step(st, x), state, images, batch_size,
                             sharding)
  return {k: v.astype(np.float64) for k, v in out.items()}


def evaluate_predictions(probs: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray):
  """({model: metric dict}, {model: per-class AP}) from probabilities."""
  results, per_class = {}, {}
  for name, p in probs.items():
    results[name], per_class[name] = metrics.multilabel_metrics(p, labels, groups)
  return results, per_class


# ------------------------------------------------------------------------------- the run

class Run:
  """Everything a run builds from its config: data, method, mesh, compiled steps, state."""

  def __init__(self, config, workdir: str, *, compile_ahead: bool = False):
    """`compile_ahead`: compile the train and predict steps on a worker thread while the state
    is initialised (`_compile_ahead`; `train_and_evaluate` asks for it)."""
    progress.configure(config.progress_bar)   # every bar: decoding, features, training
    validate_config(config)
    workdir_lib.prepare_workdir(workdir, config)
    self.config, self.workdir = config, workdir
    t0 = time.time()
    self.data = sources.load_dataset(config.data)
    self.groups = sources.training_groups(self.data, config.data)
    _log('data %s: %d train / %d validation / %d test images, %d classes (%.1fs)',
         self.data.name, len(self.data.x_train), self.data.has_val and len(self.data.x_val),
         len(self.data.x_test), self.data.num_classes, time.time() - t0)
    if self.data.neg_train is not None:
      _log('training labels: %d observed positives, %d known negatives, %d unknown',
           int(self.data.y_train.sum()), int(self.data.neg_train.sum()),
           int(self.data.y_train.size - self.data.y_train.sum() - self.data.neg_train.sum()))
    n_train = len(self.data.x_train)
    n_dev = config.num_devices or jax.device_count()   # the batch is split over them
    require(n_train >= config.batch_size, f'config.batch_size={config.batch_size} is larger '
            f'than the {n_train} training images; set --config.batch_size='
            f'{max(n_train // 2 // n_dev, 1) * n_dev} or less')
    sources.check_model_inputs(self.data, config.model)
    # An epoch is one pass of the uniform sampler (the last partial batch skipped).
    self.steps_per_epoch = n_train // config.batch_size
    self.mesh = create_mesh(config.num_devices)
    if config.model.feature_cache:
      self.data = features.cache_features(config, self.data, workdir, self.mesh, log=_log)
      features.write_weights_record(workdir, config)
    self.method = registry.create_method(config, self.data.y_train, self.steps_per_epoch,
                                         self.data.class_names)
    self.replicated = NamedSharding(self.mesh, P())
    self.sharded = NamedSharding(self.mesh, P('data'))
    self.samplers = create_samplers(self.method, self.data, config)
    self.total_steps = config.num_epochs * self.steps_per_epoch
    # Training batches (and the iterator state a checkpoint keeps) from the data layer.
    self.feed = pipeline.create_feed(self.data, self.samplers, self.method.streams, config,
                                     self.total_steps)
    tx = optim.create_optimizer(config, self.steps_per_epoch)
    self.schedule = optim.create_learning_rate_schedule(config.optim, self.steps_per_epoch,
                                                        config.num_epochs)
    example = jax.tree.map(lambda x: x[:1], self.batch(0))

    def init_state(rng):
      return create_state(self.method, tx, example, rng)

    # The same key as `jax.random.key(config.seed)` computed anywhere, on every device.
    self.train_key = jax.jit(lambda: jax.random.key(config.seed),
                             out_shardings=self.replicated)()
    self.train_step = jax.jit(make_train_step(self.method, config),
                              in_shardings=(self.replicated, self.sharded, self.replicated),
                              out_shardings=(self.replicated, self.replicated),
                              donate_argnums=(0,))
    self.predict_step = jax.jit(make_predict_step(self.method),
                                in_shardings=(self.replicated, self.sharded),
                                out_shardings=self.sharded)
    rng = jax.random.key(config.seed)
    init = jax.jit(init_state, out_shardings=self.replicated).lower(rng)
    self._compiling = self._compile_ahead(init.out_info) if compile_ahead else {}
    self.state = init.compile()(rng)
    self._val_probs = (None, None)   # (state, validation predictions) of the last evaluation
    self._test_probs = (None, None)  # ... and of the last test evaluation
    self.manager = checkpoint.create_manager(workdir, config.keep_checkpoints)
    if not config.model.feature_cache and self.manager.latest_step() is None:
      variables = pretrained.load_into(
          config.model, {'params': self.state.params, 'batch_stats': self.state.batch_stats})
      self.state = self.state.replace(**jax.device_put(variables, self.replicated))

  def _compile_ahead(self, state) -> dict[str, concurrent.futures.Future]:
    """Starts compiling the train and the predict step, from the state's shapes and shardings,
    on one worker thread, and returns their futures ({'train', 'predict'}).

    XLA compiles a program on one core, so while the main thread compiles and runs the state's
    initialisation the worker compiles the train step: on the project's 2-core machine the
    README's COMIC command reached its first step 5-6.5 s sooner when nothing was cached
    (docs/performance.md). A compiled step is kept by its `jax.jit`, so its first call runs it
    at once; `wait_compiled` waits for it, and raises what compiling raised.
    """
    # Global shapes of a batch: each process holds its rows (`host_to_global`).
    batch = jax.tree.map(lambda v: jax.ShapeDtypeStruct(
        (v.shape[0] * jax.process_count(), *v.shape[1:]), v.dtype, sharding=self.sharded),
        self.batch(0))
    x = self.data.x_test
    images = jax.ShapeDtypeStruct((self.config.eval_batch_size, *x.shape[1:]), x.dtype,
                                  sharding=self.sharded)
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                   thread_name_prefix='compile_ahead')
    futures = {
        'train': worker.submit(
            lambda: self.train_step.lower(state, batch, self.train_key).compile()),
        'predict': worker.submit(lambda: self.predict_step.lower(state, images).compile())}
    worker.shutdown(wait=False)   # the thread ends after the two jobs
    return futures

  def wait_compiled(self, step: str) -> None:
    """Waits until the ahead-of-time compilation of 'train' or 'predict' is done (nothing to
    wait for without `compile_ahead`); an error raised while compiling is raised here."""
    future = self._compiling.pop(step, None)
    if future is not None:
      future.result()

  def predict(self, images) -> dict[str, np.ndarray]:
    """Probabilities of every reported model for `images`, with the current state."""
    self.wait_compiled('predict')
    return predict_dataset(self.predict_step, self.state, images, self.config.eval_batch_size,
                           self.sharded)

  def batch(self, step: int) -> dict:
    """This process's rows of the global batch of `step`, per stream, on the host."""
    return self.feed.batch(step)

  def restore(self) -> int:
    self.state, step = checkpoint.restore_latest(self.manager, self.state,
                                                 self.feed.restore_args())
    return 0 if step is None else int(step)

  def evaluate(self, split: str = 'test'):
    """({model: metrics}, {model: per-class AP}) on the 'test' or the 'val' images."""
    x, y = ((self.data.x_test, self.data.y_test) if split == 'test'
            else (self.data.x_val, self.data.y_val))
    probs = self.predict(x)
    if split == 'val':   # kept for `write_val_thresholds` (the same state: no second pass)
      self._val_probs = (self.state, probs)
    else:                # ... and for `test_probabilities` (the pictures)
      self._test_probs = (self.state, probs)
    return evaluate_predictions(probs, y, self.groups)

  def test_probabilities(self, n: int) -> dict[str, np.ndarray]:
    """Probabilities of every reported model for the first `n` test images: those of the last
    test evaluation when it predicted the current state (no second pass), else predicted now."""
    state, probs = self._test_probs
    if state is self.state:
      return {name: p[:n] for name, p in probs.items()}
    return self.predict(np.asarray(self.data.x_test[:n]))

  def evaluate_val(self):
    """Validation metrics per model, or None where the data has no validation set."""
    return self.evaluate('val')[0] if self.data.has_val else None

  def choose_report(self, val_results):
    """The method's choice of its reported model on validation (COMIC+'s report='auto') put in
    the state (test, checkpoint, predict): the validation metrics with it, and 'report_choice'."""
    choose = getattr(self.method, 'choose_report', None)
    made = choose and choose(jax.device_get(self.state.method_state), val_results, self.groups)
    if not made:   # (no validation split: refit's final run gets the carve's choice)
      return val_results
    method_state, record = made
    self.state = self.state.replace(method_state=jax.device_put(method_state, self.replicated))
    val_results = self.evaluate('val')[0] if self.data.has_val else {}   # with the choice made
    _log('reported: %s', ', '.join(f'{k} = {v}' for k, v in record.items() if k != 'candidates'))
    return {**val_results, 'report_choice': record}

  def write_val_thresholds(self) -> None:
    """thresholds.json: per reported model and class, the threshold that maximises F1 on the
    validation split (what `comic_jax.predict` uses by default). Nothing without one."""
    if not self.data.has_val:
      return
    state, probs = self._val_probs
    if state is not self.state:   # the validation images were not predicted with this state
      probs = self.predict(self.data.x_val)
    if jax.process_index() == 0:
      thresholds.write_thresholds(self.workdir, self.data.class_names, {
          name: thresholds.f1_thresholds(p, self.data.y_val) for name, p in probs.items()})

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def write_results(self, results, per_class, val_results=None) -> None:
    if jax.process_index() != 0:
      return
    workdir_lib.write_json(self.path('results.json'), writers.json_safe(results), indent=2)
    # The machine the numbers were computed on (their last digits depend on the CPU type).
    workdir_lib.write_json(self.path('environment.json'), machine.machine_description(), indent=2)
    if val_results is not None:
      workdir_lib.write_json(self.path('val_results.json'), writers.json_safe(val_results),
                             indent=2)
    full = self.data.y_train_full.sum(0)
    observed = self.data.y_train.sum(0)
    workdir_lib.write_json(self.path('per_class_ap.json'), writers.json_safe({
          'class_names': list(self.data.class_names),
          'train_count_full': full.tolist(),
          'train_count_observed': observed.tolist(),
          'test_count': self.data.y_test.sum(0).tolist(),
          'group': [longtail.GROUP_NAMES[g] for g in self.groups],
          'ap': {k: v.tolist() for k, v in per_class.items()}}), indent=2)


def trained_line(images: int, seconds: float) -> str:
  """The line a finished run prints about its training rate (`tools/commands.py` reads it)."""
  return (f'trained {images} images in {seconds:.1f}s ({images / seconds:.0f} img/s, '
          'first-step compile included)')


def _log(fmt: str, *args) -> None:
  """A progress message, printed by process 0 only."""
  if jax.process_index() == 0:
    progress.log(fmt % args if args else fmt)


class _Loop:
  """What a training call holds from its first step to its end: the metrics log, the progress
  bar, the preemption guard, the epoch's metrics and times; released by `close` (idempotent)."""

  def __init__(self, run: Run, start_step: int):
    config = run.config
    self.run, self.is_main = run, jax.process_index() == 0
    self.log = writers.MetricsLog(run.workdir, start_step=start_step, enabled=self.is_main)
    self.bar = progress.bar(total=run.total_steps * config.batch_size,
                         initial=start_step * config.batch_size, unit='img', unit_scale=True,
                         dynamic_ncols=True, smoothing=0.1,
                         disable=not (config.progress_bar and self.is_main))
    self.guard = workdir_lib.PreemptionGuard(run.manager)   # SIGTERM / SIGINT: save, stop
    self.results = self.per_class = self.val_results = None
    self.epoch_metrics, self.epoch_start = [], time.time()
    self.train_time, self.train_images = 0.0, 0

  def preempt(self, step: int) -> None:
    """Saves the state of `step` (unless saved) and raises workdir.Preempted."""
    manager = self.run.manager
    if step > 0 and step != manager.latest_step():
      checkpoint.save(manager, step, self.run.state, self.run.feed.checkpoint_args())
    checkpoint.wait(manager)
    self.close()
    self.guard.stop(step)

  def end_epoch(self, step: int) -> int:
    """The end of an epoch at `step`: its summary, the evaluations due (the test set only at the
    last step), the log line, the checkpoint due; returns the epoch."""
    run, config = self.run, self.run.config
    epoch, last = (step + 1) // run.steps_per_epoch, step + 1 == run.total_steps
    metrics_ = self.epoch_metrics
    summary = {k: float(np.mean([float(m[k]) for m in metrics_])) for k in metrics_[0]}
    seconds = time.time() - self.epoch_start
    self.train_time += seconds
    self.train_images += len(metrics_) * config.batch_size
    if not np.isfinite(summary['loss']):
      raise UserError(f'training diverged at epoch {epoch}: the loss is {summary["loss"]}; '
                      'try a lower config.optim.learning_rate')
    self.bar.set_postfix(epoch=epoch, loss=f'{summary["loss"]:.4f}')
    if epoch % config.eval_every_epochs == 0 or last:
      val = self.val_results = run.evaluate_val()
      if last:   # the reported model chosen on validation (before the test set is looked at)
        val = self.val_results = run.choose_report(val)
      line = {'epoch': epoch, 'step': step + 1, 'train': summary,
              'train_img_per_sec': len(metrics_) * config.batch_size / seconds,
              'learning_rate': float(run.schedule(step))}
      if val is not None:
        line['val'] = {k: v for k, v in val.items() if k != 'report_choice'}
        line.update({k: v for k, v in val.items() if k == 'report_choice'})
      if last:
        self.results, self.per_class = run.evaluate()
        line['eval'] = self.results
      if hasattr(run.method, 'epoch_summary'):
        line.update(run.method.epoch_summary(jax.device_get(run.state.method_state)))
      self.log.write(line)
      shown = [(split, r) for split, r in (('val', line.get('val')), ('test', self.results))
               if r is not None]
      self.bar.write(f'epoch {epoch}: loss {summary["loss"]:.4f}  ' + '  '.join(
          f'{name} {split} mAP {m["total"]:.2f}' for split, r in shown for name, m in r.items()))
    if epoch % config.checkpoint_every_epochs == 0 or last:
      checkpoint.save(run.manager, step + 1, run.state, run.feed.checkpoint_args())
    self.epoch_metrics, self.epoch_start = [], time.time()
    return epoch

  def finish(self) -> None:
    """After the last step: the results, thresholds and pictures written, the table printed."""
    run = self.run
    checkpoint.wait(run.manager)
    self.close()
    if self.results is None:  # nothing left to train: the run had finished; evaluate it
      self.val_results = run.choose_report(run.evaluate_val())
      self.results, self.per_class = run.evaluate()
    run.write_results(self.results, self.per_class, self.val_results)
    run.write_val_thresholds()
    from comic_jax import plots  # matplotlib only when a run ends
    plots.run_pictures(run)
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
  from comic_jax import refit
  if config.refit and refit.carves(config):   # choose on the carve, then train on every image
    return refit.train_and_evaluate(config, workdir, train_and_evaluate, stop_after_epochs)
  run, loop = Run(config, workdir, compile_ahead=True), None
  try:
    start_step = run.restore()
    workdir_lib.rewrite_metrics_log(run.path('metrics.jsonl'), start_step)
    if start_step:
      _log('resumed from step %d (epoch %d)', start_step, start_step // run.steps_per_epoch)
    _log(run_line(config, run.steps_per_epoch, run.mesh.size, start_step, jax.default_backend()))
    loop = _Loop(run, start_step)
    if start_step < run.total_steps:
      run.wait_compiled('train')
    for step in range(start_step, run.total_steps):
      if loop.guard.should_stop(step):
        loop.preempt(step)                 # raises workdir.Preempted
      batch = host_to_global(run.batch(step), run.sharded)
      run.state, step_metrics = run.train_step(run.state, batch, run.train_key)
      loop.epoch_metrics.append(step_metrics)
      loop.bar.update(config.batch_size)
      if (step + 1) % run.steps_per_epoch:
        continue
      epoch = loop.end_epoch(step)
      if stop_after_epochs is not None and stop_after_epochs <= epoch < config.num_epochs:
        checkpoint.wait(run.manager)
        return run.state
    loop.finish()
    return run.state
  finally:
    if loop is not None:
      loop.close()
    workdir_lib.release_lock(workdir)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates the latest checkpoint in `workdir`; writes results.json and prints the table."""
  workdir_lib.require_checkpoint(workdir)   # before Run creates anything there
  run = Run(config, workdir)
  step = run.restore()
  require(step > 0, f'workdir {workdir!r} has no checkpoint to evaluate; train first')
  results, per_class = run.evaluate()
  run.write_results(results, per_class, run.evaluate_val())
  if jax.process_index() == 0:
    print(f'evaluated the checkpoint of step {step}')
    print(metrics.format_table(results))
  workdir_lib.release_lock(workdir)
  return results
