"""Benchmarks: the code that measures (``python -m benchmarks.benchmark``) and the current records."""
