"""Route modules: each has ``endpoints(deps) -> list[Endpoint]`` (see ``spec.py``)."""
