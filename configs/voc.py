"""PLT-VOC with the paper's recipe: VOC 2012 trainval -> long-tailed training set, VOC 2007 test.

    python -m comic_jax.main --config=configs/voc.py --workdir=runs/voc

TFDS prepares VOC without TensorFlow on first use (the download size and what one run needs:
docs/data.md "PLT-COCO and PLT-VOC").
"""
from configs import coco


def get_config():
  config = coco.get_config()
  config.data.name = 'voc'
  config.data.pareto.shape = 12.0       # COMIC: b = 12, max 1400 (-> 2,569 images)
  config.data.pareto.max_count = 1400
  config.baselines.db.mu = 0.3          # DB's VOC values
  config.baselines.db.lam = 5.0
  return config
