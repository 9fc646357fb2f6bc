"""``python -m deltawire.collector.api``: the HTTP API process.

The ingest process (trio) starts this with ``--control-stdin`` and keeps a pipe
to our stdin (see ``control.py``); started by hand it just serves. Serving runs
on uvicorn (uvloop + httptools when available), and the writes
(POST/PUT/PATCH/DELETE) are committed by a child of ours, the edit writer
(edit_writer.py), started and stopped with us and restarted if it dies.
The collector may start several of us on one port (``--workers``, peers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import logging
import os
import pathlib
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from deltawire.collector.settings import ApiSettings
from deltawire.config import ConfigError, configure, load
from deltawire.logs import setup_logging

if TYPE_CHECKING:
    from .deps import ApiConfig

__all__ = ["READY_LINE", "build_parser", "main"]

log = logging.getLogger("deltawire.collector.api")


#: The flags that stand for a variable (and beat it): flag -> (variable, metavar, help).
# fmt: off
_VAR_FLAGS = {
    "--http": ("COLLECTOR_HTTP", "HOST:PORT", "listen address (default 127.0.0.1:8080)"),
    "--store": ("STORE_URI", "URI", "sqlite:///PATH or mongodb://... (STORE_URI)"),
    "--redis": ("REDIS_URI", "URI", "Redis for the query cache; none: in-process LRU"),
    "--cache-ttl": ("CACHE_TTL", "S", "seconds a cached answer may live (default 5)"),
    "--cache-size": ("CACHE_SIZE", "N", "entries of the in-process LRU, in front of Redis if set (default 1024)"),
    "--store-threads": ("STORE_THREADS", "N", "store reads running at once, or auto (default auto: its share of the cores + 1 on SQLite, 4 a core on MongoDB)"),
    "--log-level": ("LOG_LEVEL", "L", "debug, info, warning (default) or error"),
    "--log-format": ("LOG_FORMAT", "F", "auto (default), json or text"),
}
# fmt: on


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m deltawire.collector.api",
        description="Serve the collector's HTTP API (GET /metrics, /query, /sessions, /stats, ...). "
        "Flags override the environment (COLLECTOR_HTTP, STORE_URI, REDIS_URI, CACHE_TTL, "
        "CACHE_SIZE, STORE_THREADS, LOG_LEVEL, LOG_FORMAT) and .env files.",
    )
    for flag, (_var, metavar, help_) in _VAR_FLAGS.items():
        p.add_argument(flag, metavar=metavar, help=help_)
    p.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=1,
        help="API processes sharing the port, this one included (default 1). The "
        "collector starts them (API_WORKERS) and passes --worker and --peers.",
    )
    p.add_argument(
        "--worker",
        metavar="I",
        type=int,
        default=0,
        help="which of the --workers this one is, from 0 (default 0)",
    )
    p.add_argument(
        "--peers",
        metavar="DIR",
        help="the workers' shared directory (peers.py); required with --workers > 1",
    )
    p.add_argument(
        "--control-stdin",
        action="store_true",
        help="read NDJSON control messages (stats, bump) on stdin and exit when it closes, "
        "and write 'ready' on stdout once listening; the ingest process passes this. "
        "Without it stdin is ignored.",
    )
    p.add_argument("--parent-pid", metavar="PID", type=int,
                   help="exit at most a few seconds after this process is gone (the ingest "
                   "process passes its own; default: none)")  # fmt: skip
    return p


def _settings(args: argparse.Namespace) -> ApiSettings:
    flags = vars(args)
    return load(ApiSettings, overrides={var: flags[flag[2:].replace("-", "_")]
                                        for flag, (var, _m, _h) in _VAR_FLAGS.items()})  # fmt: skip


_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _api_config(settings: ApiSettings) -> ApiConfig:
    """The API's knobs; ConfigError for keys that do not parse."""
    from .auth import parse_keys
    from .deps import ApiConfig

    try:
        keys = parse_keys(settings.api_keys)
    except ValueError as e:
        raise ConfigError(f"API_KEYS: {e}") from None
    return configure(ApiConfig, settings, keys=keys)


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's, saying ``ready`` on stdout once it listens (with
        ``--control-stdin``: the ingest process waits for every worker's
        before it says the collector is ready, api_process.py)."""

        def __init__(self, config: uvicorn.Config, announce: bool) -> None:
            super().__init__(config)
            self.announce = announce

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.announce and self.started:
                with contextlib.suppress(OSError):  # nobody reads: nobody waits
                    os.write(sys.stdout.fileno(), READY_LINE)

    return Server


#: What an API process started with --control-stdin writes on stdout once it listens.
READY_LINE = b"ready\n"


def _shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket other API workers bind too (SO_REUSEPORT: the
    kernel hands each new connection to one of them)."""
    family, type_, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(2048)  # uvicorn's backlog
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _serve(settings: ApiSettings, args: argparse.Namespace) -> int:
    import orjson
    import uvicorn

    from deltawire.collector.stores import open_store

    from .app import Deps, create_app
    from .cache import cache_namespace, make_cache
    from .control import ControlReader, apply_control
    from .edit_client import EditWriter, EditWriterFailed
    from .fast import FastGets, FastWrites
    from .http import protocol_class
    from .stats import IngestStats

    _Server = _server_class()
    uri = settings.store_uri
    # The same options as the ingest process, from the same environment:
    # above all APP_ENV, which names the database.
    store_options = settings.store_options()
    store = open_store(uri, **store_options)
    try:
        store.open()
    except Exception as e:
        log.error("cannot open the store: %s", e)
        return 1
    cache = make_cache(
        settings.redis_uri or None,
        ttl=settings.cache_ttl,
        size=settings.cache_size,
        namespace=cache_namespace(uri, store_options.get("app_env", "")),
        # One name on Redis for all the collector's API workers (cache.py)
        origin=None
        if args.workers == 1
        else hashlib.sha1(
            f"{socket.gethostname()}:{os.path.realpath(args.peers)}".encode()
        ).hexdigest()[:32],
    )
    ingest = IngestStats()
    api_config = _api_config(settings)
    editor = EditWriter(["--store", uri, "--options", orjson.dumps(store_options).decode(),
                         "--log-level", settings.log_level, "--log-format", settings.log_format,
                         "--parent-pid", str(os.getpid())])  # fmt: skip
    try:
        await editor.start()
    except EditWriterFailed as e:
        log.error("%s", e)
        store.close()
        return 1
    if args.workers > 1:
        api_config = dataclasses.replace(
            api_config,
            shared_limits=str(pathlib.Path(args.peers) / "limits"),
            workers=args.workers,
        )
    deps = Deps(store, cache, ingest, api_config, editor=editor)
    app = create_app(deps)
    host, port = settings.http
    if not api_config.keys.enabled and host not in _LOOPBACK:
        log.warning(
            "no API_KEYS: every request is admin, so the HTTP API binds 127.0.0.1 instead of %s",
            host,
        )
        host = "127.0.0.1"
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",  # we run the loop (uvloop) ourselves
        # JSON answers for the parser's own errors, a header deadline (http.py)
        http=protocol_class(api_config.header_timeout, FastGets(deps), FastWrites(deps)),
        lifespan="on",  # runs the /stream hub's task
        access_log=False,
        log_config=None,  # keep deltawire's JSON logging
        log_level=settings.log_level,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config, announce=args.control_stdin)
    sockets = None
    peers = None
    if args.workers > 1:
        from .peers import Peers, attach
        from .stats import counters_of

        try:
            sockets = [_shared_socket(host, port)]
        except OSError as e:
            log.error("cannot listen on %s:%d: %s", host, port, e)
            await editor.aclose()
            store.close()
            return 1
        peers = Peers(pathlib.Path(args.peers), args.worker, args.workers,
                      counters=lambda: counters_of(deps.stats, deps.cache, deps.edits))  # fmt: skip
        attach(peers, deps)
        peers.open()

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def consume() -> None:
        # Sequential, in arrival order: a bump must not overtake an older one.
        while (msg := await queue.get()) is not None:
            try:
                await apply_control(msg, cache, ingest)
                if msg.get("op") == "bump":
                    deps.hub.wake()  # something was stored: /stream reads it once for all
            except Exception:  # a bad message must not stop the next ones
                log.exception("control message failed: %r", msg.get("op"))
        log.info("control pipe closed: the ingest process is gone, shutting down")
        server.should_exit = True

    consumer = asyncio.create_task(consume())
    if args.control_stdin:
        ControlReader(
            sys.stdin.fileno(),
            deliver=lambda msg: loop.call_soon_threadsafe(queue.put_nowait, msg),
            on_eof=lambda: loop.call_soon_threadsafe(queue.put_nowait, None),
        ).start()

    # uvicorn handles SIGTERM/SIGINT during serve() (stop accepting, finish open
    # requests), then restores the previous handlers and re-raises the signal.
    # With the default handlers that re-raise would kill us before the cleanup
    # below; these make it (and any later signal) only ask for the shutdown.
    def on_signal(signum: int, frame: object) -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # What start-up allocated (modules, the app, the store) lives for good:
    # frozen, the collector's full collections never walk it again, and the
    # first generation is collected less often (request garbage is short-lived).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        await server.serve(sockets)
    except SystemExit as e:  # uvicorn exits when it cannot bind
        return int(e.code or 1) if not isinstance(e.code, str) else 1
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await editor.aclose()  # after the last request: nothing of theirs is under way
        if peers is not None:
            peers.close()
        await cache.aclose()
        store.close()
    return 0 if server.started else 1


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1 or not 0 <= args.worker < args.workers:
        print("error: --workers must be >= 1 and --worker within 0..N-1", file=sys.stderr)
        return 2
    if args.workers > 1 and not args.peers:
        print("error: --workers > 1 needs --peers (run `collector serve --api-workers N`, "
              "which starts the workers)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        settings = _settings(args)
        _api_config(settings)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    if args.parent_pid is not None:
        from deltawire.collector.lifeline import exit_with_parent

        exit_with_parent(args.parent_pid)
    if _has("uvloop"):
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_serve(settings, args))
    return asyncio.run(_serve(settings, args))


if __name__ == "__main__":
    sys.exit(main())
