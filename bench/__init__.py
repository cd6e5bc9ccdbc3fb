"""Benchmarks of the gateway against its baselines; `python -m bench` writes docs/performance.md."""
