"""Write a small MaxMind-format GeoIP2-City database for tests.

The records follow GeoIP2-City's layout (continent, country, subdivisions, city, location) so
`geoip2.database.Reader(path).city(ip)` reads them like the real file. The networks and places
are the ones MaxMind's own test databases use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, NamedTuple

from mmdb_writer import MMDBWriter
from netaddr import IPSet


class Place(NamedTuple):
    network: str
    continent: str
    country: str
    country_name: str
    subdivision_code: str
    subdivision_name: str
    city: str
    latitude: float
    longitude: float
    time_zone: str


PLACES: Final = (
    Place(
        "81.2.69.0/24", "EU", "GB", "United Kingdom", "ENG", "England", "London",
        51.5142, -0.0931, "Europe/London",
    ),
    Place(
        "89.160.20.0/24", "EU", "SE", "Sweden", "E", "Östergötland", "Linköping",
        58.4167, 15.6167, "Europe/Stockholm",
    ),
    Place(
        "2a02:a000::/26", "EU", "FR", "France", "IDF", "Île-de-France", "Paris",
        48.8566, 2.3522, "Europe/Paris",
    ),
    Place(
        "2001:218::/32", "AS", "JP", "Japan", "13", "Tokyo", "Tokyo",
        35.6895, 139.6917, "Asia/Tokyo",
    ),
)  # fmt: skip


def _record(place: Place) -> dict[str, Any]:
    return {
        "continent": {"code": place.continent, "names": {"en": place.continent}},
        "country": {"iso_code": place.country, "names": {"en": place.country_name}},
        "subdivisions": [
            {"iso_code": place.subdivision_code, "names": {"en": place.subdivision_name}}
        ],
        "city": {"names": {"en": place.city}},
        "location": {
            "latitude": place.latitude,
            "longitude": place.longitude,
            "time_zone": place.time_zone,
            "accuracy_radius": 100,
        },
    }


def write_city_database(
    path: Path, places: tuple[Place, ...] = PLACES, database_type: str = "GeoIP2-City"
) -> Path:
    """Write `places` as a GeoIP2-City database at `path` and return the path.

    `database_type` can name another edition (e.g. "GeoLite2-Country") to test how readers
    treat it; the records keep the City layout, a superset of the Country one.
    """
    # An IPv6 tree with IPv4 mapped under ::/96, like MaxMind's own City files, so one file
    # answers both address families.
    writer = MMDBWriter(
        ip_version=6,
        database_type=database_type,
        languages=["en"],
        description="Calltrack test City database",
        ipv4_compatible=True,
    )
    for place in places:
        writer.insert_network(IPSet([place.network]), _record(place))
    writer.to_db_file(str(path))
    return path
