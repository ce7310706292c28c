"""Attribution models: hand-computed splits, exact totals, largest-remainder rounding."""

from __future__ import annotations

import datetime as dt
import random
from fractions import Fraction

import pytest

from dashboard.reports.models import (
    MODELS,
    UNITS_PER_CALL,
    Touch,
    allocate,
    first_touch,
    last_non_direct,
    linear,
    position_based,
    round_to_total,
    shares,
    time_decay,
)

CALL = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)


def touches(*spec: tuple[float, str]) -> list[Touch]:
    """Touches from (days before the call, channel), oldest first."""
    return [Touch(CALL - dt.timedelta(days=days), channel) for days, channel in spec]


JOURNEY = touches((14, "Organic Search"), (7, "Paid Social"), (3, "Direct"), (0, "Direct"))


def test_first_touch_gives_everything_to_the_first_session() -> None:
    assert first_touch(JOURNEY) == [1, 0, 0, 0]


def test_last_non_direct_skips_direct_sessions() -> None:
    assert last_non_direct(JOURNEY) == [0, 1, 0, 0]
    assert last_non_direct(touches((2, "Direct"), (1, "Email"))) == [0, 1]


def test_last_non_direct_falls_back_to_the_last_session_when_all_are_direct() -> None:
    assert last_non_direct(touches((2, "Direct"), (1, "Direct"))) == [0, 1]


def test_linear_splits_evenly() -> None:
    assert linear(JOURNEY) == [Fraction(1, 4)] * 4
    assert linear(touches((1, "Email"), (0, "Direct"), (0, "Referral"))) == [Fraction(1, 3)] * 3


def test_position_based_is_40_20_40() -> None:
    assert position_based(JOURNEY) == [
        Fraction(2, 5),
        Fraction(1, 10),
        Fraction(1, 10),
        Fraction(2, 5),
    ]
    three = touches((2, "Email"), (1, "Direct"), (0, "Referral"))
    assert position_based(three) == [Fraction(2, 5), Fraction(1, 5), Fraction(2, 5)]
    assert position_based(touches((1, "Email"), (0, "Direct"))) == [Fraction(1, 2)] * 2
    assert position_based(touches((0, "Email"))) == [1]


def test_time_decay_halves_every_seven_days() -> None:
    # Weights 2^-2, 2^-1, 2^0 = 1/4, 1/2, 1 → normalised 1/7, 2/7, 4/7.
    journey = touches((14, "Email"), (7, "Direct"), (0, "Referral"))
    assert time_decay(journey, CALL) == [Fraction(1, 7), Fraction(2, 7), Fraction(4, 7)]
    # 3.5 days is half a half-life: weights 2^-0.5 and 1, shares 1/(1+√2) and √2/(1+√2).
    split = time_decay(touches((3.5, "Email"), (0, "Direct")), CALL)
    assert float(split[0]) == pytest.approx(1 / (1 + 2**0.5))
    assert sum(split) == 1


def test_a_single_touch_gets_the_whole_call_under_every_model() -> None:
    for model in MODELS:
        assert shares(model, touches((0, "Direct")), CALL) == [1]


def test_every_model_distributes_exactly_one_call() -> None:
    generator = random.Random(7)
    channels = ["Direct", "Organic Search", "Paid Search", "Email", "Referral"]
    for _ in range(300):
        journey = sorted(
            (
                Touch(
                    CALL - dt.timedelta(hours=generator.uniform(0, 720)), generator.choice(channels)
                )
                for _ in range(generator.randint(1, 12))
            ),
            key=lambda t: t.started_at,
        )
        for model in MODELS:
            split = shares(model, journey, CALL)
            assert sum(split) == 1
            assert sum(allocate(split, UNITS_PER_CALL)) == UNITS_PER_CALL


def test_allocate_uses_largest_remainders_and_breaks_ties_by_order() -> None:
    assert allocate([Fraction(1, 3)] * 3, 1000) == [334, 333, 333]
    assert allocate(
        [Fraction(2, 5), Fraction(1, 15), Fraction(1, 15), Fraction(1, 15), Fraction(2, 5)], 1000
    ) == [
        400,
        67,
        67,
        66,
        400,
    ]
    assert allocate([Fraction(1, 7), Fraction(2, 7), Fraction(4, 7)], 1000) == [143, 286, 571]


def test_round_to_total_keeps_the_column_sum() -> None:
    # 3 calls split in thirds between three rows: 1.0 + 1.0 + 1.0, never 0.9 × 3 or 1.1 × 3.
    assert round_to_total([1000, 1000, 1000], 100) == [10, 10, 10]
    values = [334 + 333 + 333, 667, 333 + 1000]
    shown = round_to_total(values, 100)
    assert sum(shown) == sum(values) // 100
    assert round_to_total([0, 0], 100) == [0, 0]


def test_unknown_model_and_empty_journey_are_refused() -> None:
    with pytest.raises(ValueError):
        shares("nonsense", touches((0, "Direct")), CALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        linear([])
