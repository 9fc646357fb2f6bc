"""Helpers shared by the tests and the benchmarks: real servers on free 127.0.0.1
ports (redis-server, the MongoDB-compatible server), a collector process, and a
protocol client. Nothing here is imported by the collector or the watchdog."""
