"""Progress bars: one switch for every bar of a command (`config.progress_bar`: training,
image decoding, the feature cache, label scans, conversion, the benchmark's runs), and bars
that make way for messages: an `error:` line starts a line of its own after every open bar is
ended (`end_bars`), a `warning:` line is written with the bars cleared and redrawn below it
(`tqdm.write`)."""
import sys

_SHOW = [True]


def configure(show: bool) -> None:
  """Turns every bar created from now on on or off (`config.progress_bar`)."""
  _SHOW[0] = bool(show)


def bar(**kwargs):
  """A `tqdm.tqdm(**kwargs)`, disabled while `configure(False)` holds."""
  import tqdm
  kwargs['disable'] = bool(kwargs.get('disable')) or not _SHOW[0]
  return tqdm.tqdm(**kwargs)


def _open_bars() -> list:
  tqdm = sys.modules.get('tqdm')
  return [] if tqdm is None else [b for b in list(tqdm.tqdm._instances) if not b.disable]


def end_bars() -> None:
  """Ends the line of every open bar (its last state stays on screen), so that the next line
  written starts at the left margin: before an `error:` line, when the command stops."""
  for b in _open_bars():
    b.leave = True
    b.close()


def message(line: str) -> None:
  """`line` on stderr on a line of its own: above the open bars, which are redrawn below it."""
  if _open_bars():
    import tqdm
    tqdm.tqdm.write(line, file=sys.stderr)
    sys.stderr.flush()
  else:
    print(line, file=sys.stderr, flush=True)


def log(line: str) -> None:
  """A progress line on stdout, written above the open bars."""
  import tqdm
  tqdm.tqdm.write(line)
