"""PLT-Synth: an embedded, procedurally generated PLT-MLC data set (no download, seconds to build).

The world. 24 classes, each a (colour, texture, shape) triple: colours red / green / blue (hue
jittered), textures solid / striped, shapes disk / square / triangle / plus. Telling a class apart
needs all three attributes, e.g. `red_striped_square` vs `red_solid_square` vs
`blue_striped_square`.
Objects vary in size, position and rotation, overlap each other, and sit on noisy, shaded
backgrounds with clutter: distractor objects in colours that belong to no class (yellow, magenta,
grey) and random line segments.

Label co-occurrence. Six fixed scene contexts, each a weighted set of six classes (every class is in
one or two contexts). An image picks a context, then 1-4 objects, each from the context with
probability 0.9 (by the context's weights) and uniformly otherwise.

The PLT-MLC split, built exactly as the benchmark builds PLT-COCO (`comic_jax.data.longtail`):
- a source pool of label sets is drawn (labels are cheap; only chosen images are rendered);
- the training set is greedily subsampled from it to follow the Pareto reference curve
  (b=6, max 600, min 4: the shape DB used for COCO-MLT, scaled to 24 classes);
- each training positive is hidden with probability `missing_ratio` (full labels kept beside the
  observed ones, for diagnostics only);
- the test set is fresh draws from the scene model (not long-tailed), fully labelled, topped up so
  every class has at least `min_test_positives` positives;
- the validation set is drawn by the same rules from a third random stream, disjoint draws.

The design was fixed before any method was run on it and must not be retuned to favour one.
"""
from __future__ import annotations

import itertools

import numpy as np

from comic_jax.data import longtail
from comic_jax.data.types import PLTData

COLOURS = ('red', 'green', 'blue')
TEXTURES = ('solid', 'striped')
SHAPES = ('disk', 'square', 'triangle', 'plus')
CLASS_NAMES = tuple(f'{c}_{t}_{s}' for c, t, s in itertools.product(COLOURS, TEXTURES, SHAPES))
NUM_CLASSES = len(CLASS_NAMES)

_CLASS_HUES = {'red': 0.0, 'green': 0.33, 'blue': 0.63}
_DISTRACTOR_HUES = (0.16, 0.83)        # yellow, magenta; grey distractors have no saturation
_HUE_JITTER = 0.035
_WORLD_SEED = 2023                      # fixes the scene contexts; never the data seed
_NUM_CONTEXTS = 6
_CONTEXT_SIZE = 6
_CONTEXT_WEIGHTS = np.array([1.0, 0.8, 0.65, 0.5, 0.4, 0.3])


def scene_contexts() -> list[tuple[np.ndarray, np.ndarray]]:
  """The six fixed contexts as (class indices, sampling weights)."""
  rng = np.random.default_rng(_WORLD_SEED)
  # Every class once in a random context slot, then 12 classes a second time elsewhere.
  first = rng.permutation(NUM_CLASSES)
  second = rng.permutation(NUM_CLASSES)[:NUM_CLASSES // 2]
  members = [list(first[k * 4:(k + 1) * 4]) for k in range(_NUM_CONTEXTS)]
  extra = list(second)
  for k in range(_NUM_CONTEXTS):
    while len(members[k]) < _CONTEXT_SIZE:
      for i, cls in enumerate(extra):
        if cls not in members[k]:
          members[k].append(extra.pop(i))
          break
      else:  # only duplicates left: take any class not yet in this context
        members[k].append(next(c for c in range(NUM_CLASSES) if c not in members[k]))
  contexts = []
  for k in range(_NUM_CONTEXTS):
    idx = np.array(members[k])
    contexts.append((idx, _CONTEXT_WEIGHTS / _CONTEXT_WEIGHTS.sum()))
  return contexts


def sample_scenes(num_images: int, rng: np.random.Generator,
                  forced_class: int | None = None) -> list[np.ndarray]:
  """Class ids of the objects of `num_images` scenes (with repeats: two red disks are possible).

  With `forced_class`, the scene's context is one containing that class and the class is present.
  """
  contexts = scene_contexts()
  scenes = []
  for _ in range(num_images):
    if forced_class is None:
      members, weights = contexts[rng.integers(_NUM_CONTEXTS)]
    else:
      options = [ctx for ctx in contexts if forced_class in ctx[0]]
      members, weights = options[rng.integers(len(options))]
    n_objects = 1 + rng.binomial(3, 0.4)
    from_context = rng.random(n_objects) < 0.9
    objs = np.where(from_context, rng.choice(members, size=n_objects, p=weights),
                    rng.integers(NUM_CLASSES, size=n_objects))
    if forced_class is not None:
      objs[rng.integers(n_objects)] = forced_class
    scenes.append(objs.astype(np.int64))
  return scenes


def scenes_to_labels(scenes: list[np.ndarray]) -> np.ndarray:
  y = np.zeros((len(scenes), NUM_CLASSES), dtype=np.int8)
  for i, objs in enumerate(scenes):
    y[i, objs] = 1
  return y


def _hsv_to_rgb(h, s, v):
  """Vectorised HSV -> RGB, all inputs in [0, 1], output (..., 3)."""
  h = np.mod(h, 1.0) * 6.0
  i = np.floor(h).astype(np.int64) % 6
  f = h - np.floor(h)
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  table = np.stack([np.stack(c, -1) for c in
                    ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 0)
  return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def _shape_masks(shape_id, u, v):
  """Boolean masks of shape `shape_id` (per object) on rotated, size-normalised coords u, v."""
  disk = u ** 2 + v ** 2 <= 1.0
  square = np.maximum(np.abs(u), np.abs(v)) <= 0.8
  angles = np.deg2rad([90.0, 210.0, 330.0])
  triangle = np.all([u * np.cos(a) + v * np.sin(a) <= 0.55 for a in angles], axis=0)
  plus = (((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) |
          ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0)))
  masks = np.stack([disk, square, triangle, plus], 0)
  return np.take_along_axis(masks, shape_id[None, :, None, None], 0)[0]


def _draw_objects(canvas, rng, image_index, colour_hue, saturated, textured, shape_id, grid):
  """Paints one object per entry onto `canvas[image_index]` (at most one object per image)."""
  n = len(image_index)
  if n == 0:
    return
  size = canvas.shape[1]
  yy, xx = grid
  cx = rng.uniform(0.12, 0.88, n) * size
  cy = rng.uniform(0.12, 0.88, n) * size
  radius = rng.uniform(0.11, 0.24, n) * size
  theta = rng.uniform(0, 2 * np.pi, n)
  dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
  cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
  u = (dx * cos + dy * sin) / radius[:, None, None]
  v = (-dx * sin + dy * cos) / radius[:, None, None]
  mask = _shape_masks(shape_id, u, v)
  hue = colour_hue + rng.uniform(-_HUE_JITTER, _HUE_JITTER, n)
  sat = np.where(saturated, rng.uniform(0.65, 1.0, n), rng.uniform(0.0, 0.08, n))
  val = rng.uniform(0.7, 1.0, n)
  colour = _hsv_to_rgb(hue, sat, val)                                   # (n, 3)
  # Stripes of period ~3 px along a random direction; dark stripes keep the hue.
  phi = rng.uniform(0, 2 * np.pi, n)[:, None, None]
  along = dx * np.cos(phi) + dy * np.sin(phi) + rng.uniform(0, 3, n)[:, None, None]
  dark = textured[:, None, None] & (np.mod(along, 3.2) < 1.6)
  shade = np.where(dark, 0.3, 1.0 + 0.08 * u.clip(-1, 1))               # soft shading on solids
  pixels = colour[:, None, None, :] * shade[..., None]
  region = canvas[image_index]
  canvas[image_index] = np.where(mask[..., None], pixels, region)


def render_scenes(scenes: list[np.ndarray], image_size: int, seed: int) -> np.ndarray:
  """Renders scenes (lists of class ids) to uint8 (N, S, S, 3) images, deterministic in `seed`."""
  rng = np.random.default_rng(seed)
  n, s = len(scenes), image_size
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
  # Background: a dim, low-saturation colour with a linear gradient.
  base = _hsv_to_rgb(rng.random(n), rng.uniform(0, 0.3, n), rng.uniform(0.15, 0.5, n))
  gx, gy = rng.uniform(-0.2, 0.2, (2, n))
  ramp = (gx[:, None, None] * (xx / s - 0.5) + gy[:, None, None] * (yy / s - 0.5))
  canvas = base[:, None, None, :] + ramp[..., None] + rng.normal(0, 0.04, (n, s, s, 3))
  # Objects: class objects and distractors, painted in a random order per image.
  items = []
  for i, objs in enumerate(scenes):
    n_distract = rng.poisson(0.8)
    kinds = np.concatenate([objs, -1 - np.arange(n_distract)])  # negative = distractor
    items.append(rng.permutation(kinds))
  depth = max(len(k) for k in items)
  for slot in range(depth):
    idx = np.array([i for i, k in enumerate(items) if len(k) > slot], dtype=np.int64)
    kind = np.array([items[i][slot] for i in idx])
    is_class = kind >= 0
    cls = np.where(is_class, kind, 0)
    colour_idx, texture_idx, shape_idx = np.unravel_index(
        cls, (len(COLOURS), len(TEXTURES), len(SHAPES)))
    class_hue = np.array([_CLASS_HUES[c] for c in COLOURS])[colour_idx]
    distract_hue = np.array(_DISTRACTOR_HUES)[rng.integers(2, size=len(idx))]
    hue = np.where(is_class, class_hue, distract_hue)
    saturated = is_class | (rng.random(len(idx)) < 0.7)                 # 30% grey distractors
    textured = np.where(is_class, texture_idx == 1, rng.random(len(idx)) < 0.5)
    shape_id = np.where(is_class, shape_idx, rng.integers(len(SHAPES), size=len(idx)))
    _draw_objects(canvas, rng, idx, hue, saturated, textured, shape_id, (yy, xx))
  # Clutter: thin random line segments.
  for i in np.flatnonzero(rng.random(n) < 0.5):
    p0, p1 = rng.uniform(0, s, 2), rng.uniform(0, s, 2)
    t = np.linspace(0, 1, 2 * s)
    px = np.clip((p0[0] + t * (p1[0] - p0[0])).astype(int), 0, s - 1)
    py = np.clip((p0[1] + t * (p1[1] - p0[1])).astype(int), 0, s - 1)
    canvas[i, py, px] = rng.uniform(0.2, 1.0, 3)
  canvas += rng.normal(0, 0.03, canvas.shape)
  return (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_plt_synth(*, seed: int = 0, image_size: int = 32, missing_ratio: float = 0.4,
                   pool_size: int = 20000, pareto_shape: float = 6.0, max_count: int = 600,
                   min_count: int = 4, num_test: int = 2000,
                   min_test_positives: int = 10) -> PLTData:
  """Builds PLT-Synth. Deterministic given the arguments; a few seconds at the defaults."""
  rng = np.random.default_rng([seed, 0])
  pool = sample_scenes(pool_size, rng)
  pool_labels = scenes_to_labels(pool)
  targets = longtail.pareto_reference_counts(NUM_CLASSES, max_count, min_count, pareto_shape)
  chosen = longtail.greedy_longtail_subsample(pool_labels, targets, seed=seed)
  train_scenes = [pool[i] for i in chosen]
  y_train_full = pool_labels[chosen]
  y_train = longtail.drop_positives(y_train_full, missing_ratio, seed=seed + 1)

  test_scenes = held_out_scenes(num_test, min_test_positives, np.random.default_rng([seed, 1]))
  y_test = scenes_to_labels(test_scenes)
  # The validation set: drawn like the test set from a third random stream (so the training and
  # test sets stay exactly as they were before it existed), rendered from its own stream too.
  val_scenes = held_out_scenes(num_test, min_test_positives, np.random.default_rng([seed, 2]))

  return PLTData(
      name='plt_synth',
      class_names=CLASS_NAMES,
      x_train=render_scenes(train_scenes, image_size, seed=seed * 2 + 11),
      y_train=y_train,
      y_train_full=y_train_full,
      x_test=render_scenes(test_scenes, image_size, seed=seed * 2 + 12),
      y_test=y_test,
      x_val=render_scenes(val_scenes, image_size, seed=[seed, 3]),
      y_val=scenes_to_labels(val_scenes))


def held_out_scenes(num_images: int, min_positives: int, rng: np.random.Generator):
  """Fresh scenes (not long-tailed), topped up so every class has `min_positives` positives."""
  scenes = sample_scenes(num_images, rng)
  counts = scenes_to_labels(scenes).sum(0)
  for cls in np.flatnonzero(counts < min_positives):
    scenes += sample_scenes(int(min_positives - counts[cls]), rng, forced_class=cls)
  return scenes
