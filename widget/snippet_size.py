"""Measure the visitor snippet the way it travels: minified with terser, then gzipped.

`calltrack.min.js` is built from `calltrack.js` by `make snippet` (infra/build-snippet.sh) and
committed; the server sends it behind the site's configuration (`widget.http.render_snippet`).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from widget.http import render_snippet, snippet_config

STATIC = Path(__file__).with_name("static")
SOURCE_PATH = STATIC / "calltrack.js"
SNIPPET_PATH = STATIC / "calltrack.min.js"
# The budget the snippet is held to (tests/test_snippet_size.py): tracking plus dynamic number
# insertion in one small request that does not compete with the merchant's own assets. It
# holds for the code alone and for the file as served to a site with one business number
# (its configuration included). The contact widget's loader and further business numbers are
# reported beside it.
GZIP_BUDGET_BYTES = 3000
EXAMPLE_KEY = "ct3f9a1c0b7d2e4a6f8b5c"
EXAMPLE_URL = "https://calltrack.example.eu"


def gzipped_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def served_size(business: tuple[str, ...], contact_widget: bool) -> int:
    """Return the gzipped size of the file as served to such a site."""
    config = snippet_config(EXAMPLE_KEY, EXAMPLE_URL, "required", business, contact_widget)
    return gzipped_size(render_snippet(config).encode("utf-8"))


def snippet_size() -> dict[str, int]:
    """Return byte counts: source, minified, minified gzipped (level 9), and as served."""
    minified = SNIPPET_PATH.read_bytes()
    return {
        "raw": len(SOURCE_PATH.read_bytes()),
        "minified": len(minified),
        "gzipped": gzipped_size(minified),
        "served_gzipped": served_size(("+33123456789",), False),
        "served_gzipped_two_numbers_contact_widget": served_size(
            ("+33123456789", "+33987654321"), True
        ),
    }
