"""Command-line helpers shared by `main` and `benchmark`: a user's mistake on the command line
ends with one line on stderr and exit status 2, never a stack trace."""
import ctypes
import os
import signal
import sys

from absl import flags


def fail(message) -> None:
  print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
  sys.exit(2)


def _bad_override(overrides: list[str], error: Exception) -> str:
  """The override(s) whose path holds the field named in `error` (all of them if none does)."""
  text = str(error.args[0] if error.args else error)
  named = [o for o in overrides
           if any(repr(part) in text or part == text for part in o[len('--config.'):].split('.'))]
  return ', '.join(named or overrides)


def parse_flags(argv):
  """absl's flag parsing (a `flags_parser` for `app.run`), with one-line errors."""
  overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
  try:
    args = flags.FLAGS(argv)
    flags.FLAGS.config.keys()  # a config file that failed to load raises only when first used
    return args
  except flags.Error as e:
    fail(e)
  except (KeyError, AttributeError) as e:
    fail(f'{_bad_override(overrides, e)}: no such config field; see the config file for the '
         'field names')
  except (OSError, SyntaxError, ImportError) as e:
    fail(f'cannot load the config file: {str(e).strip().splitlines()[-1]}')


def exit_on_signals() -> None:
  """SIGTERM / SIGINT outside the training steps (imports, data loading, compilation, the final
  evaluation, a second Ctrl-C) end the process at once with one line and status 128 + signal.

  Nothing is lost by stopping there: every file of the workdir and the caches is written
  through a temp file and a rename, and an unfinished checkpoint is ignored on resume. During
  the training steps `workdir.PreemptionGuard` takes over and saves a checkpoint first. Not for
  multi-process runs, where JAX's preemption notifier owns SIGTERM. A signal the parent
  ignores (nohup, a background job) stays ignored.
  """
  def handle(signum, frame):
    workdir = sys.modules.get('comic_jax.workdir')
    if workdir is not None:
      workdir.release_all_locks()
    print(f'\nstopped by {signal.Signals(signum).name}; rerun the same command to resume from '
          'the last saved checkpoint', file=sys.stderr, flush=True)
    os._exit(128 + signum)

  for s in (signal.SIGTERM, signal.SIGINT):
    if signal.getsignal(s) is not signal.SIG_IGN:
      signal.signal(s, handle)


def keep_freed_memory(threshold: int = 1 << 30, top_pad: int = 256 << 20) -> bool:
  """Lets glibc's malloc keep freed memory instead of handing it back to the kernel.

  Every XLA:CPU execution allocates its temporary buffers and frees them at the end. With
  glibc's defaults large blocks come from fresh `mmap`s and freed memory above 128 KiB at the top
  of the heap is returned, so each training step touches new pages again: on this project's
  2-core machine a COMIC step ran 1.35x faster (400 -> 537 img/s, the mean of 4 alternating
  runs of `benchmarks/step_speed.py`), with a third of the page faults, when large blocks come
  from the heap (`M_MMAP_THRESHOLD`) and freed memory stays there (`M_TRIM_THRESHOLD`,
  `M_TOP_PAD`). The cost: the process keeps its peak memory until it exits. Called by the
  processes that train (main, benchmark, benchmarks/step_speed.py, the tests); a no-op (False)
  where the C library is not glibc.
  """
  try:
    mallopt = ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError):
    return False
  m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3     # glibc's malloc.h
  return all(mallopt(option, value) == 1 for option, value in (
      (m_mmap_threshold, threshold), (m_trim_threshold, threshold), (m_top_pad, top_pad)))


def use_cpu_devices(config) -> int:
  """Splits the host CPU into `config.cpu_devices` XLA devices, so that a CPU-only run trains
  data-parallel over them (each device takes its rows of the global batch, as GPUs do; BatchNorm
  statistics and gradients are all-reduced, so the model is the same up to float rounding).

  Why: XLA:CPU parallelises the small CNN's convolutions poorly: on this project's 2-core
  machine the BCE step ran as fast on one core as on two, while two devices trained it 1.46x
  faster and the COMIC step 1.09x (docs/performance.md). Only the CPU platform is split: GPUs and TPUs, where
  present, are the devices as before. A device count set by the user in `XLA_FLAGS`
  (`--xla_force_host_platform_device_count`, as the tests do) wins. Call before JAX's first use;
  returns the count asked of JAX (0: left as it was)."""
  n = config.get('cpu_devices', 1)
  if (not isinstance(n, int) or n <= 1      # a bad value: train.validate_config says so
      or 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', '')):
    return 0
  import jax
  try:
    jax.config.update('jax_num_cpu_devices', n)
  except RuntimeError:   # JAX has already run something in this process (a notebook)
    from comic_jax.errors import warn
    warn(f'config.cpu_devices={n} is ignored: JAX has already started in this process, with '
         f'{jax.local_device_count()} device(s); call cli.use_cpu_devices(config) before any JAX '
         'operation (or restart the kernel)')
    return 0
  return n


def use_compilation_cache(config) -> str | None:
  """Keeps XLA's compiled programs in `<data.cache_dir>/xla` (JAX's persistent compilation
  cache), so that a later run of the same recipe loads its train and evaluation steps instead of
  compiling them: on this project's 2-core machine the README's BCE command went from 59.6 s to
  51.2 s on its second run, with identical metrics. The cached programs are the compiled ones
  bit for bit, so results do not change. Off with `config.compilation_cache=False`; a
  `JAX_COMPILATION_CACHE_DIR` set by the user (or the tests) wins. The folder grows with each new
  recipe (~0.1-1 MB per program for the small CNN, more for ResNet-50) and may be deleted at any
  time. Returns the folder in use (None: off). Call before the first compilation.
  """
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  if not config.compilation_cache:
    return None
  import jax
  from comic_jax.data import splits
  path = os.path.join(splits.cache_dir(config.data.cache_dir), 'xla')
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)
  return path


# CPU features that change which kernels XLA:CPU (and its YNNPACK / oneDNN libraries) pick, and
# so the order in which floats are summed: the same run gives other digits on another CPU type.
CPU_FEATURES = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16',
                'amx_bf16', 'amx_tile')


def cpu_description(cpuinfo: str) -> dict:
  """The first processor of a Linux `/proc/cpuinfo` text: model name, vendor, family, model,
  stepping, and which of `CPU_FEATURES` its flags list."""
  fields = {}
  for line in cpuinfo.splitlines():
    if not line.strip():
      if fields:
        break
      continue
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  flags_ = set(fields.get('flags', '').split())
  out = {'model_name': fields.get('model name', ''), 'vendor': fields.get('vendor_id', '')}
  for key in ('cpu family', 'model', 'stepping'):
    if fields.get(key, '').isdigit():
      out[key.replace('cpu ', '')] = int(fields[key])
  out['features'] = [f for f in CPU_FEATURES if f in flags_]
  return out


def machine_description() -> dict:
  """What a run's numbers depend on beyond its config: the software's versions, JAX's devices
  and the CPU (written to the workdir as `environment.json`; the benchmarks print the CPU). The same
  config on the same software gives the same results to the last digit on the same CPU type,
  and digits that differ from the second decimal on another one (docs/architecture.md)."""
  import platform
  import flax
  import jax
  import jaxlib
  import numpy as np
  import optax
  devices = jax.devices()
  out = {'python': platform.python_version(), 'jax': jax.__version__,
         'jaxlib': jaxlib.__version__, 'flax': flax.__version__, 'optax': optax.__version__,
         'numpy': np.__version__, 'backend': jax.default_backend(),
         'device_kind': devices[0].device_kind, 'devices': jax.device_count(),
         'processes': jax.process_count(), 'cpu_cores': os.cpu_count()}
  out['cpu'] = local_cpu()
  return out


def local_cpu() -> dict:
  """`cpu_description` of this machine's CPU (its model name alone where there is no
  /proc/cpuinfo)."""
  try:
    with open('/proc/cpuinfo') as f:
      return cpu_description(f.read())
  except OSError:                                   # not Linux
    import platform
    return {'model_name': platform.processor() or platform.machine()}


def describe_cpu(cpu: dict, cores: int) -> str:
  """One line naming a CPU of `local_cpu()`, e.g. 'AMD EPYC (family 25 model 17), 2 cores,
  avx2 fma avx512f avx512_vnni avx512_bf16'."""
  ids = ' '.join(f'{k} {cpu[k]}' for k in ('family', 'model') if k in cpu)
  features = ' '.join(cpu.get('features', [])) or 'no listed features'
  return (f"{cpu.get('model_name') or 'unknown CPU'}{f' ({ids})' if ids else ''}, "
          f"{cores} cores, {features}")
