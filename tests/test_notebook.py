"""launch/colab.ipynb, executed top to bottom on the CPU (all but its install cell) with a tiny
setting: one epoch of BCE, the demo and the own-data run."""
import json
import os
import time

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'launch', 'colab.ipynb')


def _tagged(nb, tag):
  return [c for c in nb.cells if tag in c.metadata.get('tags', [])]


def test_colab_notebook_runs_top_to_bottom(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  install, = _tagged(nb, 'install')
  assert '!pip install -q .' in install.source and '-r requirements.txt' not in install.source
  parameters, = _tagged(nb, 'parameters')
  nb.cells = [c for c in nb.cells if c is not install]
  runs = str(tmp_path / 'runs')
  parameters.source = f"METHOD = 'bce'\nEPOCHS = 1\nNPZ_PATH = ''\nRUNS = {runs!r}\n"
  start = time.time()
  # The kernel inherits this process's environment (4 fake CPU devices, JAX_PLATFORMS=cpu) and
  # starts in the repository root, where Colab's `%cd comic-jax` leaves it.
  nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                          resources={'metadata': {'path': ROOT}}).execute()
  seconds = time.time() - start
  print(f'notebook executed in {seconds:.0f}s')
  for run in ('demo', 'mine'):
    with open(os.path.join(runs, run, 'results.json')) as f:
      assert list(json.load(f)) == ['BCE']
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
            if 'image/png' in o.get('data', {})]
  assert len(images) >= 4      # curves, examples, per-class AP, the labelled test images
  text = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                 for o in c.get('outputs', []) if o.get('output_type') == 'stream')
  difference = float(text.split('largest difference to the workdir model:')[1].split()[0])
  assert difference <= 1e-6
  assert os.path.exists(os.path.join(runs, 'demo', 'export', 'model.jaxexport'))
