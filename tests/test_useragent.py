"""User-agent parsing and bot detection, measured on isbot's corpus of real user agents."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tracker import useragent
from tracker.useragent import MAX_USER_AGENT_LENGTH, DeviceInfo, is_bot, parse_user_agent

# isbot's fixtures (Unlicense), shared by every checkout: ../shared/data/bots.
BOTS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bots"


def load_user_agents(name: str) -> list[str]:
    """Read one of isbot's `{product: [user agent, ...]}` YAML files as a flat list."""
    path = BOTS_DIR / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the bot-detection corpus lives in ../shared/data/bots")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [ua for uas in data.values() for ua in uas]


def test_flags_at_least_99_percent_of_crawlers() -> None:
    crawlers = load_user_agents("isbot-crawlers.yml")
    missed = [ua for ua in crawlers if not is_bot(ua)]
    rate = 1 - len(missed) / len(crawlers)
    assert rate >= 0.99, f"{rate:.2%} of {len(crawlers)} crawlers flagged; missed:\n" + "\n".join(
        missed
    )


def test_flags_at_most_1_percent_of_browsers() -> None:
    browsers = load_user_agents("isbot-browsers.yml")
    flagged = [ua for ua in browsers if is_bot(ua)]
    rate = len(flagged) / len(browsers)
    assert rate <= 0.01, f"{rate:.2%} of {len(browsers)} browsers flagged:\n" + "\n".join(flagged)


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        pytest.param(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            DeviceInfo("Mobile Safari", "17", "iOS", "mobile", False),
            id="iphone-safari",
        ),
        pytest.param(
            "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
            DeviceInfo("Mobile Safari", "17", "iOS", "tablet", False),
            id="ipad-safari",
        ),
        pytest.param(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
            DeviceInfo("Chrome", "124", "Windows", "desktop", False),
            id="windows-chrome",
        ),
        pytest.param(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:133.0) Gecko/20100101 "
            "Firefox/133.0",
            DeviceInfo("Firefox", "133", "Mac OS X", "desktop", False),
            id="mac-firefox",
        ),
        pytest.param(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
            DeviceInfo("Chrome Mobile", "124", "Android", "mobile", False),
            id="android-phone-chrome",
        ),
        pytest.param(
            "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
            DeviceInfo("Chrome", "124", "Android", "tablet", False),
            id="android-tablet-chrome",
        ),
        pytest.param(
            "Mozilla/5.0 (Android 14; Tablet; rv:133.0) Gecko/133.0 Firefox/133.0",
            DeviceInfo("Firefox Mobile", "133", "Android", "tablet", False),
            id="android-tablet-firefox",
        ),
        pytest.param(
            "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; Trident/6.0; Touch; "
            "Tablet PC 2.0)",
            DeviceInfo("IE", "10", "Windows", "desktop", False),
            id="windows-touch-is-desktop",
        ),
        pytest.param(
            "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
            "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
            DeviceInfo("Samsung Internet", "4", "Tizen", "unknown", False),
            id="smart-tv",
        ),
        pytest.param(
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            DeviceInfo("Googlebot", "2", None, "bot", True),
            id="googlebot",
        ),
        pytest.param(
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/124.0.6367.91 Mobile Safari/537.36 "
            "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            DeviceInfo("Googlebot", "2", "Android", "bot", True),
            id="googlebot-smartphone",
        ),
        pytest.param(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/124.0.0.0 Safari/537.36",
            DeviceInfo("HeadlessChrome", "124", "Linux", "desktop", False, headless=True),
            id="headless-chrome",
        ),
        pytest.param(
            "curl/8.5.0",
            DeviceInfo("curl", "8", None, "bot", True),
            id="curl",
        ),
    ],
)
def test_parses_known_user_agents(ua: str, expected: DeviceInfo) -> None:
    assert parse_user_agent(ua) == expected
    assert is_bot(ua) is expected.is_bot


@pytest.mark.parametrize("ua", [None, "", "   ", "\t\n"])
def test_missing_user_agent_is_a_bot(ua: str | None) -> None:
    assert is_bot(ua)
    assert parse_user_agent(ua) == DeviceInfo(None, None, None, "bot", True)


@pytest.mark.parametrize(
    "ua",
    [
        "\x00\x01\x02\xff",
        "\ud83d",  # a lone surrogate, as a broken client may send
        "(((((((((((((((((((((",
        "Mozilla/5.0 (" + ";" * 5000,
        "Mozilla/5.0 (Windows NT 10.0) " + "A" * 1_000_000,
        "é" * 100_000,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) " * 20_000,
    ],
    ids=["control", "surrogate", "parens", "semicolons", "huge", "unicode", "repeated"],
)
def test_garbage_and_huge_user_agents_never_raise(ua: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    parser = useragent._PARSER
    monkeypatch.setattr(
        useragent, "_PARSER", lambda text, domains: seen.append(len(text)) or parser(text, domains)
    )
    useragent._parse.cache_clear()
    info = parse_user_agent(ua)
    assert info.device in {"desktop", "mobile", "tablet", "bot", "unknown"}
    assert is_bot(ua) is info.is_bot
    # Only the first MAX_USER_AGENT_LENGTH characters reach the parser's regular expressions,
    # so a huge header costs no more than a long one.
    assert seen and max(seen) <= MAX_USER_AGENT_LENGTH


def test_long_user_agents_are_cut_before_parsing() -> None:
    head = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
    )
    padded = head + " " * (MAX_USER_AGENT_LENGTH - len(head)) + "bot"
    assert parse_user_agent(padded) == parse_user_agent(head + " " * 10)


def test_results_are_cached() -> None:
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
    assert parse_user_agent(ua) is parse_user_agent(ua)
