"""Your own images: a folder of images and a JSON ({"path.jpg": [0/1, ...]}) or CSV
(filename,class1,class2,...) label file per split. The training labels are taken as they are
(partial: a 0 is "not labelled"); they may hold -1 (unknown), and then their 0 entries are
known negatives (docs/data.md, "Known negatives").

    python -m comic_jax.main --config=configs/folder.py --config.data.path=images/ \
      --config.data.train_labels=train.csv --config.data.test_labels=test.csv --workdir=runs/mine

The default works offline on a CPU: EfficientNet-Lite0's ImageNet weights (installed by
requirements.txt), frozen, their features computed once per image (4 augmented views per
training image) and cached, then COMIC+'s heads trained from the cache in seconds. A fifth of
the training images is the validation split, which picks the reported model
(`comic_plus.report='auto'`) and the per-class thresholds that predict uses.

`configs/folder.py:paper` is the paper's network and schedule, for a GPU: ResNet-50 from
torchvision's ImageNet weights (downloaded on first use), fine-tuned at 224 px for 40 epochs,
with the same labels as they are, validation split and COMIC+ (add --config.method=comic for
the paper's method). Hiding positives (data.partial='simulate') is a benchmark option: the
PLT-Synth, VOC and COCO recipes use it.
"""
from configs import coco


def get_config(recipe: str = 'cpu'):
  config = coco.get_config()
  data = config.data
  data.name = 'folder'
  data.longtail = 'as_is'               # your data's own class frequencies
  data.partial = 'as_is'                # your labels are the partial ones: nothing more hidden
  data.val_fraction = 0.2               # validation split: reported model and thresholds
  config.method = 'comic_plus'          # COMIC+ for your data; 'comic' reproduces the paper
  config.comic_plus.report = 'auto'
  if recipe == 'paper':
    return config
  if recipe != 'cpu':
    raise ValueError(f"configs/folder.py: recipe {recipe!r} is not 'cpu' (the default) or "
                     "'paper'")
  model = config.model
  model.backbone = 'efficientnet_lite0'
  model.pretrained = 'efficientnet_lite0'
  model.backbone_trainable = False
  model.feature_cache = True
  model.feature_views = 4
  # The head's 1280 features, not stage taps: on a validation split of photos (300 mosaics of
  # scikit-image's, tests/photo_folder.py; 1 seed) COMIC+ reached 61.39 validation mAP with
  # them, 60.74 with stages 1-7.
  model.feature_taps = ()
  model.projection_dim = 256
  config.comic.htb.attention_dim = 256
  config.augment.rand_augment_tail = False   # the cached views are the augmentation
  # Heads on cached features: an epoch costs milliseconds per batch, so 30 epochs of batch 64
  # suit a few hundred images (~4 steps an epoch) to a few hundred thousand.
  config.batch_size = 64
  config.eval_batch_size = 64
  config.num_epochs = 30
  optim = config.optim
  optim.lr_scale.backbone = 1.0         # (frozen: no backbone parameters train)
  optim.schedule = 'cosine'
  return config
