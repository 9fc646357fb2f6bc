"""The documentation states the defaults the code has.

Every configuration table in docs/ (a table whose header starts with
``variable | default``) is checked against the declarations, and together
they document every variable; prose that quotes a default is checked too, and
every option of the main commands' ``--help`` shows its default.
"""

from __future__ import annotations

import pathlib
import re

import pytest
from click.testing import CliRunner

from deltawire.collector.cli import cli as collector_cli
from deltawire.collector.settings import COLLECTOR_VARS, LOG_VARS, STORE_VARS
from deltawire.config import Var
from deltawire.watchdog.cli import cli as watchdog_cli
from deltawire.watchdog.settings import WATCHDOG_VARS

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md"))
VARS: dict[str, Var] = {
    v.name: v for v in (*COLLECTOR_VARS, *STORE_VARS, *LOG_VARS, *WATCHDOG_VARS)
}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def documented_defaults() -> list[tuple[str, str, str]]:
    """(file, NAME, default as written) for every row of every variable table."""
    rows: list[tuple[str, str, str]] = []
    for doc in DOCS:
        in_table = False
        for line in doc.read_text(encoding="utf-8").splitlines():
            if not line.startswith("|"):
                in_table = False
                continue
            cells = _cells(line)
            if [c.lower() for c in cells[:2]] == ["variable", "default"]:
                in_table = True
                continue
            if not in_table or set(cells[0]) <= set("-: "):
                continue
            names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
            # "`a` / `b`" pairs; "`false` /" and a bare "/" are pairs with empty defaults.
            parts = re.split(r"(?:^|\s)/(?:\s|$)", cells[1]) if cells[1] else [""]
            defaults = [d.strip().strip("`") for d in parts]
            if len(defaults) == 1 and len(names) > 1:
                defaults *= len(names)
            assert len(names) == len(defaults), f"{doc.name}: {line}"
            rows += [(doc.name, n, d) for n, d in zip(names, defaults, strict=True)]
    return rows


ROWS = documented_defaults()


@pytest.mark.parametrize(("doc", "name", "default"), ROWS, ids=[f"{d}:{n}" for d, n, _ in ROWS])
def test_a_documented_default_is_the_declared_one(doc: str, name: str, default: str) -> None:
    assert name in VARS, f"{doc} documents {name}, which no longer exists"
    assert default == VARS[name].default, (
        f"{doc} says {name} defaults to {default!r}; the code says {VARS[name].default!r}"
    )


def test_every_variable_is_documented() -> None:
    missing = sorted(set(VARS) - {name for _, name, _ in ROWS})
    assert not missing, (
        f"add {', '.join(missing)} to a configuration table in docs/ "
        "(docs/collector.md or docs/watchdog.md: | variable | default | flag | meaning |)"
    )


def test_prose_quotes_the_ack_interval_of_the_code() -> None:
    ack_ms = VARS["ACK_INTERVAL_MS"].default
    for doc in [*DOCS, REPO / "README.md"]:
        text = " ".join(doc.read_text(encoding="utf-8").split())
        for said in re.findall(r"at most one (?:ack )?per (\d+) ms", text):
            assert said == ack_ms, f"{doc.name}: 'at most one per {said} ms', the code: {ack_ms}"
        for said in re.findall(r"`ACK_INTERVAL_MS`, (\d+) by default", text):
            assert said == ack_ms, doc.name


@pytest.mark.parametrize(
    ("cli", "args"),
    [
        (collector_cli, ["serve"]),
        (collector_cli, ["tail"]),
        (watchdog_cli, ["run"]),
        (watchdog_cli, ["spool", "send"]),
    ],
)
def test_help_shows_every_default(cli: object, args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=200)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    options = re.split(r"\n  (?=-)", result.output.split("Options:", 1)[1].strip("\n"))
    for option in options:
        flag = option.split()[0].rstrip(",")
        if flag in ("-h", "--help") or ("[" not in option and not _is_valued(option)):
            continue  # a plain on/off flag has nothing to default
        assert "default" in option.lower(), f"{' '.join(args)} --help: {flag} shows no default"
        for name, shown in re.findall(r"\[([A-Z][A-Z0-9_]+); default: ([^\]]*)\]", option):
            assert shown == (VARS[name].default or "none"), f"{flag}: {shown!r}"


def _is_valued(option: str) -> bool:
    # "--interval S  Seconds..." takes a value; "--no-http  Do not..." does not.
    head = [w for w in option.split("  ", 1)[0].split() if not w.endswith(",")]  # "-q, --quiet"
    return len(head) > 1 and not head[1].startswith("/")
