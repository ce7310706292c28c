"""Source-number rules and the precedence between them.

A source number is static: every visitor whose visit matches its rule sees it, consent or not,
since nothing about the visitor is stored to pick it. Precedence, most specific first:

1. landing-page parameter (`promo=tv`): the merchant printed that URL on one specific medium;
2. referrer domain (`lesbonsplans.fr`, subdomains included);
3. utm_source, then GA4 channel (`Paid Social`): one level, utm_source first because it names
   a single source inside a channel;
4. the session's pool number (only with consent);
5. the business number itself.

Within one level the oldest number wins, so adding a number never changes what visitors of an
existing rule see, except a rule that narrows it (`promo=tv` for a bare `promo`,
`deals.example.com` for `example.com`): a merchant adds that to carve its visitors out of the
wider rule. A rule on another parameter or an unrelated domain never takes over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeVar, get_args
from urllib.parse import parse_qsl, urlsplit

from tracker.errors import ApiError
from tracker.models import TrackedSession
from tracker.referrers import host_of, strip_www
from tracker.sites import normalise_domain

RuleType = Literal["landing_param", "referrer_domain", "utm_source", "channel"]
RULE_TYPES: Final[tuple[RuleType, ...]] = get_args(RuleType)
# Lower wins; see the module docstring.
PRECEDENCE: Final[Mapping[RuleType, int]] = {
    "landing_param": 0,
    "referrer_domain": 1,
    "utm_source": 2,
    "channel": 3,
}
MAX_RULE_VALUE = 300

T = TypeVar("T")


@dataclass(frozen=True)
class VisitFacts:
    """What the rules look at, read once per session."""

    landing_params: Mapping[str, tuple[str, ...]]
    referrer_host: str
    channel: str
    utm_source: str | None

    @classmethod
    def of(cls, session: TrackedSession) -> VisitFacts:
        """Read the facts of a session (parameter names and values compared lower-case)."""
        return cls.read(session.landing_url, session.referrer, session.channel)

    @classmethod
    def read(cls, landing_url: str | None, referrer: str | None, channel: str | None) -> VisitFacts:
        """Read the facts of a visit from its stored columns."""
        params: dict[str, list[str]] = {}
        try:
            query = urlsplit(landing_url or "").query
        except ValueError:
            query = ""
        for key, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(key.strip().lower(), []).append(value.strip().lower())
        utm = params.get("utm_source")
        return cls(
            landing_params={k: tuple(v) for k, v in params.items()},
            referrer_host=strip_www(host_of(referrer)),
            channel=(channel or "").lower(),
            utm_source=utm[0] if utm and utm[0] else None,
        )


@dataclass(frozen=True)
class SourceRule:
    type: RuleType
    value: str

    @property
    def precedence(self) -> int:
        return PRECEDENCE[self.type]

    def narrows(self, other: SourceRule) -> bool:
        """Is this a narrower form of `other`: `promo=tv` of `promo`, `deals.example.com` of
        `example.com`? Rules on other parameters or unrelated domains never are."""
        if self.type != other.type:
            return False
        if self.type == "landing_param":
            key, has_value, _ = self.value.partition("=")
            other_key, other_has_value, _ = other.value.partition("=")
            return bool(has_value) and not other_has_value and key.lower() == other_key.lower()
        if self.type == "referrer_domain":
            return self.value.endswith("." + other.value)
        return False

    def matches(self, facts: VisitFacts) -> bool:
        """Tell whether a visit matches this rule."""
        if self.type == "landing_param":
            key, has_value, wanted = self.value.partition("=")
            values = facts.landing_params.get(key.lower())
            if values is None:
                return False
            return not has_value or wanted.lower() in values
        if self.type == "referrer_domain":
            host = facts.referrer_host
            return bool(host) and (host == self.value or host.endswith("." + self.value))
        if self.type == "utm_source":
            return facts.utm_source == self.value.lower()
        return facts.channel == self.value.lower()

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


# Second-level names under which countries register any business (amazon.co.uk, ebay.com.au):
# with a two-letter country domain they are a suffix, not a site. (No public-suffix list is
# installed; these are the ones that would catch a whole country's commercial sites.)
_SECOND_LEVEL = frozenset(("co", "com", "net", "org", "ltd", "plc"))


def _public_suffix(domain: str) -> bool:
    labels = domain.split(".")
    if len(labels) == 1:
        return domain != "localhost"  # a test shop's own machine
    return len(labels) == 2 and len(labels[1]) == 2 and labels[0] in _SECOND_LEVEL


def _channels() -> tuple[str, ...]:
    from tracker.channels import CHANNELS

    return tuple(CHANNELS)


def parse_rule(rule_type: str, raw: str) -> SourceRule:
    """Validate and normalise a rule; raise ApiError with a precise code."""
    if rule_type not in RULE_TYPES:
        raise ApiError("invalid_rule", f"a rule type is one of {', '.join(RULE_TYPES)}")
    value = (raw or "").strip()
    if not value or len(value) > MAX_RULE_VALUE:
        raise ApiError("invalid_rule", f"a {rule_type} rule needs a value of 1 to 300 characters")
    if rule_type == "landing_param":
        key, _, wanted = value.partition("=")
        if not key.strip() or any(c in key for c in "&?#"):
            raise ApiError(
                "invalid_rule", "a landing parameter rule is name=value (or a bare name)"
            )
        value = key.strip() + ("=" + wanted.strip() if "=" in value else "")
    elif rule_type == "referrer_domain":
        try:
            value = normalise_domain(value)
        except ApiError as exc:
            raise ApiError("invalid_rule", f"{raw!r} is not a domain name") from exc
        if _public_suffix(value):
            # "fr" would catch every visit from google.fr, leboncoin.fr...: a typo, not a rule.
            raise ApiError(
                "invalid_rule",
                f"{raw!r} is a top-level domain, not a site: name the referring site "
                "(lesbonsplans.fr)",
            )
    elif rule_type == "channel":
        names = {name.lower(): name for name in _channels()}
        canonical = names.get(value.lower())
        if canonical is None:
            raise ApiError(
                "invalid_channel",
                f"{raw!r} is not a GA4 default channel group; one of: {', '.join(_channels())}",
            )
        value = canonical
    return SourceRule(rule_type, value)


def best_match(candidates: Iterable[tuple[SourceRule, int, T]], facts: VisitFacts) -> T | None:
    """Pick the item of the highest-precedence matching rule, the oldest of its level, unless
    a matching rule narrows it (`promo=tv` for `promo`): then the narrowest."""
    matching = sorted(
        ((rule, ident, item) for rule, ident, item in candidates if rule.matches(facts)),
        key=lambda entry: (entry[0].precedence, entry[1]),
    )
    if not matching:
        return None
    best = matching[0]
    while narrower := next((m for m in matching if m[0].narrows(best[0])), None):
        best = narrower
    return best[2]
