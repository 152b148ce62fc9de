"""The run's writers (writers.py): TensorBoard event files with the logged numbers."""
import glob
import json
import os
import struct

import numpy as np
import optax


def _tensorboard_scalars(workdir):
  """{tag: [(step, value)]} read from the TFRecord event files with the protobufs alone (an
  independent reader: length, crc, payload, crc per record)."""
  from tensorboard.compat.proto import event_pb2
  out = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    data = open(path, 'rb').read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def test_runs_write_tensorboard_event_files_with_the_logged_numbers(comic_trained):
  workdir, config = comic_trained          # a finished 2-epoch COMIC run (conftest.py)
  scalars = _tensorboard_scalars(workdir)
  log = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  for tag, key in (('train/loss', ('train', 'loss')),
                   ('val/COMIC/total', ('val', 'COMIC', 'total')),
                   ('eval/COMIC/total', ('eval', 'COMIC', 'total')),     # the last line only
                   ('train/kappa_head', ('train', 'kappa_head')),
                   ('rlc/balanced/corrections', ('rlc', 'balanced', 'corrections'))):
    expected = []
    for line in log:
      v = line
      for k in key:
        v = v.get(k, {}) if isinstance(v, dict) else v
      if v != {}:
        expected.append((line['step'], v))
    assert expected, tag
    got = scalars[tag]
    assert [s for s, _ in got] == [s for s, _ in expected], tag
    np.testing.assert_allclose([v for _, v in got], [v for _, v in expected], rtol=1e-6)
  # The learning rate is the cosine schedule at the last step of each logged epoch.
  schedule = optax.cosine_decay_schedule(config.optim.learning_rate, log[-1]['step'])
  np.testing.assert_allclose([v for _, v in scalars['learning_rate']],
                             [schedule(line['step'] - 1) for line in log], rtol=1e-5)
