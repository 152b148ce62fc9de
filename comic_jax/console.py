"""Console scripts of `pip install .`: `comic-jax-train`, `comic-jax-benchmark`,
`comic-jax-predict` are `python -m comic_jax.main`, `.benchmark` and `.predict`."""
from absl import app


def train():
  from comic_jax import cli, main
  app.run(main.main, flags_parser=cli.parse_flags)


def benchmark():
  from comic_jax import benchmark as runner, cli
  app.run(runner.main, flags_parser=cli.parse_flags)


def predict():
  from comic_jax import predict as predictor
  predictor.run_cli()
