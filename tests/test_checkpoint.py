"""Checkpoints (checkpoint.py): a checkpoint that cannot be written ends in one line."""
import numpy as np
import pytest

from comic_jax.errors import UserError
from comic_jax.training import checkpoint
from conftest import assert_one_line


def test_unwritable_checkpoints_end_in_one_line(tmp_path, monkeypatch):
  manager = checkpoint.create_manager(str(tmp_path), keep=1)

  def refuse(*args, **kwargs):
    raise PermissionError(13, 'Permission denied')
  monkeypatch.setattr(manager, 'save', refuse)
  with pytest.raises(UserError) as e:
    checkpoint.save(manager, 3, {'w': np.zeros(2)})
  assert_one_line(e, 'cannot write the checkpoint of step 3', 'Permission denied', 'rerun')
