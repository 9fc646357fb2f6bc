"""deltawire's agent: supervises an application, samples it and the host, and
streams samples and events to a collector without loss (docs/watchdog.md).

Where things are: ``cli`` (the command), ``agent`` (wires it all in trio),
``supervisor`` (the child, signals, exit code), ``sampler`` (psutil),
``events`` / ``client`` (the local event socket and its helper), ``spool``
(frames on disk until acked), ``link`` (the connection to the collector),
``backlog`` (spools left by earlier runs), ``settings`` (WATCHDOG_* variables).
"""

__all__: list[str] = []
