"""pytest-benchmark suite: ``pytest bench/ --benchmark-only`` (see bench/README.md).

A package so that its conftest is imported as ``bench.conftest`` and never shadows
tests/conftest.py (which the unit tests import as ``conftest``) when both folders are
collected in one run.
"""
