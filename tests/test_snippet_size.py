"""The snippet stays within its size budget (tracking and number swapping included)."""

from __future__ import annotations

from widget.snippet_size import GZIP_BUDGET_BYTES, snippet_size


def test_minified_snippet_fits_the_gzip_budget() -> None:
    size = snippet_size()
    assert size["gzipped"] <= GZIP_BUDGET_BYTES, size


def test_sizes_are_consistent() -> None:
    size = snippet_size()
    assert 0 < size["gzipped"] < size["minified"] < size["raw"]
