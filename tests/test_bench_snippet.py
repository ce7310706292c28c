"""`calltrack bench snippet` measures the snippet in Chromium (the figures are the harness's
to judge, not a test's: see docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]


def test_bench_snippet_prints_one_json_object_with_both_measures(tmp_path: Path) -> None:
    out = tmp_path / "snippet.json"
    command = ["bench", "snippet", "--json", "--runs", "1", "--products", "300"]
    done = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", *command, "--output", str(out)],
        cwd=ROOT,
        # A secret of its own: the command would otherwise write var/secret_key in the checkout.
        env={**os.environ, "CALLTRACK_SECRET_KEY": "bench-test-" + "k" * 40},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().count("\n") == 0
    data = json.loads(done.stdout)
    assert data == json.loads(out.read_text())
    load = data["main_thread"]["300"]
    # The trace found the snippet's own tasks, inside the page's main-thread time.
    assert 0 < load["snippet_cpu_ms_min"] < load["page_cpu_ms_median"]
    assert 0 < load["share_of_page_median"] < 1
    assert isinstance(data["time_met"], bool)
    size = data["size"]
    assert 0 < size["gzipped"] < size["served_gzipped"] < size["minified"] < size["raw"]
    assert data["size_met"] is (size["served_gzipped"] <= data["gzip_budget_bytes"])
