"""Benchmarks: `python -m bench.run` (or `make bench`) runs them all and writes BENCHMARKS.md."""
