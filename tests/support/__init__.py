"""Test support, kept out of the shipped package: real servers (SeaweedFS S3, PostgreSQL, an Airflow stack)
started on loopback for tests, benchmarks and local runs, and the local-dev Airflow environment.

Imported as ``support`` (``tests/`` is on ``sys.path`` under pytest, as for ``fixtures``); the modules import
each other relatively, so the benchmarks and ``python -m`` find them the same way.
"""
