"""Helpers shared by the test suite (import as `support.…`; tests/ is on sys.path)."""
