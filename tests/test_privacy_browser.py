"""An admin in Chromium finds a caller by a differently written number, exports, and erases them."""

from __future__ import annotations

import io
import secrets
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from support.app import BACKENDS, LiveServer, free_port, make_settings
from test_privacy_erase import PHONE, SECRET, Seeded, seed_person

from dashboard.app import create_app
from tracker import appkeys
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Account, Call, TrackedSession
from tracker.users import create_user

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


class Stack:
    def __init__(self, database_url: str, export_dir: Path) -> None:
        port = free_port()
        app = create_app(
            make_settings(database_url, public_url=f"http://127.0.0.1:{port}", secret_key=SECRET)
        )
        app[appkeys.PRIVACY_EXPORT_DIR] = export_dir
        self.server = LiveServer(app, port=port).start()
        self.database = Database(database_url)
        self.email = f"admin-{secrets.token_hex(4)}@velos-martin.fr"
        self.seeded: Seeded = self.server.call(self._seed())

    async def _seed(self) -> Seeded:
        seeded = await seed_person(self.database, with_privacy_rows=False)
        async with self.database.begin() as db:
            account = await db.get(Account, seeded.account_id)
            assert account is not None
            await create_user(db, account, self.email, PASSWORD, "admin", FrozenClock())
        return seeded

    def query(self, coro: Any) -> Any:
        return self.server.call(coro)

    def close(self) -> None:
        self.server.call(self.database.close())
        self.server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    url = str(request.getfixturevalue(f"{request.param}_url"))
    instance = Stack(url, tmp_path_factory.mktemp("exports"))
    yield instance
    instance.close()


def test_admin_finds_exports_and_erases_a_caller(stack: Stack, browser: Any) -> None:
    context = browser.new_context(locale="en-GB", accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Chromium asks for /favicon.ico on its own; only the pages' own resources must load.
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)  # fmt: skip

    page.goto(f"{stack.server.url}/dashboard/privacy")
    # Not signed in: the sign-in page, then back here.
    page.fill("input[name=email]", stack.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/privacy")

    # Stored as +33612345678; typed the way people say it.
    page.select_option("select[name=kind]", "phone")
    page.fill("input[name=q]", "06 12 34 56 78")
    page.click("form[action='/dashboard/privacy/find'] button[type=submit]")
    page.wait_for_selector("#person")
    calls = page.inner_text("#calls")
    assert "+33 6 12 34 56 78" in calls and "Paid Search" in calls
    assert "Rappelez-moi avant midi" in page.inner_text("#contact-requests")
    assert page.locator("#sessions tbody tr").count() == 2

    with page.expect_download() as download_info:
        page.click("#person button:has-text('Export')")
    download = download_info.value
    assert download.suggested_filename.startswith("calltrack-export-")
    archive = zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes()))
    names = {Path(n).name for n in archive.namelist()}
    assert {"README.md", "person.json", "calls.csv", "sessions.csv", "pageviews.csv"} <= names

    page.click("#person button:has-text('Erase')")
    page.wait_for_selector("#confirm-erase")
    page.click("#confirm-erase")
    page.wait_for_selector("#erasure-report")
    report = page.inner_text("#erasure-report")
    assert "sessions" in report and "anonymised" in report

    page.fill("input[name=q]", "+33 6 12 34 56 78")
    page.click("form[action='/dashboard/privacy/find'] button[type=submit]")
    page.wait_for_selector("#nothing-found")
    assert page.locator("#person").count() == 0

    async def remaining() -> tuple[int, int, int]:
        async with stack.database.sessions() as db:
            sessions = await db.scalar(
                select(func.count()).where(TrackedSession.id.in_(stack.seeded.session_ids))
            )
            calls = await db.scalar(
                select(func.count()).where(Call.site_id == stack.seeded.site.id)
            )
            linked = await db.scalar(
                select(func.count()).where(
                    Call.site_id == stack.seeded.site.id, Call.caller_e164 == PHONE
                )
            )
            return int(sessions or 0), int(calls or 0), int(linked or 0)

    # The visits are gone; the call still counts in reports, linked to no one.
    assert stack.query(remaining()) == (0, 2, 0)
    assert errors == []
    context.close()
