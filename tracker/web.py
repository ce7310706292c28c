"""HTTP plumbing shared by every domain: error envelope, client address, CORS."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import socket
import sqlite3
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import asyncpg
from aiohttp import web, web_server
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from multidict import MultiDictProxy
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa_exc

from tracker.errors import ApiError

log = logging.getLogger("calltrack.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}


def error_response(
    code: str, message: str, status: int, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into `{"error": {"code", "message"}}`; never leak a traceback."""
    if "%00" in request.raw_path:
        # No text column of PostgreSQL can hold U+0000: refuse it before any handler reads
        # the address (form and JSON bodies are handled in read_form and loads_strict).
        return error_response(
            "invalid_characters", "The address contains a NUL character (%00).", 400
        )
    try:
        return await handler(request)
    except ApiError as exc:
        headers = CORS_HEADERS if request.path.startswith("/collect") else None
        return web.json_response(exc.as_json(), status=exc.status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type not in ("text/plain", "application/octet-stream"):
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        headers = CORS_HEADERS if request.path.startswith("/collect") else None
        return error_response(code, exc.reason, exc.status, headers)
    except Exception as exc:
        if unreachable(exc):
            # The database or Redis is down or restarting: say so, and when to come back
            # (the snippet stays silent, the dashboard shows the message, carriers retry).
            log.warning(
                "%s %s: a backing service is unreachable: %r", request.method, request.path, exc
            )
            headers = {"Retry-After": "5"}
            if request.path.startswith(("/collect", "/contact")):
                headers.update(CORS_HEADERS)
            return error_response(
                "service_unavailable",
                "A service Calltrack depends on (its database or Redis) cannot be reached right "
                "now; try again in a few seconds.",
                503,
                headers,
            )
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response("internal_error", "Something went wrong on our side.", 500)


class CodedErrorsRequestHandler(RequestHandler):
    """aiohttp answers a request it cannot parse as HTTP (a request line or header over
    8 KiB, raw bytes in the path, a header without a colon, a broken chunk) before any
    middleware runs, in plain text: answer those in the error envelope too."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs, or raises if sent
        if isinstance(exc, LineTooLong):
            code, sentence = "request_too_large", "A request line or header is over 8,190 bytes."
        elif isinstance(exc, ContentEncodingError):
            # Content-Encoding: br or zstd (their decoders are not installed).
            code, status = "unsupported_encoding", 415
            sentence = "The body's Content-Encoding is not supported: send it plain or gzip."
        elif 400 <= status < 500:
            reason = (exc.message if isinstance(exc, HttpProcessingError) else "") or ""
            reason = reason.strip().splitlines()[0].rstrip(":") if reason.strip() else ""
            code = "malformed_http"
            sentence = "The request is not valid HTTP/1.1" + (
                f": {reason[:200]}." if reason else "."
            )
        elif status == 504:
            code, sentence = "timeout", "The request took too long to handle."
        else:
            code, sentence = "internal_error", "Something went wrong on our side."
        response = error_response(code, sentence, status)
        response.force_close()
        return response


def answer_protocol_errors_in_the_envelope() -> None:
    """Make every aiohttp server in this process use CodedErrorsRequestHandler.

    aiohttp has no option for the class of its per-connection handler; `web.Server` builds
    it by the module-level name `RequestHandler`, which is replaced here (idempotent)."""
    web_server.RequestHandler = CodedErrorsRequestHandler  # type: ignore[attr-defined]


_UNREACHABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
)


# SQLite reports a schema error ("no such table") as an OperationalError too; only these mean
# the file cannot be used right now.
_SQLITE_TRANSIENT = ("database is locked", "unable to open database file", "disk i/o error")


def unreachable(exc: BaseException | None) -> bool:
    """Tell whether an error means a backing service cannot be reached (down, restarting)."""
    if exc is None:
        return False
    if isinstance(exc, sa_exc.OperationalError) and isinstance(exc.orig, sqlite3.OperationalError):
        return bool(exc.connection_invalidated) or str(exc.orig).lower().startswith(
            _SQLITE_TRANSIENT
        )
    if isinstance(exc, _UNREACHABLE):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return bool(exc.connection_invalidated) or unreachable(exc.orig)
    return False


def log_background_failure(logger: logging.Logger, message: str, exc: BaseException) -> None:
    """Log a failure the caller carries on from: one line during an outage, else a traceback.

    A background worker's failed round, a console event not published: an outage (the
    database or Redis away) must not fill the log with one traceback per round, per event
    and per worker.
    """
    if unreachable(exc):
        logger.warning("%s (a backing service is unreachable: %r)", message, exc)
    else:
        logger.exception(message)


# What reading a body raises for bytes no client should send: not UTF-8 (UnicodeDecodeError),
# a multipart body without its boundary (AssertionError, ValueError) or with broken part
# headers (HttpProcessingError), an unknown charset (LookupError), a body that does not
# decode with its Content-Encoding (RequestPayloadError).
BODY_ERRORS = (
    UnicodeDecodeError, ValueError, AssertionError, LookupError, RequestPayloadError,
    HttpProcessingError,
)  # fmt: skip


def _broken(exc: BaseException | None) -> bool:
    return isinstance(exc, RequestPayloadError | HttpProcessingError)


def drop_unread_body(request: web.Request, exc: BaseException | None = None) -> None:
    """After a body that broke while it arrived (it does not decode with its
    Content-Encoding, a chunk is malformed): answer, then close the connection (where the next
    request would start is unknown), without aiohttp reading the rest of the body after the
    answer, failing again and logging a traceback for what a client sent."""
    if _broken(exc) or _broken(request.content.exception()):
        request.content.feed_eof()
        request.protocol.close()
        request[BROKEN_BODY] = True


# Set on a request whose body broke: its answer says `Connection: close`, so that the client
# opens a new connection for its next request.
BROKEN_BODY: web.RequestKey[bool] = web.RequestKey("broken_body", bool)


def close_if_body_broke(request: web.Request, response: web.StreamResponse) -> None:
    """For every answer (`html_error_middleware`, the outermost): whether or not the handler
    read the body (a sign-in form sent as gzip garbage, a redirect before any reading), one
    that broke closes the connection after the answer, with `Connection: close`."""
    drop_unread_body(request)
    if request.get(BROKEN_BODY):
        response.force_close()


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """Read a form body (urlencoded or multipart); a body that is not a UTF-8 form is a 400."""
    try:
        form = await request.post()
    except BODY_ERRORS as exc:
        drop_unread_body(request, exc)
        raise ApiError("invalid_form", "the body is not a UTF-8 form", status=400) from exc
    for name, value in form.items():
        if isinstance(value, str) and ("\x00" in value or "\x00" in name):
            # PostgreSQL text cannot hold U+0000; no browser or carrier sends it.
            raise ApiError("invalid_form", "the form contains a NUL character", status=400)
    return form


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """Read a JSON body of at most `max_bytes`; raise ApiError with a precise code."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError("payload_too_large", f"the body exceeds {max_bytes} bytes", status=413)
    raw: bytes | bytearray
    try:
        if request.content_length is not None:
            # The length was checked above: read the body in one go.
            raw = await request.read()
        else:
            raw = bytearray()
            async for chunk in request.content.iter_chunked(16384):
                raw.extend(chunk)
                if len(raw) > max_bytes:
                    raise ApiError(
                        "payload_too_large", f"the body exceeds {max_bytes} bytes", status=413
                    )
    except (RequestPayloadError, HttpProcessingError) as exc:
        # A body that does not decode with its Content-Encoding, a broken chunked body.
        drop_unread_body(request, exc)
        raise ApiError(
            "invalid_json", "the body does not decode with its Content-Encoding or chunks"
        ) from exc
    if not raw:
        if request.headers.get("Content-Encoding"):
            # aiohttp decodes a body that is not gzip at all to nothing, without an error.
            raise ApiError("invalid_json", "the body does not decode with its Content-Encoding")
        raise ApiError("invalid_json", "the body is empty; a JSON object is expected")
    try:
        return loads_strict(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON, NaN/Infinity and integers too long to convert.
        raise ApiError("invalid_json", "the body is not valid UTF-8 JSON") from exc


# Ids are INTEGER columns: PostgreSQL refuses a parameter past 32 bits with an error.
MAX_ID = 2**31 - 1


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def parse_id(raw: str | None) -> int | None:
    """The database id a URL or form names (1 to 2**31 - 1 in ASCII digits), else None."""
    if not raw or len(raw) > 10 or not is_digits(raw):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e309: a JSON number no double holds; int() of it would raise
        raise ValueError(f"{text[:40]} is out of range")
    return value


# One decoder for every body: json.loads with a keyword builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """Replace lone surrogates (how aiohttp hands on header bytes that are not UTF-8) by U+FFFD:
    as they are, no encoder, hash or database driver takes the string."""
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value).replace("\x00", "")
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


def loads_strict(text: str) -> Any:
    """Parse JSON as RFC 8259 defines it, into strings every database can store.

    Python's NaN, Infinity and -Infinity are refused, and so are numbers too large for a double
    (1e309), so no later int() or arithmetic meets a value no JSON sender can mean. A
    `\\uD800`-style escape of half a surrogate pair (which a browser's JSON.stringify emits for a
    broken string) becomes U+FFFD: UTF-8, and so PostgreSQL and SQLite, cannot hold it. A
    `\\u0000` is dropped: PostgreSQL's text cannot hold U+0000 either.
    """
    value = _DECODER.decode(text)
    if "\\ud" in text or "\\uD" in text or "\\u0000" in text:
        value = _storable(value)
    return value


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    # Some proxies add the client's port: "198.51.100.9:8080", "[2001:db8::1]:443".
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def client_address(request: web.Request) -> str | None:
    """Where a request comes from, truncated as everything stored keeps it (audit entries)."""
    from tracker import appkeys  # (tracker.appkeys imports the database, which imports us)
    from tracker.geo import truncate_ip

    settings = request.app[appkeys.SETTINGS]
    return truncate_ip(client_ip(request, settings.trusted_proxies))


def client_ip(request: web.Request, trusted_proxies: tuple[str, ...] = ()) -> str | None:
    """Return the visitor's address, trusting X-Forwarded-For only from trusted proxies.

    The reverse proxy in front of the workers appends the client's address; entries left of
    the last untrusted hop could be forged by the client, so we walk from the right.
    """
    forwarded = request.headers.get("X-Forwarded-For", "")
    resolve = _client_ip if len(forwarded) <= 512 else _client_ip.__wrapped__
    return resolve(request.remote or "", forwarded, tuple(trusted_proxies))


@lru_cache(maxsize=16)
def _trusted_networks(
    trusted_proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)


# Every event of a visit repeats the same peer and header: parsing addresses each time was a
# measurable share of the collect path (`calltrack bench collect`).
@lru_cache(maxsize=8192)
def _client_ip(remote: str, forwarded: str, trusted_proxies: tuple[str, ...]) -> str | None:
    peer = _parse_ip(remote)
    networks = _trusted_networks(trusted_proxies)

    def trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return address is not None and (
            address.is_loopback or any(address in net for net in networks)
        )

    if not trusted(peer):
        return str(peer) if peer else None
    hops = [_parse_ip(part) for part in forwarded.split(",") if part.strip()]
    for hop in reversed(hops):
        if hop is None:
            break
        if not trusted(hop):
            return str(hop)
    return str(peer) if peer else None
