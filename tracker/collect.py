"""Record what the snippet sends: sessions, pageviews, time on page, carts and consent.

The service takes explicit arguments (database session, site, clock) so tests can drive it
without HTTP. The handler in `tracker.http` parses and validates; this module decides.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from tracker.errors import ApiError
from tracker.geo import GeoInfo
from tracker.models import Site, TrackedSession
from tracker.useragent import DeviceInfo
from tracker.web import loads_strict

# GA4 and most analytics tools end a session after 30 minutes without activity.
SESSION_TIMEOUT = dt.timedelta(minutes=30)
EventType = Literal["pageview", "ping", "leave", "cart", "consent"]
EVENT_TYPES: tuple[str, ...] = ("pageview", "ping", "leave", "cart", "consent")
_ID = re.compile(r"^[0-9a-f]{16,32}\Z")
MAX_URL = 4096
MAX_TITLE = 500
MAX_CART_ITEMS = 200
# A page open for longer than a day is a forgotten tab, not attention.
MAX_DURATION_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class CartItem:
    name: str
    sku: str | None
    qty: int
    price: Decimal | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sku": self.sku,
            "qty": self.qty,
            "price": None if self.price is None else str(self.price),
        }


@dataclass(frozen=True)
class CartSnapshot:
    items: tuple[CartItem, ...]
    total: Decimal | None
    currency: str | None


@dataclass(frozen=True)
class CollectEvent:
    site_key: str
    type: EventType
    page_id: str
    session_id: str | None = None
    visitor_id: str | None = None
    url: str | None = None
    referrer: str | None = None
    title: str | None = None
    duration_ms: int | None = None
    consent: bool | None = None
    gpc: bool = False
    language: str | None = None
    cart: CartSnapshot | None = None
    # How the page was loaded (first pageview of a page only): "navigate", "reload" or
    # "back_forward". None: unknown (an older snippet, a browser without the API).
    navigation: str | None = None


@dataclass(frozen=True)
class ClientInfo:
    """What the request tells about the browser; the raw IP lives only in memory."""

    ip: str | None
    user_agent: str
    device: DeviceInfo
    # Looked up only when a session starts; the raw IP is used in memory and never stored.
    geo_lookup: Callable[[str | None], GeoInfo]
    ip_truncated: str | None
    gpc_header: bool = False


@dataclass
class CollectResult:
    session: TrackedSession
    new_session: bool
    visitor_id: str | None
    # None: the numbers could not be read (Redis unreachable); the snippet keeps its own.
    numbers: list[dict[str, Any]] | None = field(default_factory=list)
    # The pageview row written for a `pageview` event (None for other events and retries).
    pageview_data: dict[str, Any] | None = None


class NumberAssigner(Protocol):
    """Dynamic number insertion: the numbers a session should see (see tracker.numbers)."""

    async def numbers_for_session(
        self, site: Site, session: TrackedSession, now: dt.datetime, *, consent: bool = True
    ) -> list[dict[str, Any]]: ...


def _text(value: Any, limit: int, name: str, code: str = "invalid_event") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(code, f"{name} must be a string")
    value = value.replace("\x00", "").strip()
    return value[:limit] if value else None


_RAW_IN_URL = re.compile(r"[\x00-\x20\x7f]")


def _url(value: Any, name: str, *, required: bool = False) -> str | None:
    text = _text(value, MAX_URL, name)
    if text is None:
        if required:
            raise ApiError("invalid_event", f"{name} is required")
        return None
    problem = None
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        problem = "is not a valid URL"
    if problem is None and _RAW_IN_URL.search(text):
        # A browser's location.href and document.referrer percent-encode these: such a URL
        # was not sent by a browser.
        problem = "holds spaces or control characters"
    if problem is not None:
        if name == "r":
            return None  # a referrer is only a hint: the visit is kept without it
        raise ApiError("invalid_url", f"{name} {problem}")
    # hostname, not netloc: "http://:80/" and "http://@/" have a netloc but name no host.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        if name == "r":
            # Referrers such as android-app:// are real; keep them, they classify as referral.
            if parts.scheme not in ("http", "https") and parts.hostname:
                return text
            return None
        raise ApiError("invalid_url", f"{name} must be an absolute http(s) URL")
    return text


def _identifier(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ID.match(value):
        raise ApiError("invalid_event", f"{name} must be 16 to 32 lowercase hex characters")
    return value


CART = "invalid_cart"
# Amounts are NUMERIC(14, 2) columns.
MAX_AMOUNT = Decimal("1e12")


def _decimal(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ApiError("invalid_cart", f"{name} must be a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ApiError("invalid_cart", f"{name} must be a number") from exc
    # Checked before rounding (1e30 has more digits than rounding can hold) and after
    # (999999999999.999 rounds past what the columns hold: 12 digits before the point).
    # copy_abs, not abs(): abs() rounds to the context, and 1e999999999999 overflows it.
    if not number.is_finite() or number.copy_abs() >= MAX_AMOUNT:
        raise ApiError("invalid_cart", f"{name} is out of range")
    rounded = number.quantize(Decimal("0.01"))
    if abs(rounded) >= MAX_AMOUNT:
        raise ApiError("invalid_cart", f"{name} is out of range")
    return rounded


def parse_cart(raw: Any) -> CartSnapshot:
    """Validate a cart snapshot from the snippet."""
    if not isinstance(raw, dict):
        raise ApiError("invalid_cart", "cart must be an object with items, total and currency")
    items_raw = raw.get("items", [])
    if isinstance(items_raw, str) and items_raw.startswith("["):
        # Prototype.js (still in Magento 1 shops) defines Array.prototype.toJSON, so the page's
        # JSON.stringify sends the list as a string of JSON: read it as the list it stands for.
        try:
            items_raw = loads_strict(items_raw)
        except (ValueError, RecursionError):
            pass
    if not isinstance(items_raw, list) or len(items_raw) > MAX_CART_ITEMS:
        raise ApiError("invalid_cart", f"cart.items must be a list of at most {MAX_CART_ITEMS}")
    items = []
    for index, item in enumerate(items_raw):
        if not isinstance(item, dict):
            raise ApiError("invalid_cart", f"cart.items[{index}] must be an object")
        qty_raw = item.get("qty", 1)
        if isinstance(qty_raw, bool) or not isinstance(qty_raw, int | float) or qty_raw < 0:
            raise ApiError("invalid_cart", f"cart.items[{index}].qty must be a positive number")
        sku = item.get("sku")
        items.append(
            CartItem(
                name=_text(item.get("name"), 300, f"cart.items[{index}].name", CART) or "",
                sku=None if sku is None else str(sku)[:100],
                qty=min(int(qty_raw), 1_000_000),
                price=_decimal(item.get("price"), f"cart.items[{index}].price"),
            )
        )
    currency = _text(raw.get("currency"), 16, "cart.currency", CART)  # "EURO" is refused
    if currency is not None and not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise ApiError("invalid_cart", "cart.currency must be an ISO 4217 code such as EUR")
    total = _decimal(raw.get("total"), "cart.total")
    if total is None and items:
        prices = [i.price * i.qty for i in items if i.price is not None]
        total = sum(prices, Decimal("0.00")) if prices else None
        if total is not None and abs(total) >= MAX_AMOUNT:
            raise ApiError("invalid_cart", "the cart's total is out of range; send cart.total")
    # A line may be negative (a discount), the cart may not: it would subtract from the
    # revenue the reports add up.
    if total is not None and total < 0:
        raise ApiError("invalid_cart", "cart.total cannot be negative")
    return CartSnapshot(tuple(items), total, currency.upper() if currency else None)


# `y`, how the page was loaded: the snippet sends `performance.navigation.type` (0, 1, 2);
# the Navigation Timing 2 names are accepted too.
NAVIGATION_TYPES = {0: "navigate", 1: "reload", 2: "back_forward", "navigate": "navigate",
                    "reload": "reload", "back_forward": "back_forward", "prerender": "navigate"}  # fmt: skip


def _navigation(value: Any) -> str | None:
    """Read `y`; anything else (a type browsers add later, a wrong type) reads as unknown."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return NAVIGATION_TYPES.get(value)


_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")


def first_language(accept_language: str | None) -> str | None:
    """The browser's first language from its Accept-Language header (`fr-FR,fr;q=0.9`)."""
    if not accept_language:
        return None
    tag = accept_language.split(",", 1)[0].split(";", 1)[0].strip()
    return tag if len(tag) <= 16 and _LANGUAGE_TAG.fullmatch(tag) else None


def _language(value: Any) -> str | None:
    """`lang` from the body: a language tag, else the header's (what is stored is a tag)."""
    tag = _text(value, 64, "lang")
    return tag if tag and len(tag) <= 16 and _LANGUAGE_TAG.fullmatch(tag) else None


def parse_event(body: Any, accept_language: str | None = None) -> CollectEvent:
    """Validate a collect body; raise ApiError with a precise code and sentence.

    The snippet does not send the browser's language (`lang`): every request carries it in
    its Accept-Language header, which is read instead. A `lang` sent anyway wins."""
    if not isinstance(body, dict):
        raise ApiError("invalid_event", "the body must be a JSON object")
    site_key = body.get("k")
    if not isinstance(site_key, str) or not 1 <= len(site_key) <= 64:
        raise ApiError("invalid_event", "k (the site key) is required")
    kind = body.get("t")
    if kind not in EVENT_TYPES:
        raise ApiError("invalid_event", f"t must be one of {', '.join(EVENT_TYPES)}")
    page_id = _identifier(body.get("p"), "p")
    if page_id is None:
        raise ApiError("invalid_event", "p (the page id) is required")
    duration = body.get("d")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
            raise ApiError("invalid_event", "d must be a non-negative number of milliseconds")
        duration = min(int(duration), MAX_DURATION_MS)
    consent = body.get("c")
    if consent is not None and not isinstance(consent, bool):
        raise ApiError("invalid_event", "c must be true, false or null")
    if kind == "consent" and consent is None:
        raise ApiError("invalid_event", "a consent event needs c: true or false")
    cart = parse_cart(body.get("cart")) if kind == "cart" else None
    return CollectEvent(
        site_key=site_key,
        type=kind,
        page_id=page_id,
        session_id=_identifier(body.get("s"), "s"),
        visitor_id=_identifier(body.get("v"), "v"),
        url=_url(body.get("u"), "u", required=kind == "pageview"),
        referrer=_url(body.get("r"), "r"),
        title=_text(body.get("ti"), MAX_TITLE, "ti"),
        duration_ms=duration,
        consent=consent,
        gpc=body.get("gpc") is True,
        language=_language(body.get("lang")) or first_language(accept_language),
        cart=cart,
        navigation=_navigation(body.get("y")),
    )


def anon_visit_key(secret: str, site_id: int, client: ClientInfo, now: dt.datetime) -> str | None:
    """Hash (day, site, IP, user agent) with the server secret to stitch a consentless visit.

    The salt changes every UTC day and the inputs are never stored, so the key cannot be
    reversed to an IP address nor linked across days (the approach Plausible documents).
    """
    if not client.ip:
        return None
    message = f"{now.date().isoformat()}|{site_id}|{client.ip}|{client.user_agent}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def consent_granted(site: Site, event: CollectEvent, client: ClientInfo) -> bool:
    """Decide consent: Global Privacy Control always means no."""
    if event.gpc or client.gpc_header:
        return False
    if site.consent_mode == "not_required":
        return event.consent is not False
    return event.consent is True


def new_id() -> str:
    return secrets.token_hex(16)
