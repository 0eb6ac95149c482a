"""The limiter's core with a fake clock: a discrete-event simulation of hundreds of calls on up to
three deployments, with 429s, checked against every limit, for liveness and for first-come order."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios.agents.llm.limits import AdaptiveRate, Admission, Gate, Limits, TokenBucket, Tuning, Waiter

TUNING = Tuning(burst_s=1.0, decrease=0.5, recovery_s=20.0, min_rpm=1.0)


@dataclass
class Call:
    seq: int
    arrival: float
    need: int
    duration: float
    gates: tuple[int, ...]
    rate_limits: int  # how many 429s it meets before it is answered


@dataclass
class Start:
    time: float
    gate: int
    need: int
    seq: int
    arrival: float


limits_st = st.builds(
    Limits,
    max_concurrent=st.one_of(st.none(), st.integers(1, 25)),
    rpm=st.one_of(st.none(), st.floats(30, 6000)),
    tpm=st.one_of(st.none(), st.floats(3000, 300_000)),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Limits], list[Call], bool]:
    gates = draw(st.lists(limits_st, min_size=1, max_size=3))
    shared = draw(st.booleans())  # every call may use every gate (then the order is global)
    n = draw(st.integers(1, 500))
    burst = draw(st.floats(0, 5))  # arrivals spread over this many seconds: 0 is all at once
    calls = []
    for seq in range(n):
        need = draw(st.integers(10, 3000))
        fitting = [i for i, g in enumerate(gates) if g.tpm is None or need <= g.tpm]
        if not fitting:
            continue  # the router refuses such a call before it queues (NoDeploymentError)
        chosen = fitting if shared else draw(st.permutations(fitting).map(
            lambda p: tuple(p[: max(1, len(p) // 2)])))  # noqa: B023 - used at once
        calls.append(Call(seq, draw(st.floats(0, burst)), need, draw(st.floats(0.001, 3.0)), tuple(chosen),
                          draw(st.integers(0, 2)) if draw(st.integers(0, 9)) == 0 else 0))
    calls.sort(key=lambda c: (c.arrival, c.seq))
    return gates, calls, shared


def simulate(limits: list[Limits], calls: list[Call]) -> tuple[list[Gate], list[Start], list[tuple[float, int, int]]]:
    """Run the calls through the core; returns the gates, every start, and every refund (time, gate, tokens)."""
    gates = [Gate(f"g{i}", lim, TUNING, 0.0) for i, lim in enumerate(limits)]
    core = Admission(gates)
    index = {id(g): i for i, g in enumerate(gates)}
    arrivals = [(c.arrival, c.seq, c) for c in calls]
    heapq.heapify(arrivals)
    running: list[tuple[float, int, Call, int]] = []
    waiting: dict[int, tuple[Waiter, Call, float]] = {}
    starts: list[Start] = []
    refunds: list[tuple[float, int, int]] = []
    order = itertools.count()
    now = 0.0

    def start(call: Call, gate: Gate, arrived: float) -> None:
        i = index[id(gate)]
        cap = limits[i].max_concurrent
        assert cap is None or gate.in_flight <= cap, f"{gate.name}: {gate.in_flight} in flight, limit {cap}"
        starts.append(Start(now, i, call.need, call.seq, arrived))
        heapq.heappush(running, (now + call.duration, next(order), call, i))

    for _ in range(200_000):
        soon = [t for t in (arrivals[0][0] if arrivals else None, running[0][0] if running else None,
                            core.next_wakeup(now)) if t is not None]
        if not soon:
            assert not waiting, f"{len(waiting)} calls wait with nothing running and no refill due: a deadlock"
            return gates, starts, refunds
        now = max(now, min(soon))
        while running and running[0][0] <= now:
            _, _, call, i = heapq.heappop(running)
            gate = gates[i]
            if call.rate_limits:
                gate.release(call.need, 0, now)  # a 429 gives its tokens back and comes round again
                refunds.append((now, i, call.need))
                gate.rate_limited(0.5, now)
                call.rate_limits -= 1
                heapq.heappush(arrivals, (now, call.seq, call))
            else:
                gate.release(call.need, call.need, now)
        for w in core.pump(now):
            _, call, arrived = waiting.pop(id(w))
            assert w.granted is not None
            start(call, w.granted, arrived)
        while arrivals and arrivals[0][0] <= now:
            _, _, call = heapq.heappop(arrivals)
            got = core.enter([gates[i] for i in call.gates], call.need, now)
            if isinstance(got, Gate):
                start(call, got, now)
            else:
                waiting[id(got)] = (got, call, now)
    raise AssertionError("the simulation did not finish")


def assert_envelope(times: list[tuple[float, float]], rate_per_s: float, capacity: float, what: str) -> None:
    """Over any interval [a, b], what started (net of what was given back) is at most
    ``capacity + rate * (b - a)``."""
    times.sort()
    for i in range(len(times)):
        total = 0.0
        for j in range(i, len(times)):
            total += times[j][1]
            span = times[j][0] - times[i][0]
            assert total <= capacity + rate_per_s * span + 1e-6, (
                f"{what}: {total:g} in {span:.4f}s, more than {capacity:g} + {rate_per_s:g}/s")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_no_limit_is_ever_exceeded_and_every_call_starts(scenario: tuple[list[Limits], list[Call], bool]) -> None:
    limits, calls, shared = scenario
    answered = sum(1 + c.rate_limits for c in calls)
    gates, starts, refunds = simulate(limits, calls)
    assert len(starts) == answered, "every call (and each of its retries after a 429) started"
    assert all(g.in_flight == 0 and g.waiting == 0 for g in gates)
    for i, lim in enumerate(limits):
        mine = [s for s in starts if s.gate == i]
        if lim.rpm is not None:
            per_s = lim.rpm / 60
            assert_envelope([(s.time, 1.0) for s in mine], per_s, max(1.0, per_s * TUNING.burst_s), f"g{i} rpm")
        if lim.tpm is not None and mine:
            per_s = lim.tpm / 60
            biggest = max(s.need for s in mine)
            events = [(s.time, float(s.need)) for s in mine] + [(t, -float(n)) for t, g, n in refunds if g == i]
            assert_envelope(events, per_s, max(per_s * TUNING.burst_s, biggest), f"g{i} tpm")
    if shared:
        # Nobody overtakes: calls start in the order they arrived (a 429 sends one to the back).
        arrived = [(s.arrival, s.seq) for s in starts]
        assert arrived == sorted(arrived)


def test_a_bucket_lets_its_rate_through_and_a_large_take_goes_into_debt() -> None:
    bucket = TokenBucket.full(rate=10.0, capacity=5.0, now=0.0)
    assert bucket.ready_at(5, 0.0) == 0.0
    bucket.take(5, 0.0)
    assert bucket.ready_at(1, 0.0) == pytest.approx(0.1)
    assert bucket.ready_at(50, 0.0) == pytest.approx(0.5)  # more than it holds: wait until it is full
    bucket.take(50, 0.5)
    assert bucket.level == pytest.approx(-45.0)
    assert bucket.ready_at(1, 0.5) == pytest.approx(0.5 + 4.6)
    bucket.give_back(100, 1.0)
    assert bucket.level == 5.0  # never above the capacity


def test_a_429_halves_the_rate_once_per_quiet_period_and_it_recovers_linearly() -> None:
    rate = AdaptiveRate(ceiling=600.0, tuning=Tuning(decrease=0.5, recovery_s=60.0))
    assert rate.rpm(0.0) == 600.0
    assert rate.cut(observed_rpm=0.0, now=10.0, quiet_s=2.0)
    assert rate.rpm(10.0) == 300.0
    assert not rate.cut(observed_rpm=0.0, now=11.0, quiet_s=2.0), "429s of calls already in flight count once"
    assert rate.rpm(11.0) == pytest.approx(310.0)  # 600 rpm regained per 60 s
    assert rate.cut(observed_rpm=0.0, now=12.0, quiet_s=2.0)
    assert rate.rpm(12.0) == pytest.approx(160.0)
    assert rate.rpm(12.0 + 22.0) == pytest.approx(380.0)
    assert rate.rpm(12.0 + 44.0) == 600.0 and rate.reduced is None  # back at the ceiling


def test_without_an_rpm_a_429_paces_a_deployment_from_its_observed_rate_until_it_recovers() -> None:
    gate = Gate("g", Limits(), Tuning(decrease=0.5, recovery_s=10.0), now=0.0)
    for i in range(100):  # 100 requests in 10 s: 600 rpm
        gate.admit(10, i / 10)
        gate.release(10, 10, i / 10)
    assert gate.rpm(10.0) is None
    assert gate.rate_limited(retry_after=2.0, now=10.0)
    assert gate.paused_until == 12.0 and gate.ready_at(10, 10.0) == 12.0
    assert gate.rpm(10.0) == pytest.approx(300.0, rel=0.02)
    assert gate.rpm(15.0) == pytest.approx(600.0, rel=0.02) or gate.rpm(15.0) is None
    assert gate.rpm(21.0) is None, "recovered: unlimited again"


def test_a_waiter_that_leaves_frees_the_queue_behind_it() -> None:
    gate = Gate("g", Limits(max_concurrent=1), TUNING, 0.0)
    core = Admission([gate])
    assert core.enter([gate], 10, 0.0) is gate
    first, second = core.enter([gate], 10, 0.0), core.enter([gate], 10, 0.0)
    assert isinstance(first, Waiter) and isinstance(second, Waiter) and gate.waiting == 2
    core.leave(first)  # timed out
    gate.release(10, 10, 1.0)
    assert core.pump(1.0) == [second] and second.granted is gate and gate.waiting == 0


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="rpm must be > 0"):
        Limits(rpm=0)
    assert not Limits().any and Limits(tpm=5).any
