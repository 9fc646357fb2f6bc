"""The ``watchdog`` command: ``run``, ``emit`` and ``spool status|send|purge``."""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import click

from deltawire import __version__
from deltawire.config import ConfigError, configure, flag_help, load
from deltawire.logs import log_format, setup_logging
from deltawire.protocol.frames import MAX_NAME_CHARS

from .settings import LOG_VARS, WATCHDOG_VARS, WatchdogSettings

__all__ = ["cli", "main"]

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _h(text: str, name: str) -> str:
    return flag_help(text, (*WATCHDOG_VARS, *LOG_VARS), name)


def _settings(overrides: Mapping[str, Any]) -> WatchdogSettings:
    try:
        return load(WatchdogSettings, overrides)
    except ConfigError as exc:
        msg = str(exc)
        name = msg.split(":", 1)[0]
        if msg.endswith("(from command line)") and name in _FLAGS:
            msg = _FLAGS[name] + msg[len(name) :].replace(" (from command line)", "")
        raise click.UsageError(msg) from None


def _spool_dir_option(fn: Any) -> Any:
    return click.option("--spool-dir", metavar="DIR",
                        help=_h("Spool directory", "WATCHDOG_SPOOL_DIR"))(fn)  # fmt: skip


def _sessions_option(fn: Any) -> Any:
    return click.option("--session", "sessions", multiple=True, metavar="ID",
                        help="Only this session (repeatable). Default: every backlog.")(fn)  # fmt: skip


@click.group(context_settings=_CONTEXT)
@click.version_option(__version__, prog_name="watchdog")
def cli() -> None:
    """deltawire watchdog: supervise an application, sample it and the host, and
    stream the samples and the application's events to a collector without loss.

    Settings come from .env.${ENVIRONMENT} (or .env), then the environment, then
    flags. See docs/watchdog.md and .env.sample for every variable.
    """


class VarFlag(NamedTuple):
    """A flag of 'watchdog run' that stands for a variable (and beats it)."""

    flag: str
    var: str
    #: What the flag means; its variable and that variable's default are added.
    text: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    #: Repeatable: the name of its parameter (a tuple); the variable takes
    #: the values comma-separated.
    repeated: str = ""

    @property
    def param(self) -> str:
        return self.repeated or self.flag[2:].replace("-", "_")

    def option(self) -> Callable[[Any], Any]:
        kind: dict[str, Any] = (
            {"type": click.Choice(self.choices)} if self.choices else {"metavar": self.metavar}
        )
        names = (self.flag, self.repeated) if self.repeated else (self.flag,)
        return click.option(*names, multiple=bool(self.repeated), help=_h(self.text, self.var),
                            **kind)  # fmt: skip

    def override(self, value: Any) -> Any:
        """The flag's value as the variable's (None: not given)."""
        return (",".join(value) or None) if self.repeated else value


def _options(*options: VarFlag | Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Click options, listed by --help in the order given."""

    def decorate(fn: Any) -> Any:
        for option in reversed(options):
            fn = (option.option() if isinstance(option, VarFlag) else option)(fn)
        return fn

    return decorate


# One option a line: the table of what 'watchdog run' takes, in --help's order.
# fmt: off
_RUN_OPTIONS = (
    VarFlag("--collector", "WATCHDOG_COLLECTOR", "Collector ingest address", "HOST:PORT"),
    VarFlag("--interval", "WATCHDOG_INTERVAL", "Seconds between samples", "S"),
    VarFlag("--push-every", "WATCHDOG_PUSH_EVERY", "Samples per send (the first goes at once)", "N"),
    click.option("--session", metavar="ID", help="Session id [default: generated per run]. Reusing one continues it."),
    VarFlag("--token", "WATCHDOG_TOKEN", "Token for the collector", "T"),
    VarFlag("--tag", "WATCHDOG_TAGS", "Session tag, repeatable (the variable: comma-separated)", "TAG", repeated="tags"),
    VarFlag("--spool-dir", "WATCHDOG_SPOOL_DIR", "Spool directory", "DIR"),
    VarFlag("--spool-max-bytes", "WATCHDOG_SPOOL_MAX_BYTES", "Spool bound", "B"),
    VarFlag("--fsync", "WATCHDOG_FSYNC", "Spool fsync policy", choices=("always", "batch", "never")),
    VarFlag("--replay", "WATCHDOG_REPLAY", "Backlogs of earlier runs", choices=("auto", "manual")),
    VarFlag("--replay-rate", "WATCHDOG_REPLAY_RATE", "Send rate cap, 0 for none", "B/S"),
    VarFlag("--mount", "WATCHDOG_MOUNTS", "Mount point whose disk usage is sampled, repeatable", "PATH", repeated="mounts"),
    VarFlag("--dashboard", "WATCHDOG_DASHBOARD", "Dashboard URL for the printed session link (none: http://<collector host>:8080)", "URL"),
    click.option("--pid", type=int, metavar="PID", help="Watch this running process instead of a COMMAND [default: none]."),
    click.option("--system-only", is_flag=True, help="Sample the host alone."),
    VarFlag("--log-level", "LOG_LEVEL", "", choices=("debug", "info", "warning", "error")),
    VarFlag("--log-format", "LOG_FORMAT", "auto: text at a terminal, JSON otherwise", choices=("auto", "json", "text")),
    click.option("--quiet", "-q", is_flag=True, help="Do not print the session id and dashboard link on start."),
)
# fmt: on
#: The options that stand for variables, by parameter name.
_RUN = {o.param: o for o in _RUN_OPTIONS if isinstance(o, VarFlag)}
#: Flag name for each variable, so a bad flag is reported as the flag.
_FLAGS = {f.var: f.flag for f in _RUN.values()}


@cli.command(context_settings={"allow_interspersed_args": False})
@_options(*_RUN_OPTIONS)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- COMMAND [ARGS...]]")
def run(command: tuple[str, ...], pid: int | None, system_only: bool, session: str | None,
        quiet: bool, **flags: Any) -> int:  # fmt: skip
    """Supervise COMMAND (or --pid, or --system-only) and stream its telemetry.

    The watchdog exits with COMMAND's exit code (128+N if a signal N killed it);
    SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2 are forwarded to it. COMMAND finds
    the event socket in $DELTAWIRE_EVENTS (see 'watchdog emit').
    """
    import trio  # here, not at the top: `emit` and --help start without it

    from .agent import AgentConfig, AgentError, open_agent, run_session

    if sum((bool(command), pid is not None, system_only)) != 1:
        raise click.UsageError(
            "give exactly one of: -- COMMAND [ARGS...], --pid PID, --system-only"
        )
    s = _settings({_RUN[param].var: _RUN[param].override(v) for param, v in flags.items()})
    setup_logging(s.log_level, s.log_format)
    cfg = configure(AgentConfig, s, session=session, command=command, pid=pid,
                    system_only=system_only)  # fmt: skip
    try:
        agent = open_agent(cfg)
        if not quiet:
            _announce(agent.spool.session, s.dashboard, s.collector[0],
                      s.log_format)  # fmt: skip
        return trio.run(run_session, agent)
    except AgentError as exc:
        click.echo(f"watchdog: {exc}", err=True)
        return exc.exit_code


def _announce(session: str, dashboard: str, collector_host: str, fmt: str) -> None:
    """Where to look: the session id and its dashboard page, on stderr (the
    child owns stdout) before the child starts; whatever LOG_LEVEL says, and
    as a JSON line where logs are JSON."""
    from deltawire.links import dashboard_base, session_url

    url = session_url(dashboard or dashboard_base(collector_host), session)
    if log_format(fmt) == "json":
        announce = logging.getLogger("deltawire.watchdog.session")
        announce.setLevel(logging.INFO)
        announce.info("session", extra={"session": session, "dashboard": url})
        return
    click.echo(f"watchdog: session {click.style(session, bold=True)}", err=True)
    click.echo(f"watchdog: dashboard {click.style(url, fg='cyan')}", err=True)


@cli.command()
@click.argument("name")
@click.option("--data", metavar="JSON", help='Event data, a JSON object: \'{"version": "1.2"}\'.')
@click.option(
    "--socket",
    "socket_path",
    metavar="PATH",
    help="The watchdog's event socket [default: $DELTAWIRE_EVENTS, set by 'watchdog run'].",
)
def emit(name: str, data: str | None, socket_path: str | None) -> int:
    """Send event NAME to the watchdog supervising this shell script.

    Exit code 1 if no watchdog listens (e.g. not run under 'watchdog run').
    """
    from .client import ENV_VAR
    from .client import emit as send_event

    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise click.UsageError(f"NAME must be 1-{MAX_NAME_CHARS} characters")
    payload: dict[str, Any] | None = None
    if data is not None:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            raise click.UsageError(f"--data: not valid JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise click.UsageError("--data: must be a JSON object, e.g. '{\"key\": 1}'")
    path = socket_path or os.environ.get(ENV_VAR)
    if not path:
        raise click.ClickException(f"${ENV_VAR} is not set: run this under 'watchdog run', "
                                   "or pass --socket")  # fmt: skip
    if not send_event(name, payload, path=path):
        raise click.ClickException(f"no watchdog listens on {path}")
    return 0


@cli.group()
def spool() -> None:
    """Inspect, send or drop what waits in the spool.

    Each session has its own directory in the spool. One owned by a running
    watchdog is 'live'; the others are backlogs of earlier runs, which the next
    'watchdog run' delivers by itself (WATCHDOG_REPLAY=manual: if small).
    """


@spool.command()
@_spool_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per session.")
def status(spool_dir: str | None, as_json: bool) -> int:
    """List the sessions in the spool and what they hold."""
    from .spool import session_dirs, summarize

    s = _settings({"WATCHDOG_SPOOL_DIR": spool_dir})
    root = s.spool_dir
    rows = [summarize(d) for d in session_dirs(root)]
    if as_json:
        for r in rows:
            click.echo(json.dumps({
                "session": r.session, "live": r.owner_pid is not None, "owner_pid": r.owner_pid,
                "records": r.records, "bytes": r.bytes, "first_seq": r.first_seq,
                "last_seq": r.last_seq, "oldest_ts": r.oldest_ts, "ended": r.ended,
                "error": r.error,
            }))  # fmt: skip
        return 0
    if not rows:
        click.echo(f"{root}: empty")
        return 0
    click.echo(f"{'SESSION':44} {'STATE':12} {'RECORDS':>8} {'BYTES':>10} {'SEQS':>17}  OLDEST")
    total = 0
    for r in rows:
        state = f"live:{r.owner_pid}" if r.owner_pid is not None else "backlog"
        if r.error:
            state = "unreadable"
        seqs = f"{r.first_seq}-{r.last_seq}" if r.first_seq is not None else "-"
        oldest = (datetime.datetime.fromtimestamp(r.oldest_ts).strftime("%Y-%m-%d %H:%M:%S")
                  if r.oldest_ts is not None else "-")  # fmt: skip
        ended = " ended" if r.ended else ""
        click.echo(f"{r.session:44} {state:12} {r.records:>8} {_size(r.bytes):>10} {seqs:>17}  "
                   f"{oldest}{ended}")  # fmt: skip
        total += r.bytes
    click.echo(f"{len(rows)} session(s), {_size(total)}")
    return 0


@spool.command()
@_spool_dir_option
@click.option("--collector", metavar="HOST:PORT", help=_h("", "WATCHDOG_COLLECTOR"))
@click.option("--token", metavar="T", help=_h("", "WATCHDOG_TOKEN"))
@_sessions_option
@click.option("--rate", metavar="B/S", help=_h("Send rate cap, 0 for none", "WATCHDOG_REPLAY_RATE"))
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Give up when nothing was acknowledged for this many seconds.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def send(spool_dir: str | None, collector: str | None, token: str | None,
         sessions: tuple[str, ...], rate: str | None, timeout: float, quiet: bool) -> int:  # fmt: skip
    """Deliver backlogs to the collector now (with a progress bar).

    Exit code 0 when everything was acknowledged, 1 otherwise.
    """
    import trio

    from .backlog import backlog_link, deliver, open_backlogs
    from .link import RateLimiter, tcp_connector

    s = _settings({"WATCHDOG_SPOOL_DIR": spool_dir, "WATCHDOG_COLLECTOR": collector,
                   "WATCHDOG_TOKEN": token, "WATCHDOG_REPLAY_RATE": rate})  # fmt: skip
    setup_logging(s.log_level, s.log_format)
    try:
        connect = tcp_connector(*s.collector, tls=s.tls, ca_file=s.tls_ca or None)
    except ValueError as exc:
        raise click.UsageError(f"WATCHDOG_TLS_CA: {exc}") from None
    limiter = RateLimiter(s.replay_rate)
    failed = 0
    with open_backlogs(s.spool_dir, sessions=sessions) as backlogs:
        if not backlogs:
            click.echo("nothing to send", err=True)
            return 0
        for sp in backlogs:
            link = backlog_link(sp, connect, token=s.token,
                                keyframe_every=s.keyframe_every, limiter=limiter)  # fmt: skip
            label = f"{sp.session} ({_size(sp.total_bytes)})"
            if quiet:
                ok = trio.run(partial(deliver, link, stall_timeout=timeout))
            else:
                with click.progressbar(length=sp.pending, label=label, file=sys.stderr) as bar:
                    ok = trio.run(
                        partial(deliver, link, progress=bar.update, stall_timeout=timeout)
                    )
            if ok:
                click.echo(f"sent {sp.session}", err=True)
            else:
                failed += 1
                click.echo(f"watchdog: {sp.session} not delivered: "
                           f"{link.last_error or 'no progress'}", err=True)  # fmt: skip
    return 1 if failed else 0


@spool.command()
@_spool_dir_option
@_sessions_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(spool_dir: str | None, sessions: tuple[str, ...], yes: bool) -> int:
    """Drop backlogs without sending them (live sessions are left alone)."""
    from .backlog import open_backlogs

    s = _settings({"WATCHDOG_SPOOL_DIR": spool_dir})
    with open_backlogs(s.spool_dir, sessions=sessions) as backlogs:
        if not backlogs:
            click.echo("nothing to purge", err=True)
            return 0
        records = sum(sp.pending for sp in backlogs)
        size = sum(sp.total_bytes for sp in backlogs)
        what = f"{len(backlogs)} backlog(s), {records} records, {_size(size)}"
        if not yes:
            if not sys.stdin.isatty():
                raise click.UsageError(f"would drop {what}: pass --yes to confirm")
            click.confirm(f"Drop {what}?", abort=True)
        for sp in backlogs:
            sp.destroy()
        click.echo(f"purged {what}", err=True)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="watchdog", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
