"""Frozen-backbone mode vs end-to-end training: the speed-up of training COMIC's heads from cached
backbone features, measured in one run on this machine.

    python benchmarks/frozen_backbone.py [--backbone=resnet18] [--image_size=64] [--epochs=2]

Both runs train COMIC on PLT-Synth with the same backbone; "end to end" updates the backbone,
"feature cache" computes its features once per image and view, then trains only the heads.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from comic_jax.training import train  # noqa: E402
from configs import synthetic  # noqa: E402


def run(workdir, **overrides):
  config = synthetic.get_config()
  config.update_from_flattened_dict(overrides)
  start = time.time()
  train.train_and_evaluate(config, workdir)
  total = time.time() - start
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  # The last epoch's rate excludes compilation.
  return total, lines[-1]['train_img_per_sec'], lines[-1]['eval']['COMIC']['total']


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--backbone', default='resnet18')
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--epochs', type=int, default=2)
  parser.add_argument('--views', type=int, default=4)
  args = parser.parse_args()
  common = {'model.backbone': args.backbone, 'data.image_size': args.image_size,
            'num_epochs': args.epochs, 'progress_bar': False, 'eval_batch_size': 250}
  with tempfile.TemporaryDirectory() as tmp:
    e2e_total, e2e_rate, e2e_map = run(os.path.join(tmp, 'e2e'), **common)
    cache_total, cache_rate, cache_map = run(
        os.path.join(tmp, 'cache'), **common, **{'model.backbone_trainable': False,
                                                  'model.feature_cache': True,
                                                  'model.feature_views': args.views})
  print(f'\nCOMIC on PLT-Synth, {args.backbone} at {args.image_size}px, {args.epochs} epochs, '
        f'{args.views} cached views')
  print(f'  end to end     : {e2e_rate:8.0f} img/s per training epoch, run {e2e_total:6.1f}s')
  print(f'  feature cache  : {cache_rate:8.0f} img/s per training epoch, run {cache_total:6.1f}s '
        '(extraction included)')
  print(f'  speed-up per training epoch x{cache_rate / e2e_rate:.1f}; whole run '
        f'x{e2e_total / cache_total:.1f}')
  print(f'  (COMIC mAP after {args.epochs} epochs: end to end {e2e_map:.2f}, cached '
        f'{cache_map:.2f}; random weights, so only the speeds mean something here)')


if __name__ == '__main__':
  main()
