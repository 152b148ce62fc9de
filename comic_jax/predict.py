"""`python -m comic_jax.predict`: predict new images or export a run (the command:
comic_jax/cli/predict.py; the API, `comic_jax.load`: comic_jax/inference/predict.py)."""
from comic_jax.inference.predict import load  # noqa: F401 - `comic_jax.predict.load`, as before

if __name__ == '__main__':
  from comic_jax.cli import predict
  predict.run()
