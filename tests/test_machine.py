"""The machine description (machine.py): the CPU read from /proc/cpuinfo, named in one line."""
from comic_jax.training import machine

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14
stepping\t: 1
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16 sha_ni

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: another CPU
flags\t\t: amx_tile
"""


def test_the_cpu_is_read_from_the_first_processor_of_cpuinfo():
  cpu = machine.cpu_description(CPUINFO)
  assert cpu == {'model_name': 'AMD EPYC 9R14', 'vendor': 'AuthenticAMD', 'family': 25,
                 'model': 17, 'stepping': 1, 'features': ['avx2', 'fma', 'avx512f', 'avx512_bf16']}
  assert machine.describe_cpu(cpu, 2) == ('AMD EPYC 9R14 (family 25 model 17), 2 cores, '
                                      'avx2 fma avx512f avx512_bf16')
  assert machine.cpu_description('') == {'model_name': '', 'vendor': '', 'features': []}
