"""Start-up, speed and peak memory of the user's commands on a folder of photos, each command a
fresh process, in one run so that the ratios mean something:

  python benchmarks/command_speed.py [--root /tmp/command_speed] [--repeats 3] \
      [--baseline /path/to/another/checkout]

The folder: 600 photos at 224 px (`tests/photo_folder.py`: 2 x 2 mosaics of scikit-image's
photos, 12 classes; 400 training, 200 test), trained once with `configs/folder.py`'s defaults
(frozen EfficientNet-Lite0 features + COMIC+'s heads) and exported once. Then, round after
round, each command runs as a fresh process and is timed from outside (wall clock, and the
peak RSS of that process from `wait4`):

  predict the first 100 / all 600 / 1,800 photos (the 600 three times) from the workdir,
  predict 100 / 600 from the export, export (`--mode=export`, model.onnx included when the
  `onnx` extra is installed), audit (the 320 training photos).

Every command shares one persistent compilation cache (`JAX_COMPILATION_CACHE_DIR` under
--root), as a user's second command finds it; round 0 runs with it empty and is printed apart
(first use), the later rounds' medians give the table and the ratios. With --baseline, each
command also runs from that checkout's code, alternating with this one's, on the same workdir,
export and cache (the baseline's entries in the cache are its own compiled programs).

Targets: predicting from the workdir within 1.5x of predicting from the export (600 photos);
export and audit each within 2x of predicting 100 photos from the workdir; a predict's peak RSS
at most 1.5 GiB and flat in the number of photos.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30
# The slow code before this benchmark existed: the commands the ratios do not need, left out.
BASELINE_SKIPS = ('predict 1800 (workdir)', 'predict 100 (export)')


def run(cmd: list[str], code: str, env: dict, log) -> tuple[float, int]:
  """(wall seconds, peak RSS bytes) of `cmd` run with `code` as the package's checkout."""
  env = dict(env, PYTHONPATH=code)
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
  _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - start
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    raise SystemExit(f'{" ".join(cmd)} (in {code}) failed with status {proc.returncode}; '
                     f'see {log.name}')
  return wall, usage.ru_maxrss * 1024


def prepare(root: str, log) -> dict:
  """The photo folder, the input folders, the trained workdir and its export (each once)."""
  sys.path.insert(0, os.path.join(REPO, 'tests'))
  import photo_folder
  paths = {'photos': os.path.join(root, 'photos'), 'run': os.path.join(root, 'run'),
           'export': os.path.join(root, 'export'), 'cache': os.path.join(root, 'cache')}
  images = os.path.join(paths['photos'], 'images')
  if not os.path.isdir(images):
    photo_folder.make_folder(paths['photos'], n_train=400, n_test=200, size=224,
                             num_classes=12)
  files = sorted(os.listdir(images))
  for n, copies in ((100, 1), (600, 1), (1800, 3)):
    folder = paths[f'in{n}'] = os.path.join(root, f'in{n}')
    os.makedirs(folder, exist_ok=True)
    for c in range(copies):
      for f in files[:n // copies]:
        link = os.path.join(folder, f'c{c}_{f}')
        if not os.path.exists(link):
          os.symlink(os.path.join(images, f), link)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(root, 'xla_train'))
  if not os.path.isfile(os.path.join(paths['run'], 'results.json')):
    print('training once (configs/folder.py) ...', flush=True)
    wall, _ = run([sys.executable, '-m', 'comic_jax.main', '--config=configs/folder.py',
                   f'--config.data.path={images}',
                   f'--config.data.train_labels={paths["photos"]}/train.csv',
                   f'--config.data.test_labels={paths["photos"]}/test.csv',
                   f'--config.data.cache_dir={paths["cache"]}', f'--workdir={paths["run"]}'],
                  REPO, env, log)
    print(f'trained in {wall:.1f}s', flush=True)
  if not os.path.isfile(os.path.join(paths['export'], 'model.json')):
    run([sys.executable, '-m', 'comic_jax.predict', f'--workdir={paths["run"]}',
         '--mode=export', f'--output={paths["export"]}'], REPO, env, log)
  return paths


def commands(paths: dict, root: str) -> dict[str, list[str]]:
  py, out = sys.executable, os.path.join(root, 'out')

  def predict(source, n):
    return [py, '-m', 'comic_jax.predict', f'--workdir={paths[source]}',
            f'--input={paths[f"in{n}"]}', f'--output={out}/{source}{n}.csv']
  return {'predict 100 (workdir)': predict('run', 100),
          'predict 600 (workdir)': predict('run', 600),
          'predict 1800 (workdir)': predict('run', 1800),
          'predict 100 (export)': predict('export', 100),
          'predict 600 (export)': predict('export', 600),
          'export': [py, '-m', 'comic_jax.predict', f'--workdir={paths["run"]}', '--mode=export',
                     f'--output={out}/export'],
          'audit': [py, '-m', 'comic_jax.audit', f'--workdir={paths["run"]}',
                    f'--output={out}/suspects.csv']}


def ratios(med: dict) -> list[tuple[str, float, str]]:
  wall = {k: v[0] for k, v in med.items()}
  rss = {k: v[1] for k, v in med.items()}
  wall.setdefault('predict 100 (export)', float('nan'))
  rss.setdefault('predict 1800 (workdir)', float('nan'))
  return [
      ('predict 600: workdir / export', wall['predict 600 (workdir)'] /
       wall['predict 600 (export)'], '<= 1.5'),
      ('export / predict 100 (workdir)', wall['export'] / wall['predict 100 (workdir)'], '<= 2'),
      ('audit / predict 100 (workdir)', wall['audit'] / wall['predict 100 (workdir)'], '<= 2'),
      ('largest predict peak RSS, GiB', max(v for k, v in rss.items() if 'predict' in k) / GIB,
       '<= 1.5'),
      ('predict peak RSS: 1800 / 100 photos (workdir)', rss['predict 1800 (workdir)'] /
       rss['predict 100 (workdir)'], 'flat (~1)')]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', default='/tmp/command_speed')
  parser.add_argument('--repeats', type=int, default=3, help='timed rounds after round 0')
  parser.add_argument('--baseline', default=None, help='another checkout to time alongside')
  args = parser.parse_args()
  os.makedirs(os.path.join(args.root, 'out'), exist_ok=True)
  log = open(os.path.join(args.root, 'commands.log'), 'a')
  paths = prepare(args.root, log)
  codes = {'this': REPO} | ({'baseline': os.path.abspath(args.baseline)} if args.baseline else {})
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(args.root, 'xla'))
  cmds = commands(paths, args.root)
  skip = {('baseline', k) for k in BASELINE_SKIPS}
  times = {(c, k): [] for c in codes for k in cmds if (c, k) not in skip}
  for r in range(args.repeats + 1):
    for k, cmd in cmds.items():
      for c, code in (codes.items() if r % 2 == 0 else reversed(codes.items())):
        if (c, k) in skip:
          continue
        wall, rss = run(cmd, code, env, log)
        times[(c, k)].append((wall, rss))
        print(f'round {r} {c:8s} {k:24s} {wall:7.1f} s  {rss / GIB:5.2f} GiB', flush=True)
  for c in codes:
    done = [k for k in cmds if (c, k) in times]
    first = {k: times[(c, k)][0] for k in done}
    med = {k: (statistics.median(w for w, _ in times[(c, k)][1:] or times[(c, k)]),
               max(m for _, m in times[(c, k)])) for k in done}
    print(f'\n{c} ({codes[c]}): median of rounds 1-{args.repeats} (first use, empty '
          'compilation cache, in brackets); peak RSS the largest of every round\n')
    print('| command | wall s | first use s | peak RSS GiB |\n|---|---|---|---|')
    for k in done:
      print(f'| {k} | {med[k][0]:.1f} | {first[k][0]:.1f} | {med[k][1] / GIB:.2f} |')
    print('\n| ratio | measured | target |\n|---|---|---|')
    for name, value, target in ratios(med):
      print(f'| {name} | {value:.2f} | {target} |')


if __name__ == '__main__':
  main()
