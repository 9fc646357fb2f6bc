"""Configuration: ``.env.${ENVIRONMENT}`` falling back to ``.env``, then the
process environment, then command-line flags (each overriding the one before).

Every variable is declared once, with its default, parser and help, as a
field of the typed settings class of the process that reads it (``setting``);
``load`` builds that object once, at start-up, from the env file, the
environment and the flags. The declarations produce ``.env.sample`` and the
error messages, so the three can never disagree. A bad value is reported as
``NAME: why (from where)``.

This module is the shared base: it knows neither the collector nor the
watchdog (a test walks the imports to keep it so).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "ENVIRONMENTS",
    "ConfigError",
    "Var",
    "configure",
    "default",
    "load",
    "load_env_files",
    "parse_auto_count",
    "parse_bool",
    "parse_bytes",
    "parse_float",
    "parse_hostport",
    "parse_int",
    "parse_list",
    "resolve",
    "sample_text",
    "setting",
    "variables",
]

ENVIRONMENTS = ("local", "dev", "test", "staging", "prod")


class ConfigError(Exception):
    """A variable or flag has a value that cannot be used. The message names it."""


@dataclass(frozen=True, slots=True)
class Var:
    name: str
    default: str
    help: str
    parse: Callable[[str], Any] = str


def parse_int(text: str) -> int:
    value = int(text.strip().replace("_", ""))
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def parse_auto_count(text: str) -> int:
    """A count, or ``auto`` (0: the component picks one for the machine)."""
    if text.strip().lower() == "auto":
        return 0
    value = parse_int(text)
    if value < 1:
        raise ValueError("must be >= 1, or auto")
    return value


def parse_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number >= 0")
    return value


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}  # fmt: skip


def parse_bytes(text: str) -> int:
    """``1048576``, ``512k``, ``64MiB``, ``1g`` (binary units)."""
    s = text.strip().lower().replace("_", "")
    digits = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(digits) :]
    if unit not in _UNITS or not digits:
        raise ValueError("must be a size like 1048576, 512k, 64MiB or 1g")
    value = int(float(digits) * _UNITS[unit])
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (all interfaces)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


__all__ += ["choice", "flag_help"]


def flag_help(text: str, variables: Iterable[Var], name: str) -> str:
    """A flag's help that names its variable and shows its default:
    ``"Seconds between samples [WATCHDOG_INTERVAL; default: 15]."``"""
    var = next(v for v in variables if v.name == name)
    default = var.default or "none"
    return f"{text} [{name}; default: {default}]." if text else f"[{name}; default: {default}]"


def _read_env_file(path: pathlib.Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigError(f"{path}:{lineno}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def load_env_files(
    environ: Mapping[str, str] | None = None, directory: pathlib.Path | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Merge the env file and the process environment.

    Returns ``(values, origin)``: origin names where each value came from, for
    error messages.
    """
    environ = os.environ if environ is None else environ
    directory = (
        pathlib.Path(environ.get("DELTAWIRE_CONFIG_DIR", ".")) if directory is None else directory
    )
    env_name = environ.get("ENVIRONMENT", "local").strip() or "local"
    if env_name not in ENVIRONMENTS:
        raise ConfigError(f"ENVIRONMENT: {env_name!r} must be one of {', '.join(ENVIRONMENTS)}")
    values: dict[str, str] = {}
    origin: dict[str, str] = {}
    for candidate in (directory / f".env.{env_name}", directory / ".env"):
        if candidate.is_file():
            for key, value in _read_env_file(candidate).items():
                values[key] = value
                origin[key] = str(candidate)
            break
    for key, value in environ.items():
        values[key] = value
        origin[key] = "environment"
    values.setdefault("ENVIRONMENT", env_name)
    return values, origin


def resolve(
    variables: Iterable[Var],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    directory: pathlib.Path | None = None,
) -> dict[str, Any]:
    """Parsed settings keyed by variable name; ``overrides`` (flags) win.

    Override values that are strings are parsed like env values; others are
    taken as already typed. ``None`` overrides are ignored (flag not given).
    """
    values, origin = load_env_files(environ, directory)
    overrides = overrides or {}
    settings: dict[str, Any] = {}
    for var in variables:
        if overrides.get(var.name) is not None:
            raw, where = overrides[var.name], "command line"
        else:
            raw, where = values.get(var.name, var.default), origin.get(var.name, "default")
        if not isinstance(raw, str):
            settings[var.name] = raw
            continue
        try:
            settings[var.name] = var.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{var.name}: {raw!r} {exc} (from {where})") from None
    return settings


T = TypeVar("T")


def setting(name: str, default: str, help: str, parse: Callable[[str], Any] = str) -> Any:
    """A field of a settings dataclass, declared by its variable.

    The field has no default of its own: ``default`` (text, as in the env
    file) is the one place it is declared, and ``load`` always passes a value.
    """
    return dataclasses.field(metadata={"var": Var(name, default, help, parse)})


def variables(settings_class: type) -> tuple[Var, ...]:
    """The variables a settings class reads, in declaration order."""
    return tuple(f.metadata["var"] for f in dataclasses.fields(settings_class))


def load(
    settings_class: type[T],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    directory: pathlib.Path | None = None,
) -> T:
    """The settings object, from the env file, the environment and
    ``overrides`` (flags, keyed by variable name; see ``resolve``)."""
    values = resolve(variables(settings_class), overrides, environ, directory)
    fields = dataclasses.fields(settings_class)  # type: ignore[arg-type]
    return settings_class(**{f.name: values[f.metadata["var"].name] for f in fields})


def default(settings_class: type, name: str) -> Any:
    """The default of variable ``name`` of ``settings_class``, parsed: for a
    component's own defaults, so that they are declared once, as settings."""
    var = next(v for v in variables(settings_class) if v.name == name)
    return var.parse(var.default)


def configure(target: Callable[..., T], settings: object, **values: Any) -> T:
    """The dataclass ``target`` from ``values`` and, for its other fields,
    ``settings``' attributes of the same names (fields that neither gives keep
    their defaults): a component's config taken from a process's settings
    without naming every field twice."""
    names = {f.name for f in dataclasses.fields(target)} - values.keys()  # type: ignore[arg-type]
    shared = {name: getattr(settings, name) for name in names if hasattr(settings, name)}
    return target(**shared, **values)


def sample_text(groups: Sequence[tuple[str, Sequence[Var]]]) -> str:
    """The body of ``.env.sample``: every variable, its default and its meaning."""
    out = [
        "# deltawire configuration. Copy to .env (or .env.local, .env.dev, .env.test,",
        "# .env.staging, .env.prod, picked by ENVIRONMENT) and edit. Real environment",
        "# variables override the file; command-line flags override both.",
        "# Generated from the declarations: make envsample",
        "",
        "# Which .env.${ENVIRONMENT} file to read (falls back to .env): " + "|".join(ENVIRONMENTS),
        "ENVIRONMENT=local",
    ]
    for title, variables in groups:
        out += ["", f"# --- {title} ---"]
        for var in variables:
            for line in var.help.splitlines():
                out.append(f"# {line}")
            out.append(f"{var.name}={var.default}")
    return "\n".join(out) + "\n"
