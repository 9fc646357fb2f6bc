"""Developer tools that see the whole product (both sides), so they live
outside the shared base (``deltawire/*.py``), which knows neither side."""
