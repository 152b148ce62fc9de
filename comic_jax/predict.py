"""`python -m comic_jax.predict`: class probabilities and labels for new images, or a run exported.

    python -m comic_jax.predict --workdir=runs/demo --input=photos/ --output=predictions.csv
    python -m comic_jax.predict --workdir=runs/demo --input=arrays.npz --output=predictions.json
    python -m comic_jax.predict --workdir=runs/demo --mode=export --output=runs/demo/export

(The command: comic_jax/cli/predict.py; the API, `comic_jax.load`: comic_jax/inference/predict.py.)
"""


def __getattr__(name):
  """`comic_jax.predict.load`, as before, imported on first use: the command parses its flags
  (and answers --help or a flag's error) before JAX is imported."""
  if name == 'load':
    from comic_jax.inference.predict import load
    return load
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


if __name__ == '__main__':
  from comic_jax.cli import predict
  predict.run()
