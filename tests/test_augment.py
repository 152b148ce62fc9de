"""The image input pipeline: device augmentations (augment.py) against NumPy / PIL references,
and host decoding and evaluation resizes (images.py)."""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image, ImageEnhance, ImageOps

from comic_jax.data import augment, images, warps
from comic_jax.data import rand_augment as rand_augment_lib
from comic_jax.errors import UserError

OPS = rand_augment_lib.RAND_AUGMENT_OPS


def smooth_noisy(h=32, w=32, seed=0):
  """uint8 (h, w, 3): gradients plus noise, so every pixel differs from its neighbours and the
  histograms are spread out."""
  rs = np.random.RandomState(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  base = np.stack([xx * 7 + 10, yy * 6 + 20, 128 + 60 * np.sin(xx / 4) * np.cos(yy / 5)], -1)
  return np.clip(base + rs.randint(-25, 26, (h, w, 3)), 0, 255).astype(np.uint8)


def batch(n=4, h=32, w=32):
  return np.stack([smooth_noisy(h, w, seed=i) for i in range(n)])


rrc = jax.jit(augment.random_resized_crop,
              static_argnames=('out_size', 'scale', 'ratio', 'max_rotation', 'flip'))
warp = jax.jit(warps.affine_warp, static_argnames=('out_size', 'interpolation'))
apply_op = jax.jit(rand_augment_lib.apply_op)
rand_augment = jax.jit(rand_augment_lib.rand_augment,
                       static_argnames=('num_ops', 'magnitude', 'num_bins'))
IDENTITY = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), max_rotation=0.0)


def crop_warp(x, boxes, out_size, flips=None, angles=None):
  """affine_warp with the maps of explicit crop boxes, flips and angles."""
  as_array = lambda v, dtype: None if v is None else jnp.asarray(v, dtype)
  mats = augment.resized_crop_matrices(jnp.asarray(boxes, jnp.float32), out_size,
                                       flips=as_array(flips, bool),
                                       angles=as_array(angles, jnp.float32))
  return np.asarray(warp(jnp.asarray(x), mats, out_size))


# ------------------------------------------------------------------------------ random resized crop

def test_identity_parameters_reproduce_the_input():
  x = batch()
  out = np.asarray(rrc(x, jax.random.key(0), out_size=32, flip=False, **IDENTITY))
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, x)


def test_flip_only_mirrors_some_images_and_keeps_the_others():
  x = batch(8)
  out = np.asarray(rrc(x, jax.random.key(1), out_size=32, flip=True, **IDENTITY))
  mirrored = np.array([np.array_equal(o, im[:, ::-1]) for o, im in zip(out, x)])
  kept = np.array([np.array_equal(o, im) for o, im in zip(out, x)])
  assert np.all(mirrored ^ kept) and mirrored.any() and kept.any()
  full = [[0, 0, 32, 32]] * 8
  np.testing.assert_array_equal(crop_warp(x, full, 32, flips=[True] * 8), x[:, :, ::-1])


@pytest.mark.parametrize('angle,k', [(90, 1), (-90, -1), (180, 2)])
def test_rotation_by_multiples_of_90_degrees_is_rot90(angle, k):
  x = batch(2)
  out = crop_warp(x, [[0, 0, 32, 32]] * 2, 32, angles=[angle] * 2)
  np.testing.assert_array_equal(out, np.rot90(x, k, axes=(1, 2)))   # counter-clockwise, as PIL
  np.testing.assert_array_equal(out[0], np.asarray(Image.fromarray(x[0]).rotate(angle)))


def test_small_rotation_matches_pil_inside_the_image():
  x = batch(1)
  out = crop_warp(x, [[0, 0, 32, 32]], 32, angles=[15.0])[0]
  ref = np.asarray(Image.fromarray(x[0]).rotate(15.0, Image.Resampling.BILINEAR))
  diff = np.abs(out.astype(int) - ref)[6:-6, 6:-6]     # PIL blends the border with the fill
  assert diff.max() <= 1
  assert np.all(out[0, 0] == 0) and np.all(out[-1, -1] == 0)  # corners past the image: black


@pytest.mark.parametrize('box', [(4, 6, 16, 20), (0, 0, 32, 32), (7, 1, 24, 17)])
def test_crop_resize_and_flip_match_pil(box):
  """Enlarging crops (PIL's bilinear only antialiases when shrinking) agree to one level."""
  top, left, h, w = box
  x = np.repeat(batch(1), 2, axis=0)
  out = crop_warp(x, [box, box], 40, flips=[False, True])
  ref = np.asarray(Image.fromarray(x[0]).resize((40, 40), Image.Resampling.BILINEAR,
                                                box=(left, top, left + w, top + h)))
  assert np.abs(out[0].astype(int) - ref).max() <= 1
  assert np.abs(out[1].astype(int) - ref[:, ::-1]).max() <= 1


def torchvision_crop_box(rs, height, width, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
  """torchvision's RandomResizedCrop.get_params, with a NumPy generator."""
  for _ in range(10):
    area = height * width * rs.uniform(*scale)
    aspect = np.exp(rs.uniform(np.log(ratio[0]), np.log(ratio[1])))
    w, h = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return rs.randint(0, height - h + 1), rs.randint(0, width - w + 1), h, w
  return None


def test_crop_boxes_follow_torchvision():
  n = 2000
  boxes = np.asarray(jax.jit(augment.sample_crop_boxes, static_argnums=(1, 2, 3))(
      jax.random.key(0), n, 40, 50))
  top, left, h, w = boxes.T
  assert np.all(boxes == np.round(boxes)) and np.all(top >= 0) and np.all(left >= 0)
  assert np.all(top + h <= 40) and np.all(left + w <= 50)
  rs = np.random.RandomState(0)
  ref = np.array([torchvision_crop_box(rs, 40, 50) for _ in range(n)], float)
  for ours, theirs in [(h * w, ref[:, 2] * ref[:, 3]), (w / h, ref[:, 3] / ref[:, 2]),
                       (top, ref[:, 0]), (left, ref[:, 1])]:
    sigma = np.sqrt((ours.var() + theirs.var()) / n)
    assert abs(ours.mean() - theirs.mean()) < 4 * sigma
    assert ours.min() >= theirs.min() - 1 and ours.max() <= theirs.max() + 1
  # An impossible box (every attempt too wide) falls back to the central crop with the ratio
  # clamped into range: 40 x 10 -> width round(10 * 4 / 3) = 13, centred.
  boxes = np.asarray(augment.sample_crop_boxes(jax.random.key(0), 5, 10, 40, scale=(1.0, 1.0)))
  np.testing.assert_array_equal(boxes, [[0, 13, 10, 13]] * 5)


def test_random_resized_crop_is_deterministic_in_its_key_and_in_range():
  x = batch(8)
  a = np.asarray(rrc(x, jax.random.key(3), out_size=24))
  b = np.asarray(rrc(x, jax.random.key(3), out_size=24))
  c = np.asarray(rrc(x, jax.random.key(4), out_size=24))
  assert a.shape == (8, 24, 24, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a[0], a[1])                       # each image its own crop


def test_same_result_sharded_over_a_data_mesh():
  """The draws depend only on the key, so a batch split over 4 devices gives the same output."""
  mesh = Mesh(np.array(jax.devices()[:4]), ('data',))
  x = batch(8)
  sharded = jax.device_put(x, NamedSharding(mesh, P('data')))

  k1, k2 = jax.random.key(5), jax.random.key(6)
  out = jax.jit(lambda im: rand_augment_lib.rand_augment(augment.random_resized_crop(
      im, k1, out_size=24), k2))(sharded)
  assert len(out.sharding.device_set) == 4
  # The same functions on one device (compiled by the tests above for these shapes).
  expected = rand_augment(rrc(x, k1, out_size=24), k2)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


# ------------------------------------------------------------------------------- RandAugment

def _enhance(cls, factor):
  return lambda im: cls(im).enhance(factor)


# (op, signed magnitude, PIL reference, tolerance in levels). The magnitudes are torchvision's
# at magnitude 9 of 31 bins (0.27 for the enhancers, 7 bits, threshold 178.5).
COLOUR_CASES = [
    ('Brightness', 0.27, _enhance(ImageEnhance.Brightness, 1.27), 0),
    ('Brightness', -0.27, _enhance(ImageEnhance.Brightness, 0.73), 0),
    ('Color', 0.27, _enhance(ImageEnhance.Color, 1.27), 0),
    ('Color', -0.9, _enhance(ImageEnhance.Color, 0.1), 0),
    ('Contrast', 0.27, _enhance(ImageEnhance.Contrast, 1.27), 0),
    ('Contrast', -0.27, _enhance(ImageEnhance.Contrast, 0.73), 0),
    ('Sharpness', 0.27, _enhance(ImageEnhance.Sharpness, 1.27), 0),
    ('Sharpness', -0.9, _enhance(ImageEnhance.Sharpness, 0.1), 0),
    ('Posterize', 7, lambda im: ImageOps.posterize(im, 7), 0),
    ('Posterize', 4, lambda im: ImageOps.posterize(im, 4), 0),
    ('Solarize', 178.5, lambda im: ImageOps.solarize(im, 178.5), 0),
    ('AutoContrast', 0, ImageOps.autocontrast, 1),   # PIL rounds its doubles down at times
    ('Equalize', 0, ImageOps.equalize, 0),
    ('Identity', 0, lambda im: im, 0),
]
# Geometric ops: torchvision's PIL calls (F.affine with center [0, 0] and F.rotate, NEAREST,
# fill 0), written as the PIL transforms they become.
GEOMETRIC_CASES = [
    ('ShearX', 0.09, lambda im: im.transform(im.size, Image.Transform.AFFINE,
                                             (1, 0.09, 0, 0, 1, 0))),
    ('ShearY', -0.09, lambda im: im.transform(im.size, Image.Transform.AFFINE,
                                              (1, 0, 0, -0.09, 1, 0))),
    ('TranslateX', 5.7, lambda im: im.transform(im.size, Image.Transform.AFFINE,
                                                (1, 0, -5, 0, 1, 0))),  # int(5.7) pixels
    ('TranslateY', -3.2, lambda im: im.transform(im.size, Image.Transform.AFFINE,
                                                 (1, 0, 0, 0, 1, 3))),
    ('Rotate', 9.0, lambda im: im.rotate(9.0)),
    ('Rotate', -27.0, lambda im: im.rotate(-27.0)),
] + [(op, 0.0, lambda im: im) for op in ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate')]


def test_rand_augment_ops_match_pil():
  """One batch, one op per image, against PIL on the same (non-square) image; the geometric
  ops at magnitude 0 are the identity."""
  img = smooth_noisy(20, 24)
  low_contrast = (40 + img.astype(int) * 150 // 255).astype(np.uint8)   # for AutoContrast
  cases = COLOUR_CASES + [(op, m, ref, 0) for op, m, ref in GEOMETRIC_CASES]
  inputs = np.stack([low_contrast if op == 'AutoContrast' else img for op, *_ in cases])
  out = np.asarray(apply_op(inputs, jnp.array([OPS.index(op) for op, *_ in cases]),
                            jnp.array([m for _, m, _, _ in cases], jnp.float32)))
  assert out.dtype == np.uint8 and out.shape == inputs.shape
  for (op, m, ref, tol), x, o in zip(cases, inputs, out):
    expected = np.asarray(ref(Image.fromarray(x)))
    assert np.abs(o.astype(int) - expected).max() <= tol, (op, m)
  assert not np.array_equal(out[0], img)                        # the ops did something


def test_rand_augment_magnitudes_are_torchvisions():
  values, signed = rand_augment_lib.rand_augment_magnitudes(9, 31, 224, 224)
  v = dict(zip(OPS, values))
  np.testing.assert_allclose([v['ShearX'], v['TranslateX'], v['Rotate'], v['Brightness'],
                              v['Posterize'], v['Solarize']],
                             [0.09, 150 / 331 * 224 * 0.3, 9.0, 0.27, 7, 178.5], rtol=1e-6)
  assert dict(zip(OPS, signed)) == {op: op in ('ShearX', 'ShearY', 'TranslateX', 'TranslateY',
                                               'Rotate', 'Brightness', 'Color', 'Contrast',
                                               'Sharpness') for op in OPS}
  with pytest.raises(UserError, match='magnitude'):
    rand_augment_lib.rand_augment_magnitudes(31, 31, 224, 224)


def test_rand_augment_is_deterministic_per_image_and_in_range():
  x = batch(8, 24, 24)
  a = np.asarray(rand_augment(x, jax.random.key(0)))
  np.testing.assert_array_equal(a, np.asarray(rand_augment(x, jax.random.key(0))))
  assert not np.array_equal(a, np.asarray(rand_augment(x, jax.random.key(1))))
  assert a.dtype == np.uint8 and a.shape == x.shape
  changed = [not np.array_equal(o, im) for o, im in zip(a, x)]
  assert 4 <= sum(changed)                 # 2 ops from 14: P(both Identity) = 1/196 per image
  np.testing.assert_array_equal(np.asarray(rand_augment(x, jax.random.key(0), num_ops=0)), x)


# ------------------------------------------------------------------------------- host side

def _png(array, mode=None):
  buf = io.BytesIO()
  im = Image.fromarray(array)
  (im.convert(mode) if mode else im).save(buf, format='PNG')
  return buf.getvalue()


def test_decode_image_from_bytes_path_and_array(tmp_path):
  x = smooth_noisy(10, 14)
  np.testing.assert_array_equal(images.decode_image(_png(x)), x)
  path = tmp_path / 'a.png'
  path.write_bytes(_png(x))
  np.testing.assert_array_equal(images.decode_image(path), x)
  np.testing.assert_array_equal(images.decode_image(str(path)), x)
  np.testing.assert_array_equal(images.decode_image(x), x)
  for mode in ('L', 'RGBA', 'P', 'LA'):
    out = images.decode_image(_png(x, mode))
    assert out.shape == (10, 14, 3) and out.dtype == np.uint8, mode
  grey = images.decode_image(_png(x, 'L'))
  assert np.all(grey[..., 0] == grey[..., 2])
  np.testing.assert_array_equal(images.decode_image(x[..., 0]), np.repeat(x[..., :1], 3, -1))
  np.testing.assert_array_equal(images.decode_image(np.dstack([x, x[..., :1]])), x)


def test_decode_image_errors_name_the_file(tmp_path):
  with pytest.raises(UserError, match='not found: .*missing.jpg'):
    images.decode_image(tmp_path / 'missing.jpg')
  with pytest.raises(UserError, match='cannot decode image 0001.jpg'):
    images.decode_image(b'not an image at all', name='0001.jpg')
  buf = io.BytesIO()
  Image.fromarray(smooth_noisy(64, 64)).save(buf, format='JPEG')
  truncated = tmp_path / 'truncated.jpg'
  truncated.write_bytes(buf.getvalue()[:300])
  with pytest.raises(UserError, match='truncated.jpg') as e:
    images.decode_image(truncated)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('shape', [(50, 37), (37, 50), (30, 30)])
def test_eval_transform_matches_torchvision_resize_center_crop(shape):
  h, w = shape
  x = smooth_noisy(h, w)
  out = images.eval_transform(x, resize=32, crop=24)
  # torchvision: Resize(32) -> shorter side 32, longer int(32 * long / short); CenterCrop(24).
  nw, nh = (32, int(32 * h / w)) if w <= h else (int(32 * w / h), 32)
  resized = Image.fromarray(x).resize((nw, nh), Image.Resampling.BILINEAR)
  top, left = int(round((nh - 24) / 2)), int(round((nw - 24) / 2))
  ref = np.asarray(resized.crop((left, top, left + 24, top + 24)))
  assert out.shape == (24, 24, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, ref)


def test_center_crop_pads_small_images_and_square_resize():
  x = smooth_noisy(10, 20)
  out = images.center_crop(x, 14)
  assert out.shape == (14, 14, 3)
  np.testing.assert_array_equal(out[2:12], x[:, 3:17])
  assert np.all(out[:2] == 0) and np.all(out[12:] == 0)
  sq = images.square_resize(x, 16)
  np.testing.assert_array_equal(
      sq, np.asarray(Image.fromarray(x).resize((16, 16), Image.Resampling.BILINEAR)))


@pytest.mark.parametrize('threads', [1, 3])
def test_map_images_keeps_order_and_reports_progress(threads):
  arrays = [smooth_noisy(12 + i % 5, 15, seed=i) for i in range(23)]
  blobs = [_png(a) for a in arrays]
  seen = []
  out = images.map_images(lambda b: images.square_resize(images.decode_image(b), 8), blobs,
                          num_threads=threads, progress=seen.append)
  assert out.shape == (23, 8, 8, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.stack([images.square_resize(a, 8) for a in arrays]))
  assert seen == [1] * 23                 # tqdm-style increments
  with pytest.raises(UserError, match='bad.jpg'):
    images.map_images(lambda b: images.decode_image(b, name='bad.jpg'), [blobs[0], b'x'],
                      num_threads=threads)
