"""Each domain's CLI commands (numbers, calls, simulate, bench, privacy) register here."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    """Add the commands of later domains to the `calltrack` parser."""
    from dashboard import benchcli, numbers_cli, privacy_cli, telephony_cli
    from dashboard.reports import cli as reports_cli

    numbers = numbers_cli.register(commands)
    telephony_cli.register_numbers_commands(numbers)
    telephony_cli.register(commands)
    benchcli.register(commands)
    reports_cli.register(commands)
    privacy_cli.register(commands)
