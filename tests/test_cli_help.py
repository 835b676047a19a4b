"""What a newcomer reads first: `tunelab --help`, each command's `--help` and its argument errors."""
from __future__ import annotations

import pytest

from tui import cli


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_commands_help_starts_with_its_own_usage_line(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tunelab {command} [-h]"), out[:200]
    assert "[--images MODE]" not in out  # not the TUI's usage in front of it


def test_an_argument_error_names_the_command_not_the_tui_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "tunelab run: error: the following arguments are required: project, config" in err
    assert "[--images MODE]" not in err
