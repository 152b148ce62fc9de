"""Every config field of comic-jax, with its default. Dataset files import this and override.

Change single fields on the command line: `--config.optim.learning_rate=3e-4`.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                       # training seed: initialisation, batch order, augmentation
  config.method = 'bce'                 # loss / model family; 'bce' = BCE on one branch

  # ---------------------------------------------------------------------------- data
  config.data = data = ml_collections.ConfigDict()
  data.name = 'synthetic'               # 'synthetic' (PLT-Synth, embedded)
  data.seed = 0                         # data-set seed (fixed across training seeds, like a
                                        # published split)
  data.missing_ratio = 0.4              # r: probability that a training positive is hidden
  data.group_counts = 'full'            # class groups from 'full' or 'observed' train counts
  data.many_threshold = 100             # many-shot: n_c >= this
  data.few_threshold = 20               # few-shot: n_c < this (medium in between)
  data.image_size = 32                  # side of the (square) input images, pixels
  data.synthetic = synthetic = ml_collections.ConfigDict()
  synthetic.pool_size = 20000           # label sets drawn before long-tail subsampling
  synthetic.pareto_shape = 6.0          # b of the Pareto reference curve
  synthetic.max_count = 600             # positives of the largest class
  synthetic.min_count = 4               # about the positives of the smallest class
  synthetic.num_test = 2000             # test images (fully labelled, not long-tailed)
  synthetic.min_test_positives = 10     # every class gets at least this many test positives

  # ---------------------------------------------------------------------------- model
  config.model = model = ml_collections.ConfigDict()
  model.backbone = 'small_cnn'          # 'small_cnn' | 'resnet18' | 'resnet34' | 'resnet50' |
                                        # 'resnet101'
  model.small_cnn_widths = (16, 32, 64, 128)  # channels of the small CNN's stages
  model.projection_dim = 128            # d: linear projection of the backbone features (0: none)
  model.classifier = 'linear'           # 'linear' | 'cosine' (multi-head cosine, METHOD.md)
  model.cosine = cosine = ml_collections.ConfigDict()
  cosine.scale = 16.0                   # rho
  cosine.eta = 1.0 / 32.0               # eta, the class-agnostic baseline energy
  cosine.num_groups = 1                 # N_g (TDE used 2)
  model.dtype = 'float32'               # compute dtype: 'float32' | 'bfloat16' (GPU / TPU)

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
  lr_scale.other = 1.0                  # parameters of any other module

  # ---------------------------------------------------------------------------- augmentation
  config.augment = augment = ml_collections.ConfigDict()
  augment.flip = True                   # random horizontal flip
  augment.max_shift = 2                 # random translation, pixels (0: off)

  # ---------------------------------------------------------------------------- training loop
  config.batch_size = 32                # global batch (all devices together)
  config.eval_batch_size = 500          # global evaluation batch (the last one is padded)
  config.num_epochs = 30
  config.eval_every_epochs = 1          # evaluate (and log a metrics.jsonl line) this often
  config.checkpoint_every_epochs = 1    # save a checkpoint this often (and at the end)
  config.keep_checkpoints = 2           # keep the last N checkpoints
  config.num_devices = 0                # 0: all devices; N: the first N (single process only)
  config.progress_bar = True            # tqdm bar with img/s and ETA (process 0 only)
  return config
