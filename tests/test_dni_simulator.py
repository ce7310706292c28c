"""The DNI simulator: accuracy of the real pool against the oracle, on a small run."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from dashboard.bench import dni
from tracker.numbers.simulator import (
    SimSession,
    TrafficModel,
    evaluate,
    foresight_free_bound,
    generate_sessions,
    peak_concurrency,
    rule_of_thumb,
    simulate_oracle,
    simulate_policy,
)

# Three days of a small shop; every visit calls, so that a few thousand calls measure the
# pool precisely (calls do not change what the pool does).
SMALL = TrafficModel(days=3, daily_sessions=600, call_share=1.0, seed=7)


def test_traffic_is_deterministic_and_shaped() -> None:
    first, second = generate_sessions(SMALL), generate_sessions(SMALL)
    assert [(s.start, s.end, s.call) for s in first] == [(s.start, s.end, s.call) for s in second]
    assert 1500 < len(first) < 2100
    by_hour = [0] * 24
    for session in first:
        by_hour[session.start // 3600 % 24] += 1
    assert max(by_hour[19:22]) > 5 * min(by_hour[2:5])  # evenings busy, nights quiet
    late = [s for s in first if s.call is not None and s.call > s.end + 3600]
    assert 0.01 < len(late) / len(first) < 0.05


def test_peak_concurrency_and_rule_of_thumb() -> None:
    sessions = [SimSession("a", 0, 60), SimSession("b", 30, 90), SimSession("c", 200, 260)]
    assert peak_concurrency(sessions, 0) == 2
    assert peak_concurrency(sessions, 150) == 3
    assert rule_of_thumb(1500) == 75
    assert rule_of_thumb(3) == 1


async def test_a_pool_of_peak_size_attributes_calls_within_the_hold() -> None:
    sessions = generate_sessions(SMALL)
    peak = peak_concurrency(sessions, 30 * 60)
    result = await simulate_policy(sessions, peak)
    assert result.overflows == 0
    assert result.in_hold.share("correct") == 1.0
    # Without late callers, that is at least 99% of all calls.
    punctual = generate_sessions(dataclasses.replace(SMALL, late_share=0.0))
    result = await simulate_policy(punctual, peak_concurrency(punctual, 30 * 60))
    assert result.lease_at.share("correct") >= 0.99


async def test_within_two_points_of_the_oracle_without_late_callers() -> None:
    sessions = generate_sessions(dataclasses.replace(SMALL, late_share=0.0))
    peak = peak_concurrency(sessions, 30 * 60)
    sizes = [(max(1, round(peak * f)), f"{f}x") for f in (0.5, 0.75, 1.0, 1.5)]
    for report in await evaluate(sessions, sizes):
        assert report.gap_points() <= 2.0, report.as_json()


async def test_the_oracle_bounds_the_pool_and_late_calls_cap_both() -> None:
    model = dataclasses.replace(SMALL, late_share=0.1)
    sessions = generate_sessions(model)
    peak = peak_concurrency(sessions, 30 * 60)
    for size in (max(1, peak // 4), peak, 2 * peak):
        policy = await simulate_policy(sessions, size)
        oracle = simulate_oracle(sessions, size)
        assert oracle.all.share("correct") >= policy.lease_at.share("correct")
        assert oracle.all.share("correct") >= policy.last_holder.share("correct")
        assert policy.last_holder.share("correct") >= policy.lease_at.share("correct")
        # A 30-minute hold cannot attribute a call made hours later.
        assert policy.lease_at.share("correct") <= 1 - 0.1 + 0.02


def test_the_foresight_free_bound_by_hand() -> None:
    # Three visits at instant 0, hold 0: "a" calls 1,000 s after its visit, "c" stays 900 s.
    # Three numbers for 1,000 s, 900 s of them busy: 700 s of gap per visit on average, and
    # "a" needs 1,000 s. Spreading gaps evenly attributes nothing; giving a third of visits
    # the whole 1,000 s and the rest nothing attributes "a" with probability 0.7 at best.
    sessions = [
        SimSession("a", 0, 0, call=1000),
        SimSession("b", 0, 0),
        SimSession("c", 0, 900),
    ]
    assert foresight_free_bound(sessions, 3, hold_minutes=0) == pytest.approx(0.7)
    # A pool smaller than the peak must overflow: no bound. Ample numbers: everything.
    assert foresight_free_bound(sessions, 2, hold_minutes=0) is None
    assert foresight_free_bound(sessions, 10, hold_minutes=0) == 1.0
    # Calls within the hold always count.
    within = [SimSession("a", 0, 0, call=60), SimSession("b", 0, 0, call=None)]
    assert foresight_free_bound(within, 2, hold_minutes=30) == 1.0


async def test_the_pool_stays_under_the_foresight_free_bound_and_close_to_it() -> None:
    # Late callers at the bench's share: the pool cannot know who they are, so the bound holds
    # it (up to chance: the bound is on expectations), and least-recently-released order loses
    # little of what a policy without foresight could have.
    sessions = generate_sessions(SMALL)
    peak = peak_concurrency(sessions, 30 * 60)
    assert foresight_free_bound(sessions, peak - 1) is None
    for size in (peak, 2 * peak):
        bound = foresight_free_bound(sessions, size)
        assert bound is not None
        policy = await simulate_policy(sessions, size)
        oracle = simulate_oracle(sessions, size)
        correct = policy.last_holder.share("correct")
        assert correct <= bound + 0.003 and bound < oracle.all.share("correct")
        assert bound - correct < 0.015


async def test_business_exhaustion_leaves_calls_unattributed() -> None:
    sessions = generate_sessions(SMALL)
    peak = peak_concurrency(sessions, 30 * 60)
    result = await simulate_policy(sessions, max(1, peak // 3), exhaustion="business")
    assert result.exhausted > 0 and result.overflows == 0
    assert result.lease_at.share("unattributed") > 0.05


async def test_bench_json_is_one_object(
    capsys: pytest.CaptureFixture[str], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLTRACK_REDIS_URL", redis_url)
    parser = argparse.ArgumentParser()
    dni.register(parser.add_subparsers(dest="name"))
    args = parser.parse_args(
        ["dni", "--json", "--days", "1", "--daily-sessions", "300", "--redis-ops", "200"]
    )
    assert await args.handler(args, None) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert out.strip().count("\n") == 0
    assert data["bench"] == "dni" and data["peak_concurrent_sessions"] > 0
    assert {"lease_at", "last_holder", "oracle", "in_hold", "best_without_foresight"} <= set(
        data["pool_sizes"][0]
    )
    peak = data["targets"]["correct_at_peak"]
    assert peak["last_holder"] <= peak["best_without_foresight"] + 0.01
    assert data["rule_of_thumb"]["size"] == 15
    assert data["redis"]["lease_ops_per_s"] > 0 and "ratio" in data["redis"]
