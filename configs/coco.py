"""PLT-COCO with the paper's recipe (docs/method.md "Training recipe"; the authors' configs).

    python -m comic_jax.main --config=configs/coco.py --workdir=runs/coco

Needs COCO 2017 through TFDS (prepared on first use, and TensorFlow for TFDS's COCO builder;
the download size and what one run needs: docs/data.md "PLT-COCO and PLT-VOC") and the
torchvision ResNet-50 ImageNet weights (fetched on first use, or
`--config.model.pretrained=/path/to/resnet50.pth`).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.method = 'comic'
  data = config.data
  data.name = 'coco'
  data.longtail = 'pareto'              # COMIC's procedure; 'published' = DB's COCO-MLT ids
  data.pareto.shape = 10.0              # COMIC: b = 10, max 1400 (-> 2,962 images)
  data.pareto.max_count = 1400
  data.pareto.min_count = 1
  data.image_size = 224
  data.store_size = 256
  data.eval_resize = 256
  config.model.backbone = 'resnet50'
  config.model.pretrained = 'torchvision'
  config.model.projection_dim = 1024    # d
  config.comic.htb.attention_dim = 1024
  config.augment.kind = 'resized_crop'  # scale 0.5-1, flip, rotation 15 degrees
  config.augment.rand_augment_tail = True
  config.batch_size = 32
  config.eval_batch_size = 128
  config.num_epochs = 40
  optim = config.optim
  optim.optimizer = 'adam'
  optim.weight_decay = 1e-4
  optim.learning_rate = 1e-3            # projection and attention
  optim.lr_scale.classifier = 0.1       # 1e-4 for the classifier
  optim.lr_scale.backbone = 0.1         # fine-tuning the pretrained ResNet (the authors froze it)
  optim.schedule = 'step'
  optim.step_epochs = (12, 24)          # x0.1 (the authors decay every 12-24 epochs by branch)
  optim.step_factor = 0.1
  return config
