"""The production examples in infra/deploy stay in step with the code and the README.

They were checked by hand behind a real nginx 1.22 with two workers, PostgreSQL and Redis
(console websocket, X-Forwarded-For replaced, a Redis restart); these tests catch drift.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from dashboard.cli import build_parser
from tracker.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "infra" / "deploy"


def test_the_unit_starts_a_worker_with_the_real_command_line() -> None:
    unit = (DEPLOY / "calltrack@.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    assert exec_start is not None
    argv = shlex.split(exec_start.group(1).replace("%i", "8081"))
    assert argv[0].endswith("/calltrack")
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.host, args.port) == ("serve", "127.0.0.1", 8081)


def test_every_variable_of_the_environment_example_is_read_and_documented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = (DEPLOY / "calltrack.env.example").read_text()
    values = dict(re.findall(r"^(CALLTRACK_[A-Z0-9_]+)=(.*)$", example, re.MULTILINE))
    readme = (ROOT / "README.md").read_text()
    for name in values:
        assert f"`{name}`" in readme, f"{name} is not documented in the README"
    for name in [n for n in os.environ if n.startswith("CALLTRACK_")]:
        monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.database_url.startswith("postgresql+asyncpg://calltrack:")
    assert settings.redis_url == values["CALLTRACK_REDIS_URL"]
    assert settings.public_url == values["CALLTRACK_PUBLIC_URL"]
    assert settings.secret_key == values["CALLTRACK_SECRET_KEY"]
    assert settings.spool_dir == values["CALLTRACK_SPOOL_DIR"]
    assert settings.geoip_db == values["CALLTRACK_GEOIP_DB"]
    assert [str(p) for p in settings.trusted_proxies] == ["127.0.0.1/32", "::1/128"]


def test_nginx_passes_the_websocket_upgrade_and_replaces_the_forwarded_address() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_http_version 1.1;" in conf
    # Longer than the hub's ping interval, or nginx closes quiet consoles.
    from dashboard.hub.const import HEARTBEAT_INTERVAL

    timeout = re.search(r"proxy_read_timeout (\d+)s;", conf)
    assert timeout is not None and int(timeout.group(1)) > HEARTBEAT_INTERVAL


def test_a_malformed_trusted_proxy_list_stops_the_server_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a 500 on every request later: the address parser used to meet it per request."""
    monkeypatch.setenv("CALLTRACK_SECRET_KEY", "proxy-env-test-" + "k" * 32)  # no var/ file
    monkeypatch.setenv("CALLTRACK_TRUSTED_PROXIES", " 10.0.0.0/8 , 192.0.2.7,2001:db8::/32 ")
    assert Settings.from_env().trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")
    monkeypatch.setenv("CALLTRACK_TRUSTED_PROXIES", "10.0.0.0/8,bad")
    with pytest.raises(ValueError, match=r"CALLTRACK_TRUSTED_PROXIES.*'bad'"):
        Settings.from_env()
    from dashboard.cli import main

    assert main(["serve", "--port", "1"]) == 2
    assert "configuration error: CALLTRACK_TRUSTED_PROXIES" in capsys.readouterr().err
