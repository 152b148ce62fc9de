"""Backbone speed: img/s of the project's Flax EfficientNet-Lite0 beside the PyTorch reference
implementation that tests/test_efficientnet.py checks it against, measured side by side in one
process so that the ratio JAX / PyTorch means something on a shared machine.

  python benchmarks/backbone_speed.py                  # 96 / 128 / 224 px, 1 and 2 threads
  python benchmarks/backbone_speed.py --quick          # fewer repeats; the train step at 96 px
  python benchmarks/backbone_speed.py --no-torch       # JAX only (no PyTorch installed)
  python benchmarks/backbone_speed.py --profile /tmp/trace --sizes 96 --threads 2 --no-torch

Measured, each at batch 64 (`--batch`) on Lite0's ImageNet weights:
- `forward`: inference BatchNorm, the pooled head features (the frozen-feature route, predict);
  JAX: `jit(model.apply(..., train=False))`; PyTorch: `extract_features` + the mean over
  space under `torch.inference_mode()`.
- `train`: one fine-tuning step, forward with batch statistics (and their running averages),
  a new linear classifier on the pooled features, sigmoid cross-entropy, backward and an SGD
  step with momentum 0.9 on every weight; JAX: one jit-compiled step with the state donated;
  PyTorch: the same, `optimizer.zero_grad(); loss.backward(); optimizer.step()`.

On a CPU each thread count runs in its own process (XLA sizes its thread pool from the CPUs it
may use: the process is pinned to `threads` cores, and PyTorch gets `set_num_threads(threads)`);
JAX and PyTorch repeats alternate inside it, and the table gives the median of the repeats and
the ratio of the medians. On a GPU (or TPU) it measures JAX in float32 and bfloat16
(`model.dtype`) instead, and PyTorch on CUDA when it has it (float32; bfloat16 by autocast).

The reference, built with `image_size` = the input size: its static TF-'SAME' padding, the
faster of its two modes, equals 'SAME' at that size; its drop-connect is switched off, as ours
has none. PyTorch is not a requirement of the project: install it in a separate virtualenv,
beside the project's requirements (CPU wheel):

  python -m venv /tmp/torchvenv && . /tmp/torchvenv/bin/activate
  pip install -r requirements.txt torch==2.13.0+cpu efficientnet-lite-pytorch==0.1.0

`--out DIR` (default docs/results/backbone_speed/ with --quick) writes `results.json` (every
measurement), `table.md` (the table printed) and `environment.json` (the software and CPU,
`machine.machine_description`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TORCH_HINT = ('PyTorch is not installed: `pip install torch==2.13.0+cpu '
              'efficientnet-lite-pytorch==0.1.0` in a separate virtualenv, or pass --no-torch')
DEFAULT_OUT = os.path.join(ROOT, 'docs', 'results', 'backbone_speed')
NUM_CLASSES = 20                  # the fine-tuning step's new classifier (PLT-Synth's classes)
LEARNING_RATE = 1e-3

# (warm-up calls, timed repeats); a repeat is one call of a batch.
SCHEDULE = {'full': (2, 6), 'quick': (1, 3)}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[96, 128, 224])
  parser.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                      help='CPU threads (one process each); ignored on an accelerator')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--modes', nargs='+', choices=('forward', 'train'),
                      default=['forward', 'train'])
  parser.add_argument('--train-sizes', type=int, nargs='+', default=None,
                      help='sizes of the train step (default: --sizes; with --quick: 96)')
  warmup, repeats = SCHEDULE['quick']
  parser.add_argument('--quick', action='store_true', help=f'fewer repeats ({warmup} warm-up, '
                      f'{repeats} timed) and the train step at 96 px only')
  parser.add_argument('--no-torch', action='store_true', help='JAX only')
  parser.add_argument('--out', default=None, help='write results.json, table.md and '
                      'environment.json here (default with --quick: docs/results/backbone_speed)')
  parser.add_argument('--profile', default=None, help='write a jax.profiler trace of the JAX '
                      'forward (each size) to this folder')
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.train_sizes is None:
    args.train_sizes = [96] if args.quick else list(args.sizes)
  if args.out is None and args.quick:
    args.out = DEFAULT_OUT
  bad = [n for n in args.threads if n < 1] + [s for s in args.sizes + args.train_sizes if s < 32]
  if bad or args.batch < 1:
    parser.error('threads and batch must be >= 1 and sizes >= 32 (the network downsamples 32x)')
  return args


def cases(args):
  """[(mode, size)] measured by one process, in order."""
  out = []
  for mode in args.modes:
    out += [(mode, s) for s in (args.sizes if mode == 'forward' else args.train_sizes)]
  return out


# ----------------------------------------------------------------------------------- JAX

def jax_forward(model):
  """jit(variables, images) -> pooled features, inference BatchNorm."""
  import jax
  return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def jax_train_step(model, num_classes: int = NUM_CLASSES, learning_rate: float = LEARNING_RATE):
  """(init(variables, features) -> state, step(state, images, labels) -> (state, loss)): one
  fine-tuning step of `model` (a backbone returning pooled features) under a new linear
  classifier, sigmoid cross-entropy, SGD with momentum 0.9 on every weight; the state is
  donated."""
  import jax
  import jax.numpy as jnp
  import optax
  tx = optax.sgd(learning_rate, momentum=0.9)

  def init(variables, features: int, seed: int = 0):
    rs = jax.random.key(seed)
    variables = jax.tree.map(jnp.array, variables)    # copies: the step donates its state
    params = {'backbone': variables['params'],
              'classifier': {'kernel': jax.random.normal(rs, (features, num_classes)) * 0.01,
                             'bias': jnp.zeros((num_classes,))}}
    return {'params': params, 'batch_stats': variables['batch_stats'], 'opt': tx.init(params)}

  def loss_fn(params, batch_stats, images, labels):
    f, updates = model.apply({'params': params['backbone'], 'batch_stats': batch_stats}, images,
                             train=True, mutable=['batch_stats'])
    logits = f @ params['classifier']['kernel'] + params['classifier']['bias']
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean(), updates['batch_stats']

  def step(state, images, labels):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], state['batch_stats'], images, labels)
    updates, opt = tx.update(grads, state['opt'], state['params'])
    return {'params': optax.apply_updates(state['params'], updates), 'batch_stats': stats,
            'opt': opt}, loss

  return jax.jit(init, static_argnums=(1, 2)), jax.jit(step, donate_argnums=0)


def jax_case(mode: str, model, variables, images, labels):
  """A zero-argument callable that runs one batch of `mode` and waits for it."""
  if mode == 'forward':
    forward = jax_forward(model)
    return lambda: forward(variables, images).block_until_ready()
  init, step = jax_train_step(model, labels.shape[1])
  features = jax_forward(model).eval_shape(variables, images[:1]).shape[-1]
  box = {'state': init(variables, features)}

  def run():
    box['state'], loss = step(box['state'], images, labels)
    return loss.block_until_ready()
  return run


def lite0(dtype: str = 'float32'):
  """(the project's Lite0 module, its ImageNet variables)."""
  import jax.numpy as jnp

  from comic_jax.models import efficientnet
  model = efficientnet.EfficientNetLite0(dtype=getattr(jnp, dtype))
  return model, efficientnet.load_efficientnet_variables('efficientnet_lite0')


# ------------------------------------------------------------------------------- PyTorch

def torch_reference(torch, size: int, device: str = 'cpu'):
  """The reference EfficientNet-Lite0 with the same ImageNet weights: static 'SAME' padding for
  `size` px, no drop-connect."""
  from efficientnet_lite_pytorch import EfficientNet

  from comic_jax.models import efficientnet
  path = efficientnet.efficientnet_weights_path('efficientnet_lite0')
  model = EfficientNet.from_pretrained('efficientnet-lite0', weights_path=path, image_size=size,
                                       drop_connect_rate=None)
  return model.to(device)


def torch_case(torch, mode: str, size: int, images, labels, device: str = 'cpu',
               autocast_dtype=None):
  """The PyTorch twin of `jax_case` (images NCHW)."""
  import contextlib
  model = torch_reference(torch, size, device)
  x = torch.from_numpy(images).to(device)
  y = torch.from_numpy(labels).to(device)
  autocast = (lambda: torch.autocast(device, dtype=autocast_dtype)) if autocast_dtype else (
      contextlib.nullcontext)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  pool = lambda f: f.mean(dim=(2, 3))
  if mode == 'forward':
    model.eval()

    def run():
      with torch.inference_mode(), autocast():
        out = pool(model.extract_features(x))
      sync()
      return out
    return run
  model.train()
  classifier = torch.nn.Linear(1280, labels.shape[1]).to(device)
  params = list(model.parameters()) + list(classifier.parameters())
  optimizer = torch.optim.SGD(params, lr=LEARNING_RATE, momentum=0.9)
  bce = torch.nn.BCEWithLogitsLoss()

  def run():
    optimizer.zero_grad()
    with autocast():
      loss = bce(classifier(pool(model.extract_features(x))).float(), y)
    loss.backward()
    optimizer.step()
    sync()
    return loss
  return run


# ------------------------------------------------------------------------------- timing

def time_alternating(runs, warmup: int, repeats: int):
  """({name: [wall seconds per repeat]}, {name: [CPU seconds per repeat]}) of the
  zero-argument callables `runs` ({name: fn}), each warmed up `warmup` times (compilation) and
  then timed `repeats` times in turn, so that a change of the machine's load hits every one of
  them. CPU seconds are this process's (all its threads'): on a machine shared with other jobs
  they count the work done rather than the time waited for a core."""
  for fn in runs.values():
    for _ in range(warmup):
      fn()
  wall, cpu = {name: [] for name in runs}, {name: [] for name in runs}
  for _ in range(repeats):
    for name, fn in runs.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      fn()
      wall[name].append(time.perf_counter() - start)
      cpu[name].append(time.process_time() - start_cpu)
  return wall, cpu


def median(xs):
  xs = sorted(xs)
  n = len(xs)
  return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def random_batch(batch: int, size: int, num_classes: int = NUM_CLASSES, seed: int = 0):
  """(NHWC float32 images ~ N(0, 1) (normalised inputs), {0, 1} float32 labels)."""
  import numpy as np
  rs = np.random.RandomState(seed)
  return (rs.standard_normal((batch, size, size, 3)).astype(np.float32),
          (rs.uniform(size=(batch, num_classes)) < 0.2).astype(np.float32))


def measure(args, threads, log=print):
  """[result rows] of this process: each (mode, size) case, JAX (and PyTorch) side by side."""
  import jax
  warmup, repeats = SCHEDULE['quick' if args.quick else 'full']
  accelerator = jax.default_backend() != 'cpu'
  torch = None
  if not args.no_torch:
    try:
      import torch
    except ImportError:
      sys.exit(f'error: {TORCH_HINT}')
    if not accelerator:
      torch.set_num_threads(threads)
  dtypes = ('float32', 'bfloat16') if accelerator else ('float32',)
  models = {d: lite0(d) for d in dtypes}
  device = 'cuda' if accelerator and torch is not None and torch.cuda.is_available() else 'cpu'
  rows = []
  for mode, size in cases(args):
    images, labels = random_batch(args.batch, size)
    runs = {}
    for d, (model, variables) in models.items():
      runs[f'jax {d}'] = jax_case(mode, model, variables, images, labels)
    if torch is not None and (device == 'cuda' or not accelerator):
      nchw = images.transpose(0, 3, 1, 2).copy()
      runs['torch float32'] = torch_case(torch, mode, size, nchw, labels, device)
      if accelerator:
        runs['torch bfloat16'] = torch_case(torch, mode, size, nchw, labels, device,
                                            torch.bfloat16)
    if args.profile and mode == 'forward':
      runs[f'jax {dtypes[0]}']()
      with jax.profiler.trace(os.path.join(args.profile, f'forward_{size}px')):
        runs[f'jax {dtypes[0]}']()
    start = time.time()
    wall, cpu = time_alternating(runs, warmup, repeats)
    row = {'mode': mode, 'size': size, 'batch': args.batch,
           'threads': None if accelerator else threads,
           'img_per_sec': {k: args.batch / median(t) for k, t in wall.items()},
           'img_per_cpu_sec': {k: args.batch / median(t) for k, t in cpu.items()},
           'seconds': wall, 'cpu_seconds': cpu}
    rows.append(row)
    log(format_row(row) + f'   ({time.time() - start:.0f}s)')
  return rows


def ratio(row, ours='jax float32', theirs='torch float32', key='img_per_sec'):
  rates = row[key]
  return rates[ours] / rates[theirs] if ours in rates and theirs in rates else None


def format_row(row) -> str:
  rates = ', '.join(f'{k} {v:.1f}' for k, v in row['img_per_sec'].items())
  r, r_cpu = ratio(row), ratio(row, key='img_per_cpu_sec')
  threads = f", {row['threads']} thread{'s' * (row['threads'] != 1)}" if row['threads'] else ''
  return (f"{row['mode']:7s} {row['size']:3d} px{threads}: {rates} img/s"
          + (f'; JAX / PyTorch {r:.2f}x (per CPU second {r_cpu:.2f}x)' if r else ''))


def markdown_table(rows) -> str:
  """The results as a markdown table: one line per (mode, size, threads), img/s per side and
  the JAX / PyTorch ratios of the float32 medians measured in one process, of wall time and of
  CPU time (img per CPU second: the work, whatever else the machine runs)."""
  names = []
  for row in rows:
    names += [k for k in row['img_per_sec'] if k not in names]
  head = (['step', 'input', 'threads'] + [f'{n} img/s' for n in names]
          + ['JAX / PyTorch', 'JAX / PyTorch per CPU second'])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows:
    cells = [row['mode'], f"{row['size']} px", str(row['threads'] or '-')]
    cells += [f"{row['img_per_sec'][n]:.1f}" if n in row['img_per_sec'] else '-' for n in names]
    for key in ('img_per_sec', 'img_per_cpu_sec'):
      r = ratio(row, key=key)
      cells.append(f'{r:.2f}x' if r else '-')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def worker_command(args, threads):
  argv = [sys.executable, os.path.abspath(__file__), '--worker', '--threads', str(threads),
          '--batch', str(args.batch), '--sizes', *map(str, args.sizes), '--modes', *args.modes,
          '--train-sizes', *map(str, args.train_sizes)]
  argv += ['--quick'] * args.quick + ['--no-torch'] * args.no_torch
  return argv + (['--profile', args.profile] if args.profile else [])


def pin_to_cores(threads: int):
  """Let this process (and XLA's thread pool, sized from it) use only `threads` cores."""
  cores = sorted(os.sched_getaffinity(0))
  if threads > len(cores):
    sys.exit(f'error: --threads {threads}: this process may use only {len(cores)} cores')
  os.sched_setaffinity(0, cores[:threads])


def main(argv=None):
  args = parse_args(argv)
  if args.worker:                     # one thread count: pinned before JAX starts
    pin_to_cores(args.threads[0])
    rows = measure(args, args.threads[0], log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(rows))
    return
  from comic_jax.training import machine
  environment = machine.machine_description()
  print(f"CPU: {machine.describe_cpu(environment['cpu'], environment['cpu_cores'])}; "
        f"JAX backend {environment['backend']}", flush=True)
  if environment['backend'] != 'cpu':
    rows = measure(args, None)
  else:
    rows = []
    for threads in args.threads:
      done = subprocess.run(worker_command(args, threads), stdout=subprocess.PIPE, text=True,
                            check=False)
      if done.returncode:
        sys.exit(done.returncode)
      rows += json.loads(done.stdout.strip().splitlines()[-1])
  table = markdown_table(rows)
  print('\n' + table)
  if args.out:
    from comic_jax import atomic
    os.makedirs(args.out, exist_ok=True)
    run = {'command': 'python benchmarks/backbone_speed.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv), 'rows': rows}
    atomic.write_json(os.path.join(args.out, 'results.json'), run, indent=2)
    atomic.write_json(os.path.join(args.out, 'environment.json'), environment, indent=2)
    atomic.write_text(os.path.join(args.out, 'table.md'), table)
    print(f'wrote {args.out}/results.json, table.md, environment.json')


if __name__ == '__main__':
  main()
