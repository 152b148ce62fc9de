"""Train-step speed: img/s of comic-jax's jit-compiled train step beside a PyTorch twin of the same
network and step, measured in one run so that the ratio JAX / PyTorch means something.

  python benchmarks/step_speed.py                        # PLT-Synth and ResNet-50, BCE and COMIC
  python benchmarks/step_speed.py --setups synth --quick # the small CNN only, few repeats
  python benchmarks/step_speed.py --no-torch             # JAX only (no PyTorch installed)
  python benchmarks/step_speed.py --breakdown 2          # where the training loop's time goes
  python benchmarks/step_speed.py --profile /tmp/trace   # + a jax.profiler trace of a few steps

Setups (both: batch 32, Adam with decoupled weight decay, flip + 2-pixel shift augmentation):
- `synth`: the PLT-Synth recipe (configs/synthetic.py): SmallCNN on 32 px, projection to 128.
- `resnet50`: ResNet-50 on 224 px with projection and attention 1024 (the paper's network and
  batch; random uint8 images from a temporary .npz, no ImageNet weights, no RandAugment).

JAX side: the real `train.Trainer.open(config, workdir)`; its `train_step` lowered and compiled
once (the
compiled step gives XLA's cost-analysis flops per step and is the one timed), batches from
`run.batch(step)` + `pipeline.host_to_global`, prepared before timing. After warm-up, each repeat
runs `--steps` steps and ends with `block_until_ready`; JAX and PyTorch repeats alternate so a
change of machine load hits both. Reported: mean (and spread) of the repeats' img/s.

PyTorch twin (imported lazily; CPU install: `pip install torch==2.13.0`): the same layers (SmallCNN
= conv3x3-BN-ReLU stages with 2x2 max-pool, global average pool; or a torchvision-layout
ResNet-50), linear projection, linear classifier (BCE) or cosine classifier (COMIC), the same
batches (same uint8 images, flip + shift on the fly), AdamW with weight decay on kernels only
(the same update as optax adam + add_decayed_weights + learning rate). For COMIC the twin makes
the same four backbone passes per step as ours (head fwd+bwd on U, tail fwd+bwd on R, tail fwd on
U, balanced fwd+bwd on U with the additive attention over the head and tail features), with
losses of comparable cost (a focal BCE with class weights and margin, a thresholded label
correction, a kappa-weighted distillation); it does NOT reproduce MFM, RLC and HTB exactly (no
energy-adjusted logits, no epoch-wise class means), and has no learning-rate schedule. Those are
element-wise ops on (32, C) arrays, negligible beside the backbones.

On a GPU / TPU it also prints achieved TFLOP/s and MFU (XLA's flops per step x steps/s over the
peak of the device kind, `PEAK_FLOPS`) and, by default, float32 and bfloat16 (`model.dtype`).
XLA runs float32 convolutions on TF32 tensor cores on Ampere and newer by default, so float32 MFU
is against the TF32 peak. On the CPU flops per step are printed (no peak). Every line also has
the step's memory, XLA's buffer assignment (`step_memory`: arguments + temporaries).
docs/performance.md has an H200's numbers (`python benchmarks/step_speed.py --setups resnet50`).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from comic_jax.cli import runtime  # noqa: E402
from comic_jax.data import pipeline  # noqa: E402
from comic_jax.training import checkpoint, machine, train  # noqa: E402
from comic_jax.training import workdir as workdir_lib  # noqa: E402
from configs import synthetic  # noqa: E402

TORCH_HINT = 'PyTorch is not installed: `pip install torch==2.13.0` (CPU), or pass --no-torch'

# Dense peak FLOP/s by device kind (substring of jax.Device.device_kind): (bfloat16, float32).
# On NVIDIA GPUs the float32 figure is the TF32 tensor-core peak, since XLA runs float32
# convolutions and matrix products in TF32 by default (the vendors' datasheets).
PEAK_FLOPS = {
    'H200': (989e12, 494.7e12),
    'H100': (989e12, 494.7e12),
    'A100': (312e12, 156e12),
    'L4': (121e12, 60e12),
    'TPU v5p': (459e12, 459e12 / 2),
    'TPU v5 lite': (197e12, 197e12 / 2),
    'TPU v4': (275e12, 275e12 / 2),
}

# (warm-up steps, timed steps per repeat, repeats); --quick takes the second. On an accelerator
# ResNet-50 runs more steps per repeat (a COMIC step takes ~70 ms on an H200, ~15 s on 2 cores).
SCHEDULE = {'synth': ((3, 20, 5), (2, 10, 3)), 'resnet50': ((2, 3, 3), (1, 1, 2))}
ACCELERATOR_SCHEDULE = {**SCHEDULE, 'resnet50': ((3, 20, 3), (2, 10, 2))}


# ------------------------------------------------------------------------------- configs

def synth_config(method: str, dtype: str = 'float32'):
  """The README's PLT-Synth recipe (configs/synthetic.py) on one device."""
  config = synthetic.get_config()
  config.method = method
  config.model.dtype = dtype
  config.num_devices = 1
  config.progress_bar = False
  return config


def resnet50_config(method: str, dtype: str, npz_path: str):
  """ResNet-50, 224 px, batch 32, Adam, projection and attention 1024 (configs/coco.py's
  network) on random images; the synthetic recipe's cheap augmentation."""
  config = synth_config(method, dtype)
  config.data.name = 'npz'
  config.data.path = npz_path
  config.data.longtail = 'as_is'
  config.data.image_size = 224
  config.model.backbone = 'resnet50'
  config.model.projection_dim = 1024
  config.comic.htb.attention_dim = 1024
  config.eval_batch_size = 32
  return config


def write_random_npz(path: str, *, num_train: int = 96, num_test: int = 32, size: int = 224,
                     num_classes: int = 20, seed: int = 0) -> str:
  """Random uint8 images with random labels (every class positive somewhere) as an .npz."""
  rs = np.random.RandomState(seed)
  def labels(n):
    y = (rs.uniform(size=(n, num_classes)) < 0.15).astype(np.int8)
    y[np.arange(n), rs.randint(num_classes, size=n)] = 1
    y[np.arange(num_classes) % n, np.arange(num_classes)] = 1
    return y
  np.savez(path, x_train=rs.randint(0, 256, (num_train, size, size, 3), dtype=np.uint8),
           y_train=labels(num_train), x_test=rs.randint(0, 256, (num_test, size, size, 3),
                                                        dtype=np.uint8), y_test=labels(num_test))
  return path


# ------------------------------------------------------------------------------- flops and MFU

def compiled_flops(compiled) -> float | None:
  """Flops of one call of a lowered or compiled XLA computation (XLA's cost analysis; None if
  absent)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get('flops')
  return None if flops is None or flops < 0 else float(flops)


def step_flops(step, lowered, *args) -> float | None:
  """Flops of one train step: XLA's cost analysis of the step's HLO before optimisation.

  Not the compiled module's: on a GPU that leaves out the convolutions that run as cuDNN custom
  calls (measured on an H200: 9.3 of ResNet-50's ~760 GFLOP per BCE step counted). Where the
  backend gives no analysis of the unoptimised HLO (the GPU backend, JAX 0.11), the step is
  lowered for the CPU, whose HLO has the same operations."""
  flops = compiled_flops(lowered)
  if flops is None:
    try:
      flops = compiled_flops(step.trace(*args).lower(lowering_platforms=('cpu',)))
    except Exception:  # noqa: BLE001  (a count for the report only; absent if it cannot be had)
      flops = None
  return flops


def step_memory(compiled) -> float | None:
  """Bytes XLA's buffer assignment gives the compiled step: its arguments (state and batch,
  which the outputs reuse) plus its temporaries; None where the backend does not say."""
  try:
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.temp_size_in_bytes)
  except (AttributeError, NotImplementedError, TypeError):
    return None


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The device kind's dense peak FLOP/s for `dtype` (None: unknown, e.g. a CPU)."""
  for name, (bf16, fp32) in PEAK_FLOPS.items():
    if name.lower() in device_kind.lower():
      return bf16 if dtype == 'bfloat16' else fp32
  return None


# ------------------------------------------------------------------------------- JAX side

class JaxBench:
  """A `Trainer` (`train.Trainer.open`) with its compiled step and prepared device batches."""

  def __init__(self, config, num_batches: int):
    self.workdir = tempfile.mkdtemp(prefix='step_speed_')
    self.run = train.Trainer.open(config, self.workdir)
    self.batch_size = config.batch_size
    self.host_batches = [self.run.batch(s) for s in range(num_batches)]
    self.batches = [pipeline.host_to_global(b, self.run.sharded) for b in self.host_batches]
    self.state = self.run.state
    start = time.perf_counter()
    self.key = self.run.train_key
    lowered = self.run.train_step.lower(self.state, self.batches[0], self.key)
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - start
    self.flops = step_flops(self.run.train_step, lowered, self.state, self.batches[0], self.key)
    self.memory = step_memory(self.compiled)
    self.i = 0

  def steps(self, n: int) -> float:
    """Seconds for n steps, device-synchronised."""
    start = time.perf_counter()
    for _ in range(n):
      self.state, metrics = self.compiled(self.state, self.batches[self.i % len(self.batches)],
                                          self.key)
      self.i += 1
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - start

  def close(self):
    checkpoint.wait(self.run.manager)
    workdir_lib.release_lock(self.workdir)
    shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------------------------- PyTorch twin

def import_torch():
  try:
    import torch  # noqa: F401  (lazy: only this benchmark needs it)
  except ImportError:
    return None
  return torch


def build_torch_twin(torch, config, num_classes: int, device: str):
  """(model dict, step function(batch)) of the twin; see the module docstring."""
  nn, F = torch.nn, torch.nn.functional
  m = config.model

  class SmallCNN(nn.Module):
    def __init__(self, widths):
      super().__init__()
      layers, c = [], 3
      for i, w in enumerate(widths):
        layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        if i < len(widths) - 1:
          layers.append(nn.MaxPool2d(2))
        c = w
      self.body, self.dim = nn.Sequential(*layers), c

    def forward(self, x):
      return self.body(x).mean((2, 3))

  class Bottleneck(nn.Module):
    def __init__(self, cin, filters, stride):
      super().__init__()
      out = 4 * filters
      self.conv1, self.bn1 = nn.Conv2d(cin, filters, 1, bias=False), nn.BatchNorm2d(filters)
      self.conv2 = nn.Conv2d(filters, filters, 3, stride, padding=1, bias=False)
      self.bn2 = nn.BatchNorm2d(filters)
      self.conv3, self.bn3 = nn.Conv2d(filters, out, 1, bias=False), nn.BatchNorm2d(out)
      self.down = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                   if cin != out or stride != 1 else nn.Identity())

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = F.relu(self.bn2(self.conv2(y)))
      return F.relu(self.down(x) + self.bn3(self.conv3(y)))

  class ResNet50(nn.Module):
    def __init__(self):
      super().__init__()
      blocks, c = [], 64
      for i, n in enumerate((3, 4, 6, 3)):
        for j in range(n):
          blocks.append(Bottleneck(c, 64 * 2 ** i, 2 if i > 0 and j == 0 else 1))
          c = 256 * 2 ** i
      self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, padding=3, bias=False), nn.BatchNorm2d(64),
                                nn.ReLU(), nn.MaxPool2d(3, 2, padding=1))
      self.blocks, self.dim = nn.Sequential(*blocks), c

    def forward(self, x):
      return self.blocks(self.stem(x)).mean((2, 3))

  class Cosine(nn.Module):
    def __init__(self, d):
      super().__init__()
      self.kernel = nn.Parameter(0.01 * torch.randn(num_classes, d))

    def forward(self, f):
      f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
      w = self.kernel / (self.kernel.norm(dim=-1, keepdim=True) + m.cosine.eta)
      return m.cosine.scale * f @ w.t()

  class Branch(nn.Module):
    def __init__(self, classifier: str):
      super().__init__()
      self.backbone = SmallCNN(m.small_cnn_widths) if m.backbone == 'small_cnn' else ResNet50()
      self.projection = nn.Linear(self.backbone.dim, m.projection_dim)
      self.classifier = (Cosine(m.projection_dim) if classifier == 'cosine'
                         else nn.Linear(m.projection_dim, num_classes))

    def embed(self, x):
      return self.projection(self.backbone(x))

    def forward(self, x):
      f = self.embed(x)
      return f, self.classifier(f)

  class Attention(nn.Module):
    def __init__(self, d, hidden, rate):
      super().__init__()
      self.query, self.key = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
      self.score, self.drop = nn.Linear(hidden, 1, bias=False), nn.Dropout(rate)

    def forward(self, q, keys):
      s = self.score(torch.tanh(self.query(q)[:, None] + self.key(keys)))[..., 0]
      return torch.einsum('bj,bjd->bd', self.drop(torch.softmax(s, -1)), keys)

  mean = torch.tensor(np.array((0.485, 0.456, 0.406)) * 255, dtype=torch.float32, device=device)
  std = torch.tensor(np.array((0.229, 0.224, 0.225)) * 255, dtype=torch.float32, device=device)
  shift, gen = config.augment.max_shift, torch.Generator(device).manual_seed(0)

  def prepare(images):
    """uint8 NHWC -> flip + shift (edge padding) -> normalised float NCHW."""
    b, h, w, _ = images.shape
    flip = torch.rand(b, generator=gen, device=device) < 0.5
    x = torch.where(flip[:, None, None, None], images.flip(2), images).float()
    x = F.pad(x.permute(0, 3, 1, 2), (shift,) * 4, mode='replicate')
    dy, dx = (torch.randint(0, 2 * shift + 1, (2, b, 1), generator=gen, device=device))
    rows = (torch.arange(h, device=device)[None] + dy)[:, None, :, None]
    rows = rows.expand(b, 3, h, w + 2 * shift)
    x = x.gather(2, rows)
    cols = (torch.arange(w, device=device)[None] + dx)[:, None, None, :].expand(b, 3, h, w)
    x = x.gather(3, cols)
    return (x - mean[:, None, None]) / std[:, None, None]

  def bce(z, y):
    return F.binary_cross_entropy_with_logits(z, y, reduction='none').sum(1).mean()

  counts = None

  def focal(z, y):   # MFM-like: margin-shifted focal negatives, class weights
    p = torch.sigmoid(z)
    pm = (p - 0.05).clamp_min(0)
    w = (1 - torch.log(counts / counts.max())) ** (1 / 3)
    pos = y * torch.log(p.clamp_min(1e-8))
    neg = (1 - y) * pm ** 3 * torch.log((1 - pm).clamp_min(1e-8))
    return -(w * (pos + neg)).sum(1).mean()

  def correct(z, y):  # RLC-like: confident unobserved positives become targets
    p = torch.sigmoid(z.detach())
    yhat = torch.maximum(y, (p > p.mean(0).clamp_min(0.7)).float())
    return focal(z, yhat)

  def distill(zh, zt, zb, y):  # HTB-like: kappa-weighted BCE towards head and tail models
    kh, kt = bce(zh, y).exp(), bce(zt, y).exp()
    return (kh * bce(zb, torch.sigmoid(zh)) + kt * bce(zb, torch.sigmoid(zt))) / (kh + kt)

  if config.method == 'comic':
    model = nn.ModuleDict({b: Branch('cosine') for b in ('head', 'tail', 'balanced')})
    model['attention'] = Attention(m.projection_dim, config.comic.htb.attention_dim,
                                   config.comic.htb.attention_dropout)
  else:
    model = nn.ModuleDict({'balanced': Branch('linear')})
  model.to(device).train()
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  opt = torch.optim.AdamW([{'params': decay, 'weight_decay': config.optim.weight_decay},
                           {'params': no_decay, 'weight_decay': 0.0}],
                          lr=config.optim.learning_rate, betas=(config.optim.b1, config.optim.b2),
                          eps=1e-8)
  autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16)
              if m.dtype == 'bfloat16' else contextlib.nullcontext())

  def step(batch):
    nonlocal counts
    u, y = prepare(batch['main']['image']), batch['main']['label']
    with autocast:
      if config.method == 'comic':
        if counts is None:
          counts = torch.ones(y.shape[1], device=device) + y.sum(0)
        r, ry = prepare(batch['tail']['image']), batch['tail']['label']
        fh, zh = model['head'](u)
        ft, zt = model['tail'](r)
        with torch.no_grad():
          ftu, ztu = model['tail'](u)
        fb = model['balanced'].embed(u)
        fb = fb + model['attention'](fb, torch.stack([fh.detach(), ftu], 1))
        zb = model['balanced'].classifier(fb)
        zh, zt, zb = zh.float(), zt.float(), zb.float()
        loss = (focal(zh, y) + 0.2 * correct(zh, y) + focal(zt, ry) + 0.2 * correct(zt, ry)
                + focal(zb, y) + 0.2 * correct(zb, y) + distill(zh.detach(), ztu.float(), zb, y))
      else:
        _, z = model['balanced'](u)
        loss = bce(z.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  return model, step


class TorchBench:
  """The twin with the JAX side's host batches as tensors on its device."""

  def __init__(self, torch, config, host_batches, num_classes: int):
    self.torch = torch
    self.device = 'cuda' if torch.cuda.is_available() and jax.default_backend() == 'gpu' else 'cpu'
    torch.manual_seed(0)
    self.model, self.step = build_torch_twin(torch, config, num_classes, self.device)
    self.batches = [{s: {k: torch.from_numpy(np.asarray(v)).to(self.device) for k, v in b.items()
                         if k in ('image', 'label')} for s, b in hb.items()} for hb in host_batches]
    self.batch_size = config.batch_size
    self.i = 0

  def sync(self, x):
    if self.device == 'cuda':
      self.torch.cuda.synchronize()
    return float(x.detach())

  def steps(self, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
      loss = self.step(self.batches[self.i % len(self.batches)])
      self.i += 1
    self.sync(loss)
    return time.perf_counter() - start


def count_params_jax(params) -> int:
  return int(sum(np.size(p) for p in jax.tree.leaves(params)))


def count_params_torch(model) -> int:
  return int(sum(p.numel() for p in model.parameters()))


# ------------------------------------------------------------------------------- one measurement

def measure(setup: str, config, sched, torch, profile_dir: str | None) -> dict:
  warmup, steps, repeats = sched
  jb = JaxBench(config, num_batches=max(4, min(steps, 16)))
  out = {'setup': setup, 'method': config.method, 'dtype': config.model.dtype,
         'compile_s': jb.compile_s, 'flops': jb.flops, 'memory': jb.memory,
         'params_jax': count_params_jax(jb.state.params), 'batch_size': config.batch_size}
  tb = None
  if torch is not None:
    tb = TorchBench(torch, config, jb.host_batches, jb.run.data.num_classes)
    out['params_torch'] = count_params_torch(tb.model)
    out['torch_threads'] = torch.get_num_threads()
  jb.steps(warmup)
  if tb is not None:
    tb.steps(warmup)
  rates = {'jax': [], 'torch': []}
  loads = []
  for _ in range(repeats):   # alternate, so that a change of load hits both
    loads.append(os.getloadavg()[0])
    rates['jax'].append(steps * jb.batch_size / jb.steps(steps))
    if tb is not None:
      rates['torch'].append(steps * tb.batch_size / tb.steps(steps))
  out['load'] = float(np.mean(loads))
  for k, v in rates.items():
    if v:
      out[k], out[k + '_spread'] = float(np.mean(v)), float(np.std(v))
  if profile_dir:
    path = os.path.join(profile_dir, f'{setup}_{config.method}_{config.model.dtype}')
    with jax.profiler.trace(path):
      jb.steps(min(steps, 5))
    out['trace'] = path
  jb.close()
  return out


def report_line(r: dict, device_kind: str) -> str:
  fl = r['flops']
  steps_s = r['jax'] / r['batch_size']
  text = (f"{r['setup']:<9} {r['method']:<6} {r['dtype']:<8} "
          f"JAX {r['jax']:8.1f} +- {r['jax_spread']:5.1f} img/s")
  if 'torch' in r:
    text += (f"  PyTorch {r['torch']:8.1f} +- {r['torch_spread']:5.1f} img/s"
             f"  JAX/PyTorch {r['jax'] / r['torch']:5.2f}")
  text += f"  {fl / 1e9:8.2f} GFLOP/step" if fl else '  flops n/a'
  if fl:
    text += f"  {fl * steps_s / 1e12:7.3f} TFLOP/s"
    peak = peak_flops(device_kind, r['dtype'])
    text += f"  MFU {100 * fl * steps_s / peak:5.1f}%" if peak else ''
  text += f"  step memory {r['memory'] / 2**30:.1f} GiB" if r.get('memory') else ''
  text += f"  (compile {r['compile_s']:.0f}s, load {r['load']:.1f})"
  return text


# ------------------------------------------------------------------------------- loop breakdown

def breakdown(method: str, epochs: int, profile_dir: str | None) -> dict:
  """The README's main command (configs/synthetic.py) for `epochs` epochs through the training
  loop's own calls, timed by part: host batch assembly (`run.batch`), host-to-device
  (`host_to_global`), step dispatch, the end-of-epoch wait for the device (metrics to floats),
  evaluation and checkpointing. The first epoch compiles (or loads) the steps."""
  config = synth_config(method)
  workdir = tempfile.mkdtemp(prefix='step_speed_bd_')
  t0 = time.perf_counter()
  run = train.Trainer.open(config, workdir)
  setup_s = time.perf_counter() - t0
  spe = run.steps_per_epoch
  parts = []
  trace = jax.profiler.trace(os.path.join(profile_dir, f'loop_{method}')) if profile_dir else None
  for epoch in range(epochs):
    if trace is not None and epoch == min(1, epochs - 1):
      trace.__enter__()
    t = dict.fromkeys(('batch', 'transfer', 'dispatch', 'sync', 'eval', 'checkpoint'), 0.0)
    start = time.perf_counter()
    epoch_metrics = []
    for step in range(epoch * spe, (epoch + 1) * spe):
      a = time.perf_counter()
      host = run.batch(step)
      b = time.perf_counter()
      batch = pipeline.host_to_global(host, run.sharded)
      c = time.perf_counter()
      run.state, m = run.train_step(run.state, batch, run.train_key)
      d = time.perf_counter()
      epoch_metrics.append(m)
      t['batch'] += b - a
      t['transfer'] += c - b
      t['dispatch'] += d - c
    a = time.perf_counter()
    _ = {k: float(np.mean([float(m[k]) for m in epoch_metrics])) for k in epoch_metrics[0]}
    b = time.perf_counter()
    run.evaluate()
    c = time.perf_counter()
    checkpoint.save(run.manager, (epoch + 1) * spe, run.state)
    checkpoint.wait(run.manager)
    d = time.perf_counter()
    t.update(sync=b - a, eval=c - b,
             checkpoint=d - c, total=d - start,
             load=os.getloadavg()[0])
    parts.append(t)
    if trace is not None and epoch == min(1, epochs - 1):
      trace.__exit__(None, None, None)
  workdir_lib.release_lock(workdir)
  shutil.rmtree(workdir, ignore_errors=True)
  return {'method': method, 'setup_s': setup_s, 'steps_per_epoch': spe, 'epochs': parts,
          'batch_size': config.batch_size}


def print_breakdown(r: dict) -> None:
  print(f"\nloop breakdown, {r['method']} on PLT-Synth ({r['steps_per_epoch']} steps/epoch, "
        f"Trainer.open() setup {r['setup_s']:.1f}s: data and init)")
  for i, t in enumerate(r['epochs']):
    train_s = t['batch'] + t['transfer'] + t['dispatch'] + t['sync']
    img_s = r['steps_per_epoch'] * r['batch_size'] / train_s
    print(f"  epoch {i + 1}{' (compiles)' if i == 0 else ''}: "
          f"total {t['total']:.2f}s = "
          f"batch {t['batch']:.2f} + host_to_global {t['transfer']:.2f} + step dispatch "
          f"{t['dispatch']:.2f} + wait for device {t['sync']:.2f} + eval {t['eval']:.2f} + "
          f"checkpoint {t['checkpoint']:.2f}  (train {img_s:.0f} img/s, load {t['load']:.1f})")


# ------------------------------------------------------------------------------- main

def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--setups', default='synth,resnet50', help='synth and/or resnet50')
  parser.add_argument('--methods', default='bce,comic', help='bce and/or comic')
  parser.add_argument('--dtypes', default='',
                      help="float32,bfloat16 (default: both on a GPU / TPU, float32 on a CPU)")
  parser.add_argument('--quick', action='store_true', help='fewer steps and repeats')
  parser.add_argument('--batch', type=int, default=0, help='batch size (0: the recipes\' 32)')
  parser.add_argument('--steps', type=int, default=0, help='timed steps per repeat (0: preset)')
  parser.add_argument('--repeats', type=int, default=0, help='timed repeats (0: preset)')
  parser.add_argument('--threads', type=int, default=0,
                      help='CPU threads of both frameworks (0: their defaults; 1 also makes XLA '
                      'single-threaded; on a loaded machine 1 avoids spinning thread pools)')
  parser.add_argument('--no-torch', action='store_true', help='JAX only')
  parser.add_argument('--malloc-defaults', action='store_true',
                      help="keep glibc's malloc defaults (by default the process keeps freed "
                      'memory, as the training commands do: runtime.keep_freed_memory)')
  parser.add_argument('--profile', default='', help='directory for jax.profiler traces')
  parser.add_argument('--breakdown', type=int, default=0,
                      help='instead: time the training loop by part over this many epochs')
  args = parser.parse_args(argv)
  kept = False if args.malloc_defaults else runtime.keep_freed_memory()   # both frameworks alike
  if args.threads == 1:   # before the CPU backend starts (jax.devices() below)
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen'
                               '=false intra_op_parallelism_threads=1')
  device = jax.devices()[0]
  print(f'JAX {jax.__version__} on {device.device_kind} ({jax.default_backend()}), '
        f'{os.cpu_count()} CPU cores, load average {os.getloadavg()}, freed memory '
        f'{"kept" if kept else "returned (malloc defaults)"}')
  print(f'CPU: {machine.describe_cpu(machine.local_cpu(), os.cpu_count())}')
  if args.breakdown:
    for method in args.methods.split(','):
      print_breakdown(breakdown(method, args.breakdown, args.profile or None))
    return
  torch = None
  if not args.no_torch:
    torch = import_torch()
    if torch is None:
      sys.exit(f'error: {TORCH_HINT}')
    if args.threads:
      torch.set_num_threads(args.threads)
    print(f'PyTorch {torch.__version__}, {torch.get_num_threads()} threads')
  dtypes = args.dtypes or ('float32' if jax.default_backend() == 'cpu' else 'float32,bfloat16')
  tmp = tempfile.mkdtemp(prefix='step_speed_data_')
  results = []
  try:
    for setup in args.setups.split(','):
      if setup not in SCHEDULE:
        sys.exit(f'error: --setups: {setup!r} is not one of: {", ".join(SCHEDULE)}')
      schedule = SCHEDULE if jax.default_backend() == 'cpu' else ACCELERATOR_SCHEDULE
      warmup, steps, repeats = schedule[setup][int(args.quick)]
      sched = (warmup, args.steps or steps, args.repeats or repeats)
      npz = (write_random_npz(os.path.join(tmp, 'r.npz'), num_train=max(96, args.batch))
             if setup == 'resnet50' else None)
      for dtype in dtypes.split(','):
        for method in args.methods.split(','):
          config = (synth_config(method, dtype) if setup == 'synth'
                    else resnet50_config(method, dtype, npz))
          config.batch_size = args.batch or config.batch_size
          r = measure(setup, config, sched, torch, args.profile or None)
          results.append(r)
          print(report_line(r, device.device_kind), flush=True)
          if 'params_torch' in r and r['params_torch'] != r['params_jax']:
            print(f"  note: parameters JAX {r['params_jax']:,} vs PyTorch {r['params_torch']:,}")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print(f'done, load average {os.getloadavg()}')


if __name__ == '__main__':
  main()
