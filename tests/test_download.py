"""Downloads with a sha256 check (download.py), on local files only: no test touches the
network."""
import hashlib
import os

import pytest

from comic_jax import download
from comic_jax.errors import UserError


def test_download_checks_a_sha256_prefix_and_keeps_no_bad_file(tmp_path):
  content = b'pretend weights'
  digest = hashlib.sha256(content).hexdigest()
  src = tmp_path / 'src.pth'
  src.write_bytes(content)
  good = str(tmp_path / 'cache' / f'resnet18-{digest[:8]}.pth')
  assert download.fetch(src.as_uri(), good, digest[:8]) == good      # file:// works offline
  assert open(good, 'rb').read() == content
  bad = tmp_path / 'cache' / 'resnet18-f37072fd.pth'
  with pytest.raises(UserError, match='corrupt or incomplete'):
    download.fetch(src.as_uri(), str(bad), 'f37072fd')
  assert not bad.exists() and not os.path.exists(str(bad) + '.partial')
