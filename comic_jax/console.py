"""Console scripts of `pip install .`: `comic-jax-train`, `comic-jax-benchmark`,
`comic-jax-predict`, `comic-jax-audit` are `python -m comic_jax.main`, `.benchmark`, `.predict`
and `.audit`."""
from absl import app


def train():
  from comic_jax import cli, main
  app.run(main.main, flags_parser=cli.parse_flags)


def benchmark():
  from comic_jax import benchmark as runner
  from comic_jax import cli
  app.run(runner.main, flags_parser=cli.parse_flags)


def predict():
  from comic_jax import predict as predictor
  predictor.run_cli()


def audit():
  from comic_jax import audit as auditor
  auditor.run_cli()
