"""Streaming ArrayRecord shards with Grain (data.name='shards') against data held in memory, in one
run so that the ratios mean something:

  python benchmarks/streaming.py [--sizes 20000 200000] [--workers 2] [--jpegs 256]

(a) Memory: for each size, an .npz of that many random 32 px images (24 classes) is converted
    to shards, then `python -m comic_jax.main --config=configs/npz.py --config.data.name=shards
    ...` trains one epoch of BCE on them (a narrow small CNN, batch 256); the peak RSS of the
    training process and its Grain workers together (sampled every 0.1 s) must not grow with
    the data set (at most 1.25x from the smallest to the largest). The same epoch in memory
    (data.name=npz) on the smallest size gives the in-memory side.
(b) Throughput of the training loop (the same epochs): streamed img/s against in memory.
(c) Input pipeline alone, on the smallest set: batches/s of the shard feed (in process and on
    the workers) against `pipeline.train_batch` in memory, no training step.
(d) Real images: synthetic 500 x 375 JPEGs (benchmarks/input_pipeline.py's) stored as read;
    one Grain worker's record decode + square_resize(256) (the host side of `resized_crop`; the
    crop and RandAugment run on the device) in img/s, and the workers that keep a ResNet-50
    224 px step fed at the H200 rates of docs/performance.md (COMIC 470 img/s, BCE 2,154 img/s,
    float32).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

H200_RESNET50 = {'COMIC': 470, 'BCE': 2154}   # docs/performance.md: float32 img/s of one H200


def mib(num_bytes: int) -> float:
  return num_bytes / 2 ** 20


def make_npz(path: str, num_train: int, num_test: int = 1000, size: int = 32, classes: int = 24,
             seed: int = 0) -> None:
  rs = np.random.RandomState(seed)
  labels = lambda n: np.maximum(rs.rand(n, classes) < 0.1, np.eye(classes)[np.arange(n) % classes])
  np.savez(path, x_train=rs.randint(0, 256, (num_train, size, size, 3), dtype=np.uint8),
           y_train=labels(num_train).astype(np.int8),
           x_test=rs.randint(0, 256, (num_test, size, size, 3), dtype=np.uint8),
           y_test=labels(num_test).astype(np.int8))


def tree_rss(pid: int) -> int:
  """Bytes resident in process `pid` and its descendants (Grain's workers)."""
  import psutil
  try:
    root = psutil.Process(pid)
    total = root.memory_info().rss
    for child in root.children(recursive=True):
      try:
        total += child.memory_info().rss
      except psutil.Error:
        pass
    return total
  except psutil.Error:
    return 0


def run_epoch(name: str, path: str, workdir: str, workers: int) -> dict:
  """One epoch of BCE by the command line; its peak tree RSS, wall time and img/s."""
  cmd = [sys.executable, '-m', 'comic_jax.main', '--config=configs/npz.py', f'--workdir={workdir}',
         f'--config.data.name={name}', f'--config.data.path={path}', '--config.method=bce',
         '--config.model.backbone=small_cnn', '--config.model.small_cnn_widths=(8,8,8,8)',
         '--config.model.projection_dim=0', '--config.augment.kind=shift',
         '--config.num_epochs=1', '--config.batch_size=256', '--config.eval_batch_size=500',
         '--config.progress_bar=False', f'--config.data.workers={workers}']
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  peak, done = [0], threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], tree_rss(proc.pid))
      time.sleep(0.1)
  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  out = proc.communicate()[0]
  done.set()
  sampler.join()
  if proc.returncode:
    raise SystemExit(f'{" ".join(cmd)} failed:\n{out[-3000:]}')
  rate = re.search(r'\((\d+) img/s', out)
  return {'rss': peak[0], 'seconds': time.perf_counter() - start,
          'img_per_sec': float(rate.group(1)) if rate else float('nan')}


def feed_rate(config, data, steps: int) -> float:
  """Batches/s of the training feed for `data` (shards or in memory), `steps` steps."""
  from comic_jax.data import pipeline, samplers
  streams = {'main': samplers.create_sampler('uniform', data.y_train, config.batch_size, 0)}
  feed = pipeline.create_feed(data, streams, {'main': None}, config.data,
                              batch_size=config.batch_size, seed=config.seed, num_steps=steps + 1)
  feed.batch(0)   # workers started, first batch made
  start = time.perf_counter()
  for step in range(1, steps + 1):
    feed.batch(step)
  return steps / (time.perf_counter() - start)


def jpeg_worker_rate(num: int, repeats: int = 5) -> tuple[float, float, float]:
  """(img/s wall, best of `repeats` passes; img per CPU-second of this process, the rate of one
  core of its own whatever else runs; mean KiB per JPEG) of one worker's record decode +
  square_resize(256)."""
  import input_pipeline

  from comic_jax.data import shard_feed, shards
  jpegs = input_pipeline.make_jpegs(num, 500, 375, 90)
  transform = shards.ImageTransform('file', True, 'train', 256, 256, 224)
  decode = shard_feed.DecodeTraining(transform, 24)
  records = [shards.encode_record(str(i), j, np.eye(24)[i % 24]) for i, j in enumerate(jpegs)]
  decode.map(records[0])
  best, cpu = 0.0, 0.0
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    for r in records:
      decode.map(r)
    best = max(best, len(records) / (time.perf_counter() - start))
    cpu = max(cpu, len(records) / (time.process_time() - start_cpu))
  return best, cpu, sum(map(len, jpegs)) / len(jpegs) / 1024


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[20000, 200000])
  parser.add_argument('--workers', type=int, default=2, help='Grain workers of the epochs')
  parser.add_argument('--feed-steps', type=int, default=100, help='(c): batches timed')
  parser.add_argument('--jpegs', type=int, default=256, help='(d): synthetic JPEGs')
  parser.add_argument('--dir', default='', help='scratch folder (default: a temporary one); '
                      'shards already converted there are reused')
  parser.add_argument('--parts', default='abcd', help='which of (a, b) [ab], (c), (d) to run')
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
  from comic_jax.data import shard_writer as convert
  from comic_jax.data import sources
  from configs import npz
  scratch = args.dir or tempfile.mkdtemp(prefix='comic_jax_streaming_')
  os.makedirs(scratch, exist_ok=True)
  start = time.perf_counter()
  print(f'{os.cpu_count()} cores; scratch {scratch}')

  epochs, dirs = {}, {}
  for n in args.sizes:
    dirs[n] = os.path.join(scratch, f'shards_{n}')
    path = os.path.join(scratch, f'train_{n}.npz')
    if not os.path.exists(dirs[n]):
      make_npz(path, n)
      config = npz.get_config()
      config.data.path = path
      t = time.perf_counter()
      convert.convert(config.data, dirs[n])
      convert_s = time.perf_counter() - t
      size = sum(os.path.getsize(os.path.join(dirs[n], f)) for f in os.listdir(dirs[n]))
      print(f'{n:7d} images converted in {convert_s:6.1f} s ({n / convert_s:5.0f} img/s, '
            f'{mib(size):6.0f} MiB of shards)')
  small, large = min(args.sizes), max(args.sizes)
  if 'a' in args.parts or 'b' in args.parts:
    print('\n(a, b) one epoch of BCE (small CNN 8-8-8-8, batch 256), by the command line')
    for n in args.sizes:
      workdir = os.path.join(scratch, f'run_shards_{n}_{os.getpid()}')
      epochs[n] = run_epoch('shards', dirs[n], workdir, args.workers)
      e = epochs[n]
      print(f'  {n:7d} images  streamed: peak RSS {mib(e["rss"]):6.0f} MiB, '
            f'{e["img_per_sec"]:6.0f} img/s, {e["seconds"]:6.1f} s')
    memory = run_epoch('npz', os.path.join(scratch, f'train_{small}.npz'),
                       os.path.join(scratch, f'run_npz_{small}_{os.getpid()}'), 0)
    print(f'  {small:7d} images  in memory: peak RSS {mib(memory["rss"]):6.0f} MiB, '
          f'{memory["img_per_sec"]:6.0f} img/s, {memory["seconds"]:6.1f} s')
    ratio = epochs[large]['rss'] / epochs[small]['rss']
    print(f'  peak RSS {large} / {small} streamed: x{ratio:.3f} '
          f'({"within" if ratio <= 1.25 else "ABOVE"} the 1.25x bound)')
    print(f'  training img/s streamed / in memory ({small}): '
          f'x{epochs[small]["img_per_sec"] / memory["img_per_sec"]:.2f}')
  if 'c' in args.parts:
    pipeline_rates(npz, sources, scratch, dirs, small, args)
  if 'd' in args.parts:
    jpeg_part(args)
  print(f'\ntotal {time.perf_counter() - start:.0f} s')


def pipeline_rates(npz, sources, scratch: str, dirs: dict, small: int, args) -> None:
  print(f'\n(c) the input pipeline alone ({small} images, batch 256, {args.feed_steps} batches)')
  config = npz.get_config()
  config.batch_size = 256
  config.data.path = os.path.join(scratch, f'train_{small}.npz')
  rates = {'in memory (train_batch)': feed_rate(config, sources.load_dataset(config.data),
                                                args.feed_steps)}
  config.data.name, config.data.path = 'shards', dirs[small]
  for workers in sorted({0, 1, args.workers}):
    config.data.workers = workers
    rates[f'shards, {workers} workers'] = feed_rate(config, sources.load_dataset(config.data),
                                                    args.feed_steps)
  base = rates['in memory (train_batch)']
  for label, r in rates.items():
    print(f'  {label:28s} {r * 256:9.0f} img/s   x{r / base:.3f} of in memory')


def jpeg_part(args) -> None:
  print(f'\n(d) {args.jpegs} synthetic JPEGs 500x375 q90 (224 px training, store 256)')
  rate, cpu_rate, kib = jpeg_worker_rate(args.jpegs)
  print(f'  one worker: record decode + square_resize(256)   {rate:6.0f} img/s wall (best of 5), '
        f'{cpu_rate:6.0f} img per CPU-second  ({kib:.0f} KiB each)')
  for method, step in H200_RESNET50.items():
    print(f'  workers to feed one H200 ResNet-50 {method} step ({step} img/s, float32): '
          f'{math.ceil(step / cpu_rate)} at the CPU-second rate, {math.ceil(step / rate)} at the '
          'wall rate (a core each)')

if __name__ == '__main__':
  main()
