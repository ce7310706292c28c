"""Carrier request signatures: rebuild the public URL the carrier called, check X-Twilio-Signature.

Twilio signs the full URL it requested (scheme, host, port, path and query string, exactly as
configured) followed by the POST parameters sorted by name
(https://www.twilio.com/docs/usage/webhooks/webhooks-security). Behind a TLS-terminating proxy
the worker sees `http://127.0.0.1:8080/...`, so the URL is rebuilt from `CALLTRACK_PUBLIC_URL`
(what the carrier sees) and the raw path and query of the request, never from the request's
own Host header, which a client could choose.

Two signers exist: Twilio (the account's auth token) and the simulated carrier (a token derived
from `CALLTRACK_SECRET_KEY`). Whichever token validates names the provider, and the webhook then
only looks at numbers and calls of that provider, which is the same as choosing the token by
the number's provider: a request signed with one carrier's token can never touch the other's.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from twilio.request_validator import RequestValidator

from telephony.carriers.base import WebhookUrls
from tracker.config import Settings

SIGNATURE_HEADER = "X-Twilio-Signature"
TWILIO = "twilio"
SIMULATED = "simulated"
PROVIDERS = (TWILIO, SIMULATED)
# Webhook paths under the public URL; the simulated carrier speaks Twilio's protocol, so it
# posts to the same paths.
VOICE_PATH = "/telephony/twilio/voice"
STATUS_PATH = "/telephony/twilio/status"
DIAL_PATH = "/telephony/twilio/dial"
RECORDING_PATH = "/telephony/twilio/recording"
WHISPER_PATH = "/telephony/twilio/whisper"
BRIDGE_PATH = "/telephony/twilio/bridge"
FALLBACK_PATH = "/telephony/twilio/fallback"


def simulated_auth_token(secret_key: str) -> str:
    """Derive the simulated carrier's auth token from the server secret (never stored)."""
    return hmac.new(
        secret_key.encode("utf-8"), b"calltrack simulated carrier auth token", hashlib.sha256
    ).hexdigest()


def signing_tokens(settings: Settings) -> list[tuple[str, str]]:
    """Return (provider, auth token) for each token that can sign webhooks here.

    Twilio may have two: while an auth token is rotated, Twilio signs with the primary one
    until the secondary is promoted, and the operator cannot switch every worker at that
    instant; accepting both for the rotation keeps calls from being refused meanwhile.
    """
    tokens: list[tuple[str, str]] = []
    for token in (settings.twilio_auth_token, settings.twilio_auth_token_secondary):
        if token:
            tokens.append((TWILIO, token))
    tokens.append((SIMULATED, simulated_auth_token(settings.secret_key)))
    return tokens


def public_request_url(public_url: str, raw_path_qs: str) -> str:
    """Rebuild the URL the carrier requested from the public base URL and the raw path+query.

    `public_url` may carry a path prefix (`https://example.eu/calltrack`) for a proxy that
    strips it before forwarding; when the request path still has the prefix it is not doubled.
    """
    base = urlsplit(public_url.rstrip("/"))
    prefix = base.path.rstrip("/")
    path = raw_path_qs if raw_path_qs.startswith("/") else "/" + raw_path_qs
    if prefix and not (path == prefix or path.startswith(prefix + "/")):
        path = prefix + path
    return f"{base.scheme}://{base.netloc}{path}"


def public_url_for(public_url: str, path: str, **query: str | int) -> str:
    """Build the absolute public URL of one of our webhooks, with an optional query string."""
    url = public_url.rstrip("/") + path
    if query:
        url += "?" + urlencode({k: str(v) for k, v in query.items()})
    return url


def webhook_urls(public_url: str) -> WebhookUrls:
    """Return the voice, status and voice fallback URLs to configure on a tracking number.

    The fallback names no business line yet: `WebhookUrls.forwarding_to` adds the one the
    number forwards to, once it is known.
    """
    return WebhookUrls(
        voice_url=public_url_for(public_url, VOICE_PATH),
        status_url=public_url_for(public_url, STATUS_PATH),
        fallback_url=public_url_for(public_url, FALLBACK_PATH),
    )


def sign(token: str, url: str, params: Mapping[str, str]) -> str:
    """Sign a request as a carrier does (used by the simulated carrier and the tests)."""
    return str(RequestValidator(token).compute_signature(url, dict(params)))


def identify_signer(
    tokens: Iterable[tuple[str, str]], url: str, params: Any, signature: str | None
) -> str | None:
    """Return the provider whose token validates this request, or None for a forgery.

    `params` is the parsed form body; aiohttp's MultiDict is read with `getall`, so repeated
    parameters are signed exactly as Twilio signs them.
    """
    if not signature or len(signature) > 200:
        return None
    for provider, token in tokens:
        if RequestValidator(token).validate(url, params, signature):
            return provider
    return None
