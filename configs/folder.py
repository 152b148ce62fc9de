"""Your own images: a folder of images and a JSON ({"path.jpg": [0/1, ...]}) or CSV
(filename,class1,class2,...) label file per split. The training labels may hold -1 (unknown):
then their 0 entries are known negatives (docs/data.md, "Known negatives").

    python -m comic_jax.main --config=configs/folder.py --config.data.path=images/ \
      --config.data.train_labels=train.csv --config.data.test_labels=test.csv --workdir=runs/mine

The training images are decoded once (cached), then trained like PLT-COCO (ResNet-50 from ImageNet
weights, random resized crops).
"""
from configs import coco


def get_config():
  config = coco.get_config()
  config.data.name = 'folder'
  config.data.longtail = 'as_is'
  return config
