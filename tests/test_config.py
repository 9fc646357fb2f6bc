"""Configuration: env files per ENVIRONMENT, precedence, clear errors, .env.sample in sync."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from deltawire.config import (
    ConfigError,
    Var,
    configure,
    load_env_files,
    parse_auto_count,
    parse_bytes,
    parse_hostport,
    parse_int,
    resolve,
)
from deltawire.tools.envsample import groups, main

REPO = pathlib.Path(__file__).resolve().parent.parent
VARS = (Var("PORT", "1", "a port", parse_int), Var("NAME", "x", "a name"))


def test_env_sample_is_generated_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    main([])
    generated = capsys.readouterr().out
    assert (REPO / ".env.sample").read_text() == generated, "run: make envsample"
    for _title, variables in groups():
        for var in variables:
            assert f"\n{var.name}=" in generated


def test_environment_selects_file_and_falls_back(tmp_path: pathlib.Path) -> None:
    (tmp_path / ".env").write_text("PORT=2\nNAME=plain\n")
    (tmp_path / ".env.staging").write_text("# staging\nexport PORT=3\nNAME='quoted value'\n")
    assert resolve(VARS, environ={}, directory=tmp_path) == {"PORT": 2, "NAME": "plain"}
    got = resolve(VARS, environ={"ENVIRONMENT": "staging"}, directory=tmp_path)
    assert got == {"PORT": 3, "NAME": "quoted value"}
    # dev has no file of its own: falls back to .env
    assert resolve(VARS, environ={"ENVIRONMENT": "dev"}, directory=tmp_path)["PORT"] == 2


def test_precedence_flags_over_environment_over_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / ".env").write_text("PORT=2\n")
    assert resolve(VARS, environ={"PORT": "5"}, directory=tmp_path)["PORT"] == 5
    assert resolve(VARS, {"PORT": "7"}, environ={"PORT": "5"}, directory=tmp_path)["PORT"] == 7
    assert resolve(VARS, {"PORT": None}, environ={}, directory=tmp_path)["PORT"] == 2


def test_bad_values_name_the_variable_and_the_source(tmp_path: pathlib.Path) -> None:
    (tmp_path / ".env").write_text("PORT=many\n")
    with pytest.raises(ConfigError, match=r"PORT: 'many' .*\.env\)"):
        resolve(VARS, environ={}, directory=tmp_path)
    with pytest.raises(ConfigError, match="ENVIRONMENT"):
        load_env_files({"ENVIRONMENT": "production"}, tmp_path)
    (tmp_path / ".env").write_text("this is not a setting\n")
    with pytest.raises(ConfigError, match=r"\.env:1"):
        load_env_files({}, tmp_path)


def test_parsers() -> None:
    assert parse_bytes("64MiB") == 64 << 20 and parse_bytes("512k") == 512 << 10
    assert parse_hostport(":7700") == ("0.0.0.0", 7700)
    assert parse_hostport("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError):
        parse_hostport("nope")
    assert parse_auto_count("auto") == 0 and parse_auto_count(" AUTO ") == 0
    assert parse_auto_count("3") == 3
    for bad in ("0", "-2", "many"):
        with pytest.raises(ValueError):
            parse_auto_count(bad)


@pytest.mark.parametrize("command", ["collector", "watchdog"])
def test_cli_reports_bad_config_without_traceback(tmp_path: pathlib.Path, command: str) -> None:
    (tmp_path / ".env").write_text("LOG_LEVEL=loud\n")
    args = ["serve"] if command == "collector" else ["run", "--system-only"]
    proc = subprocess.run([sys.executable, "-m", command, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "DELTAWIRE_CONFIG_DIR": str(tmp_path),
                               "HOME": str(tmp_path)})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "LOG_LEVEL" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [["collector", "--help"], ["collector", "serve", "--help"],
                                  ["collector", "replay", "--help"], ["watchdog", "--help"]])  # fmt: skip
def test_help(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0 and "Usage" in proc.stdout


def test_configure_takes_the_settings_of_the_same_names() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Component:
        a: int = 1
        b: str = "b"
        c: float = 3.0

    @dataclasses.dataclass
    class Settings:
        a: int
        b: str
        unrelated: str = "x"

    got = configure(Component, Settings(a=10, b="from settings"), b="given")
    assert got == Component(a=10, b="given", c=3.0)  # given wins; c keeps its default
