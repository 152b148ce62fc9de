"""`config.refit`: choose on a carved validation split, then train on every training image.

A validation split carved from the training images (`data.val_fraction`) costs every method
those images. With `config.refit=True` and a carved split, a run trains twice:

1. `<workdir>/choice/`: the run as configured, on the training images left after the carve;
   the choices are made on the carve there (COMIC+'s `report='auto'`, the per-class F1
   thresholds of `thresholds.json`);
2. `<workdir>`: the same config on every training image (`data.val_fraction=0`), with the
   choices of step 1 fixed (`config.refit_choice` names the carve run's `val_results.json`, from
   which `ComicPlus.choose_report` makes the same choice); the carve run's `val_results.json`
   and `thresholds.json` are copied beside its results.

The test set is looked at only at the end of each step, as in any run. Without a carved split
(PLT-Synth's own validation set, `data.val_fraction=0`, shards converted with a 'val' split) a
refit run is an ordinary run. A rerun resumes whichever step was interrupted.
"""
from __future__ import annotations

import os

from comic_jax import atomic
from comic_jax.errors import require

CHOICE_DIR = 'choice'
COPIED = ('val_results.json', 'thresholds.json')   # the carve run's, beside the final results


def carves(config) -> bool:
  """Whether the run's validation split is carved from its training images."""
  return config.data.name != 'synthetic' and config.data.val_fraction > 0


def step_config(config, choice_dir: str | None = None):
  """The refit's first run (`choice_dir` None: the config as it is, one run), or its second:
  every training image, the carve run's choices fixed."""
  out = config.copy_and_resolve_references()
  out.unlock()
  out.refit = False
  if choice_dir is not None:
    out.data.val_fraction = 0.0
    out.refit_choice = os.path.join(choice_dir, 'val_results.json')
  out.lock()
  return out


def train_and_evaluate(config, workdir: str, train_fn, stop_after_epochs: int | None = None):
  """`train_fn` (train.train_and_evaluate) once, or twice for a refit (module docstring);
  returns the last run's state."""
  kwargs = {'stop_after_epochs': stop_after_epochs}
  if not (config.refit and carves(config)):
    return train_fn(config, workdir, **kwargs)
  choice_dir = os.path.join(workdir, CHOICE_DIR)
  state = train_fn(step_config(config), choice_dir, **kwargs)
  if not os.path.exists(os.path.join(choice_dir, 'results.json')):
    return state   # stopped early (stop_after_epochs): the final run comes with the rerun
  final = step_config(config, choice_dir)
  require(os.path.exists(final.refit_choice), f'{final.refit_choice} is missing: the carve '
          'run wrote no validation results')
  state = train_fn(final, workdir, **kwargs)
  for name in COPIED:
    source = os.path.join(choice_dir, name)
    if os.path.exists(source):
      with open(source, 'rb') as f:
        atomic.write_bytes(os.path.join(workdir, name), f.read())
  return state
