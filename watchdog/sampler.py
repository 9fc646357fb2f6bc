"""Cheap psutil samplers for a watched process tree and for the host.

Samples are plain dicts that are JSON-serialisable and never contain ``None``:
a field that can't be read is left out instead.  They are sent as JSON Merge
Patches against the previous sample, so key order is fixed, floats are rounded
to the precision worth shipping, and counters are ints; an unchanged value then
costs nothing on the wire.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import psutil

__all__ = ["ProcessSampler", "SystemSampler"]

# Coarser than psutil's float noise but fine enough for dashboards; finer
# precision would make most values change on every sample.
_PERCENT_DIGITS = 1
_SECONDS_DIGITS = 2

_IO_FIELDS = ("read_bytes", "write_bytes", "read_count", "write_count")
_NET_FIELDS = ("bytes_sent", "bytes_recv", "packets_sent", "packets_recv")


@dataclasses.dataclass(slots=True)
class _TreeTotals:
    """Running sums over the watched process and its descendants."""

    percent: float = 0.0
    user: float = 0.0
    system: float = 0.0
    rss: int = 0
    vms: int = 0
    threads: int = 0
    fds: int = 0
    have_fds: bool = False
    io: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(_IO_FIELDS, 0))
    have_io: bool = False
    ctx_voluntary: int = 0
    ctx_involuntary: int = 0

    def merge(self, other: _TreeTotals) -> None:
        self.percent += other.percent
        self.user += other.user
        self.system += other.system
        self.rss += other.rss
        self.vms += other.vms
        self.threads += other.threads
        self.ctx_voluntary += other.ctx_voluntary
        self.ctx_involuntary += other.ctx_involuntary
        # A field we can't read for the watched process itself is left out
        # entirely; a child we can't read it for just doesn't add to it.
        if other.have_fds:
            self.fds += other.fds
        if other.have_io:
            for field in _IO_FIELDS:
                self.io[field] += other.io[field]

    def add_cpu_times(self, proc: psutil.Process) -> None:
        times = proc.cpu_times()
        # children_* holds the CPU of descendants this process has already
        # reaped. Counting it keeps the tree total from dropping when a child
        # exits: its time moves from the live sum into its parent's
        # children_* instead of disappearing.
        self.user += times.user + times.children_user
        self.system += times.system + times.children_system

    def add_live(self, proc: psutil.Process) -> None:
        """Add everything but CPU times; meant to run inside ``proc.oneshot()``."""
        mem = proc.memory_info()
        self.rss += mem.rss
        self.vms += mem.vms
        self.threads += proc.num_threads()
        # On Linux psutil reads these from /proc/<pid>/status, i.e. the main
        # thread only; summing every thread would cost a read per thread.
        ctx = proc.num_ctx_switches()
        self.ctx_voluntary += ctx.voluntary
        self.ctx_involuntary += ctx.involuntary
        # fds and io need more privileges than the rest (ptrace access on
        # Linux) and don't exist on every platform, so they're best effort.
        if hasattr(proc, "num_fds"):
            try:
                self.fds += proc.num_fds()
                self.have_fds = True
            except psutil.AccessDenied:
                pass
        if hasattr(proc, "io_counters"):
            try:
                io = proc.io_counters()
            except psutil.AccessDenied:
                pass
            else:
                for field in _IO_FIELDS:
                    self.io[field] += getattr(io, field)
                self.have_io = True


class ProcessSampler:
    """Samples one process plus all of its descendants.

    Counters (CPU times, memory, threads, fds, io, context switches) are
    totals over the whole tree. Children that vanish or can't be read
    mid-sample are skipped; fds and io are left out when the watched process
    itself doesn't allow reading them.

    Raises ``psutil.NoSuchProcess`` if *pid* doesn't exist at construction,
    and lets ``psutil.AccessDenied`` through if even the basic fields of the
    watched process are unreadable: that's a deployment error, not a gap to
    paper over. Once the process has exited (a zombie counts as exited) or
    its PID has been reused, ``sample()`` returns ``None`` for good.
    """

    def __init__(self, pid: int, children_rescan: float = 2.0) -> None:
        self._proc = psutil.Process(pid)
        # Finding descendants means reading every process on the host (psutil
        # builds a parent map from /proc): ~1.5 ms, most of a sample's cost.
        # Known children are sampled every time; new ones are looked for at
        # most every ``children_rescan`` seconds.
        self._rescan = children_rescan
        self._scanned_at = -float("inf")
        # Keyed by PID but validated by create time (Process.__eq__) so a
        # reused PID never inherits another process's cpu_percent baseline.
        self._children: dict[int, psutil.Process] = {}
        self._gone = False
        try:
            # cpu_percent() measures since its previous call; priming now
            # makes the first sample cover the first interval instead of 0.0.
            self._proc.cpu_percent()
            self._refresh_children()
        except psutil.NoSuchProcess:
            self._gone = True

    @property
    def pid(self) -> int:
        return int(self._proc.pid)

    def sample(self) -> dict[str, Any] | None:
        if self._gone:
            return None
        try:
            return self._sample()
        except psutil.NoSuchProcess:
            # ZombieProcess is a subclass: a zombie has exited too.
            self._gone = True
            self._children.clear()
            return None

    def _sample(self) -> dict[str, Any]:
        # Discover children first: psutil's children() also detects reuse
        # of the watched PID and raises NoSuchProcess for it.
        now = time.monotonic()
        if now - self._scanned_at >= self._rescan:
            children = self._refresh_children()
            self._scanned_at = now
        else:
            children = list(self._children.values())
        totals = _TreeTotals()
        proc = self._proc
        with proc.oneshot():
            status = proc.status()
            if status == psutil.STATUS_ZOMBIE:
                raise psutil.ZombieProcess(proc.pid)
            totals.percent += proc.cpu_percent()
            totals.add_cpu_times(proc)
            totals.add_live(proc)

        live_children = 0
        for child in children:
            # Read each child into its own totals first, so one that vanishes
            # mid-read contributes nothing rather than half its fields.
            part = _TreeTotals()
            try:
                with child.oneshot():
                    part.add_cpu_times(child)
                    if child.status() == psutil.STATUS_ZOMBIE:
                        # Exited but not yet reaped: it holds no memory or
                        # fds, but its CPU time only moves into the parent's
                        # children_* once reaped, so keep counting it here.
                        totals.user += part.user
                        totals.system += part.system
                        continue
                    part.percent = child.cpu_percent()
                    part.add_live(child)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                # NoSuchProcess covers ZombieProcess too.
                self._children.pop(child.pid, None)
                continue
            live_children += 1
            totals.merge(part)

        sample: dict[str, Any] = {
            "pid": proc.pid,
            "status": str(status),
            "cpu": {
                "percent": round(totals.percent, _PERCENT_DIGITS),
                "user": round(totals.user, _SECONDS_DIGITS),
                "system": round(totals.system, _SECONDS_DIGITS),
            },
            "mem": {"rss": totals.rss, "vms": totals.vms},
            "threads": totals.threads,
        }
        if totals.have_fds:
            sample["fds"] = totals.fds
        if totals.have_io:
            sample["io"] = {field: int(totals.io[field]) for field in _IO_FIELDS}
        sample["ctx"] = {
            "voluntary": totals.ctx_voluntary,
            "involuntary": totals.ctx_involuntary,
        }
        sample["children"] = live_children
        return sample

    def _refresh_children(self) -> list[psutil.Process]:
        """Return the current descendants, reusing cached Process objects."""
        current: dict[int, psutil.Process] = {}
        for fresh in self._proc.children(recursive=True):
            cached = self._children.get(fresh.pid)
            if cached is not None and cached == fresh:
                current[fresh.pid] = cached
                continue
            try:
                fresh.cpu_percent()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            current[fresh.pid] = fresh
        self._children = current
        return list(current.values())


class SystemSampler:
    """Samples host-wide CPU, load, memory, swap, disk and network counters."""

    def __init__(self, mounts: Sequence[str] = ("/",)) -> None:
        self._mounts = tuple(mounts)
        # psutil.cpu_percent() keeps one baseline per thread, shared by every
        # caller in that thread (and the agent runs on a single trio thread),
        # so keep our own baseline from cpu_times() instead.
        self._last_cpu = psutil.cpu_times()

    def sample(self) -> dict[str, Any]:
        sample: dict[str, Any] = {
            "cpu": {"percent": self._cpu_percent()},
            "load": [round(value, 2) for value in psutil.getloadavg()],
        }
        vm = psutil.virtual_memory()
        sample["mem"] = {
            "total": int(vm.total),
            "available": int(vm.available),
            "used": int(vm.used),
            "percent": round(vm.percent, _PERCENT_DIGITS),
        }
        swap = psutil.swap_memory()
        sample["swap"] = {
            "total": int(swap.total),
            "used": int(swap.used),
            "percent": round(swap.percent, _PERCENT_DIGITS),
        }
        # Both return None when the host exposes no disks / NICs (some
        # containers); omit the key rather than send nulls.
        disk_io = psutil.disk_io_counters()
        if disk_io is not None:
            sample["disk_io"] = {field: int(getattr(disk_io, field)) for field in _IO_FIELDS}
        net_io = psutil.net_io_counters()
        if net_io is not None:
            sample["net_io"] = {field: int(getattr(net_io, field)) for field in _NET_FIELDS}
        disk: dict[str, dict[str, Any]] = {}
        for mount in self._mounts:
            try:
                usage = psutil.disk_usage(mount)
            except OSError:
                # A missing or unreadable mount shouldn't cost the rest of
                # the sample; it reappears by itself once it's readable.
                continue
            disk[mount] = {
                "total": int(usage.total),
                "used": int(usage.used),
                "percent": round(usage.percent, _PERCENT_DIGITS),
            }
        if disk:
            sample["disk"] = disk
        return sample

    def _cpu_percent(self) -> float:
        current = psutil.cpu_times()
        last, self._last_cpu = self._last_cpu, current
        total = _cpu_total(current) - _cpu_total(last)
        if total <= 0:
            # Called twice within one clock tick: nothing measurable elapsed.
            return 0.0
        busy = total - (_cpu_idle(current) - _cpu_idle(last))
        percent = 100.0 * busy / total
        return round(min(100.0, max(0.0, percent)), _PERCENT_DIGITS)


def _cpu_total(times: Any) -> float:
    # Linux already counts guest time inside user/nice (same as psutil/htop).
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _cpu_idle(times: Any) -> float:
    # iowait is idle CPU on Linux, even though it's reported separately.
    return float(times.idle) + getattr(times, "iowait", 0.0)
