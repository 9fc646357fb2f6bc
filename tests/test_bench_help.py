"""Every bench command answers ``--help`` with its usage and exits 0, doing
nothing else (``bench.nlquery`` once ignored its arguments and ran the whole
million-sample bench on ``--help``)."""

from __future__ import annotations

import importlib
import pathlib

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
COMMANDS = sorted(
    p.stem for p in BENCH.glob("*.py") if "\ndef main(" in p.read_text(encoding="utf-8")
)


def test_every_bench_command_is_listed() -> None:
    assert {"__main__", "ingest", "nlquery", "query", "api"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_exits_zero_without_running(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr()
    assert "usage:" in out.out
    assert "--help" in out.out
    assert out.err == ""  # no progress lines: nothing ran
