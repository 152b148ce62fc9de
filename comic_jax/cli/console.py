"""Console scripts of `pip install .`: each runs its module exactly as `python -m` does (as
`__main__`, through `runpy`), so `comic-jax-train`, `comic-jax-benchmark`, `comic-jax-predict`,
`comic-jax-audit` and `comic-jax-convert` are `python -m comic_jax.main`, `.benchmark`,
`.predict`, `.audit` and `.data.convert`: the same flags, help and
errors (tests/test_console.py runs both forms)."""
import runpy

MODULES = {'train': 'comic_jax.main', 'benchmark': 'comic_jax.benchmark',
           'predict': 'comic_jax.predict', 'audit': 'comic_jax.audit',
           'convert': 'comic_jax.data.convert'}


def _run(module: str) -> None:
  runpy.run_module(module, run_name='__main__', alter_sys=True)


def train():
  _run(MODULES['train'])


def benchmark():
  _run(MODULES['benchmark'])


def predict():
  _run(MODULES['predict'])


def audit():
  _run(MODULES['audit'])


def convert():
  _run(MODULES['convert'])
