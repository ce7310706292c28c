"""IP truncation and geo lookup against a generated MaxMind-format database."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.geodb import write_city_database

from tracker.geo import GeoInfo, GeoLookup, truncate_ip


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("203.0.113.0", "203.0.113.0"),
        ("255.255.255.255", "255.255.255.0"),
        ("  198.51.100.9 ", "198.51.100.0"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::"),
        ("2001:0db8:1234:ffff:ffff:ffff:ffff:ffff", "2001:db8:1234::"),
        ("2001:db8::1", "2001:db8::"),
        ("fe80::1%eth0", "fe80::"),
        ("::1", "::"),
        ("::ffff:1.2.3.4", "1.2.3.0"),
        ("::ffff:203.0.113.77", "203.0.113.0"),
        ("", None),
        (None, None),
        ("   ", None),
        ("not an ip", None),
        ("256.1.1.1", None),
        ("1.2.3", None),
        ("203.0.113.77:8080", None),
        ("[2001:db8::1]", None),
        ("2001:db8::1/64", None),
        ("2001:db8:::1", None),
    ],
)
def test_truncate_ip(ip: str | None, expected: str | None) -> None:
    assert truncate_ip(ip) == expected


@pytest.fixture(scope="module")
def city_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_city_database(tmp_path_factory.mktemp("geoip") / "city.mmdb")


@pytest.fixture
def geo(city_db: Path) -> Iterator[GeoLookup]:
    lookup = GeoLookup(str(city_db))
    yield lookup
    lookup.close()


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("81.2.69.160", GeoInfo("GB", "England", "London")),
        ("81.2.69.1", GeoInfo("GB", "England", "London")),
        ("::ffff:81.2.69.160", GeoInfo("GB", "England", "London")),
        ("89.160.20.112", GeoInfo("SE", "Östergötland", "Linköping")),
        ("2a02:a000::1", GeoInfo("FR", "Île-de-France", "Paris")),
        ("2a02:a03f:ffff::1", GeoInfo("FR", "Île-de-France", "Paris")),
        ("2001:218::5", GeoInfo("JP", "Tokyo", "Tokyo")),
    ],
)
def test_lookup_finds_country_region_and_city(geo: GeoLookup, ip: str, expected: GeoInfo) -> None:
    assert geo.enabled
    assert geo.lookup(ip) == expected


@pytest.mark.parametrize(
    "ip",
    [
        "8.8.8.8",  # public, not in the database
        "81.2.70.1",  # next to a known network
        "2a02:a040::1",  # just past the /26
        "10.1.2.3",
        "192.168.1.10",
        "172.16.0.1",
        "127.0.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "::1",
        "fd00::1",
        "fe80::1",
        "2001:db8::1",  # documentation range
        "::ffff:192.168.1.10",
        "not an ip",
        "",
        None,
    ],
)
def test_lookup_is_empty_when_unknown(geo: GeoLookup, ip: str | None) -> None:
    assert geo.lookup(ip) == GeoInfo()


def test_no_path_means_no_database(caplog: pytest.LogCaptureFixture) -> None:
    for path in (None, ""):
        lookup = GeoLookup(path)
        assert not lookup.enabled
        assert lookup.lookup("81.2.69.160") == GeoInfo()
        lookup.close()
    assert caplog.records == []


def test_missing_file_warns_once_and_stays_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "GeoLite2-City.mmdb"
    with caplog.at_level(logging.WARNING, logger="tracker.geo"):
        lookup = GeoLookup(str(missing))
        for _ in range(3):
            assert lookup.lookup("81.2.69.160") == GeoInfo()
    assert not lookup.enabled
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(missing) in warnings[0].getMessage()


def test_unreadable_file_warns_and_stays_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"this is not a MaxMind database" * 10)
    with caplog.at_level(logging.WARNING, logger="tracker.geo"):
        lookup = GeoLookup(str(corrupt))
    assert not lookup.enabled
    assert lookup.lookup("81.2.69.160") == GeoInfo()
    assert len(caplog.records) == 1


def test_country_database_gives_country_only(tmp_path: Path) -> None:
    path = write_city_database(tmp_path / "country.mmdb", database_type="GeoLite2-Country")
    lookup = GeoLookup(str(path))
    try:
        assert lookup.lookup("81.2.69.160") == GeoInfo(country="GB")
        assert lookup.lookup("8.8.8.8") == GeoInfo()
    finally:
        lookup.close()


def test_other_database_types_are_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_city_database(tmp_path / "asn.mmdb", database_type="GeoLite2-ASN")
    with caplog.at_level(logging.WARNING, logger="tracker.geo"):
        lookup = GeoLookup(str(path))
    assert not lookup.enabled
    assert lookup.lookup("81.2.69.160") == GeoInfo()
    assert "GeoLite2-ASN" in caplog.text


def test_lookup_after_close_is_empty(city_db: Path) -> None:
    lookup = GeoLookup(str(city_db))
    assert lookup.lookup("81.2.69.160").country == "GB"
    lookup.close()
    lookup.close()
    assert lookup.lookup("81.2.69.160") == GeoInfo()
