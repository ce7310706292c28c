"""Each domain's CLI commands (numbers, calls, simulate, bench, privacy) register here."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add the commands of later domains to the `calltrack` parser."""
    from dashboard import benchcli

    benchcli.register(commands)


__all__ = ["argparse", "register"]
