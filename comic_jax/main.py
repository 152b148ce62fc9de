"""`python -m comic_jax.main`: train or evaluate one run.

    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo
    python -m comic_jax.main --config=configs/synthetic.py --workdir=runs/demo --mode=eval
    python -m comic_jax.main --config=configs/synthetic.py --config.num_epochs=5 --workdir=...

Export a trained run with `python -m comic_jax.predict --mode=export`. (The command:
comic_jax/cli/train.py.)
"""
if __name__ == '__main__':
  from comic_jax.cli import train
  train.run()
