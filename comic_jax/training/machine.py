"""What a run's numbers depend on beyond its config: the software's versions, JAX's devices and
the CPU (`machine_description`, written to the workdir as `environment.json`; the benchmarks
print `describe_cpu(local_cpu(), cores)`)."""
import os

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
