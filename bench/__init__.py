"""Reproducible benchmarks of the embedded event store: ``python -m bench`` (see docs/benchmarks.md)."""
