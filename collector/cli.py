"""The ``collector`` command: ``serve``, ``tail`` and ``replay``."""

from __future__ import annotations

import errno
import os
import pathlib
import socket
import sys
from typing import Any

import click
import orjson
import trio

from deltawire import __version__
from deltawire.config import ConfigError, flag_help, load, parse_hostport
from deltawire.logs import setup_logging

from .settings import COLLECTOR_VARS, LOG_VARS, STORE_VARS, CollectorSettings

__all__ = ["main"]

_DEFAULT_PORT = 7700


def _h(text: str, name: str) -> str:
    return flag_help(text, (*COLLECTOR_VARS, *STORE_VARS, *LOG_VARS), name)


def in_use_message(addr: tuple[str, int], what: str, flag: str) -> str:
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return (f"{host}:{addr[1]} is already in use ({what}): another collector may be running; "
            f"stop it or choose another address with {flag}")  # fmt: skip


def check_free(addr: tuple[str, int], what: str, flag: str) -> None:
    """Fail before starting anything when a port is taken, naming the address
    (the bind error itself says only "Address already in use")."""
    host, port = addr
    if port == 0:
        return
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise click.UsageError(f"{flag}: cannot resolve {host!r}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        # As the real listeners do: a port whose old connections linger is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(in_use_message(addr, what, flag)) from None
            raise click.ClickException(f"cannot listen on {host}:{port} ({what}): "
                                       f"{exc.strerror}") from None  # fmt: skip


def _settings(overrides: dict[str, Any]) -> CollectorSettings:
    try:
        return load(CollectorSettings, overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _hostport(name: str, text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise click.UsageError(f"{name}: {text!r} {exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="collector")
def cli() -> None:
    """deltawire collector: ingest agent streams, store them, serve them over HTTP.

    Settings come from .env.${ENVIRONMENT} (or .env), then the environment, then
    flags. See .env.sample for every variable.
    """


@cli.command()
@click.option("--listen", metavar="HOST:PORT", help=_h("Ingest address (none: 127.0.0.1:7700 "
              "without tokens, 0.0.0.0:7700 with)", "COLLECTOR_LISTEN"))  # fmt: skip
@click.option("--http", "http_addr", metavar="HOST:PORT",
              help=_h("HTTP API and dashboard address", "COLLECTOR_HTTP"))  # fmt: skip
@click.option("--no-http", is_flag=True, help="Do not start the HTTP API process.")
@click.option("--api-workers", metavar="N", help=_h("HTTP API processes on that port, or auto",
              "API_WORKERS"))  # fmt: skip
@click.option("--store", metavar="URI", help=_h("sqlite:///PATH or mongodb://...", "STORE_URI"))
@click.option("--token", "tokens", multiple=True, help=_h("Accepted ingest token, repeatable "
              "(the variable: comma-separated)", "INGEST_TOKENS"))  # fmt: skip
@click.option("--tls-cert", type=click.Path(dir_okay=False), help=_h("PEM certificate", "TLS_CERT"))
@click.option("--tls-key", type=click.Path(dir_okay=False), help=_h("PEM key", "TLS_KEY"))
@click.option("--compress/--no-compress", default=None, help=_h("Accept zstd stream "
              "compression when an agent offers it", "INGEST_COMPRESS"))  # fmt: skip
@click.option("--capture-dir", type=click.Path(file_okay=False), help=_h("Record each "
              "connection's inbound bytes here", "CAPTURE_DIR"))  # fmt: skip
@click.option("--max-connections", type=int, help=_h("Open ingest connections allowed",
              "MAX_CONNECTIONS"))  # fmt: skip
@click.option("--max-frame-bytes", type=str, help=_h("Longest accepted line",
              "MAX_FRAME_BYTES"))  # fmt: skip
@click.option("--idle-timeout", type=float, help=_h("Seconds without a frame before closing",
              "IDLE_TIMEOUT"))  # fmt: skip
@click.option("--queue-size", type=int, help=_h("Ingest queue capacity, in chunks", "QUEUE_SIZE"))
@click.option("--batch-max-docs", type=int, help=_h("Documents per write batch at most",
              "BATCH_MAX_DOCS"))  # fmt: skip
@click.option("--batch-max-ms", type=float, help=_h("Milliseconds a batch may wait to fill",
              "BATCH_MAX_MS"))  # fmt: skip
@click.option("--writer", type=click.Choice(["process", "thread"]),
              help=_h("Who commits batches", "STORE_WRITER"))  # fmt: skip
@click.option("--redis", "redis_uri", metavar="URI", help=_h("Redis for the query cache (none: "
              "in-process)", "REDIS_URI"))  # fmt: skip
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help=_h("", "LOG_LEVEL"))  # fmt: skip
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]),
              help=_h("auto: text at a terminal, JSON otherwise", "LOG_FORMAT"))  # fmt: skip
def serve(**flags: Any) -> None:
    """Run the collector until SIGTERM/SIGINT (then drain, ack and stop)."""
    from deltawire.protocol import CODECS

    from .api_process import auto_workers
    from .hub import IngestConfig
    from .pipeline import PipelineConfig
    from .server import ServeConfig
    from .server import serve as run_serve

    overrides = {
        "COLLECTOR_LISTEN": flags["listen"],
        "COLLECTOR_HTTP": flags["http_addr"],
        "API_WORKERS": flags["api_workers"],
        "STORE_URI": flags["store"],
        "INGEST_TOKENS": tuple(flags["tokens"]) or None,
        "TLS_CERT": flags["tls_cert"],
        "TLS_KEY": flags["tls_key"],
        "CAPTURE_DIR": flags["capture_dir"],
        "INGEST_COMPRESS": flags["compress"],
        "MAX_CONNECTIONS": flags["max_connections"],
        "MAX_FRAME_BYTES": flags["max_frame_bytes"],
        "IDLE_TIMEOUT": flags["idle_timeout"],
        "QUEUE_SIZE": flags["queue_size"],
        "BATCH_MAX_DOCS": flags["batch_max_docs"],
        "BATCH_MAX_MS": flags["batch_max_ms"],
        "REDIS_URI": flags["redis_uri"],
        "STORE_WRITER": flags["writer"],
        "LOG_LEVEL": flags["log_level"],
        "LOG_FORMAT": flags["log_format"],
    }
    s = _settings(overrides)
    # The writer and API processes inherit the environment: they log alike.
    os.environ["LOG_FORMAT"] = s.log_format
    setup_logging(s.log_level, s.log_format)
    tokens = frozenset(s.tokens)
    listen_text = s.listen or (f"0.0.0.0:{_DEFAULT_PORT}" if tokens
                                            else f"127.0.0.1:{_DEFAULT_PORT}")  # fmt: skip
    listen = _hostport("COLLECTOR_LISTEN", listen_text)
    http = None if flags["no_http"] else s.http
    check_free(listen, "ingest", "--listen / COLLECTOR_LISTEN")
    if http is not None:
        check_free(http, "HTTP API", "--http / COLLECTOR_HTTP")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise click.UsageError("TLS_CERT and TLS_KEY go together: set both or neither")
    if s.flow_low_water >= s.flow_high_water or s.flow_high_water > 1:
        raise click.UsageError("FLOW_LOW_WATER must be below FLOW_HIGH_WATER, both within 0..1")
    for name, value in (("QUEUE_SIZE", s.queue_size), ("BATCH_MAX_DOCS", s.batch_max_docs),
                        ("MAX_CONNECTIONS", s.max_connections),
                        ("MAX_FRAME_BYTES", s.max_frame_bytes)):  # fmt: skip
        if value < 1:
            raise click.UsageError(f"{name}: must be >= 1")
    api_args = ["--cache-ttl", str(s.cache_ttl), "--cache-size", str(s.cache_size),
                "--log-level", s.log_level, "--log-format", s.log_format]  # fmt: skip
    if s.redis_uri:
        api_args += ["--redis", s.redis_uri]
    cfg = ServeConfig(
        listen=listen,
        http=http,
        store_uri=s.store_uri,
        store_options=s.store_options(),
        ingest=IngestConfig(
            tokens=tokens,
            max_connections=s.max_connections,
            max_frame_bytes=s.max_frame_bytes,
            idle_timeout=s.idle_timeout,
            max_errors=s.max_errors,
            ack_interval=s.ack_interval_ms / 1000,
            flow_min_interval=s.flow_min_interval,
            shutdown_grace=s.shutdown_grace,
            capture_dir=pathlib.Path(s.capture_dir) if s.capture_dir else None,
            compress=CODECS if s.compress else (),
        ),
        pipeline=PipelineConfig(
            queue_size=s.queue_size,
            batch_max_docs=s.batch_max_docs,
            batch_max_ms=s.batch_max_ms,
            high_water=s.flow_high_water,
            low_water=s.flow_low_water,
            flow_min_interval=s.flow_min_interval,
        ),
        writer=s.store_writer,
        log_level=s.log_level,
        tls_cert=s.tls_cert,
        tls_key=s.tls_key,
        api_args=tuple(api_args),
        api_workers=s.api_workers or auto_workers(),
    )
    try:
        trio.run(run_serve, cfg)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:  # taken between the check above and the bind
            raise click.ClickException(in_use_message(listen, "ingest", "--listen")) from None
        raise click.ClickException(f"cannot serve: {exc}") from None
    except ValueError as exc:  # e.g. an unknown store URI scheme
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--to", "target", required=True, metavar="HOST:PORT", help="Collector ingest address."
)
@click.option("--rate", type=float, default=0.0, help="Lines per second (0: as fast as possible).")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the final ack after sending a file.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def replay(files: tuple[str, ...], target: str, rate: float, timeout: float, quiet: bool) -> None:
    """Stream captured files (one connection each) to a collector; report acks and errors.

    Exit code 0 when every file's frames were acknowledged, 1 otherwise.
    """
    from .replay import replay_files

    host, port = _hostport("--to", target)
    ok = trio.run(replay_files, [pathlib.Path(f) for f in files], host, port, rate, timeout, quiet)
    sys.exit(0 if ok else 1)


@cli.command()
@click.option("--session", metavar="ID", help="Only this session [default: any].")
@click.option("--name", metavar="NAME",
              help="Only this name: process, system, an event's [default: any].")  # fmt: skip
@click.option("--kind", type=click.Choice(["sample", "event", "session", "metric"]),
              help="Only this kind [default: any].")  # fmt: skip
@click.option("--host", metavar="HOST", help="Only this host [default: any].")
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="Only with this tag, repeatable: all must match [default: none].")  # fmt: skip
@click.option("--api", metavar="URL", help="The collector's HTTP API [default: http:// + "
              "COLLECTOR_HTTP, i.e. http://127.0.0.1:8080].")  # fmt: skip
@click.option("--key", metavar="KEY", envvar="DELTAWIRE_API_KEY", show_envvar=True,
              help="API key, if the collector has API_KEYS [default: none].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print each document as JSON, one per line.")
@click.option(
    "--color/--no-color", default=None, help="Colour [default: when stdout is a terminal]."
)
def tail(session: str | None, name: str | None, kind: str | None, host: str | None,
         tags: tuple[str, ...], api: str | None, key: str | None, as_json: bool,
         color: bool | None) -> None:  # fmt: skip
    """Follow what the collector stores, live (GET /stream), until Ctrl-C.

    One line per document: local time, session, kind, name and a summary. Filters
    combine (all must match). Exit code 2 if the collector refuses the filters.
    """
    from .tail import StreamFilters, TailError, follow, format_doc

    if api is None:
        from deltawire.links import dashboard_base

        api = dashboard_base(*_settings({}).http)
    use_color = sys.stdout.isatty() if color is None else color
    filters = StreamFilters(session, name, kind, host, tags)

    def on_doc(doc: dict[str, Any]) -> None:
        line = orjson.dumps(doc).decode() if as_json else format_doc(doc, use_color)
        click.echo(line, color=use_color)

    def on_state(state: str) -> None:
        text = f"tail: following {api}" if state == "connected" else f"tail: {state}"
        click.echo(click.style(text, dim=True) if use_color else text, err=True)

    try:
        follow(api, filters, on_doc, on_state, key=key)
    except TailError as exc:
        click.echo(f"tail: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="collector", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
