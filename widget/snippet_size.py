"""Measure the visitor snippet the way it travels: minified with rjsmin, then gzipped."""

from __future__ import annotations

import gzip
from pathlib import Path

import rjsmin

SNIPPET_PATH = Path(__file__).with_name("static") / "calltrack.js"
# The budget the snippet is held to (tests/test_snippet_size.py): tracking plus dynamic number
# insertion in one small request that does not compete with the merchant's own assets.
GZIP_BUDGET_BYTES = 3000


def snippet_size(path: Path = SNIPPET_PATH) -> dict[str, int]:
    """Return the raw, minified and gzipped (level 9) byte counts of the snippet source."""
    raw = path.read_bytes()
    minified = str(rjsmin.jsmin(raw.decode("utf-8"))).encode("utf-8")
    return {
        "raw": len(raw),
        "minified": len(minified),
        "gzipped": len(gzip.compress(minified, compresslevel=9, mtime=0)),
    }
