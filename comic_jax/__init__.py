"""comic-jax: COMIC and its baselines for long-tailed, partially labelled multi-label
classification. `comic_jax.load(workdir)` gives a trained model's predictor (see predict.py);
importing the package imports nothing heavy, so the command lines start fast."""

from comic_jax.versions import __version__  # noqa: F401 - recorded in every config.json


def load(workdir: str, **kwargs):
  """A Predictor of a run's workdir or of an exported folder: `.predict(images)` -> (N, C)
  probabilities, `.labels(images)` -> class names per image. See `comic_jax.predict.load`."""
  from comic_jax.inference import export
  if export.is_export(workdir):   # needs neither the model code nor the config files
    return export.load_export(workdir, **kwargs)
  from comic_jax.inference import predict
  return predict.load(workdir, **kwargs)
