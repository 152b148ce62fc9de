"""The trainer: the one owner of a run's train state and its checkpoints. It initialises the
state from the run's parts (`build.Parts`), trains it one step at a time, restores and saves it,
puts the method's choice of its reported model into it, evaluates it and writes the results.

Workdir contents it writes: `results.json` (final test metrics per reported model, percent),
`val_results.json` (the same on the validation set), `environment.json`, `thresholds.json`,
`per_class_ap.json` and `checkpoints/`.
"""
from __future__ import annotations

import concurrent.futures
import os

import jax
import numpy as np

from comic_jax import atomic
from comic_jax.data import longtail
from comic_jax.data.pipeline import host_to_global
from comic_jax.inference import thresholds
from comic_jax.models import pretrained
from comic_jax.training import build, checkpoint, machine, step, writers
from comic_jax.training import workdir as workdir_lib


def _init_compiler_options() -> dict | None:
  """XLA's options for compiling the state's initialisation: on a CPU, LLVM's optimisation level
  1 instead of XLA's default 3. The initialisation runs once, so its compile time is all it
  costs: on the project's 2-core machine it compiled 2.7x faster for the README's COMIC
  (6.45 -> 2.37 s), 3.4x for BCE (4.28 -> 1.27 s) and 1.5x for ResNet-50 (13.9 -> 9.5 s), and the
  initial state was the same bit for bit in each (docs/performance.md), so a run's numbers do
  not change. Other backends (None) compile it as before."""
  if jax.default_backend() != 'cpu':
    return None
  return {'xla_backend_optimization_level': 1}


class Trainer:
  """A run's train state and checkpoints, over its parts. The parts read through:
  `trainer.data` is `trainer.parts.data` (likewise `method`, `feed`, `sharded`, `train_step`...).
  A context manager: leaving it waits for the checkpoints and releases the workdir's lock."""

  def __init__(self, parts: build.Parts, *, compile_ahead: bool = False):
    """`compile_ahead`: compile the train and predict steps on a worker thread while the state
    is initialised (`_compile_ahead`; `train.train_and_evaluate` asks for it)."""
    self.parts = parts
    config = parts.config
    self._compiling = self._compile_ahead(parts.init.out_info) if compile_ahead else {}
    self._val_probs = (None, None)   # (state, validation predictions) of the last evaluation
    self._test_probs = (None, None)  # ... and of the last test evaluation
    self.manager = checkpoint.create_manager(parts.workdir, config.keep_checkpoints)
    # A run with a checkpoint holds only the state's ShapeDtypeStructs (shapes, dtypes,
    # shardings: the initialisation's `out_info`) until `restore` reads the checkpoint into them:
    # its initialisation is compiled and run only if no checkpoint proves readable.
    self._shapes_only = self.manager.latest_step() is not None
    self.state = parts.init.out_info if self._shapes_only else self._initial_state()

  @classmethod
  def open(cls, config, workdir: str, *, compile_ahead: bool = False) -> 'Trainer':
    """The config checked, the workdir prepared and locked (until `close`), the parts built."""
    build.check(config)
    workdir_lib.prepare_workdir(workdir, config)
    try:
      return cls(build.build(config, workdir), compile_ahead=compile_ahead)
    except BaseException:
      workdir_lib.release_lock(workdir)
      raise

  def __getattr__(self, name):
    if name == 'parts':   # not yet set: no recursion
      raise AttributeError(name)
    return getattr(self.parts, name)

  def __enter__(self) -> 'Trainer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def wait_saved(self) -> None:
    """Waits until the checkpoints being written in the background are on disk."""
    checkpoint.wait(self.manager)

  def close(self) -> None:
    """Waits for the checkpoints being written and releases the workdir's lock."""
    self.wait_saved()
    workdir_lib.release_lock(self.workdir)

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

  def wait_compiled(self, name: str) -> None:
    """Waits until the ahead-of-time compilation of 'train' or 'predict' is done (nothing to
    wait for without `compile_ahead`); an error raised while compiling is raised here."""
    future = self._compiling.pop(name, None)
    if future is not None:
      future.result()

  # ----------------------------------------------------------------------------- the state

  def train(self, step_: int):
    """One train step on the global batch of `step_`; returns its metrics."""
    batch = host_to_global(self.batch(step_), self.sharded)
    self.state, metrics = self.train_step(self.state, batch, self.train_key)
    return metrics

  def _initial_state(self):
    """The state a run starts from: the initialisation, then the pretrained weights of a
    backbone trained end to end (`config.model.pretrained`)."""
    config = self.config
    state = self.init.compile(compiler_options=_init_compiler_options())(
        jax.random.key(config.seed))
    if config.model.feature_cache:
      return state
    variables = pretrained.load_into(
        config.model, {'params': state.params, 'batch_stats': state.batch_stats})
    return state.replace(**jax.device_put(variables, self.replicated))

  def restore(self) -> int:
    """The latest checkpoint's state (and feed position) restored; returns its step (0: none,
    the initial state)."""
    state, step_ = checkpoint.restore_latest(self.manager, self.state, self.feed.restore_args())
    if step_ is None and self._shapes_only:   # every checkpoint was unreadable: from scratch
      state = self._initial_state()
    self.state, self._shapes_only = state, False
    return 0 if step_ is None else int(step_)

  def save(self, step_: int) -> None:
    """A checkpoint of the state at `step_` (unless there is one), written in the background."""
    if step_ > 0 and step_ != self.manager.latest_step():
      checkpoint.save(self.manager, step_, self.state, self.feed.checkpoint_args())

  def choose_report(self, val_results):
    """The method's choice of its reported model on validation (COMIC+'s report='auto') put in
    the state (test, checkpoint, predict): the validation metrics with it, and 'report_choice'."""
    made = self.method.choose_report(jax.device_get(self.state.method_state), val_results,
                                     self.groups)
    if not made:   # (no validation split: refit's final run gets the carve's choice)
      return val_results
    method_state, record = made
    self.state = self.state.replace(method_state=jax.device_put(method_state, self.replicated))
    val_results = self.evaluate('val')[0] if self.data.has_val else {}   # with the choice made
    build.log('reported: %s', ', '.join(f'{k} = {v}' for k, v in record.items()
                                        if k != 'candidates'))
    return {**val_results, 'report_choice': record}

  def epoch_summary(self) -> dict:
    """The method's extra fields of an epoch's metrics.jsonl line."""
    return self.method.epoch_summary(jax.device_get(self.state.method_state))

  # ----------------------------------------------------------------------------- evaluation

  def predict(self, images) -> dict[str, np.ndarray]:
    """Probabilities of every reported model for `images`, with the current state."""
    self.wait_compiled('predict')
    return step.predict_dataset(self.predict_step, self.state, images,
                                self.config.eval_batch_size, self.sharded)

  def evaluate(self, split: str = 'test'):
    """({model: metrics}, {model: per-class AP}) on the 'test' or the 'val' images."""
    x, y = ((self.data.x_test, self.data.y_test) if split == 'test'
            else (self.data.x_val, self.data.y_val))
    probs = self.predict(x)
    if split == 'val':   # kept for `write_val_thresholds` (the same state: no second pass)
      self._val_probs = (self.state, probs)
    else:                # ... and for `test_probabilities` (the pictures)
      self._test_probs = (self.state, probs)
    return step.evaluate_predictions(probs, y, self.groups)

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

  # ----------------------------------------------------------------------------- files

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

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

  def write_results(self, results, per_class, val_results=None) -> None:
    if jax.process_index() != 0:
      return
    atomic.write_json(self.path('results.json'), writers.json_safe(results), indent=2)
    # The machine the numbers were computed on (their last digits depend on the CPU type).
    atomic.write_json(self.path('environment.json'), machine.machine_description(), indent=2)
    if val_results is not None:
      atomic.write_json(self.path('val_results.json'), writers.json_safe(val_results), indent=2)
    data = self.data
    atomic.write_json(self.path('per_class_ap.json'), writers.json_safe({
          'class_names': list(data.class_names),
          'train_count_full': data.y_train_full.sum(0).tolist(),
          'train_count_observed': data.y_train.sum(0).tolist(),
          'test_count': data.y_test.sum(0).tolist(),
          'group': [longtail.GROUP_NAMES[g] for g in self.groups],
          'ap': {k: v.tolist() for k, v in per_class.items()}}), indent=2)
