"""`python -m comic_jax.data.convert` (`comic-jax-convert`): a config's data set as ArrayRecord
shards (comic_jax/data/convert.py).

    python -m comic_jax.data.convert --config=configs/coco.py --output=/data/plt_coco_shards
"""
import os

from absl import flags
from ml_collections import config_flags

from comic_jax.cli import prologue

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'Config file of the source (e.g. '
                                  'configs/coco.py).', lock_config=True)
  flags.DEFINE_string('output', None, 'Folder to create with the shards and manifest.json.')
  flags.DEFINE_integer('records_per_shard', 1024, 'Records per ArrayRecord file.')
  flags.mark_flags_as_required(['config', 'output'])


def main(argv) -> None:
  prologue.no_arguments(argv)
  from comic_jax import progress
  from comic_jax.data import shard_writer as convert
  progress.configure(FLAGS.config.progress_bar)
  with prologue.user_errors():
    manifest = convert.convert(FLAGS.config.data, FLAGS.output, FLAGS.records_per_shard)
  counts = ', '.join(f'{s} {e["count"]}' for s, e in manifest['splits'].items())
  print(f'wrote {manifest["name"]} ({counts} images, {len(manifest["class_names"])} classes) '
        f'to {os.path.abspath(FLAGS.output)}')


def run() -> None:
  define_flags()
  prologue.run(main)
