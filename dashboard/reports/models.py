"""Attribution models: how one call's credit is split across the visitor's sessions.

Pure functions over exact fractions. Each model returns one share per touch (session) and the
shares of one call always add up to exactly 1, so every model distributes the same total of
calls. Shares are then turned into integer milli-calls with a largest-remainder rounding
(`allocate`), which keeps that property in the stored rollups: a call is always worth exactly
1,000 milli-calls, whatever the model.

The journey of a call is the list of sessions of the same consenting visitor on the same site,
oldest first, that started at most `LOOKBACK` before the attributed session, ending with the
attributed session (the one that held the tracking number). Without consent there is no
visitor id, so the journey is that one session; a call without a session (source number or
unattributed) has a single touch made from the call's own channel. With a single touch every
model gives it the whole call.

- first touch: everything to the first session.
- last non-direct touch (default, as Google Analytics): everything to the last session whose
  channel is not Direct; to the last session when every session is Direct.
- linear: 1/n to each of the n sessions.
- position-based: 40 % first, 40 % last, the remaining 20 % split evenly between the sessions in
  between; 50/50 with two sessions (Google Ads' rule, since there is no middle to give 20 % to).
- time decay: a session's weight halves every 7 days before the call
  (weight = 2^(-age / 7 days)), weights normalised to add up to 1.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal, get_args

Model = Literal["first_touch", "last_non_direct", "linear", "position_based", "time_decay"]
MODELS: Final[tuple[Model, ...]] = get_args(Model)
DEFAULT_MODEL: Final[Model] = "last_non_direct"
# A call is worth this many integer units in the rollups: shares are exact to 1/1000 call.
UNITS_PER_CALL: Final = 1000
# Sessions older than this before the attributed one are not part of the journey (the
# default click-through conversion window of Google Ads is 30 days).
LOOKBACK: Final = dt.timedelta(days=30)
# A pathological visitor (a bot with consent, a shared kiosk) must not make one call expensive.
MAX_TOUCHES: Final = 50
HALF_LIFE: Final = dt.timedelta(days=7)
DIRECT: Final = "Direct"

MODEL_LABELS: Final[dict[Model, dict[str, str]]] = {
    "first_touch": {"en": "First touch", "fr": "Premier contact"},
    "last_non_direct": {"en": "Last non-direct touch", "fr": "Dernier contact non direct"},
    "linear": {"en": "Linear", "fr": "Linéaire"},
    "position_based": {"en": "Position-based (40/20/40)", "fr": "Basé sur la position (40/20/40)"},
    "time_decay": {"en": "Time decay (7-day half-life)", "fr": "Dégressif (demi-vie 7 jours)"},
}


@dataclass(frozen=True, slots=True)
class Touch:
    """One session of a journey, as far as the models care."""

    started_at: dt.datetime
    channel: str


def first_touch(touches: Sequence[Touch]) -> list[Fraction]:
    """Give the whole call to the first touch."""
    _check(touches)
    return [Fraction(1 if i == 0 else 0) for i in range(len(touches))]


def last_non_direct(touches: Sequence[Touch]) -> list[Fraction]:
    """Give the whole call to the last non-Direct touch, or to the last touch if all are Direct."""
    _check(touches)
    winner = len(touches) - 1
    for index in range(len(touches) - 1, -1, -1):
        if touches[index].channel != DIRECT:
            winner = index
            break
    return [Fraction(1 if i == winner else 0) for i in range(len(touches))]


def linear(touches: Sequence[Touch]) -> list[Fraction]:
    """Split the call evenly."""
    _check(touches)
    return [Fraction(1, len(touches))] * len(touches)


def position_based(touches: Sequence[Touch]) -> list[Fraction]:
    """Give 40 % to the first and last touches and share 20 % between the others."""
    _check(touches)
    n = len(touches)
    if n == 1:
        return [Fraction(1)]
    if n == 2:
        return [Fraction(1, 2), Fraction(1, 2)]
    middle = Fraction(1, 5) / (n - 2)
    return [Fraction(2, 5), *([middle] * (n - 2)), Fraction(2, 5)]


def time_decay(touches: Sequence[Touch], at: dt.datetime) -> list[Fraction]:
    """Weight each touch by 2^(-age / 7 days) at the call's time, normalised to 1."""
    _check(touches)
    # The float weights are turned into exact fractions before normalising, so the shares
    # still add up to exactly 1 (2^-1, 2^-2 ... are exact in binary, as the tests use).
    weights = [Fraction(2.0 ** (-max((at - t.started_at) / HALF_LIFE, 0.0))) for t in touches]
    total = sum(weights, Fraction(0))
    return [w / total for w in weights]


def shares(model: Model, touches: Sequence[Touch], at: dt.datetime) -> list[Fraction]:
    """Return each touch's share of one call under `model` (they add up to exactly 1)."""
    if model == "first_touch":
        return first_touch(touches)
    if model == "last_non_direct":
        return last_non_direct(touches)
    if model == "linear":
        return linear(touches)
    if model == "position_based":
        return position_based(touches)
    if model == "time_decay":
        return time_decay(touches, at)
    raise ValueError(f"unknown attribution model {model!r}")


def allocate(parts: Sequence[Fraction], total: int) -> list[int]:
    """Turn shares adding up to 1 into integers adding up to `total` (largest remainder).

    Ties go to the earlier part, so the result does not depend on anything but the input.
    """
    exact = [p * total for p in parts]
    floors = [int(x) for x in exact]
    left = total - sum(floors)
    order = sorted(range(len(parts)), key=lambda i: (-(exact[i] - floors[i]), i))
    for index in order[:left]:
        floors[index] += 1
    return floors


def round_to_total(values: Sequence[int], divisor: int) -> list[int]:
    """Round integers / divisor so the rounded values add up to the rounded sum (display)."""
    total = sum(values)
    target = (
        (total + divisor // 2) // divisor if total >= 0 else -((-total + divisor // 2) // divisor)
    )
    if total == 0:
        return [0] * len(values)
    return allocate([Fraction(v, total) for v in values], target)


def is_model(name: str | None) -> bool:
    """Tell whether a query parameter names a model."""
    return name in MODELS


def _check(touches: Sequence[Touch]) -> None:
    if not touches:
        raise ValueError("a journey has at least one touch")
