"""Input pipeline throughput: host decoding and resizing (PIL, threads) and the device
augmentation (JAX), measured in one run so their ratios mean something.

  python benchmarks/input_pipeline.py [--num-images 256] [--batch 32] [--steps 5]

(a) Host: synthetic COCO-like JPEGs (500 x 375, made in memory) through decode + square_resize
    (the training store) and decode + eval_transform (Resize 256 + CenterCrop 224), on 1 thread
    and on all cores. (b) Device: random_resized_crop(224) + rand_augment on uint8 batches of
    store-sized images on JAX's default device, after compilation. The last lines say how many
    host cores would feed that device rate. About a minute on a 2-core CPU with the defaults.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from comic_jax.data import augment, images, rand_augment  # noqa: E402


def make_jpegs(num: int, width: int, height: int, quality: int, seed: int = 0) -> list[bytes]:
  """`num` JPEGs with photo-like content: smooth colour fields, a few flat boxes and grain
  (pure noise would compress and decode unlike real photos)."""
  rs = np.random.RandomState(seed)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  out = []
  for _ in range(num):
    f = rs.uniform(0.005, 0.03, (3, 2))
    p = rs.uniform(0, 2 * np.pi, (3,))
    img = np.stack([127 + 100 * np.sin(f[c, 0] * xx + f[c, 1] * yy + p[c]) for c in range(3)], -1)
    for _ in range(rs.randint(2, 6)):
      x0, y0 = rs.randint(0, width - 40), rs.randint(0, height - 40)
      img[y0:y0 + rs.randint(20, 150), x0:x0 + rs.randint(20, 150)] = rs.uniform(0, 255, 3)
    img += rs.normal(0, 6, img.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format='JPEG',
                                                                 quality=quality)
    out.append(buf.getvalue())
  return out


def host_rate(fn, jpegs: list[bytes], threads: int, repeats: int = 2) -> float:
  """Best of `repeats` images/s of map_images(fn) over the JPEGs."""
  best = 0.0
  for _ in range(repeats):
    start = time.perf_counter()
    images.map_images(fn, jpegs, num_threads=threads)
    best = max(best, len(jpegs) / (time.perf_counter() - start))
  return best


def device_rate(fn, batch: np.ndarray, steps: int) -> tuple[float, float]:
  """(compile seconds, images/s) of the jitted fn(images, key) on the default device."""
  x = jax.device_put(batch)
  f = jax.jit(fn)
  start = time.perf_counter()
  f(x, jax.random.key(0)).block_until_ready()
  compile_s = time.perf_counter() - start
  keys = [jax.random.key(i + 1) for i in range(steps)]
  jax.block_until_ready(keys)
  start = time.perf_counter()
  for k in keys:
    out = f(x, k)
  out.block_until_ready()
  return compile_s, steps * len(batch) / (time.perf_counter() - start)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num-images', type=int, default=256, help='synthetic JPEGs')
  parser.add_argument('--width', type=int, default=500)
  parser.add_argument('--height', type=int, default=375)
  parser.add_argument('--quality', type=int, default=90, help='JPEG quality')
  parser.add_argument('--store-size', type=int, default=256, help='square_resize size')
  parser.add_argument('--crop', type=int, default=224, help='device crop / eval crop size')
  parser.add_argument('--batch', type=int, default=32, help='device batch size')
  parser.add_argument('--steps', type=int, default=5, help='timed device batches')
  parser.add_argument('--threads', type=int, default=0, help='host threads (0: all cores)')
  args = parser.parse_args(argv)
  cores = os.cpu_count() or 1
  threads = args.threads or cores

  start = time.perf_counter()
  jpegs = make_jpegs(args.num_images, args.width, args.height, args.quality)
  kib = sum(map(len, jpegs)) / len(jpegs) / 1024
  print(f'{len(jpegs)} synthetic JPEGs {args.width}x{args.height} q{args.quality}, '
        f'{kib:.0f} KiB each (made in {time.perf_counter() - start:.1f} s); {cores} cores')

  print('\n(a) host, PIL (images/s)')
  store = lambda b: images.square_resize(images.decode_image(b), args.store_size)
  evaluate = lambda b: images.eval_transform(images.decode_image(b), args.store_size, args.crop)
  rates = {}
  for label, fn in [('decode only', images.decode_image),
                    (f'decode + square_resize({args.store_size})', store),
                    (f'decode + eval_transform({args.store_size}, {args.crop})', evaluate)]:
    one = host_rate(fn, jpegs, 1)
    many = host_rate(fn, jpegs, threads)
    rates[label] = (one, many)
    print(f'  {label:40s} 1 thread {one:7.0f}   {threads} threads {many:7.0f}   '
          f'per core {many / min(threads, cores):6.0f}   speed-up x{many / one:.2f}')

  print(f'\n(b) device {jax.devices()[0].device_kind!r} ({jax.default_backend()}), '
        f'batch {args.batch} of {args.store_size}x{args.store_size} -> {args.crop} (images/s)')
  batch = np.stack([store(j) for j in (jpegs * (args.batch // len(jpegs) + 1))[:args.batch]])
  crop = lambda x, k: augment.random_resized_crop(x, k, out_size=args.crop)
  cropped = np.asarray(crop(jnp.asarray(batch), jax.random.key(0)))

  def both(x, k):
    k1, k2 = jax.random.split(k)
    return rand_augment.rand_augment(crop(x, k1), k2)
  device = {}
  for label, fn, data in [('random_resized_crop', crop, batch),
                          ('rand_augment (2 ops, magnitude 9)', rand_augment.rand_augment,
                           cropped),
                          ('random_resized_crop + rand_augment', both, batch)]:
    compile_s, rate = device_rate(fn, data, args.steps)
    device[label] = rate
    print(f'  {label:40s} {rate:8.0f}   (compiled in {compile_s:.1f} s)')

  store_core = rates[f'decode + square_resize({args.store_size})'][1] / min(threads, cores)
  full = device['random_resized_crop + rand_augment']
  print('\nratios (this run)')
  print(f'  device augmentation / host store rate per core   x{full / store_core:.1f}  '
        f'(host cores to keep up with the augmentation alone)')
  print(f'  rand_augment cost / random_resized_crop cost     '
        f'x{device["random_resized_crop"] / device["rand_augment (2 ops, magnitude 9)"]:.2f}')
  print(f'total {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
  main()
