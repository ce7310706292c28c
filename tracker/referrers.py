"""Tell which kind of site sent a visit: search engine, social network, AI assistant or other.

The lists are Matomo's (CC0; see tracker/data/README.md) plus a few of our own in
tracker/data/extra-referrers.yml. They are parsed once at import into dicts keyed by host, so
identifying a referrer costs a handful of dict probes: the host, Matomo's "lossy" form of it
(country TLDs and country subdomains replaced by "{}"), then the same for each parent domain.
Results are cached per host because this runs on the collect path for every new session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

import yaml

ReferrerMedium = Literal["search", "social", "ai", "unknown", "internal", "none", "invalid"]
SiteKind = Literal["search", "social", "ai"]

# Browsers send at most a few KiB of Referer; anything longer is junk or an attack, and capping
# it keeps every regex below linear in a small bound.
MAX_URL_LENGTH: Final = 8192

_DATA_PACKAGE: Final = "tracker.data"
# The C loader parses SearchEngines.yml about ten times faster; fall back where libyaml is absent.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Referrer:
    """A parsed referrer: which kind of site sent the visit, and under which name."""

    # "search", "social" or "ai" for a listed site, "unknown" for any other site, "internal"
    # for the merchant's own site, "none" without a referrer, "invalid" if it is not a URL.
    medium: ReferrerMedium
    # The list's display name ("Google Images", "Facebook"); None unless listed.
    source_name: str | None
    # Lower-cased host, "" when there is none.
    host: str
    # GA4-style source: "google", "facebook", "chatgpt.com", "example.org"; "" without a host.
    source: str = ""


@dataclass(frozen=True, slots=True)
class _Site:
    kind: SiteKind
    name: str
    source: str


@dataclass(slots=True)
class _Node:
    site: _Site | None = None
    # (path prefix, site), longest prefix first: "google.{}/imgres" is Google Images, not Google.
    by_path: list[tuple[str, _Site]] = field(default_factory=list)


_NO_REFERRER: Final = Referrer("none", None, "")
_INVALID: Final = Referrer("invalid", None, "")

_PARENTHESES = re.compile(r"\s*\([^)]*\)")
# Matomo's UrlHelper::getLossyUrl, applied to a host: drop "www."/"search." and "m." prefixes,
# turn a country TLD (optionally behind com/org/net/co/it/edu) and country subdomains into "{}".
# Matomo tests against its country list; any two-letter label is close enough here because a
# lossy key only has to hit one of the list's few dozen "{}" patterns.
_LOSSY_STEPS: Final = (
    (re.compile(r"^(?:w+\d*|search)\."), ""),
    (re.compile(r"(^|\.)m\."), r"\1"),
    (re.compile(r"(?:\.(?:com|org|net|co|it|edu))?\.[a-z]{2}$"), ".{}"),
    (re.compile(r"(^|\.)[a-z]{2}\."), r"\1{}."),
)
# Subdomain labels that may be stripped to reach a search engine's listed domain: www/mobile
# prefixes, country or language codes and numbered shards ("s3-us3.ixquick.com"). Anything else
# is a different service on the same domain: "mail.google.com" or "docs.google.com" are not
# Google searches, and GA4 counts them as referrals too.
_SHARD_LABEL = re.compile(r"w+\d*|m|mobile|[a-z]{2}|[a-z]{2}-[a-z]{2}|.*\d.*")
# A scheme-less URL ("www.google.com/search?q=x", "example.org:8080/"): a dotted host first.
_SCHEMELESS = re.compile(r"[\w-]+(?:\.[\w-]+)+(?::\d*)?(?:[/?#]|$)")
# Letters and digits of any script (IDN hosts arrive decoded), dots, hyphens and IPv6 colons.
_HOST = re.compile(r"[\w.:-]+")


def _load_yaml(name: str) -> Any:
    text = resources.files(_DATA_PACKAGE).joinpath(name).read_text(encoding="utf-8")
    return yaml.load(text, Loader=_YAML_LOADER)


def _slug(name: str) -> str:
    """Turn a list's display name into a GA4-style source: "Yahoo! Images" -> "yahoo images"."""
    text = _PARENTHESES.sub("", unquote(name).casefold()).replace("!", "")
    return " ".join(text.split())


def _add(index: dict[str, _Node], url: object, site: _Site) -> None:
    if not isinstance(url, str) or not url.strip():
        return
    key = url.strip().lower()
    # Matomo writes app referrers as "android-app//<package>/<rest>"; browsers send
    # "android-app://<package>/<rest>", which urlsplit reads as host <package>.
    key = key.removeprefix("android-app//")
    host, slash, path = key.partition("/")
    node = index.setdefault(host, _Node())
    if slash:
        node.by_path.append(("/" + path, site))
        node.by_path.sort(key=lambda entry: len(entry[0]), reverse=True)
    elif node.site is None:
        # The first entry for a host wins: our overrides, then Matomo's own order.
        node.site = site


def _hosts_by_name(data: Any) -> list[tuple[str, list[object]]]:
    """Read Socials.yml-shaped data: display name -> list of hosts."""
    if not isinstance(data, dict):
        return []
    return [(str(name), list(hosts)) for name, hosts in data.items() if isinstance(hosts, list)]


def _search_urls_by_name(data: Any) -> list[tuple[str, list[object]]]:
    """Read SearchEngines.yml: display name -> list of {urls, params, ...} definitions."""
    if not isinstance(data, dict):
        return []
    out: list[tuple[str, list[object]]] = []
    for name, definitions in data.items():
        urls: list[object] = []
        for definition in definitions if isinstance(definitions, list) else []:
            if isinstance(definition, dict) and isinstance(definition.get("urls"), list):
                urls.extend(definition["urls"])
        out.append((str(name), urls))
    return out


def _search_sources(names: list[str]) -> dict[str, str]:
    """Map each engine to the source GA4 would show: "Google Images" -> "google"."""
    families = {_slug(name) for name in names}
    sources: dict[str, str] = {}
    for name in names:
        slug = _slug(name)
        first = slug.split(" ", 1)[0]
        # Variants are named after their family ("Bing Images", "Yahoo! Japan"), and GA4
        # reports them under the family's source.
        sources[name] = first if first != slug and first in families else slug
    return sources


def _build_indexes() -> tuple[tuple[SiteKind, dict[str, _Node]], ...]:
    # Our additions come first so that, the first entry for a host winning, they can override.
    extra = _load_yaml("extra-referrers.yml") or {}
    search = _hosts_by_name(extra.get("search"))
    search += _search_urls_by_name(_load_yaml("SearchEngines.yml"))
    social = _hosts_by_name(extra.get("social")) + _hosts_by_name(_load_yaml("Socials.yml"))
    ai = _hosts_by_name(extra.get("ai")) + _hosts_by_name(_load_yaml("AIAssistants.yml"))
    search_sources = _search_sources([name for name, _ in search])

    ai_index: dict[str, _Node] = {}
    for name, urls in ai:
        for url in urls:
            # An assistant's source is its host, filled in per referrer: GA4 shows
            # "chatgpt.com", and ChatGPT tags its own links utm_source=chatgpt.com.
            _add(ai_index, url, _Site("ai", name, ""))
    social_index: dict[str, _Node] = {}
    for name, urls in social:
        site = _Site("social", unquote(name), _slug(name))
        for url in urls:
            _add(social_index, url, site)
    search_index: dict[str, _Node] = {}
    for name, urls in search:
        site = _Site("search", name, search_sources[name])
        for url in urls:
            _add(search_index, url, site)
    # Most specific list first: "gemini.google.com" is an assistant although google.com is a
    # search engine, and "www.facebook.com" is a social network although Matomo also lists it
    # as a search engine (for its ?q= search pages, which we do not tell apart).
    return (("ai", ai_index), ("social", social_index), ("search", search_index))


_INDEXES: Final = _build_indexes()
# Only this much of the path can matter: the longest path prefix in the lists.
_PATH_KEY_LENGTH: Final = max(
    (len(prefix) for _, index in _INDEXES for node in index.values() for prefix, _ in node.by_path),
    default=0,
)


def _lossy(host: str) -> str:
    for pattern, replacement in _LOSSY_STEPS:
        host = pattern.sub(replacement, host)
    return host


@lru_cache(maxsize=4096)
def _candidate_keys(host: str) -> tuple[tuple[str, bool], ...]:
    """List the keys to probe for a host, most specific first, each with "may be a search"."""
    labels = host.split(".")
    keys: dict[str, bool] = {}
    search_ok = True
    # Stop at two labels: "co.uk" or "com" alone are never a site.
    for start in range(max(1, len(labels) - 1)):
        if start:
            search_ok = search_ok and _SHARD_LABEL.fullmatch(labels[start - 1]) is not None
        suffix = ".".join(labels[start:])
        keys.setdefault(suffix, search_ok)
        keys.setdefault(_lossy(suffix), search_ok)
    return tuple(keys.items())


@lru_cache(maxsize=8192)
def _identify(host: str, path: str) -> _Site | None:
    candidates = _candidate_keys(host)
    for kind, index in _INDEXES:
        for key, search_ok in candidates:
            if kind == "search" and not search_ok:
                break
            node = index.get(key)
            if node is None:
                continue
            for prefix, site in node.by_path:
                if path.startswith(prefix):
                    return site
            if node.site is not None:
                return node.site
    return None


def split_url(url: str) -> tuple[str, str] | None:
    """Return the lower-cased host and the path of a URL, or None if it has no usable host."""
    text = url.strip()[:MAX_URL_LENGTH]
    try:
        parts = urlsplit(text)
        if not parts.netloc and _SCHEMELESS.match(text):
            parts = urlsplit("//" + text)
        host = parts.hostname
    except ValueError:  # e.g. "http://[::1" (unbalanced IPv6 brackets)
        return None
    host = (host or "").rstrip(".")
    if not host or len(host) > 253 or not _HOST.fullmatch(host):
        return None
    return host, parts.path or "/"


def host_of(url: str | None) -> str:
    """Return the lower-cased host of a URL, or "" when it has none."""
    if not isinstance(url, str):
        return ""
    parts = split_url(url)
    return parts[0] if parts else ""


def strip_www(host: str) -> str:
    """Drop a leading "www." from a host."""
    return host.removeprefix("www.")


@lru_cache(maxsize=1024)
def _site_domain_key(site_domain: str) -> str:
    text = site_domain.strip().lower()
    # Accept "https://www.example.com/" as well as "example.com".
    host = host_of(text) if ("/" in text or ":" in text) else text.rstrip(".")
    return strip_www(host)


def is_same_site(
    host: str, landing_host: str | None = None, site_domain: str | None = None
) -> bool:
    """Tell whether a referrer host is the merchant's own site, so not a referrer at all."""
    if not host:
        return False
    bare = strip_www(host.lower())
    if landing_host and bare == strip_www(landing_host.lower()):
        return True
    if site_domain:
        domain = _site_domain_key(site_domain)
        return bool(domain) and (bare == domain or bare.endswith("." + domain))
    return False


def parse_referrer(url: str | None, site_domain: str | None = None) -> Referrer:
    """Parse a referrer URL into the kind of site that sent the visit."""
    if not isinstance(url, str) or not url.strip():
        return _NO_REFERRER
    parts = split_url(url)
    if parts is None:
        return _INVALID
    host, path = parts
    bare = strip_www(host)
    if site_domain and is_same_site(host, site_domain=site_domain):
        return Referrer("internal", None, host, bare)
    site = _identify(host, path[:_PATH_KEY_LENGTH].lower())
    if site is None:
        return Referrer("unknown", None, host, bare)
    return Referrer(site.kind, site.name, host, site.source or bare)
