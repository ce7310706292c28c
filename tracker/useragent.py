"""User-agent parsing and bot detection for tracked pageviews.

Browser, OS and device come from ua-parser (uap-core's regexes). Bot detection is our own
pattern list, in the spirit of the `isbot` npm project: generic words crawlers use to
name themselves, HTTP libraries, monitoring and preview services, and user-agent shapes that no
browser sends; ua-parser's "Spider" device family is added on top.

Both run on every tracked pageview, so results are memoised per user-agent string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

import ua_parser
from ua_parser import Device, Domain

DeviceClass = Literal["desktop", "mobile", "tablet", "bot", "unknown"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    browser: str | None
    browser_version: str | None
    os: str | None
    device: DeviceClass
    is_bot: bool
    # Headless browsers (HeadlessChrome) are counted as browsers: automated end-to-end tests of
    # a merchant's own site and prerenderers run them, and they execute the page like a
    # visitor's browser. CALLTRACK_BLOCK_HEADLESS=1 drops them at collect instead.
    headless: bool = False


# The longest user agent in isbot's corpus of real crawlers and browsers is 328 characters.
# Anything far beyond that is junk or an attack on the parser; cutting it bounds both the
# regex work and the memory held by the cache keys.
MAX_USER_AGENT_LENGTH: Final = 1024

# Distinct user agents seen in a day by a mid-sized shop fit comfortably; each entry is at most
# ~1 KiB of key plus a small frozen dataclass, so the worst case stays under ~5 MiB.
_CACHE_SIZE: Final = 4096

# Bot detection runs on the lower-cased user agent in three passes: plain substrings, shapes
# anchored at the start, and guarded words. Python's `re` tries every branch of an alternation
# at every position, so the same rules as one regex of ~150 branches cost ~300 µs a call;
# split this way they cost ~30 µs.

# Substrings that only automated clients send.
_BOT_WORDS: Final[tuple[str, ...]] = (
    # Robots that say so.
    "crawl", "spider", "fetcher", "archiv", "slurp", "nutch", "scrape", "scrapy",
    # Link previews, thumbnails and screenshots.
    "preview", "thumb", "screenshot", "collage", "onebox", "unfurl", "embedly", "embedder",
    "expander",
    # Validators, auditors, uptime and performance monitors, security scanners.
    "validat", "verif", "checker", "checklink", "linkcheck", "monitor", "uptime", "status",
    "synthetic", "probe", "health", "analyz", "analys", "audit", "inspect", "lighthouse",
    "pagespeed", "page speed", "optimiz", "optimis", "measure", "security", "certificate",
    "fuzz", "snapshot", "ptst/", "speedcurve", "pageburst", "pingdom", "catchpoint", "gomez",
    "dejaclick", "dareboost", "site24x7", "dmbrowser", "observatory", "marketgoo", "onetrust",
    "datanyze", "wappalyzer", "xymon", "hobbit", "nagios", "zabbix", "icinga", "monit/",
    "collectd", "prometheus", "datadog", "burpcollaborator", "acunetix", "nikto", "sqlmap",
    "nuclei", "zgrab", "masscan", "clamav", "ips-",
    # Named agents that otherwise look exactly like a browser: Cloudflare's page optimiser,
    # a PCI scanner, an offline site copier and a site-reputation checker.
    "collapsify", "foregenix", "webster pro", "webmoney advisor",
    # Automation and scheduled jobs (HeadlessChrome is handled apart: see DeviceInfo).
    "phantomjs", "selenium", "puppeteer", "playwright", "webdriver", "cypress",
    "schedul", "webhook", "workflow", "logic-apps", "-flow/", "integration",
    # Feed readers and aggregators poll pages; they never view them.
    "feed", "pubsub", "aggregat",
    # HTTP libraries, download tools and page processors.
    "libwww-perl", "-promise", "-client/", "library", "download", "proxy", "sucker", "getter",
    "transcoder", "parser", "extract", "exract", "detector", "lookup", "classifier",
    "semantic", "tools", "firephp", "leadgen",
    # AI assistants and coding agents fetching pages on someone's behalf.
    "openai", "chatgpt", "claude", "anthropic", "perplexity", "cursor/", "devin/",
    "mistralai-user", "manus-user",
    # Platform fetchers.
    "cloudflare", "azure", "microsoft-", "hwcdn", "keycdn", "facebookexternal",
    "facebookcatalog", "meta-external", "whatsapp", "discourse", "outbrain", "taboola", "sogou",
    # A URL is how a bot names its owner; pipes and empty parentheses are template debris.
    "://", "www.", "|", "()",
)  # fmt: skip

# Shapes no browser sends, tested from the first character only (`re.match`).
_BOT_SHAPES: Final[tuple[str, ...]] = (
    r"(?:read|reed|news|track|swcd|downcast/|<|\{\{|\d)",
    # The DuckDuckGo apps' favicon fetcher; their browser sends a Mozilla/... user agent.
    r"(?:duckduckgo|ddg[_-]android)/",
    r"(?:curl|wget|python|java|perl|php|ruby|go-|okhttp|axios|node|deno|lwp-|guzzle|dart"
    r"|reqwest|aiohttp|httpx|faraday|apache|jakarta|unirest|postman|insomnia|powershell"
    r"|winhttp|got|undici|superagent|restsharp|mechanize|grpc|request)(?![a-z])",
    r"[\w .\-():]+(?:/v?\d+(?:\.\d{1,10})*[a-z]?)?(?:,|$)",  # a bare product, maybe versioned
    r"[\w-]+/[a-z]\w*$",  # product/word with no version
    r"[^ ]{50,}$",  # one long token: base64, hashes
    r"mozilla/\d\.\d \(compatible;? ?[^;()]*/v?\d[^;()]*\)$",  # "compatible" + one product
    r"mozilla/\d\.\d \(?[\w.-]+(?:/v?[\d.]+)?\)?$",  # Mozilla and one word
    r"mozilla/\d\.\d \([\w.]+(?:/[\d.]+)?\) ",  # a one-word platform comment
)

# Words that need a boundary or a guard against the people who happen to contain them. Each
# regex runs only when its literal is present: a regex that opens with a lookbehind or `\b`
# gets none of `re`'s fast literal scan, and ten of them cost more than all the words above.
_BOT_GUARDED: Final[tuple[tuple[str, str], ...]] = (
    ("bot", r"(?<!cu)bots?(?:\b|_|\d)"),  # "Cubot" is a phone maker
    ("http", r"(?<!lib)http"),  # PlayStation's "libhttp" is a browser's network stack
    ("scan", r"(?<!cam)scan"),  # CamScanner is a phone app with an in-app browser
    # Google's own apps (GoogleApp, Play, Pixel, TV, web views) are people.
    ("google", r"(?<!channel/)(?<!google/)google(?!app|play|/google| pixel|tv|wv)"),
    ("index", r"\bindex"),
    ("shots", r"shots\b"),
    ("check", r"check\b"),
    ("rigor", r"rigor\b"),
    ("splash", r"splash\b"),
    ("agent", r"agent\b"),
    ("cron", r"\bcron"),
    ("email", r"\bemail"),
    ("daum", r"\bdaum\b"),
    ("rss", r"\brss|rss\b"),
    ("dcv", r"\bdcv\b"),  # TLS certificate domain-control validation
    ("java", r"\bjava(?![;)])"),
    ("ruby/", r"\bruby/"),
    ("libwww/", r"\blibwww/[\d.]+$"),
    ("@", r"@[a-z][\w-]+\."),  # an e-mail address
    # A domain name, or a host with a path: the lookbehind comes after the dot so that the
    # search scans for the literal.
    (".", r"\.(?<=[a-z\d]\.)(?:com|net|org|ai|me|nu|gy|ly|app|ru|de|info)\b(?!\.)"),
    (".", r"\.(?<=[a-z]\.)[a-z]{2,6}/[a-z]"),
)

_BOT_SHAPE_RE: Final = re.compile("|".join(_BOT_SHAPES))
_BOT_GUARDED_RES: Final = tuple((word, re.compile(pattern)) for word, pattern in _BOT_GUARDED)

_MOBILE_OS: Final = frozenset(
    {
        "Windows Phone",
        "Windows Mobile",
        "Windows CE",
        "BlackBerry OS",
        "Symbian OS",
        "Symbian^3",
        "Symbian^3 Anna",
        "Symbian^3 Belle",
        "Nokia Series 40",
        "Nokia Series 30 Plus",
        "Bada",
        "Maemo",
        "MeeGo",
        "KaiOS",
        "Firefox OS",
        "Tizen",
        "Sailfish",
        "webOS",
        "Ubuntu Touch",
    }
)
_MOBILE_DEVICES: Final = frozenset(
    {"iPhone", "iPod", "Generic Smartphone", "Generic Feature Phone"}
)
_DESKTOP_OS: Final = frozenset(
    {
        "Mac OS X",
        "Mac OS",
        "Linux",
        "Ubuntu",
        "Kubuntu",
        "Xubuntu",
        "Lubuntu",
        "Debian",
        "Fedora",
        "Red Hat",
        "SUSE",
        "openSUSE",
        "Mint",
        "Linux Mint",
        "Arch Linux",
        "Gentoo",
        "Slackware",
        "Mandriva",
        "CentOS",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
        "Solaris",
        "SunOS",
        "Chrome OS",
        "ChromeOS",
        "Haiku",
        "BeOS",
    }
)

# Televisions, set-top boxes and casting dongles are none of desktop, mobile or tablet, and some
# of them run Android without a "Mobile" token or Tizen, a phone OS too. Fire TV models are
# named AFT*; the pattern is matched against the lower-cased user agent.
_TV_RE: Final = re.compile(
    r"smart-?tv|hbbtv|\btv\b|googletv|appletv|crkey|roku|bravia|netcast|web0s|; aft[a-z0-9]+[;) ]"
)

_EMPTY: Final = DeviceInfo(None, None, None, "bot", True)


def _build_parser() -> ua_parser.Parser:
    """Build a cache-less parser on the fastest resolver ua-parser finds installed."""
    resolver = ua_parser.BestAvailableResolver
    # ua-parser-rs (`ua-parser[regex]`) and google-re2 build their own automaton from the
    # pattern text, so they take the lazy matchers; the pure-Python resolver wants the eager,
    # pre-compiled ones. No CachingResolver: parse_user_agent memoises the finished result.
    if resolver is ua_parser.BasicResolver:
        return ua_parser.Parser(resolver(ua_parser.load_builtins()))
    return ua_parser.Parser(resolver(ua_parser.load_lazy_builtins()))


# The width of sessions.browser and sessions.os.
NAME_WIDTH: Final = 64

# Built at import (0.2-0.3 s with the pure-Python resolver) so that the first pageview after
# start-up does not pay for compiling uap-core's regexes.
_PARSER: Final = _build_parser()


def parse_user_agent(ua: str | None) -> DeviceInfo:
    """Return browser, OS, device class and bot flag for a User-Agent header."""
    if not ua or not ua.strip():
        return _EMPTY
    # Lone surrogates cannot cross into the Rust resolver; headers never carry them, but
    # callers might.
    text = ua[:MAX_USER_AGENT_LENGTH].encode("utf-8", "replace").decode("utf-8")
    return _parse(text)


def is_bot(ua: str | None) -> bool:
    """Tell whether a User-Agent header belongs to a crawler, tool or script."""
    return parse_user_agent(ua).is_bot


@lru_cache(maxsize=_CACHE_SIZE)
def _parse(ua: str) -> DeviceInfo:
    """Parse one (already truncated) user agent; memoised."""
    lowered = ua.lower()
    pattern_bot = _matches_bot_patterns(lowered)
    # The device domain is the costliest of the three in uap-core; a known bot's device
    # class is "bot" whatever the hardware, so skip it.
    domains = Domain.USER_AGENT | Domain.OS if pattern_bot else Domain.ALL
    result = _PARSER(ua, domains)
    device = result.device
    bot = pattern_bot or (device is not None and device.family == "Spider")
    agent = result.user_agent
    browser = agent.family if agent is not None and agent.family != "Other" else None
    os_family = result.os.family if result.os is not None and result.os.family != "Other" else None
    return DeviceInfo(
        # uap-core names some apps after whatever the user agent says ("My Shopping App For
        # Everyone..."): cut to the sessions' columns, which PostgreSQL enforces.
        browser=browser[:NAME_WIDTH] if browser else None,
        browser_version=agent.major if browser is not None and agent is not None else None,
        os=os_family[:NAME_WIDTH] if os_family else None,
        device="bot" if bot else _device_class(lowered, os_family, device),
        is_bot=bot,
        headless="headless" in lowered,
    )


def _matches_bot_patterns(ua_lower: str) -> bool:
    """Tell whether a lower-cased user agent matches any of the bot patterns."""
    return (
        any(word in ua_lower for word in _BOT_WORDS)
        or _BOT_SHAPE_RE.match(ua_lower) is not None
        or any(
            word in ua_lower and pattern.search(ua_lower) is not None
            for word, pattern in _BOT_GUARDED_RES
        )
    )


def _device_class(ua_lower: str, os_family: str | None, device: Device | None) -> DeviceClass:
    """Classify a browser's hardware as desktop, mobile, tablet or unknown."""
    family = device.family if device is not None else ""
    if _TV_RE.search(ua_lower):
        return "unknown"
    if family == "iPad" or "ipad" in ua_lower:
        return "tablet"
    # Fire tablets send "Silk" and no "Mobile" token; ua-parser names some of them "Kindle".
    if family == "Kindle" or os_family == "Kindle" or "kindle" in ua_lower or "silk/" in ua_lower:
        return "tablet"
    if os_family == "Android":
        # Android browsers put "Mobile" in the user agent on phones only; that is Google's
        # own rule for telling phones from tablets.
        return "mobile" if "mobile" in ua_lower else "tablet"
    if os_family == "iOS" or os_family in _MOBILE_OS or family in _MOBILE_DEVICES:
        return "mobile"
    # Windows desktops may say "Tablet PC 2.0" or "Touch": test the OS before the tokens.
    if os_family is not None and (os_family in _DESKTOP_OS or os_family.startswith("Windows")):
        return "desktop"
    if family == "Generic Tablet" or "tablet" in ua_lower:
        return "tablet"
    if "mobi" in ua_lower or "phone" in ua_lower:
        return "mobile"
    return "unknown"
