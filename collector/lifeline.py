"""A child process of the collector never outlives it.

The store writer and the HTTP API normally stop because their parent closes
their stdin (they finish and exit on EOF), and a SIGKILLed parent closes it
too. That is not enough on its own: a child busy in a long commit, a retry
or a slow HTTP shutdown could go on running, orphaned, holding the store and
its port. ``exit_with_parent`` watches the parent from a daemon thread and
ends this process at most ``ORPHAN_GRACE_S`` after the parent's death.

Why not ``PR_SET_PDEATHSIG``: it fires when the *thread* that forked the
child exits, and trio starts processes from a worker thread of its cache that
exits when idle, which would kill a healthy child. A pidfd (Linux >= 5.3)
becomes readable when the process itself exits; elsewhere ``getppid`` is
polled (a reparented child sees another parent).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time

__all__ = ["EXIT_ORPHANED", "ORPHAN_GRACE_S", "exit_with_parent"]

#: Time an orphan gets to finish what it does by itself (the EOF on its stdin
#: started a clean shutdown: the writer closes the store, the API its
#: connections) before it is ended anyway. Short, so that a harness or an
#: init system that killed the collector finds its children gone soon after.
ORPHAN_GRACE_S = 5.0
#: Where no pidfd is available: how often the parent's pid is compared.
_POLL_S = 1.0
#: The exit status of a child ended because its parent was gone.
EXIT_ORPHANED = 3

log = logging.getLogger("deltawire.collector.lifeline")


def exit_with_parent(parent: int, grace: float = ORPHAN_GRACE_S) -> threading.Thread:
    """End this process ``grace`` seconds after process ``parent`` is gone
    (at once if it is gone already), unless it has exited by then."""
    watcher = threading.Thread(target=_watch, args=(parent, grace), name="lifeline", daemon=True)
    watcher.start()
    return watcher


def _watch(parent: int, grace: float) -> None:
    _wait_for_exit(parent)
    log.warning("the collector that started this process is gone; exiting",
                extra={"parent": parent, "grace_s": grace})  # fmt: skip
    time.sleep(grace)  # the clean shutdown's chance; then no more waiting
    os._exit(EXIT_ORPHANED)


def _wait_for_exit(parent: int) -> None:
    try:
        fd = os.pidfd_open(parent)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd here: poll
        while os.getppid() == parent:
            time.sleep(_POLL_S)
        return
    try:
        select.select([fd], [], [])  # readable once the process has exited
    finally:
        os.close(fd)
