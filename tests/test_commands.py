"""tools/commands.py: it reads the rate line a run prints, and its machine probe measures."""
import numpy as np

from comic_jax.training import train
from conftest import load_tool

commands = load_tool('commands')


def test_the_benchmark_reads_the_line_a_run_prints():
  stdout = 'epoch 30: loss 0.1\n' + train.trained_line(41280, 58.3) + '\n  table\n'
  seconds, rate = commands.parse_trained_line(stdout)
  assert seconds == 58.3
  assert rate == round(41280 / 58.3)   # 708 by hand
  assert commands.parse_trained_line('evaluated the checkpoint of step 10\n') == (None, None)


def test_the_probe_measures_a_matrix_product():
  # Two processes, summed. One 64 x 64 product is 2 * 64**3 flops; any working CPU does at least
  # one per millisecond in each process.
  gflops = commands.probe_gflops(seconds=0.05, n=64, processes=2)
  assert np.isfinite(gflops)
  assert 2 * (2 * 64 ** 3 / 1e-3 / 1e9) < gflops < 1e4
