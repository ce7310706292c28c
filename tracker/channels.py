"""Attribute a session to a source, medium and Google Analytics 4 default channel group.

The rules are GA4's "manual traffic" definitions, in GA4's order, from "[GA4] Default channel
group" (https://support.google.com/analytics/answer/9756891). GA4 does not enforce case, so
neither do we. "Source matches a list of ... sites" uses Google's downloadable source-category
list, kept verbatim in tracker/data/ga4-source-categories.csv.

Where GA4 has information we lack (the Google Ads ad network behind a gclid, its campaign name)
we fall back on the same manual rules applied to what the landing URL says. The other choices:

- Google auto-tagging (gclid, gbraid, wbraid) wins over utm_source/utm_medium, as GA4 does by
  default: source "google", medium "cpc". utm_campaign/term/content still fill the campaign.
- Microsoft auto-tagging (msclkid) wins the same way, after Google's: source "bing", medium
  "cpc". GA4 does not read msclkid, but a msclkid is only ever added to a paid Microsoft Ads
  click, and with only UTMs to go by "?msclkid=...&utm_source=bing" would be Organic Search.
- fbclid, ttclid and li_fat_id name the network (facebook, tiktok, linkedin) but not a paid click:
  Meta adds fbclid to organic shares too. They give source with medium "referral", and only when
  neither UTM parameters nor a recognised referrer say more (Instagram links carry fbclid too).
- Without utm_source/utm_medium the referrer decides: a search engine gives "<engine> / organic",
  a social network "<network> / referral", an AI assistant or any other site "<host> / referral",
  nothing (or the site itself) "(direct) / (none)". utm_campaign alone does not switch to manual
  tagging; it is recorded as the campaign.
- utm_source without utm_medium gives medium "(not set)" (and the reverse), as in GA4, which is
  why such links land in Unassigned there too.
- A referrer whose host is not in Google's list but whose brand is listed as a shopping or video
  source counts as that: "www.amazon.fr" and "ebay.fr" are Organic Shopping like "amazon.com",
  "dailymotion.fr" Organic Video. Google's list holds few country domains (amazon.co.uk but not
  amazon.fr), which would make a European shop's marketplace visits plain Referral. Only the
  storefront counts (the bare domain, "www.", "m."): "aws.amazon.com" or "help.shopify.com" stay
  Referral. Search engines and social networks need no such rule: Matomo's lists name their
  country domains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Final, Literal, get_args
from urllib.parse import parse_qsl

from tracker.referrers import (
    MAX_URL_LENGTH,
    Referrer,
    host_of,
    is_same_site,
    parse_referrer,
    strip_www,
)

Channel = Literal[
    "Direct",
    "Cross-network",
    "Paid Shopping",
    "Paid Search",
    "Paid Social",
    "Paid Video",
    "Display",
    "Paid Other",
    "Organic Shopping",
    "Organic Social",
    "Organic Video",
    "Organic Search",
    "Referral",
    "Email",
    "Affiliates",
    "Audio",
    "SMS",
    "Mobile Push Notifications",
    "Unassigned",
]
# Every channel in the order GA4 evaluates the rules; the first rule that matches wins.
CHANNELS: Final[tuple[Channel, ...]] = get_args(Channel)

SourceCategory = Literal["SEARCH", "SHOPPING", "SOCIAL", "VIDEO"]

GOOGLE_CLICK_IDS: Final = ("gclid", "gbraid", "wbraid")
MICROSOFT_CLICK_IDS: Final = ("msclkid",)
# Social click ids name the network, not a medium (see the module docstring).
SOCIAL_CLICK_IDS: Final = {"fbclid": "facebook", "ttclid": "tiktok", "li_fat_id": "linkedin"}
CLICK_ID_PARAMS: Final = (*GOOGLE_CLICK_IDS, *MICROSOFT_CLICK_IDS, *SOCIAL_CLICK_IDS)
UTM_PARAMS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")

DIRECT_SOURCE: Final = "(direct)"
NONE_MEDIUM: Final = "(none)"
NOT_SET: Final = "(not set)"

# Widths of the sessions table's columns (tracker/models.py): longer values would not fit in
# PostgreSQL, and nobody reads a 2 KB utm_campaign anyway.
_SOURCE_WIDTH: Final = 200
_TEXT_WIDTH: Final = 300

# GA4 "Medium matches regex ^(.*cp.*|ppc|retargeting|paid.*)$": cpc, cpm, cpv, ppc, paid_social…
_PAID_MEDIUM = re.compile(r".*cp.*|ppc|retargeting|paid.*", re.DOTALL)
# GA4 "Campaign Name matches regex ^(.*(([^a-df-z]|^)shop|shopping).*)$". With .* on both sides a
# search for the inner part is the same test: "shop" not preceded by a letter other than "e"
# ("eshop", "summer-shop", but not "workshop"), or "shopping" anywhere.
_SHOPPING_CAMPAIGN = re.compile(r"(?:[^a-df-z]|^)shop|shopping")
_DISPLAY_MEDIUMS: Final = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
_SOCIAL_MEDIUMS: Final = frozenset(
    {"social", "social-network", "social-media", "sm", "social network", "social media"}
)
_EMAIL_TAGS: Final = frozenset({"email", "e-mail", "e_mail", "e mail"})
_REFERRAL_MEDIUMS: Final = frozenset({"referral", "app", "link"})


_CATEGORY_NAMES: Final[dict[str, SourceCategory]] = {
    f"SOURCE_CATEGORY_{name}": name for name in get_args(SourceCategory)
}


def _load_source_categories() -> dict[str, frozenset[SourceCategory]]:
    text = resources.files("tracker.data").joinpath("ga4-source-categories.csv").read_text("utf-8")
    found: dict[str, set[SourceCategory]] = {}
    for line in text.splitlines()[1:]:
        source, _, column = line.strip().rpartition(",")
        category = _CATEGORY_NAMES.get(column)
        if source and category:
            # GA4 does not enforce case: "Google Shopping" in the list matches "google shopping".
            found.setdefault(source.casefold(), set()).add(category)
    return {source: frozenset(names) for source, names in found.items()}


_SOURCE_CATEGORIES: Final = _load_source_categories()
_NO_CATEGORY: Final[frozenset[SourceCategory]] = frozenset()


def source_categories(source: str) -> frozenset[SourceCategory]:
    """Return the GA4 source categories of a source ("google" -> SEARCH), if it is listed."""
    return _SOURCE_CATEGORIES.get(source.strip().casefold(), _NO_CATEGORY)


# Categories a referrer's brand alone may give (see the module's docstring).
_BRAND_CATEGORIES: Final[frozenset[SourceCategory]] = frozenset({"SHOPPING", "VIDEO"})
# Second-level labels under which country domains register ("amazon.co.uk", "ebay.com.au").
_SECOND_LEVEL: Final = frozenset({"co", "com", "net", "org", "ne", "or", "gob", "gov", "ac"})


# Host prefixes of a brand's own storefront; any other subdomain ("aws.amazon.com",
# "help.shopify.com", "developer.vimeo.com") is another of the company's sites, not the shop.
_STOREFRONT_PREFIXES: Final = frozenset({"", "www", "m", "mobile", "smile"})


def _brand(host: str) -> str:
    """Return the label that names a storefront's registered domain: "www.amazon.co.uk" ->
    "amazon"; "" for other subdomains ("aws.amazon.com")."""
    labels = host.split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        brand_at = len(labels) - 3
    elif len(labels) >= 2:
        brand_at = len(labels) - 2
    else:
        return ""
    return labels[brand_at] if ".".join(labels[:brand_at]) in _STOREFRONT_PREFIXES else ""


@dataclass(frozen=True, slots=True)
class Attribution:
    """Where a session came from: its GA4 channel, source/medium, campaign and click ids."""

    channel: Channel
    source: str
    medium: str
    campaign: str | None = None
    term: str | None = None
    content: str | None = None
    click_ids: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=4096)
def channel_group(
    source: str,
    medium: str,
    campaign: str | None = None,
    categories: frozenset[SourceCategory] | None = None,
) -> Channel:
    """Apply GA4's default channel group rules, in order, to a source, medium and campaign."""
    # `categories` replaces the lookup of `source` in Google's list: classify adds those of
    # the referrer's host, which GA4 would have reported as the source.
    s = source.strip().casefold()
    m = medium.strip().casefold()
    c = (campaign or "").strip().casefold()
    listed = source_categories(s) if categories is None else categories
    paid = _PAID_MEDIUM.fullmatch(m) is not None
    shopping = "SHOPPING" in listed or _SHOPPING_CAMPAIGN.search(c) is not None

    # Direct: Source exactly matches "(direct)" AND Medium is one of ("(not set)", "(none)").
    if s == DIRECT_SOURCE and m in (NOT_SET, NONE_MEDIUM):
        return "Direct"
    # Cross-network: Campaign Name contains "cross-network" (Performance Max, Demand Gen).
    if "cross-network" in c:
        return "Cross-network"
    # Paid Shopping: (Source matches a list of shopping sites OR Campaign Name matches the
    # shopping regex) AND Medium matches the paid regex. Ahead of Paid Search on purpose: a
    # "google / cpc" Shopping campaign is Paid Shopping.
    if shopping and paid:
        return "Paid Shopping"
    # Paid Search / Social / Video: Source matches a list of search / social / video sites
    # AND Medium matches the paid regex.
    if paid and "SEARCH" in listed:
        return "Paid Search"
    if paid and "SOCIAL" in listed:
        return "Paid Social"
    if paid and "VIDEO" in listed:
        return "Paid Video"
    # Display: Medium is one of ("display", "banner", "expandable", "interstitial", "cpm").
    # A listed source with medium cpm is Paid Search/Social/Video above, as in GA4.
    if m in _DISPLAY_MEDIUMS:
        return "Display"
    # Paid Other: Medium matches the paid regex, whatever the source.
    if paid:
        return "Paid Other"
    # Organic Shopping: Source matches a list of shopping sites OR Campaign Name matches the
    # shopping regex.
    if shopping:
        return "Organic Shopping"
    # Organic Social: Source matches a list of social sites OR Medium is one of ("social",
    # "social-network", "social-media", "sm", "social network", "social media").
    if "SOCIAL" in listed or m in _SOCIAL_MEDIUMS:
        return "Organic Social"
    # Organic Video: Source matches a list of video sites OR Medium matches ^(.*video.*)$.
    if "VIDEO" in listed or "video" in m:
        return "Organic Video"
    # Organic Search: Source matches a list of search sites OR Medium exactly matches organic.
    if "SEARCH" in listed or m == "organic":
        return "Organic Search"
    # Referral: Medium is one of ("referral", "app", "link").
    if m in _REFERRAL_MEDIUMS:
        return "Referral"
    # Email: Source = email|e-mail|e_mail|e mail OR Medium = email|e-mail|e_mail|e mail.
    if s in _EMAIL_TAGS or m in _EMAIL_TAGS:
        return "Email"
    # Affiliates: Medium = affiliate.
    if m == "affiliate":
        return "Affiliates"
    # Audio: Medium exactly matches audio.
    if m == "audio":
        return "Audio"
    # SMS: Source exactly matches sms OR Medium exactly matches sms.
    if s == "sms" or m == "sms":
        return "SMS"
    # Mobile Push Notifications: Medium ends with "push" OR Medium contains "mobile" or
    # "notification" OR Source exactly matches "firebase".
    if m.endswith("push") or "mobile" in m or "notification" in m or s == "firebase":
        return "Mobile Push Notifications"
    # Unassigned: no other rule matched.
    return "Unassigned"


def _query_params(url: str) -> dict[str, str]:
    """Return the landing URL's first non-empty value of each parameter, names lower-cased."""
    # Split by hand rather than with urlsplit: a query must be read even when the rest of the
    # URL is malformed (bad IPv6 host, missing scheme).
    query = url[:MAX_URL_LENGTH].partition("#")[0].partition("?")[2]
    params: dict[str, str] = {}
    for name, value in parse_qsl(query):
        # %00 decodes to a NUL, which PostgreSQL's text cannot hold (and nobody typed).
        key = name.replace("\x00", "").strip().lower()
        text = value.replace("\x00", "").strip()
        if text and key not in params:
            params[key] = text
    return params


def _clip(value: str | None, width: int) -> str | None:
    return value[:width] if value else None


def classify(
    landing_url: str, referrer: str | None = None, site_domain: str | None = None
) -> Attribution:
    """Attribute a session from its landing URL and referrer."""
    landing = landing_url if isinstance(landing_url, str) else ""
    params = _query_params(landing)
    click_ids = {name: params[name][:_TEXT_WIDTH] for name in CLICK_ID_PARAMS if name in params}
    utm_source = params.get("utm_source")
    utm_medium = params.get("utm_medium")

    parsed = parse_referrer(referrer)
    if parsed.host and is_same_site(parsed.host, host_of(landing), site_domain):
        # A self-referral (a page of the site itself) says nothing about where the visit began.
        parsed = Referrer("internal", None, parsed.host, strip_www(parsed.host))
    from_referrer = False

    if any(name in click_ids for name in GOOGLE_CLICK_IDS):
        source, medium = "google", "cpc"
    elif any(name in click_ids for name in MICROSOFT_CLICK_IDS):
        source, medium = "bing", "cpc"
    elif utm_source or utm_medium:
        source, medium = utm_source or NOT_SET, utm_medium or NOT_SET
    elif parsed.medium == "search":
        source, medium, from_referrer = parsed.source, "organic", True
    elif parsed.medium in ("social", "ai"):
        source, medium, from_referrer = parsed.source, "referral", True
    elif social := next((SOCIAL_CLICK_IDS[n] for n in click_ids if n in SOCIAL_CLICK_IDS), None):
        source, medium = social, "referral"
    elif parsed.medium == "unknown":
        source, medium, from_referrer = parsed.source, "referral", True
    else:
        source, medium = DIRECT_SOURCE, NONE_MEDIUM

    campaign = params.get("utm_campaign")
    categories = source_categories(source)
    if from_referrer:
        # GA4 would report the referrer's host as the source ("m.facebook.com"), and its list
        # holds hosts such as "news.ycombinator.com": match those too, not only our short name.
        categories |= source_categories(strip_www(parsed.host))
        if not categories:
            brand = source_categories(_brand(parsed.host))
            categories = brand & _BRAND_CATEGORIES
    # The rules read whole values; only what is stored is cut to the columns' widths.
    return Attribution(
        channel=channel_group(source, medium, campaign, categories),
        source=source[:_SOURCE_WIDTH],
        medium=medium[:_SOURCE_WIDTH],
        campaign=_clip(campaign, _TEXT_WIDTH),
        term=_clip(params.get("utm_term"), _TEXT_WIDTH),
        content=_clip(params.get("utm_content"), _TEXT_WIDTH),
        click_ids=click_ids,
    )


def channel_for(landing_url: str, referrer: str | None = None) -> Channel:
    """Return the GA4 default channel group of a session, the landing host being the site."""
    site_domain = host_of(landing_url) or None
    return classify(landing_url, referrer, site_domain=site_domain).channel
