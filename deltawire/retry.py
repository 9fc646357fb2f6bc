"""One way to retry: exponential backoff, declared as a ``Backoff``.

Where a call is simply retried in place (a store write, a store open, a store
call from a connection), ``Backoff.attempts`` runs it through stamina's retry
context, sync or async (trio), forever unless given a limit: dropping data
because a database was down for a minute is never the right answer here.
Where a loop must pause its own way (the watchdog's link waits on a kick, a
dead child process is restarted) it asks ``Backoff.delay`` how long.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Backoff", "backoff_delay"]


@functools.cache
def _stamina() -> Any:
    """stamina, imported on the first retry context rather than by every process
    that declares a ``Backoff`` (stamina and tenacity cost ~0.05 s of CPU to
    import; the folder and agent processes start often and may never retry)."""
    import stamina
    import stamina.instrumentation

    # Our callers log an outage once, when it starts, and once when it ends;
    # stamina's default hooks would add a warning per attempt (every 2 s for as
    # long as a database is down) and a Prometheus counter we do not export.
    stamina.instrumentation.set_on_retry_hooks([])
    return stamina


def backoff_delay(failures: int, low: float, high: float) -> float:
    """Exponential backoff with jitter: a random delay in [d/2, d], where d doubles
    per consecutive failure up to ``high``. The jitter spreads a fleet of agents
    that lost the same collector, so they do not all come back at once."""
    d = min(high, low * 2 ** max(0, failures - 1))
    return random.uniform(d / 2, d)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits from ``initial`` seconds, doubling per failure, up to ``maximum``."""

    initial: float
    maximum: float

    def delay(self, failures: int) -> float:
        """How long to wait after ``failures`` consecutive failures (>= 1)."""
        return backoff_delay(failures, self.initial, self.maximum)

    def attempts(
        self, on: Callable[[Exception], bool] | type[Exception], attempts: int | None = None
    ) -> Any:
        """stamina's retry context: ``for attempt in backoff.attempts(on):`` then
        ``with attempt:`` around the call (``async for`` in trio code). Retries
        while the call raises what ``on`` accepts; ``attempt.num`` counts from 1."""
        return _stamina().retry_context(
            on=on,
            attempts=attempts,
            timeout=None,
            wait_initial=self.initial,
            wait_max=self.maximum,
            wait_jitter=self.initial,
            wait_exp_base=2,
        )
