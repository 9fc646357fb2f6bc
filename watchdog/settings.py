"""The watchdog's configuration variables (see deltawire.config for the rules).

Every ``watchdog`` flag that has a variable here falls back to it: flags beat
the environment, which beats ``.env.${ENVIRONMENT}`` / ``.env``, which beats
the defaults below.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass
from typing import Literal

from deltawire import config
from deltawire.config import Var, setting, variables
from deltawire.logs import LOG_VARS, LogSettings
from deltawire.protocol.frames import MAX_HELLO_TAG_CHARS, MAX_HELLO_TAGS, MAX_HELLO_TOKEN_CHARS

__all__ = [
    "DEFAULT_SPOOL_DIR",
    "LOG_VARS",
    "WATCHDOG_VARS",
    "WatchdogSettings",
    "parse_path",
    "parse_positive_float",
]

#: XDG's place for state that should survive restarts but is not user data.
#: Per user, so that two users' watchdogs never share (or fight over) a spool.
DEFAULT_SPOOL_DIR = "~/.local/state/deltawire/spool"


def parse_positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number > 0") from None
    if not 0 < value < float("inf"):
        raise ValueError("must be a number > 0")
    return value


def parse_positive_int(text: str) -> int:
    try:
        value = config.parse_int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def parse_path(text: str) -> pathlib.Path:
    text = text.strip()
    if not text:
        raise ValueError("must be a path")
    return pathlib.Path(os.path.expanduser(text))


def _parse_tags(text: str) -> tuple[str, ...]:
    """Tags within the hello's limits, so a bad one stops the watchdog at
    start (a usage error) instead of every connection being refused later."""
    tags = config.parse_list(text)
    if len(tags) > MAX_HELLO_TAGS:
        raise ValueError(f"at most {MAX_HELLO_TAGS} tags (got {len(tags)})")
    for tag in tags:
        if len(tag) > MAX_HELLO_TAG_CHARS:
            raise ValueError(f"each tag must be at most {MAX_HELLO_TAG_CHARS} characters "
                             f"({tag[:16]!r}... has {len(tag)})")  # fmt: skip
    return tags


def _parse_token(text: str) -> str:
    if len(text) > MAX_HELLO_TOKEN_CHARS:
        raise ValueError(f"must be at most {MAX_HELLO_TOKEN_CHARS} characters")
    return text


def _parse_max_bytes(text: str) -> int:
    value = config.parse_bytes(text)
    # Below a few records the bound could not hold even one flush.
    if value < 4096:
        raise ValueError("must be at least 4k")
    return value


@dataclass(frozen=True)
class WatchdogSettings(LogSettings):
    """``watchdog run`` and ``watchdog spool``: one object, built once by
    ``deltawire.config.load``."""

    collector: tuple[str, int] = setting(
        "WATCHDOG_COLLECTOR",
        "127.0.0.1:7700",
        "Collector ingest address HOST:PORT.",
        config.parse_hostport,
    )
    # Per-second data, as Netdata shows, sent every 4 s: a chart moves while
    # its process runs, and the bandwidth and CPU goals (issue 16) are measured
    # at exactly this point (1 s: < 0.5% of a core; bytes per sample at push 4).
    interval: float = setting(
        "WATCHDOG_INTERVAL", "1", "Seconds between two samples.", parse_positive_float
    )
    push_every: int = setting(
        "WATCHDOG_PUSH_EVERY",
        "4",
        "Samples collected per send: with interval 1 and push_every 4 the watchdog\n"
        "samples every second and sends every 4 s. The first sample, events and the\n"
        "end of the session are sent at once.",
        parse_positive_int,
    )
    token: str = setting(
        "WATCHDOG_TOKEN",
        "",
        "Token presented to the collector in hello (INGEST_TOKENS there).",
        _parse_token,
    )
    tags: tuple[str, ...] = setting(
        "WATCHDOG_TAGS",
        "",
        "Comma-separated tags attached to the session (at most 64, of at most 128\n"
        "characters each: the hello's limits).",
        _parse_tags,
    )
    spool_dir: pathlib.Path = setting(
        "WATCHDOG_SPOOL_DIR",
        DEFAULT_SPOOL_DIR,
        "Where frames wait on disk until the collector acknowledged them. One\n"
        "subdirectory per session; a restarted watchdog delivers what is left.",
        parse_path,
    )
    spool_max_bytes: int = setting(
        "WATCHDOG_SPOOL_MAX_BYTES",
        "256MiB",
        "Bound of one session's spool; beyond it the oldest data is dropped (and the\n"
        "number dropped is reported as a 'watchdog.spool_dropped' event).",
        _parse_max_bytes,
    )
    fsync: Literal["always", "batch", "never"] = setting(
        "WATCHDOG_FSYNC",
        "batch",
        "When spooled frames are fsynced: always (each frame), batch (each send)\n"
        "or never (left to the OS: a power loss may lose the last seconds).",
        config.choice("always", "batch", "never"),
    )
    replay: Literal["auto", "manual"] = setting(
        "WATCHDOG_REPLAY",
        "manual",
        "Backlogs left in the spool by earlier runs: auto sends them all; manual sends\n"
        "those up to WATCHDOG_REPLAY_ASK_BYTES and leaves bigger ones to\n"
        "'watchdog spool send' (or 'purge').",
        config.choice("auto", "manual"),
    )
    replay_rate: int = setting(
        "WATCHDOG_REPLAY_RATE",
        "128KiB",
        "Cap on the bytes per second the watchdog sends (a backlog is replayed at\n"
        "this rate, so it cannot flood a thin link). 0: no cap.",
        config.parse_bytes,
    )
    replay_ask_bytes: int = setting(
        "WATCHDOG_REPLAY_ASK_BYTES",
        "16MiB",
        "With WATCHDOG_REPLAY=manual, older backlogs above this size wait for\n"
        "'watchdog spool send'.",
        config.parse_bytes,
    )
    mounts: tuple[str, ...] = setting(
        "WATCHDOG_MOUNTS",
        "/",
        "Comma-separated mount points whose disk usage is sampled.",
        config.parse_list,
    )
    keyframe_every: int = setting(
        "WATCHDOG_KEYFRAME_EVERY",
        "100",
        "A full sample (snap) every this many samples of a stream; deltas between.",
        parse_positive_int,
    )
    shutdown_grace: float = setting(
        "WATCHDOG_SHUTDOWN_GRACE",
        "5",
        "Seconds to wait for the collector to acknowledge the end of the session\n"
        "before exiting anyway (what is unsent stays in the spool).",
        config.parse_float,
    )
    dashboard: str = setting(
        "WATCHDOG_DASHBOARD",
        "",
        "The collector's dashboard (its HTTP address), for the session link 'watchdog run'\n"
        "prints. Empty: http://<the collector's host>:8080.",
    )
    tls: bool = setting(
        "WATCHDOG_TLS", "false", "Connect to the collector over TLS.", config.parse_bool
    )
    tls_ca: str = setting(
        "WATCHDOG_TLS_CA",
        "",
        "PEM file of the CA that signed the collector's certificate (implies TLS).\n"
        "Empty: the system's trust store.",
    )


WATCHDOG_VARS: tuple[Var, ...] = tuple(
    var for var in variables(WatchdogSettings) if var not in LOG_VARS
)
