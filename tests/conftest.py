"""Test set-up: 4 fake CPU devices so every sharded code path runs on several devices."""
import os
import sys


def xla_flags(devices: int = 4) -> str:
  """XLA flags of the tests (and of the processes they start): `devices` fake CPU devices, and
  LLVM's optimisation level 1 instead of XLA's default 3. The suite compiles a few hundred small
  programs and runs each for seconds, so compiling is most of its time: level 1 cut the suite's
  CPU time by 22% on the project's machine (docs/performance.md), with every test passing;
  level 0 was faster still but broke 1 device == 4 devices (a loss 8e-4 apart after 3 SGD
  steps), so it is not used. XLA:CPU's older elemental emitters for fused operations instead of
  its MLIR fusion emitters (`xla_cpu_use_fusion_emitters=false`) compile faster again: the suite
  11 min 25 s -> 9 min 15 s (user CPU -18%), every test passing. The commands themselves keep
  XLA's defaults."""
  return (f'--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=1 '
          '--xla_cpu_use_fusion_emitters=false')


# Must happen before JAX is imported anywhere.
os.environ.setdefault('XLA_FLAGS', xla_flags(4))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One persistent compilation cache for the whole session (and the processes the tests start):
# the many runs of the same tiny configs compile each step once. Each session starts empty.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import atexit
  import shutil
  import tempfile
  _CACHE = tempfile.mkdtemp(prefix='comic_jax_test_xla_')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402

from comic_jax.cli import runtime  # noqa: E402

# As the training commands do: XLA's per-step buffers reuse the heap (the tests train a lot).
runtime.keep_freed_memory()

SHARED_DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data')


def _load_script(folder: str, name: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, folder, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module     # (dataclasses look their module up while it runs)
  spec.loader.exec_module(module)
  return module


def load_benchmark(name: str):
  """The script `benchmarks/<name>.py` as a module (the benchmarks are scripts, not a package)."""
  return _load_script('benchmarks', name)


def load_tool(name: str):
  """The script `tools/<name>.py` as a module (the tools are scripts, not a package)."""
  return _load_script('tools', name)


def assert_one_line(excinfo, *fragments):
  """The error of `pytest.raises` is one line that contains every fragment."""
  text = str(excinfo.value)
  assert '\n' not in text.strip(), text
  for fragment in fragments:
    assert fragment in text, (fragment, text)


def tiny_config(**overrides):
  """The PLT-Synth config cut down to seconds: BCE (the fastest method), 2 epochs, no bar."""
  from configs import synthetic
  config = synthetic.get_config()
  config.method = 'bce'
  config.num_epochs = 2
  config.eval_every_epochs = 1         # every epoch, as the tests of metrics and resume expect
  config.checkpoint_every_epochs = 1
  config.progress_bar = False
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture
def config():
  return tiny_config()


# Finished runs shared by the predict / export tests (one training each per test session).
COMIC_TINY = {'model.small_cnn_widths': (8, 16, 16, 16), 'model.projection_dim': 32,
              'comic.htb.attention_dim': 16, 'data.synthetic.num_test': 300}


def built_once(tmp_path_factory, name: str, build) -> str:
  """The folder `name`, built by `build(folder)` once per test session. Under xdist each worker
  runs its own session fixtures, so a finished run several workers need would be trained on
  each: here the first worker to ask builds it in the folder all workers share (the parent of
  their own temp folders) while the others wait on a file lock, then every worker reads the
  same files. The tests only read what the fixtures built."""
  import fcntl
  import shutil
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent
  folder, done = base / name, base / f'{name}.built'
  with open(base / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      build(str(folder))
      done.touch()
  return str(folder)


@pytest.fixture(scope='session')
def bce_run(tmp_path_factory):
  """(workdir, config) of a finished 1-epoch BCE run on PLT-Synth."""
  from comic_jax.training import train
  config = tiny_config(num_epochs=1)
  return built_once(tmp_path_factory, 'bce_run',
                    lambda workdir: train.train_and_evaluate(config, workdir)), config


def _frozen_config(folder: str):
  return tiny_config(num_epochs=1, **{
      'model.pretrained': 'efficientnet_lite0', 'model.backbone_trainable': False,
      'model.feature_cache': True, 'model.feature_views': 1, 'data.synthetic.num_test': 300,
      'data.cache_dir': os.path.join(folder, 'cache')})


@pytest.fixture(scope='session')
def frozen_run(tmp_path_factory):
  """(workdir, config) of a finished 1-epoch BCE run on frozen EfficientNet-Lite0 features (the
  installed ImageNet weights, the feature cache): the own-photos route on PLT-Synth."""
  from comic_jax.training import train
  folder = built_once(tmp_path_factory, 'frozen_run', lambda folder: train.train_and_evaluate(
      _frozen_config(folder), os.path.join(folder, 'run')))
  return os.path.join(folder, 'run'), _frozen_config(folder)


@pytest.fixture(scope='session')
def comic_trained(tmp_path_factory):
  """(workdir, config) of a tiny COMIC run trained for 2 epochs, shared by the tests that read a
  finished COMIC run (quality, resume, TensorBoard)."""
  from comic_jax.training import train
  config = tiny_config(method='comic', num_epochs=2, **COMIC_TINY)
  return built_once(tmp_path_factory, 'comic_trained',
                    lambda workdir: train.train_and_evaluate(config, workdir)), config


@pytest.fixture(scope='session')
def comic_run(tmp_path_factory):
  """(workdir, config) of a COMIC run (narrow branches, 300 test images) saved without training,
  which would compile COMIC's three-branch step (a minute on a CPU): its initial state with
  every float of the method state (energies, class means) moved off its initial value, then
  checkpointed and evaluated as a finished run is."""
  from comic_jax.training import train
  config = tiny_config(method='comic', num_epochs=1, **COMIC_TINY)

  def build(workdir):
    with train.Trainer.open(config, workdir) as run:
      _perturb_and_save(run)

  return built_once(tmp_path_factory, 'comic_run', build), config


def _perturb_and_save(run) -> None:
  import jax

  from comic_jax.training import checkpoint
  leaves, treedef = jax.tree.flatten(run.state.method_state)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  leaves = [x + jax.random.normal(k, x.shape, x.dtype) if jax.numpy.issubdtype(x.dtype, float)
            else x for x, k in zip(leaves, keys)]
  run.state = run.state.replace(method_state=jax.tree.unflatten(treedef, leaves))
  checkpoint.save(run.manager, run.steps_per_epoch, run.state)
  run.manager.wait_until_finished()
  run.write_results(*run.evaluate())
