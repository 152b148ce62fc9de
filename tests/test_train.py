import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from comic_jax import metrics
from comic_jax.data import pipeline, sources
from comic_jax.errors import UserError
from comic_jax.training import config_checks, machine, train
from comic_jax.training import step as step_lib
from comic_jax.training import workdir as wd
from conftest import ROOT, tiny_config


def _read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f) if name.endswith('.json') else [json.loads(entry) for entry in f]


def test_sharded_step_on_4_devices_equals_1_device(tmp_path):
  assert jax.device_count() == 4
  # SGD: updates are linear in the gradients, so float reordering across devices stays tiny
  # (Adam's g / sqrt(v) would blow up rounding noise on near-zero gradients).
  params, losses = {}, {}
  for n in (1, 4):
    config = tiny_config(num_devices=n, **{'optim.optimizer': 'sgd', 'optim.learning_rate': 0.1})
    run = train.Trainer.open(config, str(tmp_path / f'd{n}'))
    assert run.mesh.size == n
    state = run.state
    for step in range(3):
      batch = pipeline.host_to_global(run.batch(step), run.sharded)
      state, m = run.train_step(state, batch, run.train_key)
    assert state.params['backbone']['conv0']['kernel'].sharding.is_fully_replicated
    params[n] = jax.device_get((state.params, state.batch_stats))
    losses[n] = float(m['loss'])
  assert losses[1] == pytest.approx(losses[4], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params[1], params[4])


@pytest.fixture(scope='module')
def three_epochs(tmp_path_factory):
  """(workdir, config, printed output) of an uninterrupted 3-epoch BCE run: the end-to-end test
  reads it, and the resume test compares a resumed run with it."""
  workdir = str(tmp_path_factory.mktemp('three_epochs'))
  config = tiny_config(num_epochs=3)
  with contextlib.redirect_stdout(io.StringIO()) as out:
    train.train_and_evaluate(config, workdir)
  return workdir, config, out.getvalue()


def test_runs_differing_only_in_seed_share_one_train_step_program(tmp_path):
  """The seed enters the step as its key argument, not as a constant: the benchmark's seeds
  compile the step once (later seeds load it from the compilation cache)."""
  texts = []
  for seed in (0, 3):
    run = train.Trainer.open(tiny_config(seed=seed), str(tmp_path / f's{seed}'))
    np.testing.assert_array_equal(jax.random.key_data(run.train_key),
                                  jax.random.key_data(jax.random.key(seed)))
    assert run.train_key.sharding.is_fully_replicated
    batch = pipeline.host_to_global(run.batch(0), run.sharded)
    texts.append(run.train_step.lower(run.state, batch, run.train_key).as_text())
  assert texts[0] == texts[1]


def _compilations(fn) -> int:
  """How many XLA compilations (or compilation-cache loads) calling fn() started."""
  from jax._src import dispatch
  events = []
  listener = lambda event, duration, **kwargs: events.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    fn()
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return events.count(dispatch.BACKEND_COMPILE_EVENT)


def test_steps_compiled_ahead_are_not_compiled_again_by_their_first_calls(tmp_path):
  """compile_ahead compiles the train and predict steps from the state's shapes on a worker
  thread; the first step and the first evaluation must find them (a shape, dtype or sharding
  that differs would compile a second program). Without it, the first call compiles."""
  runs = {ahead: train.Trainer.open(tiny_config(), str(tmp_path / str(ahead)), compile_ahead=ahead)
          for ahead in (False, True)}
  runs[True].wait_compiled('train')
  runs[True].wait_compiled('predict')
  for ahead, run in runs.items():
    batch = pipeline.host_to_global(run.batch(0), run.sharded)

    def first_step(run=run, batch=batch):
      run.state, m = run.train_step(run.state, batch, run.train_key)
      jax.block_until_ready(m)

    assert _compilations(first_step) == (0 if ahead else 1)
    assert _compilations(run.evaluate) == (0 if ahead else 1)
  jax.tree.map(np.testing.assert_array_equal, *[jax.device_get(run.state.params)
                                                for run in runs.values()])


def test_the_initialisation_compiled_cheaply_is_the_default_compilation_s_bit_for_bit(tmp_path):
  """The trainer compiles the state's initialisation with LLVM's level 1 on a CPU (a faster
  compile); the state must be the one XLA's default level 3 gives, to the bit."""
  from comic_jax.training import build, trainer
  config = tiny_config(**{'model.small_cnn_widths': (8,), 'model.projection_dim': 16})
  parts = build.build(config, str(tmp_path))
  options = trainer._init_compiler_options()
  assert options == {'xla_backend_optimization_level': 1}
  key = jax.random.key(config.seed)
  commands = {'xla_cpu_use_fusion_emitters': True}   # XLA's default, which the tests turn off
  cheap = parts.init.compile(compiler_options={**options, **commands})(key)
  default = parts.init.compile(compiler_options={'xla_backend_optimization_level': 3,
                                                 **commands})(key)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(cheap), jax.device_get(default))


def test_end_to_end_run_beats_random_scores_and_writes_outputs(three_epochs):
  workdir, config, printed = three_epochs
  results = _read(workdir, 'results.json')
  assert list(results) == ['BCE'] and list(results['BCE']) == list(metrics.METRIC_KEYS)
  # Random scores score about the prevalence of each class; computed, not assumed.
  data = sources.load_dataset(config.data)
  groups = sources.training_groups(data, config.data)
  rng = np.random.default_rng(0)
  chance = metrics.multilabel_metrics(rng.random(data.y_test.shape), data.y_test, groups)[0]
  assert results['BCE']['total'] > 1.6 * chance['total'], (results, chance)
  assert results['BCE']['many'] > 2.0 * chance['many'], (results, chance)
  log = _read(workdir, 'metrics.jsonl')
  assert [entry['epoch'] for entry in log] == [1, 2, 3]
  assert log[-1]['eval'] == results
  per_class = _read(workdir, 'per_class_ap.json')
  assert len(per_class['ap']['BCE']) == data.num_classes
  np.testing.assert_allclose(np.mean(per_class['ap']['BCE']), results['BCE']['total'])
  assert _read(workdir, 'config.json')['num_epochs'] == 3
  environment = _read(workdir, 'environment.json')    # the machine behind the numbers
  assert (environment['jax'], environment['devices']) == (jax.__version__, jax.device_count())
  assert environment['cpu'] == machine.local_cpu() and environment['cpu_cores'] == os.cpu_count()
  assert 'BCE' in printed                         # the final table is printed
  # --mode=eval on the finished run reproduces the final metrics.
  evaluated = train.evaluate(config, workdir)
  assert evaluated['BCE'] == pytest.approx(results['BCE'])


def test_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path, three_epochs):
  straight, config, _ = three_epochs
  resumed = str(tmp_path / 'resumed')
  train.train_and_evaluate(config, resumed, stop_after_epochs=1)
  assert not os.path.exists(os.path.join(resumed, 'results.json'))
  assert len(_read(resumed, 'metrics.jsonl')) == 1
  train.train_and_evaluate(config, resumed)
  a, b = _read(straight, 'results.json'), _read(resumed, 'results.json')
  for key in metrics.METRIC_KEYS:
    assert a['BCE'][key] == pytest.approx(b['BCE'][key], abs=1e-6), key
  assert [entry['epoch'] for entry in _read(resumed, 'metrics.jsonl')] == [1, 2, 3]


def test_a_restored_state_has_the_types_of_a_fresh_one(bce_run, tmp_path):
  """Same dtypes and weak types leaf by leaf (the step's included), so that a resumed run runs
  the train step compiled (or cached) for a fresh one instead of compiling a second."""
  workdir, config = bce_run
  fresh = train.Trainer.open(config, str(tmp_path / 'fresh')).state
  run = train.Trainer.open(config, workdir)
  assert run.restore() > 0
  kinds = lambda state: [(a.dtype, a.weak_type, a.shape) for a in jax.tree.leaves(state)]
  assert kinds(run.state) == kinds(fresh)
  assert not fresh.step.weak_type
  wd.release_lock(workdir)
  wd.release_lock(str(tmp_path / 'fresh'))


def test_resume_refuses_a_different_config(tmp_path, bce_run):
  workdir = str(tmp_path / 'run')
  shutil.copytree(bce_run[0], workdir)          # a finished tiny_config(num_epochs=1) run
  with pytest.raises(UserError, match='optim.learning_rate'):
    train.train_and_evaluate(tiny_config(**{'num_epochs': 1, 'optim.learning_rate': 0.5}), workdir)
  # The compilation cache changes no result: a workdir saved before the field existed, or with
  # it on, resumes with it off.
  saved = os.path.join(workdir, 'config.json')
  with open(saved) as f:
    old = json.load(f)
  del old['compilation_cache']
  with open(saved, 'w') as f:
    json.dump(old, f)
  train.train_and_evaluate(tiny_config(num_epochs=1, compilation_cache=False), workdir)


@pytest.mark.parametrize('field,value,message', [
    ('optim.optimizer', 'adamx', "config.optim.optimizer='adamx' is not one of"),
    ('data.missing_ratio', 1.5, 'missing_ratio=1.5 must be in [0, 1)'),
    ('batch_size', 30, 'batch_size=30 is not divisible by the 4 devices'),
    ('model.backbone', 'vgg', "config.model.backbone='vgg'"),
    ('num_devices', 8, 'only 4 devices exist'),
])
def test_bad_config_values_are_named(field, value, message):
  with pytest.raises(UserError) as e:
    config_checks.validate_config(tiny_config(**{field: value}))
  assert message in str(e.value)


def _cli(*args, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run([sys.executable, '-m', 'comic_jax.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_reports_user_errors_in_one_line(tmp_path):
  bad = _cli('--config=configs/synthetic.py', f'--workdir={tmp_path}/w',
             '--config.optim.optimizer=adamx')
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: config.optim.optimizer='adamx'")
  assert 'Traceback' not in bad.stderr
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  unwritable = _cli('--config=configs/synthetic.py', f'--workdir={blocker}/w')
  assert unwritable.returncode == 2
  assert 'is not writable' in unwritable.stderr and 'Traceback' not in unwritable.stderr
  typo = _cli('--config=configs/synthetic.py', f'--workdir={tmp_path}/w', '--config.optim.lr=1')
  assert typo.returncode == 2 and 'Traceback' not in typo.stderr
  assert '--config.optim.lr: no such config field' in typo.stderr
  missing = _cli('--config=configs/nope.py', f'--workdir={tmp_path}/w')
  assert missing.returncode == 2 and 'Traceback' not in missing.stderr
  assert 'cannot load the config file' in missing.stderr


def test_a_run_that_failed_before_training_can_be_rerun_with_a_fixed_config(tmp_path):
  workdir = str(tmp_path / 'run')
  with pytest.raises(UserError, match='does not exist'):
    train.train_and_evaluate(tiny_config(**{'data.name': 'npz',
                                            'data.path': str(tmp_path / 'typo.npz')}), workdir)
  # Nothing was trained there, so the corrected config is not "another run's config".
  train.train_and_evaluate(tiny_config(num_epochs=1), workdir)
  assert os.path.exists(os.path.join(workdir, 'results.json'))


def test_test_probabilities_reuse_the_last_test_evaluation(tmp_path):
  """The pictures' predictions of the first test images: taken from the final test evaluation
  while the state is the one it predicted, equal to predicting them afresh; predicted afresh
  once the state has changed."""
  run = train.Trainer.open(tiny_config(), str(tmp_path))
  fresh = step_lib.predict_dataset(run.predict_step, run.state, np.asarray(run.data.x_test[:5]),
                                run.config.eval_batch_size, run.sharded)
  run.evaluate('test')
  reused = run.test_probabilities(5)
  assert reused['BCE'].shape == (5, run.data.num_classes)
  np.testing.assert_array_equal(reused['BCE'], fresh['BCE'])
  # Another state (halved weights): its own predictions, not the evaluation's.
  run.state = run.state.replace(params=jax.tree.map(lambda p: p * 0.5, run.state.params))
  again = run.test_probabilities(5)
  expected = step_lib.predict_dataset(run.predict_step, run.state, np.asarray(run.data.x_test[:5]),
                                   run.config.eval_batch_size, run.sharded)
  np.testing.assert_array_equal(again['BCE'], expected['BCE'])
  assert not np.allclose(again['BCE'], reused['BCE'])


def test_a_batch_larger_than_the_training_set_is_refused_with_the_fix(tmp_path):
  from comic_jax.errors import UserError
  n_dev = jax.device_count()
  fix = 1387 // 2 // n_dev * n_dev                      # PLT-Synth has 1387 training images
  with pytest.raises(UserError, match=rf'larger than the 1387 training images; set '
                                      rf'--config.batch_size={fix} or less'):
    train.Trainer.open(tiny_config(batch_size=2048), str(tmp_path / 'run'))
