"""Host-side image input: decoding (PIL) and the deterministic resizes of the real data sets.

Training images are stored whole, resized to a square (`square_resize`), and augmented on the
device (`augment.random_resized_crop`, `rand_augment.rand_augment`); evaluation images get
torchvision's Resize(256) + CenterCrop(224) (`eval_transform`). Everything here takes and
returns uint8 (H, W, 3) NumPy arrays; `map_images` runs a transform over many images on a
thread pool (PIL releases the GIL while it decodes and resizes).
"""
from __future__ import annotations

import collections
import collections.abc
import io
import os
from concurrent import futures
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image

from comic_jax.errors import UserError, require

_RESAMPLE = Image.Resampling.BILINEAR


def decode_image(source: bytes | str | os.PathLike | np.ndarray, name: str | None = None
                 ) -> np.ndarray:
  """uint8 (H, W, 3) RGB from encoded bytes, an image file path or an array.

  Grey, grey+alpha, RGBA, CMYK and palette images become RGB by PIL's convert('RGB') (alpha is
  dropped, like torchvision's ImageFolder loader; EXIF orientation is not applied, as there).
  Arrays may be uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). A missing file or an image
  that cannot be decoded (corrupt, truncated, not an image) raises UserError naming `name`, or
  the path when `name` is None.
  """
  if isinstance(source, np.ndarray):
    return _array_to_rgb(source, name or 'array')
  if isinstance(source, (bytes, bytearray, memoryview)):
    label, stream = name or '<bytes>', io.BytesIO(source)
  elif isinstance(source, (str, os.PathLike)):
    label, stream = name or os.fspath(source), source
    if not os.path.isfile(source):
      raise UserError(f'image file not found: {label}')
  else:
    raise TypeError(f'cannot decode an image from {type(source).__name__}')
  try:
    with Image.open(stream) as img:
      img.load()
      rgb = img.convert('RGB')
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    # PIL's UnidentifiedImageError and "image file is truncated" are OSErrors.
    raise UserError(f'cannot decode image {label}: {_one_line(e)}') from None
  return np.asarray(rgb, dtype=np.uint8)


def _one_line(error: Exception) -> str:
  return ' '.join(str(error).split()) or type(error).__name__


def _array_to_rgb(array: np.ndarray, label: str) -> np.ndarray:
  if array.dtype != np.uint8:
    raise UserError(f'image {label} has dtype {array.dtype}, expected uint8')
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
    raise UserError(f'image {label} has shape {array.shape}, expected (H, W) or (H, W, 1|3|4)')
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return np.ascontiguousarray(array[..., :3])


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
  """PIL bilinear resize (antialiased when shrinking, as torchvision's Resize on PIL images)."""
  if img.shape[1] == width and img.shape[0] == height:
    return img
  return np.asarray(Image.fromarray(img).resize((width, height), _RESAMPLE), dtype=np.uint8)


def resize_shorter_side(img: np.ndarray, size: int) -> np.ndarray:
  """torchvision's Resize(size): the shorter side becomes `size`, the longer one
  int(size * long / short) (truncated, as torchvision does), bilinear."""
  h, w = img.shape[:2]
  if w <= h:
    return _resize(img, size, int(size * h / w))
  return _resize(img, int(size * w / h), size)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
  """torchvision's CenterCrop(size): the central size x size window, its corner at
  int(round((H - size) / 2)) (Python's round); an image smaller than `size` is first padded
  with 0 on each side, as torchvision does."""
  h, w = img.shape[:2]
  if size > h or size > w:
    ph, pw = max(size - h, 0), max(size - w, 0)
    img = np.pad(img, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
    h, w = img.shape[:2]
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  return np.ascontiguousarray(img[top:top + size, left:left + size])


def eval_transform(img: np.ndarray, resize: int = 256, crop: int = 224) -> np.ndarray:
  """The evaluation input: torchvision's Resize(resize) then CenterCrop(crop)."""
  return center_crop(resize_shorter_side(img, resize), crop)


def model_input(image, preprocessing: dict, name: str | None = None) -> np.ndarray:
  """One image (path, bytes or uint8 array, any size) -> the model's uint8 (H, W, 3) input by a
  source's evaluation preprocessing (`sources.preprocessing_of`): the shorter side resized to
  `resize`, then the central `height` x `width`. What evaluation, the shards, prediction and the
  export all apply."""
  img = decode_image(image, name)
  h, w, resize = preprocessing['height'], preprocessing['width'], preprocessing['resize']
  if h == w:
    return eval_transform(img, resize, h)
  resized = resize_shorter_side(img, resize)
  top, left = (resized.shape[0] - h) // 2, (resized.shape[1] - w) // 2
  require(top >= 0 and left >= 0, f'image {name or ""} is too small for the {h}x{w} input')
  return np.ascontiguousarray(resized[top:top + h, left:left + w])


def square_resize(img: np.ndarray, size: int) -> np.ndarray:
  """The whole image resized to size x size (bilinear, aspect ratio not kept): the training
  store, from which the device cuts random resized crops."""
  return _resize(img, size, size)


def map_images(fn: Callable[[Any], np.ndarray], items: Iterable[Any], num_threads: int = 0,
               progress: Callable[[int], Any] | None = None) -> np.ndarray:
  """np.stack([fn(item) for item in items]) as uint8, computed on `num_threads` threads.

  `num_threads` <= 0 means one per CPU core; 1 runs in this thread. Results are written in
  order into one preallocated array (every fn(item) must have the same shape), with at most a
  few results per thread in flight, so memory stays at the output plus a small window.
  `progress(1)` is called after each item, in order (tqdm's `update`, so `bar.update` can be
  passed as it is). An exception in fn (e.g. a UserError for a corrupt image) is raised here.
  """
  items = items if isinstance(items, collections.abc.Sequence) else list(items)
  total = len(items)
  num_threads = num_threads if num_threads > 0 else (os.cpu_count() or 1)
  out = None

  def store(i: int, result: np.ndarray) -> None:
    nonlocal out
    result = np.asarray(result)
    if out is None:
      out = np.empty((total,) + result.shape, np.uint8)
    if result.shape != out.shape[1:]:
      raise ValueError(f'item {i}: shape {result.shape} differs from {out.shape[1:]}')
    out[i] = result
    if progress is not None:
      progress(1)

  if num_threads == 1:
    for i, item in enumerate(items):
      store(i, fn(item))
  else:
    with futures.ThreadPoolExecutor(num_threads) as pool:
      window: collections.deque = collections.deque()
      for i, item in enumerate(items):
        window.append(pool.submit(fn, item))
        if len(window) >= 4 * num_threads:
          store(i + 1 - len(window), window.popleft().result())
      while window:
        store(total - len(window), window.popleft().result())
  return out if out is not None else np.zeros((0,), np.uint8)
