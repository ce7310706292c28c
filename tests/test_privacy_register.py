"""Records of processing generated from the site's configuration, in French and English."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support.app import make_settings

from dashboard.cli import main
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import Site, TrackingNumber
from tracker.privacy.register import build_register, to_html, to_markdown
from tracker.privacy.retention import set_retention
from tracker.sites import SiteSpec, create_site, get_or_create_account
from tracker.users import create_user

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


async def make_site(
    database: Database,
    *,
    name: str = "Vélos Martin",
    consent_mode: str = "required",
    provider: str | None = None,
    record_calls: bool = False,
    extra: dict[str, object] | None = None,
) -> Site:
    clock = FrozenClock(NOW)
    async with database.begin() as db:
        account = await get_or_create_account(db, f"reg-{secrets.token_hex(4)}", clock)
        site = await create_site(
            db, account, SiteSpec(name, "velos-martin.fr", "+33 1 23 45 67 89", "FR",
                                  consent_mode=consent_mode), clock
        )  # fmt: skip
        site.record_calls = record_calls
        set_retention(site, {"recordings": 3})
        if extra:
            site.settings = {**site.settings, "register": extra}
        await create_user(
            db, account, f"adv-{secrets.token_hex(3)}@x.fr", "x" * 12, "advisor", clock
        )
        if provider:
            db.add(TrackingNumber(site_id=site.id, e164="+33970000001", provider=provider,
                                  kind="pool", created_at=NOW))  # fmt: skip
    return site


async def render(database: Database, site: Site, lang: str, public_url: str = "https://ct.example.eu") -> tuple[str, str]:  # fmt: skip
    async with database.sessions() as db:
        loaded = await db.get(Site, site.id)
        assert loaded is not None
        document = await build_register(
            db, loaded, make_settings("sqlite://", public_url=public_url), lang, NOW
        )
    return to_markdown(document), to_html(document)


async def test_english_register_reflects_the_configuration(database: Database) -> None:
    site = await make_site(database, provider="twilio", record_calls=True)
    markdown, html = await render(database, site, "en")
    assert markdown.startswith("# Record of processing activities")
    for title in ("Controller and processor", "Purposes and legal bases", "Data subjects",
                  "Categories of data", "Retention periods", "Recipients",
                  "Transfers outside the EU/EEA", "Security measures", "Data subjects' rights"):  # fmt: skip
        assert title in markdown
    assert "Consent mode: `required`" in markdown
    assert "Before consent (or with GPC)" in markdown and "After consent" in markdown
    assert "| recordings | 3\u00a0months |" in markdown  # the site's own period
    assert (
        "| pageviews | 13\u00a0months |" in markdown
        and "| audit_log | 60\u00a0months |" in markdown
    )
    assert "Live assistance" in markdown  # the account has an advisor
    assert "Call recording (enabled)" in markdown and "Recordings:" in markdown
    assert "Twilio (telephone carrier)" in markdown and "Twilio Inc. (United States)" in markdown
    assert "HTTPS for every page" in markdown
    assert "@page { size: A4" in html and "<h2>5. Retention periods</h2>" in html


async def test_french_register_without_carrier_has_no_transfer(database: Database) -> None:
    site = await make_site(
        database,
        consent_mode="not_required",
        provider="simulated",
        extra={"controller": "Vélos Martin SARL, 3 rue X, Lyon", "hosting": "OVHcloud, Roubaix (FR)",
               "dpo": "dpo@velos-martin.fr"},
    )  # fmt: skip
    markdown, html = await render(database, site, "fr", public_url="http://127.0.0.1:8080")
    assert markdown.startswith("# Registre des activités de traitement")
    assert "Vélos Martin SARL, 3 rue X, Lyon" in markdown and "dpo@velos-martin.fr" in markdown
    assert "intérêt légitime" in markdown and "| recordings | 3\u00a0mois |" in markdown
    assert (
        "Aucun : les données restent dans la région d'hébergement (OVHcloud, Roubaix (FR))."
        in markdown
    )
    assert "Aucun opérateur : numéros simulés" in markdown and "Twilio" not in markdown
    assert "ATTENTION : l'URL publique est en HTTP simple" in markdown
    assert "Enregistrement des appels" not in markdown
    assert '<html lang="fr">' in html


async def test_what_the_merchant_typed_is_escaped_in_html(database: Database) -> None:
    site = await make_site(database, name="<script>alert(1)</script>")
    _, html = await render(database, site, "en")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "(to be completed by the controller)" in html


@pytest.fixture
def cli_site(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Site:
    """A site, and the environment for `calltrack` commands to reach its database."""

    async def seed() -> Site:
        database = Database(database_url)
        try:
            return await make_site(database)
        finally:
            await database.close()

    monkeypatch.setenv("CALLTRACK_DATABASE_URL", database_url)
    monkeypatch.setenv("CALLTRACK_SECRET_KEY", "cli-test-" + "k" * 40)  # no var/ file
    return asyncio.run(seed())


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_cli_register(cli_site: Site, tmp_path: Path, fmt: str) -> None:
    site = cli_site
    output = tmp_path / f"register.{fmt}"
    code = main(["privacy", "register", "--site", site.site_key, "--lang", "fr", "--format", fmt,
                 "--output", str(output)])  # fmt: skip
    assert code == 0
    text = output.read_text(encoding="utf-8")
    assert "Registre des activités de traitement" in text
    assert ("<!doctype html>" in text) == (fmt == "html")


async def test_breach_report_covers_one_account_or_the_whole_installation(
    database: Database,
) -> None:
    from tracker.audit import audit
    from tracker.privacy.breach import breach_report

    now = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
    async with database.begin() as db:
        ours = await get_or_create_account(db, f"ours-{secrets.token_hex(4)}", FrozenClock())
        theirs = await get_or_create_account(db, f"theirs-{secrets.token_hex(4)}", FrozenClock())
        for account, actor in ((ours, "ana@ours.fr"), (theirs, "bob@theirs.fr")):
            await audit(db, action="console.visitor_viewed", at=now, actor=actor,
                        account_id=account.id, target="session:abc")  # fmt: skip
    since, until = now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)
    async with database.sessions() as db:
        one = await breach_report(db, ours.id, since, until)
        everyone = await breach_report(db, None, since, until)
    assert set(one.actors) == {"ana@ours.fr"}
    assert {"ana@ours.fr", "bob@theirs.fr"} <= set(everyone.actors)


def test_the_merchant_fills_in_the_register_from_the_command_line(
    cli_site: Site, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What only the merchant knows (controller, DPO, hosting, transfers) had no way in but
    editing the database: `site set --register FIELD=TEXT` sets it, audited."""
    import json

    site = cli_site
    code = main(["site", "set", "--site", site.site_key,
                 "--register", "controller=Vélos Martin SARL, 12 rue de la Gare, Lyon",
                 "--register", "dpo=dpo@velos-martin.fr",
                 "--register", "hosting=OVHcloud, Roubaix (FR)",
                 "--register", "transfers=Google Ads (US, SCC); Brevo (FR)"])  # fmt: skip
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["register"] == {
        "controller": "Vélos Martin SARL, 12 rue de la Gare, Lyon",
        "dpo": "dpo@velos-martin.fr",
        "hosting": "OVHcloud, Roubaix (FR)",
        "transfers": ["Google Ads (US, SCC)", "Brevo (FR)"],
    }
    output = tmp_path / "register.md"
    assert main(["privacy", "register", "--site", site.site_key, "--lang", "en",
                 "--output", str(output)]) == 0  # fmt: skip
    text = output.read_text(encoding="utf-8")
    for typed in ("Vélos Martin SARL, 12 rue de la Gare, Lyon", "dpo@velos-martin.fr",
                  "OVHcloud, Roubaix (FR)", "Google Ads (US, SCC)", "Brevo (FR)"):  # fmt: skip
        assert typed in text
    assert "(to be completed by the controller)" not in text

    # An empty text clears a field; the placeholder is back for it.
    capsys.readouterr()
    assert main(["site", "set", "--site", site.site_key, "--register", "dpo="]) == 0
    assert "dpo" not in json.loads(capsys.readouterr().out)["register"]
    assert main(["privacy", "register", "--site", site.site_key, "--lang", "en",
                 "--output", str(output)]) == 0  # fmt: skip
    assert "(to be completed by the controller)" in output.read_text(encoding="utf-8")

    # Bad input: exit 2 with the code, nothing changed.
    capsys.readouterr()
    for wrong, expected in (("owner=Me", "invalid_register_field"), ("dpo", "invalid_register_field"),
                            ("dpo=a\nb", "invalid_register_text")):  # fmt: skip
        assert main(["site", "set", "--site", site.site_key, "--register", wrong]) == 2
        assert expected in capsys.readouterr().err

    async def audited() -> list[dict[str, object]]:
        from tracker.models import AuditEntry

        database = Database(database_url)
        try:
            async with database.sessions() as db:
                entries = await db.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.target == f"site:{site.id}")
                    .order_by(AuditEntry.id)
                )
                return [dict(entry.detail["changed"]) for entry in entries]
        finally:
            await database.close()

    changes = asyncio.run(audited())
    assert len(changes) == 2
    assert changes[0]["register.dpo"] == [None, "dpo@velos-martin.fr"]
    assert changes[1] == {"register.dpo": ["dpo@velos-martin.fr", None]}


async def test_a_dpo_fills_in_the_register_on_its_page(
    aiohttp_client: Any, database: Database, database_url: str
) -> None:
    from test_audit_matrix import add_user, sign_in

    from dashboard.app import create_app
    from tracker.models import Account, AuditEntry

    site = await make_site(database)
    async with database.sessions() as db:
        account = await db.get(Account, site.account_id)
        assert account is not None
    client = await aiohttp_client(create_app(make_settings(database_url)))
    csrf = await sign_in(client, database, await add_user(database, account.name, "dpo"))
    page = await client.get(f"/dashboard/privacy/register?site={site.site_key}&doc=fr")
    assert page.status == 200
    text = await page.text()
    assert 'name="controller"' in text and "(à compléter par le responsable)" in text

    form = {
        "csrf": csrf,
        "controller": "Vélos Martin SARL, 12 rue de la Gare, Lyon",
        "dpo": "dpo@velos-martin.fr",
        "hosting": "OVHcloud, Roubaix",
        "transfers": "Google Ads (US, SCC)\r\nBrevo <FR>\r\n",
    }
    url = f"/dashboard/privacy/register?site={site.site_key}&doc=fr"
    saved = await client.post(url, data=form)
    assert saved.status == 200
    text = await saved.text()
    assert "Saved." in text and "(à compléter par le responsable)" not in text
    assert "Vélos Martin SARL, 12 rue de la Gare, Lyon" in text and "Brevo &lt;FR&gt;" in text
    async with database.sessions() as db:
        stored = await db.get(Site, site.id)
        assert stored is not None
        assert stored.settings["register"]["transfers"] == ["Google Ads (US, SCC)", "Brevo <FR>"]
        entry = await db.scalar(
            select(AuditEntry)
            .where(AuditEntry.action == "privacy.register_update")
            .where(AuditEntry.target == f"sites:{site.id}")
        )
    assert entry is not None and entry.detail["changed"]["register.dpo"] == [None, form["dpo"]]

    # Without the CSRF token nothing changes; a line too long is refused with its reason; an
    # unknown site (another account's, say) is not taken for the first one.
    unknown = await client.post("/dashboard/privacy/register?site=ct-nope", data=form)
    assert unknown.status == 404
    refused = await client.post(url, data={**form, "csrf": "", "dpo": "someone@else.fr"})
    assert refused.status == 403
    too_long = await client.post(url, data={**form, "hosting": "x" * 501})
    assert too_long.status == 400 and "500 characters" in await too_long.text()
    async with database.sessions() as db:
        stored = await db.get(Site, site.id)
        assert stored is not None
        assert stored.settings["register"]["dpo"] == "dpo@velos-martin.fr"
        assert stored.settings["register"]["hosting"] == "OVHcloud, Roubaix"
