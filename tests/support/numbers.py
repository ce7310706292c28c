"""Phone numbers for tests."""

from __future__ import annotations

import random

import phonenumbers

_ISSUED: set[str] = set()


def random_e164() -> str:
    """A valid French number nobody else in this test run holds.

    Every test shares one PostgreSQL database per run, where numbers are unique: drawing at
    random alone collided about once in a few hundred runs (birthday odds over the thousand
    numbers a run makes), so the numbers already given out are remembered and never drawn again.
    """
    while True:
        e164 = "+339" + "".join(random.choices("0123456789", k=8))
        if e164 not in _ISSUED and phonenumbers.is_valid_number(phonenumbers.parse(e164, None)):
            _ISSUED.add(e164)
            return e164
