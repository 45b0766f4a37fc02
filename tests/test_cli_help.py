"""`megawatch <command> --help` works for every command in the CLI's table, so a new one is covered too."""

from __future__ import annotations

import pytest

from megawatch import cli

COMMANDS = sorted(cli._subcommands())


def test_the_table_has_the_commands_the_docs_name() -> None:
    assert {"simulate", "agent", "collector", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in COMMANDS)],
                         ids=lambda argv: " ".join(argv))
def test_help_exits_zero_with_a_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # argparse renders help lazily: a bad help string (a bare % in it) only fails here, not when parsing flags.
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == 0, err
    prog = " ".join(["megawatch", *argv[:-1]])
    assert out.startswith(f"usage: {prog}"), out[:200]
    assert len(out.splitlines()) > 3, out
