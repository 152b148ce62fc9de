"""Command-line helpers (cli.py): a user's mistake is one `error:` line and exit status 2. The
commands' own one-line errors are tested end to end in tests/test_reliability.py."""
import pytest

from comic_jax.cli import prologue as cli


def test_fail_prints_one_error_line_and_exits_with_status_2(capsys):
  with pytest.raises(SystemExit) as info:
    cli.fail('config.x=3 is\n  not   allowed')
  assert info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == '' and captured.err == 'error: config.x=3 is not allowed\n'
