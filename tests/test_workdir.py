"""The workdir (workdir.py): its lock, taken over from a dead process, and its metrics log,
repaired after a crash."""
import json
import os
import socket
import subprocess
import sys

from comic_jax.training import workdir as wd

PY = sys.executable


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
  dead = subprocess.Popen([PY, '-c', 'pass'])
  dead.wait()
  workdir = tmp_path / 'w'
  workdir.mkdir()
  (workdir / 'lock').write_text(json.dumps({'pid': dead.pid, 'host': socket.gethostname()}))
  wd.acquire_lock(str(workdir))
  assert json.loads((workdir / 'lock').read_text())['pid'] == os.getpid()
  assert f'took over the lock of pid {dead.pid} (gone)' in capsys.readouterr().err
  wd.release_lock(str(workdir))
  assert not (workdir / 'lock').exists()


def test_metrics_log_with_a_partial_last_line_is_repaired(tmp_path, capsys):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 4, "epoch": 1}\n{"step": 8, "epoch": 2}\n{"step": 12, "ep')
  wd.rewrite_metrics_log(str(path), max_step=8)
  assert [json.loads(line)['step'] for line in path.read_text().splitlines()] == [4, 8]
  assert 'dropped 1 unreadable line(s) (line 3' in capsys.readouterr().err
