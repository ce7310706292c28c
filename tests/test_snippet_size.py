"""The snippet stays within its size budget (tracking and number swapping included), and the
minified file the server sends is built from the current source."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from widget.snippet_size import GZIP_BUDGET_BYTES, SNIPPET_PATH, snippet_size

ROOT = Path(__file__).resolve().parents[1]


def test_minified_snippet_fits_the_gzip_budget() -> None:
    size = snippet_size()
    assert size["gzipped"] <= GZIP_BUDGET_BYTES, size


def test_served_snippet_fits_the_budget_with_its_configuration() -> None:
    size = snippet_size()
    assert size["gzipped"] < size["served_gzipped"] <= GZIP_BUDGET_BYTES, size
    # A second business number and the contact widget's loader cost little more.
    assert size["served_gzipped_two_numbers_contact_widget"] <= GZIP_BUDGET_BYTES + 100, size


def test_sizes_are_consistent() -> None:
    size = snippet_size()
    assert 0 < size["gzipped"] < size["minified"] < size["raw"]


def test_committed_minified_snippet_is_built_from_the_current_source(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.fail("npm is missing: install Node.js 20+ (infra/services.sh does)")
    out = tmp_path / "calltrack.min.js"
    subprocess.run(
        ["bash", str(ROOT / "infra" / "build-snippet.sh"), str(out)],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    assert out.read_bytes() == SNIPPET_PATH.read_bytes(), (
        "widget/static/calltrack.min.js is stale: run `make snippet` and commit it"
    )
