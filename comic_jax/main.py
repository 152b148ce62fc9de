"""`python -m comic_jax.main`: train or evaluate one run (the command: comic_jax/cli/train.py).

    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo
"""
if __name__ == '__main__':
  from comic_jax.cli import train
  train.run()
