"""Your own arrays: an .npz with x_train, y_train, x_test, y_test (+ optional y_train_full,
class_names). With feature vectors (N, D) the MLP backbone trains in seconds:

    python -m comic_jax.main --config=configs/npz.py --config.data.path=mine.npz --workdir=runs/mine

With images (N, H, W, 3) uint8, pick a backbone: --config.model.backbone=small_cnn (or resnet18).
The data is taken as it is: its own class frequencies (data.longtail='as_is') and its labels as
they are (data.partial='as_is', a 0 is "not labelled"; y_train may hold -1 for unknown, and then
its 0 entries are known negatives, docs/data.md "Known negatives"). A fifth of the training rows
is the validation split (data.val_fraction), which picks COMIC+'s reported model
(comic_plus.report='auto') and the per-class thresholds that predict uses. To benchmark on
fully-labelled arrays instead, hide positives: --config.data.partial=simulate (with
data.missing_ratio) and --config.data.longtail=pareto to subsample a long tail.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.method = 'comic_plus'          # COMIC+ for your data; 'comic' reproduces the paper
  config.comic_plus.report = 'auto'
  data = config.data
  data.name = 'npz'
  data.longtail = 'as_is'               # your data's own class frequencies
  data.partial = 'as_is'                # your labels are the partial ones: nothing more hidden
  data.val_fraction = 0.2               # validation split: reported model and thresholds
  config.model.backbone = 'mlp'
  config.model.mlp_widths = (512,)
  config.model.projection_dim = 256
  config.comic.htb.attention_dim = 128
  config.augment.kind = 'none'
  config.num_epochs = 30
  return config
