"""Visitor IP truncation and approximate geolocation from a MaxMind-format database.

Privacy rule: the visitor's full IP address is only ever held in memory, for the request that
carried it. The collect handler calls `GeoLookup.lookup` with the raw address first, then keeps
only `truncate_ip(...)` (the /24 network for IPv4, the /48 for IPv6), which is what gets
stored. Nothing in this module logs, caches or persists an address.

A missing database is not an error: geo stays empty and tracking goes on.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import geoip2.database
import geoip2.errors
import maxminddb

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# /24 and /48 are the usual anonymisation prefixes (Matomo's two-byte mask, Google
# Analytics' former anonymizeIp): precise enough for country and region, not for a household.
IPV4_KEPT_BITS: Final = 24
IPV6_KEPT_BITS: Final = 48

_IPV4_MASK: Final = ((1 << IPV4_KEPT_BITS) - 1) << (32 - IPV4_KEPT_BITS)
_IPV6_MASK: Final = ((1 << IPV6_KEPT_BITS) - 1) << (128 - IPV6_KEPT_BITS)


@dataclass(frozen=True, slots=True)
class GeoInfo:
    country: str | None = None
    region: str | None = None
    city: str | None = None


_NO_GEO: Final = GeoInfo()


def parse_ip(ip: str | None) -> IPAddress | None:
    """Parse an address, unwrapping IPv4-mapped IPv6; None when it is not an address."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    # Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d; they are IPv4 visitors.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=8192)
def truncate_ip(ip: str | None) -> str | None:
    """Return the address with its host part zeroed (IPv4 /24, IPv6 /48); None if invalid."""
    address = parse_ip(ip)
    if address is None:
        return None
    # Masking the integer, rather than building an ip_network, also drops any IPv6 zone id.
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(address) & _IPV4_MASK))
    return str(ipaddress.IPv6Address(int(address) & _IPV6_MASK))


class GeoLookup:
    """Country, region and city for an address, from a GeoIP2/GeoLite2 City or Country file."""

    def __init__(self, path: str | None) -> None:
        self._reader: geoip2.database.Reader | None = None
        self._has_city = False
        if not path:
            return
        if not os.path.isfile(path):
            logger.warning("GeoIP database %s not found; visitor geo will stay empty", path)
            return
        try:
            # MODE_AUTO memory-maps the file through maxminddb's C extension when it is
            # installed: lookups cost microseconds and workers share the pages.
            reader = geoip2.database.Reader(path, locales=["en"], mode=geoip2.database.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            logger.warning(
                "GeoIP database %s unreadable (%s); visitor geo will stay empty", path, exc
            )
            return
        database_type = reader.metadata().database_type
        if "City" in database_type:
            self._has_city = True
        elif "Country" not in database_type:
            reader.close()
            logger.warning(
                "GeoIP database %s is a %s database, not City or Country; visitor geo will stay"
                " empty",
                path,
                database_type,
            )
            return
        self._reader = reader

    @property
    def enabled(self) -> bool:
        """Tell whether a database is open."""
        return self._reader is not None

    def lookup(self, ip: str | None) -> GeoInfo:
        """Return the location of a public address; empty when unknown. Never raises."""
        if self._reader is None:
            return _NO_GEO
        address = parse_ip(ip)
        # Private, loopback, link-local, CGNAT and documentation ranges have no location.
        if address is None or not address.is_global:
            return _NO_GEO
        try:
            if not self._has_city:
                return GeoInfo(country=self._reader.country(address).country.iso_code)
            response = self._reader.city(address)
        except (geoip2.errors.GeoIP2Error, maxminddb.InvalidDatabaseError, ValueError):
            # GeoIP2Error covers AddressNotFoundError; ValueError a reader closed under us.
            return _NO_GEO
        region = None
        if response.subdivisions:
            first = response.subdivisions[0]
            region = first.names.get("en") or first.iso_code
        return GeoInfo(
            country=response.country.iso_code,
            region=region,
            city=response.city.names.get("en"),
        )

    def close(self) -> None:
        """Close the database; later lookups return empty geo."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()
