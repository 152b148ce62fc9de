"""Your own arrays: an .npz with x_train, y_train, x_test, y_test (+ optional y_train_full,
class_names). With feature vectors (N, D) the MLP backbone trains in seconds:

    python -m comic_jax.main --config=configs/npz.py --config.data.path=mine.npz --workdir=runs/mine

With images (N, H, W, 3) uint8, pick a backbone: --config.model.backbone=small_cnn (or resnet18).
By default the data is taken as it is (already long-tailed) and positives are hidden with
data.missing_ratio; --config.data.partial=as_is if your labels are already partial,
--config.data.longtail=pareto to subsample a long tail. y_train may hold -1 (unknown): then
its 0 entries are known negatives (docs/data.md, "Known negatives").
"""
from configs import default


def get_config():
  config = default.get_config()
  config.method = 'comic'
  config.data.name = 'npz'
  config.data.longtail = 'as_is'
  config.model.backbone = 'mlp'
  config.model.mlp_widths = (512,)
  config.model.projection_dim = 256
  config.comic.htb.attention_dim = 128
  config.augment.kind = 'none'
  config.num_epochs = 30
  return config
