"""Benchmarks of procrastinate-prefork against stock procrastinate and Celery
(``scripts/bench.sh``, ``benchmarks/run.py``; results in docs/benchmarks.*)."""
