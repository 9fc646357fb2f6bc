"""deltawire: shared pieces of the collector and the watchdog (config, logging)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
