"""The one checksummed download of the package (published id lists, torchvision weights).

Only the standard library: `models/resnet_weights.py` stays importable without JAX.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request

from comic_jax.errors import UserError


def sha256_of(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def fetch(url: str, dest: str, sha256: str, *, timeout: float = 60.0) -> str:
  """`dest`, downloaded from `url` unless a file whose sha256 starts with `sha256` (a full hex
  digest, or torch.hub's 8-character prefix) is already there. The download goes to a
  temporary file that is renamed only when its checksum matches; a bad one is deleted."""
  if os.path.isfile(dest) and sha256_of(dest).startswith(sha256):
    return dest
  try:
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
  except OSError as e:
    raise UserError(f'cannot create the folder of {dest}: {e.strerror or e}') from None
  partial = dest + '.partial'
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, 'wb') as f:
      shutil.copyfileobj(response, f, 1 << 20)
  except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
    if os.path.exists(partial):
      os.remove(partial)
    reason = ' '.join(str(getattr(e, 'reason', None) or e).split())
    raise UserError(f'could not download {url} ({reason}); download it by hand (e.g. curl -L -o '
                    f'{dest} {url})') from None
  got = sha256_of(partial)
  if not got.startswith(sha256):
    os.remove(partial)
    raise UserError(f'{url} is corrupt or incomplete (sha256 {got[:16]}..., expected '
                    f'{sha256[:16]}...): refusing to use it')
  os.replace(partial, dest)
  return dest
