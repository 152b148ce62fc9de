"""Runtime tuning of a process that trains, done before JAX starts: glibc's malloc keeps freed
memory (`keep_freed_memory`), a CPU-only host is split into several XLA devices
(`use_cpu_devices`) and compiled programs are kept on disk (`use_compilation_cache`). None of
them changes a result."""
import ctypes
import os


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
  faster and the COMIC step 1.09x (docs/performance.md). Only the CPU platform is split: GPUs and
  TPUs, where present, are the devices as before. A device count set by the user in `XLA_FLAGS`
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
         f'{jax.local_device_count()} device(s); call runtime.use_cpu_devices(config) before any '
         'JAX operation (or restart the kernel)')
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
  return compilation_cache_in(config.data.cache_dir)


def compilation_cache_in(cache_dir: str) -> str:
  """`use_compilation_cache` into `<cache_dir>/xla` ('': the default data cache); a
  `JAX_COMPILATION_CACHE_DIR` set by the user wins."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  import jax

  from comic_jax.data import splits
  path = os.path.join(splits.cache_dir(cache_dir), 'xla')
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)
  return path
