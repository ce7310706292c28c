"""Find a person by any identifier, export their data (service and CLI), on both backends."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select
from test_privacy_erase import NOW, PHONE, SECRET, Seeded, seed_person

from dashboard.cli import main
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import AuditEntry, ExportRecord
from tracker.privacy.export import EXPORTED_TABLES, export_person, field_doc
from tracker.privacy.find import Scope, SubjectQuery, find_person, parse_subject
from tracker.privacy.hashing import subject_hash
from tracker.sites import SiteSpec, create_site, get_or_create_account


@pytest.mark.parametrize(
    "written", ["06 12 34 56 78", "+33 6 12 34 56 78", "0033612345678", "+33 (0)6-12-34-56-78"]
)
def test_phone_numbers_are_normalised_whatever_their_form(written: str) -> None:
    assert parse_subject("phone", written, "FR") == SubjectQuery("phone", PHONE)


def test_bad_identifiers_are_refused_with_a_reason() -> None:
    with pytest.raises(ApiError) as phone:
        parse_subject("phone", "12", "FR")
    assert phone.value.code == "invalid_phone"
    with pytest.raises(ApiError) as visitor:
        parse_subject("visitor", "not-hex", "FR")
    assert visitor.value.code == "invalid_visitor"


async def test_every_identifier_finds_the_same_person(database: Database) -> None:
    seeded = await seed_person(database)
    queries = [
        parse_subject("phone", "06 12 34 56 78", "FR"),
        SubjectQuery("visitor", seeded.visitor_id),
        SubjectQuery("session", seeded.session_ids[1]),
        SubjectQuery("call", seeded.call_sid),
        SubjectQuery("call", str(seeded.call_id)),
    ]
    async with database.sessions() as db:
        people = [await find_person(db, seeded.scope, q, SECRET) for q in queries]
    for person in people:
        assert person.phones == {PHONE}
        assert person.visitor_ids == {seeded.visitor_id}
        assert person.session_ids == set(seeded.session_ids)
        counts = person.counts()
        assert counts["calls"] == 1 and counts["contact_requests"] == 1
        assert counts["pageviews"] == 4 and counts["carts"] == 1 and counts["leases"] == 1
        assert counts["carrier_events"] == 1 and counts["webhook_deliveries"] == 1
        assert counts["privacy_restrictions"] == 4 and counts["privacy_exclusions"] == 1
        # The console's view of the visit, the call view and the earlier privacy search.
        assert counts["audit_log"] == 3
        assert seeded.bystander_session not in person.session_ids


async def test_search_stays_inside_the_account(database: Database) -> None:
    seeded = await seed_person(database)
    async with database.begin() as db:
        stranger = await get_or_create_account(db, "someone-else-entirely", _clock())
        site = await create_site(
            db, stranger, SiteSpec("Autre", "autre.fr", "+33 1 44 55 66 77", "FR"), _clock()
        )
    async with database.sessions() as db:
        other = await find_person(
            db, Scope(stranger.id, (site.id,), "FR"), SubjectQuery("phone", PHONE), SECRET
        )
        # Same number, same visitor id: another tenant's search sees nothing of this one.
        assert not other.found and other.audit_entries == []
        assert (
            await find_person(
                db,
                Scope(stranger.id, (site.id,), "FR"),
                SubjectQuery("visitor", seeded.visitor_id),
                SECRET,
            )
        ).sessions == []


def _clock() -> FrozenClock:
    return FrozenClock(NOW)


async def test_export_archive_has_json_csv_per_table_and_a_readme(
    database: Database, tmp_path: Path
) -> None:
    seeded = await seed_person(database)
    async with database.begin() as db:
        person = await find_person(db, seeded.scope, SubjectQuery("phone", PHONE), SECRET)
        result = await export_person(
            db, person, directory=tmp_path, secret_key=SECRET, actor="dpo@x.fr", now=NOW
        )
    assert result.path.parent == tmp_path and result.path.stat().st_mode & 0o777 == 0o600
    with zipfile.ZipFile(result.path) as archive:
        names = {Path(n).name: n for n in archive.namelist()}
        assert {"README.md", "person.json"} | {f"{t}.csv" for t in EXPORTED_TABLES} == set(names)
        document = json.loads(archive.read(names["person.json"]))
        readme = archive.read(names["README.md"]).decode()
        calls = list(csv.DictReader(io.StringIO(archive.read(names["calls.csv"]).decode())))
        sessions = list(csv.DictReader(io.StringIO(archive.read(names["sessions.csv"]).decode())))
    assert document["identifiers"]["phone_numbers"] == [PHONE]
    assert document["restricted"] is True and document["excluded_from_tracking"] is True
    assert len(document["tables"]["pageviews"]) == 4
    assert calls[0]["caller_e164"] == PHONE and calls[0]["channel"] == "Paid Search"
    assert "twiml" not in calls[0]
    assert {s["id"] for s in sessions} == set(seeded.session_ids)
    assert "(no description)" not in readme
    for table, rows in document["tables"].items():
        for column in rows[0] if rows else []:
            assert field_doc(table, column), f"{table}.{column} is not documented"
    # Staff names are the staff's own data, not the requester's.
    assert "actor" not in document["tables"]["audit_log"][0]
    async with database.sessions() as db:
        record = await db.get(ExportRecord, result.record.id)
        assert record is not None and PHONE not in json.dumps(record.subject_hashes)
        assert subject_hash(SECRET, seeded.account_id, "phone", PHONE) in record.subject_hashes


def _seed_sync(database_url: str) -> Seeded:
    async def run() -> Seeded:
        database = Database(database_url)
        try:
            return await seed_person(database)
        finally:
            await database.close()

    return asyncio.run(run())


def _audit_actions(database_url: str, account_id: int) -> list[str]:
    async def run() -> list[str]:
        database = Database(database_url)
        try:
            async with database.sessions() as db:
                rows = await db.scalars(
                    select(AuditEntry.action)
                    .where(AuditEntry.account_id == account_id, AuditEntry.actor.startswith("cli"))
                    .order_by(AuditEntry.id)
                )
                return list(rows)
        finally:
            await database.close()

    return asyncio.run(run())


def test_cli_find_and_export(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeded = _seed_sync(database_url)
    monkeypatch.setenv("CALLTRACK_DATABASE_URL", database_url)
    monkeypatch.setenv("CALLTRACK_SECRET_KEY", SECRET)
    monkeypatch.delenv("CALLTRACK_REDIS_URL", raising=False)
    key = seeded.site.site_key
    assert main(["privacy", "find", "--phone", "06 12 34 56 78", "--site", key, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["found"] and found["phones"] == [PHONE]
    assert found["counts"]["sessions"] == 2 and found["counts"]["calls"] == 1
    assert found["tables"]["contact_requests"][0]["message"] == "Rappelez-moi avant midi"

    out = tmp_path / "copy.zip"
    code = main(["privacy", "export", "--visitor", seeded.visitor_id, "--site", key,
                 "--export-dir", str(tmp_path / "exports"), "--output", str(out)])  # fmt: skip
    assert code == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["counts"]["calls"] == 1 and zipfile.is_zipfile(out)
    assert len(list((tmp_path / "exports").iterdir())) == 1
    assert out.stat().st_mode & 0o077 == 0  # personal data: the owner's only, as in exports/
    # A folder as --output takes the archive's own name (it was a traceback), and a folder
    # that does not exist is refused before anything is exported or audited.
    folder = tmp_path / "dpo"
    folder.mkdir()
    code = main(["privacy", "export", "--visitor", seeded.visitor_id, "--site", key,
                 "--export-dir", str(tmp_path / "exports"), "--output", str(folder)])  # fmt: skip
    assert code == 0 and json.loads(capsys.readouterr().out)["counts"]["calls"] == 1
    assert [p.suffix for p in folder.iterdir()] == [".zip"]
    code = main(["privacy", "export", "--visitor", seeded.visitor_id, "--site", key,
                 "--output", str(tmp_path / "missing" / "x.zip")])  # fmt: skip
    assert code == 2 and "does not exist" in capsys.readouterr().err

    assert main(["privacy", "find", "--phone", "01 99 99 99 99", "--site", key]) == 0
    assert "holds nothing" in capsys.readouterr().out
    assert _audit_actions(database_url, seeded.account_id) == [
        "privacy.find",
        "privacy.export",
        "privacy.export",
        "privacy.find",
    ]


async def test_a_caller_with_hundreds_of_calls_is_still_found(database: Database) -> None:
    """Every call names records the audit search looks for; SQLite refuses an OR of more than
    about a thousand terms ("Expression tree is too large"), which a repeat caller (or a
    spammer) reached at about 200 calls, locking the DPO out of their file."""
    import datetime as dt
    import secrets

    from tracker.models import Call

    seeded = await seed_person(database)
    async with database.begin() as db:
        db.add_all(
            Call(site_id=seeded.site.id, provider="simulated",
                 provider_call_id="CA" + secrets.token_hex(16), caller_e164=PHONE,
                 tracking_e164="+33123456789", started_at=NOW - dt.timedelta(minutes=n),
                 channel="Direct", method="unattributed", confidence=0.0)
            for n in range(1, 301)
        )  # fmt: skip
        calls = list(await db.scalars(select(Call.id).where(Call.caller_e164 == PHONE)))
        # One audit entry names the last of them (a marketer opened it).
        db.add(AuditEntry(account_id=seeded.account_id, actor="m@velos-martin.fr",
                          action="report.call_viewed", target=f"calls:{max(calls)}", detail={},
                          at=NOW))  # fmt: skip
    async with database.sessions() as db:
        person = await find_person(db, seeded.scope, parse_subject("phone", PHONE, "FR"), SECRET)
    counts = person.counts()
    assert counts["calls"] == 301
    assert counts["audit_log"] == 4  # the three of the seed, and the call view
