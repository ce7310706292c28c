"""Settings read from `CALLTRACK_*` environment variables (documented in README.md)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/calltrack.sqlite3"
DEFAULT_SPOOL_DIR = "var/spool"
# Where commands other than `serve` and `demo` expect the server without CALLTRACK_PUBLIC_URL.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _int_env(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _networks_env(name: str) -> tuple[str, ...]:
    """Parse "10.0.0.0/8, 192.0.2.7" into networks; a bad entry is refused at start, by name."""
    networks: list[str] = []
    for item in (_env(name) or "").split(","):
        if not item.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError as exc:
            raise ValueError(
                f"{name} must list IP addresses or networks (10.0.0.0/8,192.0.2.7); "
                f"{item.strip()!r} is neither"
            ) from exc
    return tuple(networks)


_SID_PREFIXES = {"CALLTRACK_TWILIO_BUNDLE_SIDS": "BU", "CALLTRACK_TWILIO_ADDRESS_SIDS": "AD"}


def _country_sids(name: str) -> dict[str, str]:
    """Parse "FR=BU…,DE=BU…" into {"FR": "BU…"}: per-country Twilio regulatory resources."""
    raw = _env(name)
    found: dict[str, str] = {}
    prefix = _SID_PREFIXES[name]
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        country, _, sid = item.partition("=")
        country, sid = country.strip().upper(), sid.strip()
        valid_sid = len(sid) == 34 and sid.startswith(prefix)
        if len(country) != 2 or not country.isalpha() or not valid_sid:
            raise ValueError(
                f"{name} must read like FR={prefix}{'0' * 32},DE=...; got {item.strip()!r}"
            )
        try:
            int(sid[2:], 16)
        except ValueError as exc:
            raise ValueError(f"{name}: {sid!r} is not a {prefix} SID") from exc
        found[country] = sid
    return found


def normalise_database_url(url: str) -> str:
    """Map plain `postgresql://` and `sqlite://` URLs to their async drivers."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///") and "+aiosqlite" not in url:
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    public_url: str = DEFAULT_PUBLIC_URL
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32))
    geoip_db: str | None = None
    max_body_bytes: int = 64 * 1024
    # `calltrack demo` only: the demo shop and its activity page (no sign-in needed there).
    demo: bool = False
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    # During an auth-token rotation: the other token, also accepted on webhooks.
    twilio_auth_token_secondary: str | None = None
    twilio_api_url: str | None = None
    # Regulatory resources Twilio requires to buy numbers in some countries (France, Germany,
    # Belgium, …): country code → Bundle SID / Address SID, given with each purchase there.
    twilio_bundle_sids: dict[str, str] = field(default_factory=dict)
    twilio_address_sids: dict[str, str] = field(default_factory=dict)
    carrier: str = "simulated"
    log_level: str = "INFO"
    redis_prefix: str = "calltrack:"
    # Proxies whose X-Forwarded-For is believed (loopback always is), comma-separated CIDRs.
    trusted_proxies: tuple[str, ...] = ()
    # Drop headless browsers (HeadlessChrome) at collect like bots (see tracker.useragent).
    block_headless: bool = False
    # Carrier webhooks received while the database is unreachable wait here (telephony.spool).
    spool_dir: str = DEFAULT_SPOOL_DIR

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": normalise_database_url(
                _env("CALLTRACK_DATABASE_URL", DEFAULT_DATABASE_URL) or DEFAULT_DATABASE_URL
            ),
            "redis_url": _env("CALLTRACK_REDIS_URL"),
            "public_url": (_env("CALLTRACK_PUBLIC_URL", DEFAULT_PUBLIC_URL) or "").rstrip("/"),
            "secret_key": _env("CALLTRACK_SECRET_KEY") or _dev_secret_key(),
            "geoip_db": _env("CALLTRACK_GEOIP_DB"),
            "max_body_bytes": _int_env("CALLTRACK_MAX_BODY_BYTES", 64 * 1024),
            "twilio_account_sid": _env("CALLTRACK_TWILIO_ACCOUNT_SID"),
            "twilio_auth_token": _env("CALLTRACK_TWILIO_AUTH_TOKEN"),
            "twilio_auth_token_secondary": _env("CALLTRACK_TWILIO_AUTH_TOKEN_SECONDARY"),
            "twilio_api_url": _env("CALLTRACK_TWILIO_API_URL"),
            "twilio_bundle_sids": _country_sids("CALLTRACK_TWILIO_BUNDLE_SIDS"),
            "twilio_address_sids": _country_sids("CALLTRACK_TWILIO_ADDRESS_SIDS"),
            "carrier": _env("CALLTRACK_CARRIER")
            or ("twilio" if _env("CALLTRACK_TWILIO_ACCOUNT_SID") else "simulated"),
            "log_level": _env("CALLTRACK_LOG_LEVEL", "INFO") or "INFO",
            "redis_prefix": _env("CALLTRACK_REDIS_PREFIX", "calltrack:") or "calltrack:",
            "block_headless": (_env("CALLTRACK_BLOCK_HEADLESS") or "0").lower()
            in ("1", "true", "yes"),
            "spool_dir": _env("CALLTRACK_SPOOL_DIR") or DEFAULT_SPOOL_DIR,
            "trusted_proxies": _networks_env("CALLTRACK_TRUSTED_PROXIES"),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _dev_secret_key() -> str:
    """Keep a stable secret for the embedded default so sessions survive restarts.

    Production sets CALLTRACK_SECRET_KEY; the embedded default writes one under ./var/ once.
    """
    path = Path("var") / "secret_key"
    try:
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        path.write_text(key)
        path.chmod(0o600)
        return key
    except OSError:
        return secrets.token_hex(32)
