"""Links into the collector's dashboard (collector/api/dashboard.py serves them).

Kept free of web imports: the watchdog prints a session's link at start and
must not load Starlette for it.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["DEFAULT_HTTP_PORT", "dashboard_base", "session_url"]

DEFAULT_HTTP_PORT = 8080  # COLLECTOR_HTTP's default port


def dashboard_base(collector_host: str, port: int = DEFAULT_HTTP_PORT) -> str:
    """The dashboard of a collector on ``collector_host`` with default settings."""
    host = "127.0.0.1" if collector_host in ("", "0.0.0.0") else collector_host
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"http://{host}:{port}"


def session_url(base: str, session: str) -> str:
    """The dashboard page of ``session`` on the API at ``base`` (``http://host:port``)."""
    return f"{base.rstrip('/')}/ui/sessions/{quote(session, safe='')}"
