"""Maintainer tool: wall time of the README's training commands, each with the machine's speed
measured beside it (for the README's timings; not a benchmark of the package).

  python tools/commands.py [--methods bce,comic] [--repeats 2] [--config configs/synthetic.py]
                             [--workdir runs/commands]

Runs `python -m comic_jax.main --config=CONFIG --config.method=M --workdir=...` for each method,
`--repeats` rounds in alternating order, each into a fresh workdir (the persistent compilation
cache is used as the README's commands use it: run once before timing if it is cold). Before and
after each command a probe measures the machine: one single-threaded NumPy process per core
multiplying float32 1024 x 1024 matrices for 2 s, GFLOP/s summed. The project's 2-core machine
runs at different speeds at different times (the same BCE command took 34.2 s and 24.1 s seven
minutes apart, with 55.1 and 38.0 CPU seconds), so a wall time means something only beside the
probes taken with it (a command whose two probes differ much ran across a change of speed).
Prints per command its start time, wall and CPU seconds, the run's own training rate and the
probes; writes `commands.json` to the workdir.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from comic_jax.training import machine  # noqa: E402


def probe_gflops(seconds: float = 2.0, n: int = 1024, processes: int = 1) -> float:
  """The machine's matrix-product speed in GFLOP/s: `processes` single-threaded NumPy processes
  (BLAS pinned to one thread each) multiplying float32 n x n matrices for `seconds`, summed."""
  code = (f'import numpy as np, time\n'
          f'a = np.random.default_rng(0).random(({n}, {n}), dtype=np.float32); a @ a\n'
          f't = time.perf_counter(); k = 0\n'
          f'while time.perf_counter() - t < {seconds}:\n  a @ a; k += 1\n'
          f'print(2 * {n}**3 * k / (time.perf_counter() - t) / 1e9)\n')
  env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1')
  procs = [subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE,
                            text=True) for _ in range(processes)]
  outs = [p.communicate()[0] for p in procs]
  if any(p.returncode for p in procs):
    sys.exit('the machine probe (a NumPy matrix product) failed')
  return sum(float(out.strip()) for out in outs)


def parse_trained_line(stdout: str) -> tuple[float | None, int | None]:
  """(training seconds, img/s) from the line a finished run prints (`train.trained_line`);
  (None, None) when absent (a resumed run that had nothing left to train)."""
  found = re.search(r'trained \d+ images in ([\d.]+)s \((\d+) img/s', stdout)
  return (float(found.group(1)), int(found.group(2))) if found else (None, None)


def run_command(config: str, method: str, workdir: str) -> dict:
  """Runs one training command; its wall and CPU seconds and the rate it printed."""
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, '-m', 'comic_jax.main', f'--config={config}',
         f'--config.method={method}', f'--workdir={workdir}', '--config.progress_bar=False']
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if out.returncode:
    sys.exit(f'{" ".join(cmd)} failed (exit {out.returncode}):\n{out.stderr[-2000:]}')
  train_s, rate = parse_trained_line(out.stdout)
  return {'method': method, 'wall_s': wall,
          'user_s': after.ru_utime - before.ru_utime, 'sys_s': after.ru_stime - before.ru_stime,
          'train_s': train_s, 'train_img_per_s': rate}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--methods', default='bce,comic')
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--config', default='configs/synthetic.py')
  parser.add_argument('--workdir', default='runs/commands')
  parser.add_argument('--probe-processes', type=int, default=os.cpu_count() or 1,
                      help='concurrent single-threaded probe processes (default: one per core)')
  args = parser.parse_args()
  methods = [m for m in args.methods.split(',') if m]
  if args.repeats < 1 or args.probe_processes < 1 or not methods:
    sys.exit('--repeats and --probe-processes must be >= 1 and --methods must name a method')
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)
  rows = []
  cpu = machine.local_cpu()
  print(f'CPU: {machine.describe_cpu(cpu, os.cpu_count())}')
  print(f'{"start":8s}  {"method":10s} {"wall s":>7s} {"user s":>7s} {"sys s":>6s} '
        f'{"train s":>7s} {"img/s":>6s} {"probe before/after GFLOP/s":>26s}', flush=True)
  for r in range(args.repeats):
    for method in (methods if r % 2 == 0 else methods[::-1]):
      probe = probe_gflops(processes=args.probe_processes)
      start = time.strftime('%H:%M:%S')
      row = run_command(args.config, method, os.path.join(workdir, f'{method}_{r}'))
      after = probe_gflops(processes=args.probe_processes)
      row.update(start=start, probe_gflops=probe, probe_after_gflops=after)
      rows.append(row)
      print(f'{start:8s}  {method:10s} {row["wall_s"]:7.1f} {row["user_s"]:7.1f} '
            f'{row["sys_s"]:6.1f} {row["train_s"] or float("nan"):7.1f} '
            f'{row["train_img_per_s"] or 0:6d} {probe:17.1f} / {after:6.1f}', flush=True)
  print()
  for method in methods:
    walls = [r['wall_s'] for r in rows if r['method'] == method]
    probes = [p for r in rows if r['method'] == method
              for p in (r['probe_gflops'], r['probe_after_gflops'])]
    print(f'{method}: wall median {np.median(walls):.1f} s (min {min(walls):.1f}, max '
          f'{max(walls):.1f}); probe {min(probes):.1f}-{max(probes):.1f} GFLOP/s')
  with open(os.path.join(workdir, 'commands.json'), 'w') as f:
    json.dump({'config': args.config, 'machine_cpus': os.cpu_count(), 'cpu': cpu, 'runs': rows},
              f, indent=2)


if __name__ == '__main__':
  main()
