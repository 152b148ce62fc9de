"""`python -m comic_jax.predict`: class probabilities and labels for new images, or a run exported.

    python -m comic_jax.predict --workdir=runs/demo --input=photos/ --output=predictions.csv
    python -m comic_jax.predict --workdir=runs/demo --input=arrays.npz --output=predictions.json
    python -m comic_jax.predict --workdir=runs/demo --mode=export --output=runs/demo/export

(The command: comic_jax/cli/predict.py; the API, `comic_jax.load`: comic_jax/inference/predict.py.)
"""
from comic_jax.inference.predict import load  # noqa: F401 - `comic_jax.predict.load`, as before

if __name__ == '__main__':
  from comic_jax.cli import predict
  predict.run()
