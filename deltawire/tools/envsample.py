"""Print ``.env.sample`` from the settings declarations: ``make envsample``
(``python -m deltawire.tools.envsample``).

It reads both sides' settings classes, which is why it is a tool and not part
of the shared base."""

from __future__ import annotations

import sys

from deltawire.collector.settings import API_VARS, COLLECTOR_VARS, STORE_VARS
from deltawire.config import Var, sample_text
from deltawire.logs import LOG_VARS
from deltawire.watchdog.settings import WATCHDOG_VARS

__all__ = ["groups", "main"]


def groups() -> list[tuple[str, tuple[Var, ...]]]:
    return [
        ("collector: ingest", COLLECTOR_VARS),
        ("collector: store, cache and HTTP API", STORE_VARS),
        ("collector: HTTP API keys and limits", API_VARS),
        ("watchdog (the agent)", WATCHDOG_VARS),
        ("logging (both commands)", LOG_VARS),
    ]


_TEST_NOTE = """
# --- tests only (make test) ---
# Point the store contract tests at a real MongoDB instead of the FerretDB that
# the test fixtures start by themselves, e.g. make test MONGO_URI=mongodb://127.0.0.1:27017
# MONGO_URI=
# Likewise for Redis (otherwise a redis-server is started on a free port):
# REDIS_URI=
"""


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(sample_text(groups()) + _TEST_NOTE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
