"""The Twilio REST client against Prism serving Twilio's own OpenAPI spec (api.twilio.com).

Prism (npm `@stoplight/prism-cli`, pinned in infra/twilio-mock) validates every request
against the spec, answering 422 to one the spec forbids, and answers with the spec's examples.
It runs without `--errors`: that flag also turns *response* violations into 500s, and Twilio's
own examples break Twilio's own response schemas (latitudes as strings, relative `uri`s), so
every AvailablePhoneNumbers answer would be a 500. Prism still reports those as an
`sl-violations` header, which the client below records: the tests fail on any violation
located in the request, and ignore the spec's own example defects.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete
from support.app import free_port, make_settings
from support.numbers import random_e164
from support.process import stop, wait_answering

from dashboard import telephony_cli
from telephony.carriers.base import CarrierError, ProvisionedNumber, WebhookUrls
from telephony.carriers.twilio import RebasedHttpClient, TwilioCarrier
from telephony.signature import webhook_urls
from tracker.clock import FrozenClock
from tracker.db import Database
from tracker.models import TrackingNumber
from tracker.sites import SiteSpec, create_site, get_or_create_account

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "data" / "twilio" / "twilio_api_v2010.json"
MOCK_DIR = ROOT / "infra" / "twilio-mock"
PRISM = MOCK_DIR / "node_modules" / ".bin" / "prism"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "prism-does-not-check-the-token"
PUBLIC = "https://ct.example.eu"
WEBHOOKS = WebhookUrls(
    voice_url="https://ct.example.eu/telephony/twilio/voice",
    status_url="https://ct.example.eu/telephony/twilio/status",
)
# The numbers in the spec's examples.
EXAMPLE_AVAILABLE = "+18089251571"
EXAMPLE_OWNED = "+18089255327"
EXAMPLE_NUMBER_SID = "PN" + "a" * 32


def _install_prism() -> None:
    """Install Prism from the lock file on a fresh machine (`make test` needs nothing else)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: install Node.js 20+ to run the Twilio contract tests")
    command = "ci" if (MOCK_DIR / "package-lock.json").exists() else "install"
    subprocess.run(
        # No install scripts: Prism needs none, and some dependencies' only phone home.
        [npm, command, "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=MOCK_DIR,
        check=True,
        timeout=600,
        env={**os.environ, "SCARF_ANALYTICS": "false"},
    )


@pytest.fixture(scope="session")
def prism_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve Twilio's OpenAPI spec with Prism on a random local port."""
    if not SPEC.exists():
        pytest.fail(f"Twilio's OpenAPI spec is missing at {SPEC}")
    if not PRISM.exists():
        _install_prism()
    port = free_port()
    log_path = tmp_path_factory.mktemp("prism") / "prism.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(PRISM), "mock", "--host", "127.0.0.1", "--port", str(port), str(SPEC)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SCARF_ANALYTICS": "false"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Prism answers 401/404 on this path once it listens.
        wait_answering(
            f"{url}/2010-04-01/Accounts.json",
            process,
            timeout=180,
            any_status=True,
            failure=lambda why: f"Prism {why}",
        )
        yield url
    finally:
        stop(process)


class CheckedHttpClient(RebasedHttpClient):
    """Record every exchange and the spec violations Prism reports about it."""

    def __init__(self, api_url: str) -> None:
        super().__init__(api_url)
        self.exchanges: list[tuple[str, str, int]] = []
        self.sent_lists: dict[str, list[str]] = {}
        self.request_violations: list[Any] = []
        self.sent_forms: list[dict[str, Any]] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data") or {}
        self.sent_forms.append(dict(data))
        self.sent_lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if self.sent_lists:
            # Twilio takes an array as the same key repeated (the spec says so for
            # StatusCallbackEvent), but Prism 5 reads repeated form keys as one value
            # (stoplightio/prism#2473, fix pending in #2654); it reads `Key[]` as an array.
            kwargs["data"] = {(f"{k}[]" if k in self.sent_lists else k): v for k, v in data.items()}
        response = super().request(method, url, *args, **kwargs)
        sent = self._test_only_last_request
        self.exchanges.append((method, sent.url if sent else url, response.status_code))
        violations = json.loads(response.headers.get("sl-violations") or "[]")
        if response.status_code == 422:
            violations += json.loads(response.text).get("validation", [])
        self.request_violations += [v for v in violations if v["location"][0] != "response"]
        return response


@pytest.fixture
def checked(prism_url: str) -> Iterator[tuple[TwilioCarrier, CheckedHttpClient]]:
    http = CheckedHttpClient(prism_url)
    carrier = TwilioCarrier(ACCOUNT_SID, AUTH_TOKEN, http_client=http)
    yield carrier, http
    carrier.close()


async def test_search_and_buy_numbers(
    checked: tuple[TwilioCarrier, CheckedHttpClient], prism_url: str
) -> None:
    carrier, http = checked
    found = await carrier.search_available("FR", 3, contains="33")
    assert found == [EXAMPLE_AVAILABLE]
    bought = await carrier.buy(found[0], WEBHOOKS)
    assert bought.provider == "twilio" and bought.provider_sid == EXAMPLE_NUMBER_SID
    assert bought.e164 == EXAMPLE_OWNED  # what Prism's example says was bought
    assert http.request_violations == []
    assert [(m, u.split("/Accounts/")[1]) for m, u, _ in http.exchanges] == [
        ("GET", f"{ACCOUNT_SID}/AvailablePhoneNumbers/FR/Local.json"),
        ("POST", f"{ACCOUNT_SID}/IncomingPhoneNumbers.json"),
    ]
    assert all(url.startswith(prism_url) for _, url, _ in http.exchanges)


BUNDLE_FR = "BU" + "0a1b2c3d" * 4
ADDRESS_FR = "AD" + "4e5f6a7b" * 4


async def test_a_purchase_names_the_countrys_regulatory_bundle_and_address(
    prism_url: str,
) -> None:
    # France (like most of Europe) requires a Bundle and an Address with each number bought.
    http = CheckedHttpClient(prism_url)
    carrier = TwilioCarrier(
        ACCOUNT_SID,
        AUTH_TOKEN,
        http_client=http,
        bundle_sids={"fr": BUNDLE_FR},
        address_sids={"FR": ADDRESS_FR},
    )
    try:
        await carrier.buy("+33199001234", webhook_urls(PUBLIC).forwarding_to("+33123456789"))
        await carrier.buy("+442079460958", WEBHOOKS)  # none configured for GB
    finally:
        carrier.close()
    assert http.request_violations == []  # Prism checked the fields against Twilio's spec
    french, british = http.sent_forms
    # If our voice webhook cannot answer, Twilio rings the business line through the fallback.
    assert french["VoiceFallbackUrl"] == f"{PUBLIC}/telephony/twilio/fallback?to=%2B33123456789"
    assert french["VoiceFallbackMethod"] == "POST"
    assert "VoiceFallbackUrl" not in british  # webhooks without a fallback send none
    assert french["BundleSid"] == BUNDLE_FR and french["AddressSid"] == ADDRESS_FR
    assert french["PhoneNumber"] == "+33199001234"
    assert "BundleSid" not in british and "AddressSid" not in british


def test_regulatory_sids_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tracker.config import Settings

    monkeypatch.setenv("CALLTRACK_SECRET_KEY", "twilio-env-test-" + "k" * 32)  # no var/ file
    monkeypatch.setenv("CALLTRACK_TWILIO_BUNDLE_SIDS", f" fr={BUNDLE_FR} , DE={BUNDLE_FR}")
    monkeypatch.setenv("CALLTRACK_TWILIO_ADDRESS_SIDS", f"FR={ADDRESS_FR}")
    settings = Settings.from_env()
    assert settings.twilio_bundle_sids == {"FR": BUNDLE_FR, "DE": BUNDLE_FR}
    assert settings.twilio_address_sids == {"FR": ADDRESS_FR}
    for wrong in (f"FR={ADDRESS_FR}", "FR=BU123", f"France={BUNDLE_FR}", "BU" + "z" * 32):
        monkeypatch.setenv("CALLTRACK_TWILIO_BUNDLE_SIDS", wrong)
        with pytest.raises(ValueError, match="CALLTRACK_TWILIO_BUNDLE_SIDS"):
            Settings.from_env()
    # The command line says which variable is wrong, without a traceback.
    from dashboard.cli import main

    assert main(["site", "list"]) == 2
    assert "configuration error: CALLTRACK_TWILIO_BUNDLE_SIDS" in capsys.readouterr().err


async def test_configure_an_owned_number_and_release_it(
    checked: tuple[TwilioCarrier, CheckedHttpClient],
) -> None:
    carrier, http = checked
    configured = await carrier.configure(EXAMPLE_OWNED, WEBHOOKS)
    assert configured.provider_sid == EXAMPLE_NUMBER_SID
    await carrier.release(configured)
    await carrier.release(ProvisionedNumber(EXAMPLE_OWNED, "twilio", None))
    assert http.request_violations == []
    methods = [m for m, _, _ in http.exchanges]
    assert methods == ["GET", "POST", "DELETE", "GET", "DELETE"]
    assert [status for _, _, status in http.exchanges] == [200, 200, 204, 200, 204]


async def test_configuring_a_number_the_account_does_not_own_fails_clearly(
    checked: tuple[TwilioCarrier, CheckedHttpClient],
) -> None:
    carrier, _ = checked
    with pytest.raises(CarrierError, match="not a number of this Twilio account"):
        await carrier.configure("+33199001234", WEBHOOKS)


async def test_place_a_bridged_call(checked: tuple[TwilioCarrier, CheckedHttpClient]) -> None:
    carrier, http = checked
    placed = await carrier.place_bridged_call(
        first_e164="+33612345678",
        then_e164="+33698765432",
        caller_id=EXAMPLE_OWNED,
        url="https://ct.example.eu/telephony/twilio/bridge?call=7",
        status_url=WEBHOOKS.status_url,
    )
    assert placed.provider == "twilio" and placed.provider_call_id.startswith("CA")
    assert http.request_violations == []
    assert http.sent_lists == {
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"]
    }


async def test_prism_refuses_a_request_the_spec_forbids(prism_url: str) -> None:
    # An account sid the spec's pattern rejects: Prism answers 422, the carrier says why.
    http = CheckedHttpClient(prism_url)
    carrier = TwilioCarrier("AC-not-a-sid", AUTH_TOKEN, http_client=http)
    with pytest.raises(CarrierError, match="Twilio refused"):
        await carrier.search_available("FR", 1)
    assert http.exchanges[0][2] == 422
    assert any(v["location"][:2] == ["path", "accountsid"] for v in http.request_violations)
    carrier.close()


async def test_the_api_url_setting_points_the_client_at_the_stand_in(prism_url: str) -> None:
    from telephony.carrier_factory import close_carrier, create_carrier

    settings = make_settings(
        "sqlite+aiosqlite:///:memory:",
        carrier="twilio",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=prism_url,
    )
    carrier = create_carrier(settings)
    try:
        assert await carrier.search_available("FR", 1) == [EXAMPLE_AVAILABLE]
    finally:
        await close_carrier(carrier)
    with pytest.raises(CarrierError, match="CALLTRACK_TWILIO_AUTH_TOKEN"):
        create_carrier(make_settings("sqlite+aiosqlite:///:memory:", carrier="twilio"))


async def _site_key(database: Database) -> str:
    async with database.begin() as db:
        account = await get_or_create_account(db, f"prism-{random_e164()}", FrozenClock())
        site = await create_site(
            db, account, SiteSpec("Vélos Martin", "velos-martin.fr", "+33123456789", "FR")
        )
        return site.site_key


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    numbers = commands.add_parser("numbers").add_subparsers(dest="numbers_command", required=True)
    telephony_cli.register_numbers_commands(numbers)
    return parser


async def test_numbers_buy_and_import_with_twilio(
    prism_url: str, database: Database, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    site_key = await _site_key(database)
    settings = make_settings(
        database_url,
        public_url="https://ct.example.eu",
        carrier="twilio",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=prism_url,
    )
    async with database.begin() as db:
        # Prism's examples always buy the same number: forget it from earlier tests' sites.
        await db.execute(delete(TrackingNumber).where(TrackingNumber.e164 == EXAMPLE_OWNED))
    args = _parser().parse_args(
        ["numbers", "buy", "--site", site_key, "--country", "FR", "--count", "1", "--json"]
    )
    assert await args.handler(args, settings) == 0
    bought = json.loads(capsys.readouterr().out)
    assert [(n["e164"], n["provider"], n["provider_sid"]) for n in bought] == [
        (EXAMPLE_OWNED, "twilio", EXAMPLE_NUMBER_SID)
    ]
    assert bought[0]["voice_url"] == "https://example.com"  # as the carrier reports it
    assert bought[0]["status_url"] == WEBHOOKS.status_url
    # The fallback Twilio was given rings the site's business line (+33 1 23 45 67 89).
    fallback = f"{PUBLIC}/telephony/twilio/fallback?to=%2B33123456789"
    assert bought[0]["fallback_url"] == fallback

    args = _parser().parse_args(
        ["numbers", "import", "--site", site_key, "--provider", "twilio", "--number", random_e164()]
    )
    assert await args.handler(args, settings) == 2
    assert "not a number of this Twilio account" in capsys.readouterr().err

    number = random_e164()
    args = _parser().parse_args(
        [
            *("numbers", "import", "--site", site_key, "--provider", "twilio"),
            *("--number", number, "--no-configure"),
        ]
    )
    assert await args.handler(args, settings) == 0
    captured = capsys.readouterr()
    imported = json.loads(captured.out)
    assert imported["e164"] == number and imported["provider_sid"] is None
    assert imported["configure"]["voice_url"] == imported["voice_url"] == WEBHOOKS.voice_url
    assert imported["configure"]["voice_fallback_url"] == fallback
    assert WEBHOOKS.status_url in captured.err and fallback in captured.err

    # Reconfiguring points every active number at the webhooks again (here: a new public URL).
    # The imported number is not in this Twilio account: it is reported, the others are done.
    moved = replace(settings, public_url="https://calls.example.eu")
    args = _parser().parse_args(["numbers", "reconfigure", "--site", site_key])
    assert await args.handler(args, moved) == 2
    captured = capsys.readouterr()
    done, refused = json.loads(captured.out)
    assert done["e164"] == EXAMPLE_OWNED and done["provider_sid"] == EXAMPLE_NUMBER_SID
    assert done["status_url"] == "https://calls.example.eu/telephony/twilio/status"
    assert (
        done["fallback_url"]
        == "https://calls.example.eu/telephony/twilio/fallback?to=%2B33123456789"
    )
    assert refused["e164"] == number and "not a number of this Twilio account" in refused["error"]
    assert "1 number(s) could not be reconfigured" in captured.err
