"""The newcomer's path: `calltrack demo` (what `make run` starts), its shop in Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.app import free_port
from support.process import stop, wait_answering

from tracker.phones import phone_forms

ROOT = Path(__file__).resolve().parent.parent


class Demo:
    def __init__(self, url: str, numbers: list[str]) -> None:
        self.url = url
        self.numbers = numbers


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """Run `calltrack demo` as `make run` does, on a fresh SQLite file of its own."""
    folder = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = folder / "demo.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("CALLTRACK_")}
    env["CALLTRACK_DATABASE_URL"] = f"sqlite+aiosqlite:///{folder / 'demo.sqlite3'}"
    env["CALLTRACK_LOG_LEVEL"] = "WARNING"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "dashboard.cli", "demo", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(
            f"{url}/healthz",
            process,
            failure=lambda why: f"calltrack demo {why}:\n{log.read_text()[-3000:]}",
        )
        printed = log.read_text()
        assert "Calltrack demo is ready" in printed and f"{url}/demo/" in printed
        # Not the default port: the printed `simulate call` names the server it must ring.
        assert f"--from +33612345678 --server {url}\n" in printed
        line = re.search(r"Tracking numbers: (.+)", printed)
        assert line, printed
        yield Demo(url, [n.strip() for n in line.group(1).split(",")])
    finally:
        stop(process)


def _phone(page: Any) -> str:
    return str(page.text_content("header .phone"))


def test_the_demo_shop_tracks_a_visitor_who_accepts(browser: Any, demo: Demo) -> None:
    # The pool numbers as the shop's header writes them (national, spaced).
    pool = {phone_forms(n).national: n for n in demo.numbers}
    assert len(pool) >= 4, demo.numbers
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.extend([m.text] if m.type == "error" else []))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{demo.url}/demo/")
        assert page.is_visible("#consent")
        # Consent is required: before it, the visitor sees the business number, and nothing
        # is written to the browser.
        page.wait_for_timeout(300)
        assert _phone(page) == "01 23 45 67 89"
        assert page.evaluate("localStorage.length") == 0
        page.click("#accept")
        page.wait_for_function(
            "n => n.includes(document.querySelector('header .phone').textContent)",
            arg=list(pool),
        )
        shown = _phone(page)
        assert page.get_attribute("header .phone", "href") == f"tel:{pool[shown]}"

        # The next page: the banner remembers the choice, the visitor keeps the number.
        page.click("text=Gravel")
        page.wait_for_url("**/demo/product/VM-GRAV-02")
        page.wait_for_function(
            "n => document.querySelector('header .phone').textContent === n", arg=shown
        )
        assert page.locator("#consent").count() == 0
        page.click("button[data-sku]")
        page.wait_for_timeout(300)

        page.goto(f"{demo.url}/demo/activity")
        row = page.locator("tr", has_text="1290")
        row.first.wait_for(timeout=10_000)
        text = row.first.inner_text()
        assert "Direct" in text and "Gravel" in text and "yes" in text
        assert errors == []
    finally:
        context.close()


def test_a_refusal_is_remembered_for_the_tab_and_keeps_the_business_number(
    browser: Any, demo: Demo
) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{demo.url}/demo/?utm_source=google&utm_medium=cpc")
        page.click("#refuse")
        page.click("text=Contact")
        page.wait_for_url("**/demo/contact")
        assert page.locator("#consent").count() == 0
        page.wait_for_timeout(300)
        assert _phone(page) == "01 23 45 67 89"
        assert page.evaluate("localStorage.length") == 0
    finally:
        context.close()
