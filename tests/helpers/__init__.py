"""Builders shared by the tests: data layouts, tiny records, CLI runs (import as `from helpers.X import ...`;
tests/ is on sys.path through its conftest.py). No test module imports another test module."""
