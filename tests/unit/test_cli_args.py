"""Every numeric option refuses what it cannot use with a usage error (exit 2) that
names it — before, ``nan``, ``inf`` or ``-1`` as a timeout ended a command with a
traceback from inside a library."""

from __future__ import annotations

import pytest

from gateway.cli import app as cli

# what each command needs besides the option, so that it parses
REQUIRED = {
    "alarm": ["-c", "gw.yaml", "list"],
    "check": ["-c", "gw.yaml"],
    "browse": ["-c", "gw.yaml", "--device", "plc"],
}
SECONDS = [
    ("status", "--timeout"),
    ("alarm", "--timeout"),
    ("alarm", "--duration"),
    ("check", "--online-timeout"),
    ("demo", "--duration"),
    ("browse", "--timeout"),
    ("scan", "--timeout"),
    ("scan", "--time-budget"),
]
COUNTS = [("scan", "--max-requests"), ("verify", "--window")]
NUMBERS = [("audit", "reinit", "--previous-n"), ("audit", "reinit", "--min-seq")]


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("command", "option"), SECONDS)
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "-1", "0", "1e999", "4e8", "5s", ""])
def test_a_duration_option_refuses_what_no_clock_can_wait(
    command: str, option: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused([command, f"{option}={bad}"], capsys)
    assert option in err and "seconds" in err, err


@pytest.mark.parametrize(("command", "option"), SECONDS)
def test_a_duration_option_takes_a_plain_number_of_seconds(command: str, option: str) -> None:
    parser = cli.build_parser()
    args, _ = parser.parse_known_args([command, *REQUIRED.get(command, []), option, "2.5"])
    assert getattr(args, option.lstrip("-").replace("-", "_")) == 2.5


@pytest.mark.parametrize("path", COUNTS + NUMBERS, ids=lambda p: " ".join(p))
@pytest.mark.parametrize("bad", ["-1", "1.5", "nan", "9" * 30, "0x10"])
def test_a_count_option_refuses_what_is_no_count(
    path: tuple[str, ...], bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    *command, option = path
    err = _refused([*command, f"{option}={bad}"], capsys)
    assert option in err and "integer" in err, err


def test_zero_is_no_count_but_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    assert "integer from 1" in _refused(["scan", "--max-requests=0"], capsys)
    argv = ["audit", "reinit", "-c", "gw.yaml", "--reason", "r", "--min-seq", "0"]
    args, _ = cli.build_parser().parse_known_args(argv)
    assert args.min_seq == 0


@pytest.mark.parametrize("bad", ["-1", "65536", "http"])
def test_the_console_port_is_a_port(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--console-port" in _refused(["demo", f"--console-port={bad}"], capsys)
