"""Logs on stderr: readable text with local times at a terminal, one JSON object
per line otherwise (or when LOG_FORMAT says so)."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson

from .config import Var, choice, setting, variables

__all__ = ["LOG_VARS", "LogSettings", "log_format", "setup_logging"]

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _RESERVED and not k.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()} {extra}".rstrip()


def log_format(fmt: str | None = None) -> str:
    """``json`` or ``text``: what ``fmt`` (``auto``, ``json``, ``text``) means here.

    None: the environment's LOG_FORMAT, so a child process (the collector's
    writer and API) logs like the parent that set it.
    """
    fmt = fmt or os.environ.get("LOG_FORMAT", "").strip().lower() or "auto"
    if fmt == "auto":  # people read a terminal; programs read what is piped or journaled
        return "text" if sys.stderr.isatty() else "json"
    return fmt


def setup_logging(level: str = "warning", fmt: str | None = None) -> None:
    fmt = log_format(fmt)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "pymongo", "hpack", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


@dataclass(frozen=True)
class LogSettings:
    """Logging, the same for every process (each process's settings extend it)."""

    log_level: str = setting(
        "LOG_LEVEL", "warning", "debug, info, warning or error.",
        choice("debug", "info", "warning", "error"),
    )  # fmt: skip
    log_format: str = setting(
        "LOG_FORMAT",
        "auto",
        "auto (text with local times at a terminal, json otherwise), json (one object\n"
        "per line) or text.",
        choice("auto", "json", "text"),
    )


LOG_VARS: tuple[Var, ...] = variables(LogSettings)
