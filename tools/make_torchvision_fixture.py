"""Maintainer tool: writes tests/fixtures/ from real torch/torchvision/safetensors. Never run by the
tests (they need only the project's virtualenv); rerun it only to regenerate the fixtures.

Needs torch, torchvision and numpy (safetensors optional) in a scratch virtualenv, not the
project's, e.g.

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy==2.4.6 safetensors
    /tmp/torchvenv/bin/python tools/make_torchvision_fixture.py

It writes
  torchvision_resnet{18,50}_random.npz: torchvision's eval-mode output (fc = Identity) for a
      ResNet with `tests/random_weights.random_torchvision_state_dict(arch, seed)` weights
      on a fixed input. Keys: input (2, 3, 64, 64) NCHW, float16 (its values are float16-exact,
      so storing it as float16 loses nothing: cast it to float32), output (2, 512 | 2048) float32,
      output_float64 torchvision's output with the model and input in float64, seed, and
      weights_fingerprint (sum and sum of squares of all the weights in float64, so a test can
      tell that it regenerated the same weights).
  tiny_state_dict.pth / .safetensors / _legacy.pth: four tensors (float32, float64, an int64
      scalar, float16) saved by torch.save (zip format), safetensors and the pre-1.6 format.
  tiny_extras.pth / .safetensors: bfloat16, a transposed and an offset view sharing one storage,
      an nn.Parameter, wrapped as a timm-style training checkpoint ({'epoch', 'args':
      argparse.Namespace, 'state_dict': {'module.' + name: ...}}).
The values of the tiny files are spelled out in TINY / tiny_extras() below and in
tests/test_torch_checkpoint.py.
"""
import argparse
import collections
import os
import sys

import numpy as np
import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from comic_jax.models import torch_checkpoint  # noqa: E402  (NumPy only at import)

sys.path.insert(0, os.path.join(ROOT, 'tests'))
from random_weights import random_torchvision_state_dict  # noqa: E402  (NumPy only)

FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
ARCHS = {'resnet18': 18, 'resnet50': 50}          # arch -> seed


def fixture_input(seed):
  """(2, 3, 64, 64) NCHW, N(0, 1) rounded to float16 (64x64 leaves a 2x2 map after layer4)."""
  x = np.random.RandomState(1000 + seed).standard_normal((2, 3, 64, 64))
  return x.astype(np.float16)


def check_layouts():
  """Our key/shape layout equals torchvision's for every depth (not only the two in fixtures)."""
  for depth in (18, 34, 50, 101):
    model = getattr(torchvision.models, f'resnet{depth}')(weights=None)
    theirs = [(k, tuple(v.shape)) for k, v in model.state_dict().items()
              if not k.startswith('fc.') and not k.endswith('num_batches_tracked')]
    ours = [(k, v.shape) for k, v in random_torchvision_state_dict(depth).items()
            if not k.endswith('num_batches_tracked')]
    assert ours == theirs, f'resnet{depth}: layouts differ'
  print('key/shape layouts equal torchvision for ResNet-18/34/50/101')


def make_parity(arch, seed):
  weights = random_torchvision_state_dict(arch, seed)
  model = getattr(torchvision.models, arch)(weights=None)
  model.fc = torch.nn.Identity()
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
  model.eval()
  x16 = fixture_input(seed)
  x = torch.from_numpy(x16.astype(np.float32))
  with torch.no_grad():
    y = model(x).numpy()
    y64 = model.double()(x.double()).numpy()
  floats = [v.astype(np.float64) for v in weights.values() if v.dtype == np.float32]
  fingerprint = np.array([sum(v.sum() for v in floats), sum((v * v).sum() for v in floats)])
  path = os.path.join(FIXTURES, f'torchvision_{arch}_random.npz')
  np.savez_compressed(path, input=x16, output=y.astype(np.float32), output_float64=y64,
                      seed=np.int64(seed), weights_fingerprint=fingerprint)
  print(f'{path}: output {y.shape}, |y| max {np.abs(y).max():.3g} mean {np.abs(y).mean():.3g}, '
        f'torch float32 vs float64 max abs {np.abs(y - y64).max():.3g}, '
        f'{os.path.getsize(path)} bytes')

  # Our reader and converter on a real torch.save of the full model (not kept: 45-100 MB).
  tmp = f'/tmp/{arch}_random_state_dict.pth'
  torch.save(model.float().state_dict(), tmp)
  read = torch_checkpoint.read_state_dict(tmp)
  assert read.keys() == weights.keys()
  assert all(np.array_equal(read[k], weights[k]) and read[k].dtype == weights[k].dtype
             for k in weights)
  os.remove(tmp)
  print(f'read_state_dict on torch.save({arch}.state_dict()) returns the weights exactly')


TINY = collections.OrderedDict([
    ('a.weight', torch.tensor([[1.0, -2.0, 3.5], [0.25, 0.0, -1e-3]], dtype=torch.float32)),
    ('b.running_mean', torch.tensor([1 / 3, -2.0, 1e-300], dtype=torch.float64)),
    ('c.num_batches_tracked', torch.tensor(12345678901, dtype=torch.int64)),
    ('d.half', torch.tensor([0.5, -65504.0, 6.1e-5], dtype=torch.float16)),
])


def tiny_extras():
  base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
  return collections.OrderedDict([
      ('e.bf16', torch.tensor([1.0, -3.140625, 1e30], dtype=torch.bfloat16)),
      ('f.transposed', base.t()),                 # strides (1, 4)
      ('g.slice', base[1:, ::2]),                 # offset 4, strides (4, 2), same storage
      ('h.param', torch.nn.Parameter(torch.tensor([2.0, 4.0]))),
      ('i.bool', torch.tensor([True, False])),
  ])


def make_tiny():
  torch.save(TINY, os.path.join(FIXTURES, 'tiny_state_dict.pth'))
  torch.save(TINY, os.path.join(FIXTURES, 'tiny_state_dict_legacy.pth'),
             _use_new_zipfile_serialization=False)
  extras = tiny_extras()
  checkpoint = {'epoch': 3, 'arch': 'resnet18', 'args': argparse.Namespace(lr=0.1, amp=True),
                'state_dict': collections.OrderedDict(('module.' + k, v)
                                                      for k, v in extras.items())}
  torch.save(checkpoint, os.path.join(FIXTURES, 'tiny_extras.pth'))
  try:
    from safetensors.torch import save_file
  except ImportError:
    print('safetensors is not installed: skipped the .safetensors fixtures')
  else:
    save_file(dict(TINY), os.path.join(FIXTURES, 'tiny_state_dict.safetensors'))
    save_file({k: v.detach().contiguous().clone() for k, v in extras.items()},
              os.path.join(FIXTURES, 'tiny_extras.safetensors'), metadata={'format': 'pt'})
  for name in sorted(os.listdir(FIXTURES)):
    if name.startswith('tiny'):
      print(f'{name}: {os.path.getsize(os.path.join(FIXTURES, name))} bytes')


def main():
  os.makedirs(FIXTURES, exist_ok=True)
  torch.manual_seed(0)
  print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, '
        f'numpy {np.__version__}')
  check_layouts()
  for arch, seed in ARCHS.items():
    make_parity(arch, seed)
  make_tiny()


if __name__ == '__main__':
  main()
