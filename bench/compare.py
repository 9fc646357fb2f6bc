"""``make bench`` figures side by side with another commit's, measured in the same run.

    python -m bench.compare --ref HEAD~1 [--only codec,ingest] [--scale 0.1] [--rounds 2]

REF is checked out into a temporary ``git worktree`` (removed afterwards). Each
part of ``python -m bench`` then runs as its own process on REF and on this
working tree, alternately (REF first in odd rounds, this tree first in even
ones), so drifting machine load falls on both sides alike. Each side imports
only its own code: the child gets ``PYTHONPATH=<its tree>`` and runs from
there (checked before measuring), and whatever it starts inherits both.

Every figure the bench prints (each cell of its tables) is shown as REF, this
tree and the ratio this/REF, the median over rounds and, with several rounds,
the range. Whether higher or lower is better depends on the column: read the
ratio against the bench's own table. The 1-minute load average before and
after each run is printed with it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .__main__ import PARTS
from .ingest import PACED_RATE_ENV
from .report import fmt

__all__ = ["Figures", "main", "parse_tables"]

REPO = Path(__file__).resolve().parents[1]
# Columns of a bench table that are words about a figure, not figures.
_TEXT_COLUMNS = re.compile(r"^(goal|met|ratio\b.*)$")
_NUMBER = re.compile(r"^-?[\d,]*\.?\d+$")
_DIGITS = re.compile(r"\d[\d,.]*")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")


@dataclass(frozen=True, slots=True)
class Key:
    """One figure: which table (its title with the numbers in it blanked, so a
    changed sample count still lines up), which row, which column."""

    part: str
    table: str
    row: str
    column: str


@dataclass
class Figures:
    """The figures of one side, every round's value per key, in first-seen order."""

    values: dict[Key, list[float]] = field(default_factory=dict)
    titles: dict[tuple[str, str], str] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)
    #: A figure's row and column as printed, before the blanking below.
    labels: dict[Key, set[str]] = field(default_factory=dict)

    def add(self, part: str, title: str, row: str, column: str, value: float) -> None:
        table = _DIGITS.sub("#", title)
        self.titles.setdefault((part, table), title)
        printed = f"{row} / {column}"
        # "paced at 18,000/s": a rate the bench derived from its own measurement
        row, column = _THOUSANDS.sub("#", row), _THOUSANDS.sub("#", column)
        key = Key(part, table, row, column)
        self.values.setdefault(key, []).append(value)
        self.labels.setdefault(key, set()).add(printed)


def _number(cell: str) -> float | None:
    """A figure as the bench prints it (``1,234``, ``12.3``, a ``lo-hi`` range,
    which counts as its midpoint), or None for anything else."""
    cell = cell.strip().removesuffix("%").strip()
    if _NUMBER.match(cell):
        return float(cell.replace(",", ""))
    lo, sep, hi = cell.partition("-")
    if sep and _NUMBER.match(lo) and _NUMBER.match(hi):
        return (float(lo.replace(",", "")) + float(hi.replace(",", ""))) / 2
    return None


def _spans(rule: str) -> list[tuple[int, int]]:
    """Column extents from a table's ``----  ------`` line."""
    return [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]


def parse_tables(text: str) -> Iterator[tuple[str, str, str, float]]:
    """(table title, row, column, value) for every figure in a bench's output.

    A table is a ``== title`` line, a header, a ``----`` rule and rows, as
    bench.report.Table and bench.api render them. A cell holding several
    figures joined by `` | `` under a header joined the same way gives one
    figure per part."""
    lines = text.splitlines()
    title = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("== "):
            title = line[3:].strip()
        elif (
            i >= 1 and line.strip() and set(line.replace(" ", "")) == {"-"} and lines[i - 1].strip()
        ):
            spans = _spans(line)
            head = [lines[i - 1][a:b].strip() for a, b in _widen(spans, lines[i - 1])]
            i += 1
            while i < len(lines) and _is_row(lines[i], spans):
                cells = [lines[i][a:b].strip() for a, b in _widen(spans, lines[i])]
                yield from _row_figures(title, head, cells)
                i += 1
            continue
        i += 1


def _is_row(line: str, spans: list[tuple[int, int]]) -> bool:
    """A table row leaves the gaps between the rule's dashes blank (a note
    printed under the table, like bench.api's load line, does not)."""
    if not line.strip() or line.startswith("== "):
        return False
    gaps = zip([b for _a, b in spans], [a for a, _b in spans[1:]], strict=False)
    return all(not line[b:a].strip() for b, a in gaps)


def _widen(spans: list[tuple[int, int]], line: str) -> list[tuple[int, int]]:
    """Each column runs to the next one's start (the last to the line's end):
    a cell never spills past its rule, but this keeps an odd one whole."""
    starts = [a for a, _b in spans]
    return [(a, starts[k + 1] if k + 1 < len(starts) else len(line)) for k, a in enumerate(starts)]


def _row_figures(
    title: str, head: list[str], cells: list[str]
) -> Iterator[tuple[str, str, str, float]]:
    if not cells:
        return
    row = cells[0]
    for column, cell in zip(head[1:], cells[1:], strict=False):
        if _TEXT_COLUMNS.match(column):
            continue
        names, parts = column.split(" | "), cell.split(" (")[0].split(" | ")
        if len(names) > 1 and len(parts) == 1:
            # one figure under "Redis on: req/s | p50": named "Redis on"
            pairs = [(names[0].rpartition(": ")[0] or column, parts[0])]
        elif len(parts) > 1 and len(names) == len(parts):
            # "Redis on: req/s | p50 | p95": every part named with its "Redis on: "
            prefix, _, first = names[0].rpartition(": ")
            names = [f"{prefix}: {n}" if prefix else n for n in [first, *names[1:]]]
            pairs = list(zip(names, parts, strict=True))
        else:
            pairs = [(column, cell)]
        for name, text in pairs:
            value = _number(text)
            if value is not None:
                yield title, row, name, value


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _env_for(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _check_imports(tree: Path) -> None:
    """Refuse to measure if the side would import code from anywhere but its tree."""
    probe = "import deltawire.collector, bench; print(deltawire.collector.__file__); print(bench.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tree, env=_env_for(tree),
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    for path in out.split():
        if not Path(path).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"bench.compare: {tree} imports {path}, not its own code")


def _run_part(tree: Path, part: str, scale: float, timeout: float) -> str:
    """One part's run on one side; its tables are echoed to stderr as they come
    (a part can take minutes) and returned for parsing."""
    cmd = [sys.executable, "-m", "bench", "--only", part, "--scale", f"{scale:g}"]
    proc = subprocess.Popen(cmd, cwd=tree, env=_env_for(tree), stdout=subprocess.PIPE,
                            stderr=sys.stderr, text=True)  # fmt: skip
    timed_out = threading.Event()

    def stop() -> None:  # our own child, by its PID
        proc.send_signal(signal.SIGINT)  # as Ctrl-C: the bench stops what it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    timer = threading.Timer(timeout, lambda: (timed_out.set(), stop()))
    timer.start()
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            print(f"  | {line}", end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # this process alone interrupted: the run stops too
        stop()
        raise
    finally:
        timer.cancel()
        code = proc.wait()
    if code != 0:
        why = (
            f"was stopped after --timeout {timeout:g} s" if timed_out.is_set() else f"exited {code}"
        )
        raise SystemExit(f"bench.compare: `{' '.join(cmd)}` in {tree} {why}")
    return "".join(lines)


@contextlib.contextmanager
def ref_tree(ref: str) -> Iterator[tuple[Path, str]]:
    """REF checked out (detached) in a temporary worktree; yields it and its commit."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                            capture_output=True, text=True)  # fmt: skip
    if commit.returncode != 0:
        raise SystemExit(f"bench.compare: {ref!r} is not a commit: {commit.stderr.strip()}")
    sha = commit.stdout.strip()
    parent = Path(tempfile.mkdtemp(prefix="deltawire-bench-ref-"))
    tree = parent / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), sha],
                   check=True)  # fmt: skip
    try:
        yield tree, sha
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                       check=False)  # fmt: skip
        shutil.rmtree(parent, ignore_errors=True)


def render(ref_name: str, ref: Figures, this: Figures, rounds: int) -> str:
    """One table per bench table: each figure on REF, on this tree, and this/REF."""
    out: list[str] = []
    keys = list(dict.fromkeys([*this.values, *ref.values]))
    by_table: dict[tuple[str, str], list[Key]] = {}
    for key in keys:
        by_table.setdefault((key.part, key.table), []).append(key)
    for (part, table), tkeys in by_table.items():
        title = this.titles.get((part, table)) or ref.titles.get((part, table), table)
        head = ["figure", ref_name, "this tree", "this/ref"]
        body = []
        for key in tkeys:
            a, b = ref.values.get(key, []), this.values.get(key, [])
            ratio = ""
            if a and b and statistics.median(a):
                ratio = f"{statistics.median(b) / statistics.median(a):.2f}"
            label = f"{key.row} / {key.column}"
            seen = (ref.labels.get(key, set()), this.labels.get(key, set()))
            if all(seen) and seen[0] != seen[1]:
                # The two sides chose different numbers in the label (a paced
                # rate derived from each build's own saturated run): the
                # figures answer different questions, so no ratio.
                ratio = "not alike"
                label += f" (ref: {'; '.join(sorted(seen[0]))}; this: {'; '.join(sorted(seen[1]))})"
            body.append([label, _cell(a, rounds), _cell(b, rounds), ratio])
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        out.append(f"== [{part}] {title}")
        for r in [head, ["-" * w for w in widths], *body]:
            out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths, strict=True))))  # fmt: skip
        out.append("")
    out.append(f"load average (1 min) before/after each run: {ref_name}: {', '.join(ref.loads)}; "
               f"this tree: {', '.join(this.loads)}")  # fmt: skip
    return "\n".join(out)


def _cell(values: list[float], rounds: int) -> str:
    if not values:
        return "-"
    mid = fmt(statistics.median(values))
    if rounds > 1 and len(values) > 1:
        return f"{mid} ({fmt(min(values))}..{fmt(max(values))})"
    return mid


_OPTIONS: dict[str, tuple[type, str, str]] = {
    "--ref": (str, "HEAD~1", "commit to compare with (default HEAD~1: the previous commit)"),
    "--only": (str, ",".join(PARTS), f"parts of python -m bench (default: all: {','.join(PARTS)})"),
    "--scale": (float, "1.0", "passed to python -m bench (default 1.0; 0.1 for a quick look)"),
    "--rounds": (int, "1", "runs of each part on each side, alternating (default 1)"),
    "--paced-rate": (
        float,
        "0",
        "samples/s every paced ingest run offers, on both sides (BENCH_PACED_RATE; default 0: "
        "each side derives it from its own saturated run, and rows whose rates differ say "
        "'not alike'); a REF older than this option ignores it",
    ),
    "--timeout": (
        float,
        "1800",
        "seconds one run of a part may take, then it is killed (default 1800)",
    ),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, (kind, default, text) in _OPTIONS.items():
        ap.add_argument(flag, type=kind, default=kind(default), help=text)
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s): {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    if args.rounds < 1 or args.scale <= 0 or args.paced_rate < 0:
        ap.error("--rounds must be >= 1, --scale > 0 and --paced-rate >= 0")
    if args.paced_rate:
        os.environ[PACED_RATE_ENV] = f"{args.paced_rate:g}"  # both sides inherit it
    started = time.monotonic()
    ref_figs, this_figs = Figures(), Figures()
    with ref_tree(args.ref) as (tree, sha):
        ref_name = f"{args.ref} ({sha[:10]})"
        sides = [(ref_name, tree, ref_figs), ("this tree", REPO, this_figs)]
        for _name, side_tree, _figs in sides:
            _check_imports(side_tree)
        try:
            _measure(parts, args.rounds, args.scale, args.timeout, sides, started)
        except KeyboardInterrupt:
            print("bench.compare: interrupted; the figures measured so far:", file=sys.stderr)
    print(render(ref_name, ref_figs, this_figs, args.rounds), flush=True)
    print(f"(bench.compare: {time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    return 0


def _measure(
    parts: list[str],
    rounds: int,
    scale: float,
    timeout: float,
    sides: list[tuple[str, Path, Figures]],
    started: float,
) -> None:
    """Each part, round by round, on both sides (REF first in odd rounds)."""
    for part in parts:
        for rnd in range(rounds):
            for name, side_tree, figs in sides if rnd % 2 == 0 else sides[::-1]:
                print(f"bench.compare: {part}, round {rnd + 1}/{rounds}, {name} "
                      f"({time.monotonic() - started:.0f} s in)", file=sys.stderr, flush=True)  # fmt: skip
                before = _load()
                text = _run_part(side_tree, part, scale, timeout)
                figs.loads.append(f"{before}/{_load()}")
                for title, row, column, value in parse_tables(text):
                    figs.add(part, title, row, column, value)


if __name__ == "__main__":
    raise SystemExit(main())
