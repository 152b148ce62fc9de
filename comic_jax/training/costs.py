"""What a long step will cost, said before it starts: how many images (and views) go through
which network, and an estimate from a rate measured on a reference machine
(docs/performance.md), scaled to the image size. An estimate only: the progress bar that
follows shows this machine's own rate.

Pure functions (no JAX): `run_line` (train.py) and `features_line` (features.py) take the
platform as a string.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Rate:
  """Images per second of one kind of work, as measured (docs/performance.md)."""
  platform: str           # jax.default_backend(): 'cpu' | 'gpu' | 'tpu'
  kind: str               # 'features' (frozen backbone forward + augmentation) | 'train'
  backbone: str           # model.backbone ('cached': heads trained from cached features)
  family: str             # 'comic' (three branches: comic, comic_plus) | 'bce' (one network)
  size: int               # image side, pixels (0: feature vectors)
  low: float              # img/s: the slowest measurement
  high: float             # ... and the fastest
  where: str              # the machine


XEON = 'a 2-core Intel Xeon'
EPYC = 'a 2-core AMD EPYC'
H200 = 'an H200 GPU (the step alone)'
MEASURED = (
    # The own-photos route (frozen Lite0 + 4 augmented views, 18 img/s) and the bare forward
    # pass at batch 64 on 2 threads (71.6 img/s).
    Rate('cpu', 'features', 'efficientnet_lite0', 'any', 224, 18.0, 71.6, XEON),
    # PLT-Synth at 96 px (configs/synthetic_pretrained.py: 9,548 images at 154 img/s).
    Rate('cpu', 'features', 'efficientnet_lite0', 'any', 96, 154.0, 341.8, XEON),
    # The quick start's training loop (small CNN, 32 px, two CPU devices); on the GPU the step
    # alone (benchmarks/step_speed.py).
    Rate('cpu', 'train', 'small_cnn', 'comic', 32, 755.0, 775.0, EPYC),
    Rate('cpu', 'train', 'small_cnn', 'bce', 32, 2657.0, 2780.0, EPYC),
    # Heads from cached features: COMIC+ on the own-photos route (30 epochs of 3 steps of 64 in
    # 4.7 s) and COMIC from PLT-Synth's cache on an earlier 2-core CPU; a baseline's single head
    # trains faster, so for it this errs long.
    Rate('cpu', 'train', 'cached', 'any', 0, 1226.0, 12107.0, '2-core CPUs'),
    Rate('gpu', 'train', 'small_cnn', 'comic', 32, 6131.0, 6131.0, H200),
    Rate('gpu', 'train', 'small_cnn', 'bce', 32, 30125.0, 30125.0, H200),
    Rate('gpu', 'train', 'resnet50', 'comic', 224, 470.0, 470.0, H200),
    Rate('gpu', 'train', 'resnet50', 'bce', 224, 2154.0, 2154.0, H200),
)


def family_of(method: str) -> str:
  return 'comic' if method in ('comic', 'comic_plus') else 'bce'


def find_rate(platform: str, kind: str, backbone: str, family: str, size: int) -> Rate | None:
  """The measured rate closest in image size to `size` for this platform, kind, network and
  method family (a rate of family 'any' serves every method), or None."""
  found = [r for r in MEASURED if (r.platform, r.kind, r.backbone) == (platform, kind, backbone)
           and r.family in (family, 'any')]
  if not found:
    return None
  return min(found, key=lambda r: abs(r.size - size))


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f'{max(seconds, 1):.0f} s'
  if seconds < 5400:
    return f'{seconds / 60:.0f} min'
  return f'{seconds / 3600:.1f} h'


def estimate(images: int, rate: Rate | None, size: int) -> str:
  """'~A-B at L-H img/s (measured ...)' for `images` at `size` px, the rate scaled by pixels from
  the size it was measured at; or what is missing."""
  if rate is None:
    return 'no measured rate for this network on this device (the progress bar shows its own)'
  scale = (rate.size / size) ** 2 if rate.size and size else 1.0
  low, high = rate.low * scale, rate.high * scale
  span = _duration(images / high)
  if _duration(images / low) != span:
    span += ' to ' + _duration(images / low)
  measured = f'{rate.low:,.0f}' + (f'-{rate.high:,.0f}' if rate.high != rate.low else '')
  at = f' at {rate.size} px' if rate.size else ''
  scaled = f', scaled to {size} px' if rate.size and size != rate.size else ''
  return (f'estimate {span} from the {measured} img/s measured{at} on {rate.where}{scaled} '
          '(docs/performance.md), plus compilation and evaluation')


def features_line(platform: str, backbone: str, size: int, counts: dict[str, tuple[int, int]]
                  ) -> str:
  """The line before a feature cache is computed; `counts`: {split: (images, views)}."""
  total = sum(n * max(v, 1) for n, v in counts.values())
  parts = ', '.join(f'{n:,} {split}' + (f' x {v} views' if v else '')
                    for split, (n, v) in counts.items())
  rate = find_rate(platform, 'features', backbone, 'any', size)
  return (f'feature cache: frozen {backbone} at {size} px over {total:,} images ({parts}); '
          + estimate(total, rate, size))


def run_line(config, steps_per_epoch: int, devices: int, start_step: int, platform: str) -> str:
  """The line before the training steps: epochs, steps, batch and devices, the images still to
  train and an estimate of their time (without compilation and evaluation)."""
  method, model = config.method, config.model
  line = (f'{method}: {config.num_epochs} epochs x {steps_per_epoch} steps, global batch '
          f'{config.batch_size} on {devices} device(s)')
  images = (config.num_epochs * steps_per_epoch - start_step) * config.batch_size
  if images <= 0:
    return line
  cached, vectors = model.feature_cache, model.backbone == 'mlp'
  size = 0 if cached or vectors else config.data.image_size
  rate = find_rate(platform, 'train', 'cached' if cached else model.backbone, family_of(method),
                   size)
  what = ('heads on cached features' if cached else 'mlp on feature vectors' if vectors else
          f'{model.backbone} at {size} px')
  return f'{line}: {images:,} training images ({what}) on {platform}; ' + estimate(images, rate,
                                                                                 size)
