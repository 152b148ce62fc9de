"""`python -m comic_jax.data.convert`: a config's data set written as ArrayRecord shards.

    python -m comic_jax.data.convert --config=configs/coco.py --output=/data/plt_coco_shards
    comic-jax-convert --config=configs/folder.py --config.data.path=photos ... --output=DIR

Train on the result with `--config.data.name=shards --config.data.path=DIR`. (The command:
comic_jax/cli/convert.py; the writer: comic_jax/data/shard_writer.py.)
"""
if __name__ == '__main__':
  from comic_jax.cli import convert
  convert.run()
