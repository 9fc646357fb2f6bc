"""The ``collector`` command: ``serve`` and ``replay``."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import click
import trio

from deltawire import __version__
from deltawire.config import ConfigError, load, parse_hostport
from deltawire.logs import setup_logging

from .settings import CollectorSettings

__all__ = ["main"]

_DEFAULT_PORT = 7700


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
@click.option("--listen", metavar="HOST:PORT", help="Ingest address [COLLECTOR_LISTEN; 127.0.0.1:7700 "
              "without tokens].")  # fmt: skip
@click.option("--http", "http_addr", metavar="HOST:PORT", help="HTTP API address [COLLECTOR_HTTP].")
@click.option("--no-http", is_flag=True, help="Do not start the HTTP API process.")
@click.option("--store", metavar="URI", help="sqlite:///PATH or mongodb://... [STORE_URI].")
@click.option("--token", "tokens", multiple=True, help="Accepted ingest token (repeatable) "
              "[INGEST_TOKENS].")  # fmt: skip
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate [TLS_CERT].")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM key [TLS_KEY].")
@click.option("--capture-dir", type=click.Path(file_okay=False), help="Record each connection's "
              "inbound bytes here [CAPTURE_DIR].")  # fmt: skip
@click.option("--max-connections", type=int, help="[MAX_CONNECTIONS]")
@click.option("--max-frame-bytes", type=str, help="[MAX_FRAME_BYTES]")
@click.option("--idle-timeout", type=float, help="Seconds [IDLE_TIMEOUT].")
@click.option("--queue-size", type=int, help="[QUEUE_SIZE]")
@click.option("--batch-max-docs", type=int, help="[BATCH_MAX_DOCS]")
@click.option("--batch-max-ms", type=float, help="[BATCH_MAX_MS]")
@click.option("--writer", type=click.Choice(["process", "thread"]), help="Who commits batches "
              "[STORE_WRITER].")  # fmt: skip
@click.option("--redis", "redis_uri", metavar="URI", help="Redis for the query cache [REDIS_URI].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="[LOG_LEVEL]")  # fmt: skip
def serve(**flags: Any) -> None:
    """Run the collector until SIGTERM/SIGINT (then drain, ack and stop)."""
    from .hub import IngestConfig
    from .pipeline import PipelineConfig
    from .server import ServeConfig
    from .server import serve as run_serve

    overrides = {
        "COLLECTOR_LISTEN": flags["listen"],
        "COLLECTOR_HTTP": flags["http_addr"],
        "STORE_URI": flags["store"],
        "INGEST_TOKENS": tuple(flags["tokens"]) or None,
        "TLS_CERT": flags["tls_cert"],
        "TLS_KEY": flags["tls_key"],
        "CAPTURE_DIR": flags["capture_dir"],
        "MAX_CONNECTIONS": flags["max_connections"],
        "MAX_FRAME_BYTES": flags["max_frame_bytes"],
        "IDLE_TIMEOUT": flags["idle_timeout"],
        "QUEUE_SIZE": flags["queue_size"],
        "BATCH_MAX_DOCS": flags["batch_max_docs"],
        "BATCH_MAX_MS": flags["batch_max_ms"],
        "REDIS_URI": flags["redis_uri"],
        "STORE_WRITER": flags["writer"],
        "LOG_LEVEL": flags["log_level"],
    }
    s = _settings(overrides)
    setup_logging(s.log_level, s.log_format)
    tokens = frozenset(s.tokens)
    listen_text = s.listen or (f"0.0.0.0:{_DEFAULT_PORT}" if tokens
                               else f"127.0.0.1:{_DEFAULT_PORT}")  # fmt: skip
    listen = _hostport("COLLECTOR_LISTEN", listen_text)
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
                "--log-level", s.log_level]  # fmt: skip
    if s.redis_uri:
        api_args += ["--redis", s.redis_uri]
    cfg = ServeConfig(
        listen=listen,
        http=None if flags["no_http"] else s.http,
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
    )
    try:
        trio.run(run_serve, cfg)
    except OSError as exc:
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
