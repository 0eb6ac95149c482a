"""Admission control for LLM deployments: concurrent calls, requests and tokens per minute, and
the request rate that a deployment's 429s leave.

The core (:class:`Gate`, :class:`Admission`) is synchronous and takes the time as an argument, so a
simulation with a fake clock can check every limit; :class:`AsyncAdmission` is the thin layer the
router awaits. Calls wait first come, first served: a call waits in the queue of every deployment
it may use, and the first of them with room takes it.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

_EPS = 1e-9
OBSERVE_WINDOW_S = 60.0  # how far back the request rate of a deployment without an rpm is measured


@dataclass(frozen=True)
class Limits:
    """What one deployment may take at once: calls in flight, requests and tokens per minute.

    None is no limit. Tokens are counted as the router's worst case before the call (the prompt's
    estimate plus ``max_tokens``) and settled with the usage the provider reports after it.
    """

    max_concurrent: int | None = None
    rpm: float | None = None
    tpm: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_concurrent", "rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None for no limit), not {value!r}")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_concurrent, self.rpm, self.tpm))


@dataclass(frozen=True)
class Tuning:
    """How the limits behave: bucket depth, and how 429s shrink a rate and how it recovers."""

    burst_s: float = 1.0  # a bucket holds this many seconds of its rate (at least one request)
    decrease: float = 0.5  # a 429 multiplies the request rate by this
    recovery_s: float = 60.0  # the rate then climbs back linearly, from 0 to its ceiling in this time
    min_rpm: float = 1.0  # a rate is never cut below this


@dataclass
class TokenBucket:
    """``rate`` per second, holding at most ``capacity``. A take larger than the capacity is allowed
    from a full bucket and leaves it in debt, so every amount a minute's rate covers gets through."""

    rate: float
    capacity: float
    level: float
    stamp: float

    @classmethod
    def full(cls, rate: float, capacity: float, now: float) -> TokenBucket:
        return cls(rate, capacity, capacity, now)

    def _fill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def ready_at(self, amount: float, now: float) -> float:
        """When ``amount`` can be taken (``now`` if it can be now)."""
        self._fill(now)
        short = min(amount, self.capacity) - self.level
        return now if short <= _EPS else now + short / self.rate

    def take(self, amount: float, now: float) -> None:
        self._fill(now)
        self.level -= amount

    def give_back(self, amount: float, now: float) -> None:
        """Return ``amount`` (negative: charge more), never above the capacity."""
        self._fill(now)
        self.level = min(self.capacity, self.level + amount)

    def retune(self, rate: float, capacity: float, now: float) -> None:
        """Change the rate from ``now`` on; a smaller bucket loses what no longer fits."""
        self._fill(now)
        self.rate, self.capacity = rate, capacity
        self.level = min(self.level, capacity)


@dataclass
class AdaptiveRate:
    """The request rate a deployment's 429s allow: additive increase, multiplicative decrease.

    A 429 multiplies the current rate by ``tuning.decrease`` (once per quiet period, so a burst of
    429s from calls that were already in flight counts once); the rate then climbs back linearly to
    where it was cut from: the configured rpm, or, without one, the rate observed at the first cut,
    after which the deployment is unlimited again.
    """

    ceiling: float | None
    tuning: Tuning
    reduced: float | None = None  # the cut rate (rpm) at ``since``; None when not reduced
    since: float = 0.0
    target: float = 0.0
    quiet_until: float = 0.0

    def rpm(self, now: float) -> float | None:
        """The rate allowed at ``now`` (None: unlimited)."""
        if self.reduced is None:
            return self.ceiling
        grown = self.reduced + self.target / self.tuning.recovery_s * max(0.0, now - self.since)
        if grown >= self.target:
            self.reduced = None  # recovered
            return self.ceiling
        return grown

    def cut(self, observed_rpm: float, now: float, quiet_s: float) -> bool:
        """Shrink the rate after a 429; False when a cut in the same quiet period already counted it."""
        if now < self.quiet_until:
            return False
        current = self.rpm(now)
        if self.reduced is None:
            self.target = current if current is not None else max(observed_rpm, self.tuning.min_rpm)
        base = current if current is not None else self.target
        self.reduced = max(self.tuning.min_rpm, base * self.tuning.decrease)
        self.since, self.quiet_until = now, now + quiet_s
        return True


@dataclass(eq=False)
class Waiter:
    """A call waiting for room on any of ``gates`` (in the order of preference)."""

    need: int  # tokens to reserve
    gates: tuple[Gate, ...]
    granted: Gate | None = None
    closed: bool = False  # granted, timed out or cancelled: no longer waiting anywhere
    notify: Callable[[Waiter], None] | None = None


class Gate:
    """The limits and the live load of one deployment: who is in flight, who waits, what is left."""

    def __init__(self, name: str, limits: Limits, tuning: Tuning | None = None, now: float = 0.0) -> None:
        self.name = name
        self.limits = limits
        self.tuning = tuning or Tuning()
        self.in_flight = 0
        self.waiting = 0  # calls queued here (a call waits in the queue of every gate it may use)
        self.paused_until = 0.0  # retry-after: no call starts before this
        self.queue: deque[Waiter] = deque()
        self.rate = AdaptiveRate(limits.rpm, self.tuning)
        self._requests: TokenBucket | None = None
        self._tokens: TokenBucket | None = None
        if limits.tpm is not None:
            per_s = limits.tpm / 60
            self._tokens = TokenBucket.full(per_s, per_s * self.tuning.burst_s, now)
        self._starts: deque[float] = deque()  # start times, when there is no rpm to pace by
        self._sync_rate(now)

    def _sync_rate(self, now: float) -> None:
        rpm = self.rate.rpm(now)
        if rpm is None:
            self._requests = None
            return
        per_s = rpm / 60
        capacity = max(1.0, per_s * self.tuning.burst_s)
        if self._requests is None:
            self._requests = TokenBucket.full(per_s, capacity, now)
        elif self._requests.rate != per_s:
            self._requests.retune(per_s, capacity, now)

    def rpm(self, now: float) -> float | None:
        """The request rate allowed now (None: unlimited)."""
        self._sync_rate(now)
        return self._requests.rate * 60 if self._requests is not None else None

    def fits(self, need: int) -> bool:
        """Whether a call of ``need`` tokens can ever start here (a minute's tokens cover it)."""
        return self.limits.tpm is None or need <= self.limits.tpm

    def ready_at(self, need: int, now: float) -> float | None:
        """When a call of ``need`` tokens could start, ignoring the queue: ``now`` if now, None when
        only a call finishing can make room."""
        if self.limits.max_concurrent is not None and self.in_flight >= self.limits.max_concurrent:
            return None
        at = max(now, self.paused_until)
        self._sync_rate(now)
        if self._requests is not None:
            at = max(at, self._requests.ready_at(1, now))
        if self._tokens is not None:
            at = max(at, self._tokens.ready_at(need, now))
        return at

    def admit(self, need: int, now: float) -> None:
        """Start a call (the caller checked :meth:`ready_at`)."""
        self.in_flight += 1
        if self._requests is not None:
            self._requests.take(1, now)
        if self._tokens is not None:
            self._tokens.take(need, now)
        if self.limits.rpm is None:
            self._starts.append(now)
            while self._starts and self._starts[0] < now - OBSERVE_WINDOW_S:
                self._starts.popleft()

    def release(self, reserved: int, used: int | None, now: float) -> None:
        """A call ended; ``used`` is the tokens it really cost (None: keep the reservation)."""
        self.in_flight -= 1
        if self._tokens is not None and used is not None:
            self._tokens.give_back(reserved - used, now)

    def observed_rpm(self, now: float) -> float:
        """Requests started per minute lately (for a deployment with no rpm to cut from)."""
        starts = [t for t in self._starts if t >= now - OBSERVE_WINDOW_S]
        if not starts:
            return self.tuning.min_rpm
        span = max(1.0, now - starts[0])
        return len(starts) / span * 60

    def rate_limited(self, retry_after: float, now: float) -> bool:
        """A 429: pause for ``retry_after`` and cut the request rate; True when the rate was cut."""
        self.paused_until = max(self.paused_until, now + retry_after)
        cut = self.rate.cut(self.observed_rpm(now), now, quiet_s=max(1.0, retry_after))
        self._sync_rate(now)
        return cut

    def pause(self, seconds: float, now: float) -> None:
        self.paused_until = max(self.paused_until, now + seconds)


class Admission:
    """Which waiting call starts on which gate: first come, first served on every gate.

    A newcomer starts at once on the first gate (in its order) that has room and nobody waiting;
    otherwise it waits in the queues of all its gates. When a gate has room, the head of its queue
    starts there; a head that needs more tokens than are left holds the queue (no overtaking).
    """

    def __init__(self, gates: Sequence[Gate]) -> None:
        self.gates = tuple(gates)

    def enter(self, gates: Sequence[Gate], need: int, now: float) -> Gate | Waiter:
        for gate in gates:
            if gate.waiting == 0 and gate.ready_at(need, now) == now:
                gate.admit(need, now)
                return gate
        waiter = Waiter(need, tuple(gates))
        for gate in gates:
            gate.queue.append(waiter)
            gate.waiting += 1
        return waiter

    def leave(self, waiter: Waiter) -> None:
        """Stop waiting (granted, timed out or cancelled); its queue entries are dropped lazily."""
        if waiter.closed:
            return
        waiter.closed = True
        for gate in waiter.gates:
            gate.waiting -= 1
            if len(gate.queue) > 64 and len(gate.queue) > 4 * gate.waiting:
                gate.queue = deque(w for w in gate.queue if not w.closed)  # bounded by the live ones

    def pump(self, now: float) -> list[Waiter]:
        """Start every waiter that can start now; returns them with ``granted`` set."""
        started: list[Waiter] = []
        progress = True
        while progress:  # a start on one gate may uncover a head that can start on another
            progress = False
            for gate in self.gates:
                while gate.queue:
                    head = gate.queue[0]
                    if head.closed:
                        gate.queue.popleft()
                        continue
                    if gate.ready_at(head.need, now) != now:
                        break
                    gate.queue.popleft()
                    gate.admit(head.need, now)
                    head.granted = gate
                    self.leave(head)
                    started.append(head)
                    progress = True
        return started

    def next_wakeup(self, now: float) -> float | None:
        """When time alone (a bucket refilling, a pause ending) lets a waiting head start."""
        soonest: float | None = None
        for gate in self.gates:
            head = next((w for w in gate.queue if not w.closed), None)
            if head is None:
                continue
            at = gate.ready_at(head.need, now)
            if at is not None and (soonest is None or at < soonest):
                soonest = at
        return soonest


class SharedRates(Protocol):
    """Per-minute rates shared by every process that names the same bucket, so several agent workers
    on one provider key keep to its rpm and tpm together (``streams`` injects Redis token buckets).
    A bucket holds ``burst``; a take larger than that is allowed from a full bucket, into debt. An
    unreachable store raises an ``AiosError``: the router then keeps to its per-process limits."""

    async def take(self, bucket: str, amount: float, per_minute: float, burst: float) -> float:
        """Take ``amount``: 0.0 when taken, else the seconds until it could be (nothing taken)."""
        ...

    async def give_back(self, bucket: str, amount: float, per_minute: float, burst: float) -> None:
        """Return ``amount`` that a call reserved and did not use."""
        ...


class QueueTimeout(Exception):  # noqa: N818 - internal signal, turned into an LLMError by the router
    """No gate had room before the deadline."""


@dataclass
class AsyncAdmission:
    """:class:`Admission` for coroutines: a waiting call awaits a future that a release, a timer or
    its deadline resolves."""

    core: Admission
    clock: Callable[[], float]
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _timer_at: float = math.inf
    _timer_loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    async def acquire(self, gates: Sequence[Gate], need: int, deadline: float) -> Gate:
        """A gate with room reserved for this call; :class:`QueueTimeout` after ``deadline``."""
        now = self.clock()
        self._grant(now)
        got = self.core.enter(gates, need, now)
        if isinstance(got, Gate):
            return got
        waiter = got
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Gate] = loop.create_future()

        def notify(w: Waiter) -> None:
            if not future.done() and w.granted is not None:
                future.set_result(w.granted)

        def expire() -> None:
            if not waiter.closed:
                self.core.leave(waiter)
                if not future.done():
                    future.set_exception(QueueTimeout())
                self._grant(self.clock())  # it may have been the head holding a queue

        waiter.notify = notify
        expiry = loop.call_later(max(0.0, deadline - now), expire)
        self._schedule(now)
        try:
            return await future
        except asyncio.CancelledError:
            if waiter.granted is not None:  # started, then cancelled before it could use the slot
                waiter.granted.release(need, 0, self.clock())
            self.core.leave(waiter)
            self._grant(self.clock())
            raise
        finally:
            expiry.cancel()

    def release(self, gate: Gate, reserved: int, used: int | None) -> None:
        """A call on ``gate`` ended: free its slot and start whoever can start."""
        now = self.clock()
        gate.release(reserved, used, now)
        self._grant(now)

    def changed(self) -> None:
        """A gate's limits changed (a pause, a rate cut): reconsider the waiting calls."""
        self._grant(self.clock())

    def _grant(self, now: float) -> None:
        for waiter in self.core.pump(now):
            if waiter.notify is not None:
                waiter.notify(waiter)
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._timer_loop:  # a router reused under a new loop (asyncio.run again)
            self._timer, self._timer_at, self._timer_loop = None, math.inf, loop
        at = self.core.next_wakeup(now)
        if at is None or at >= self._timer_at:
            return  # nothing time-bound waits, or an earlier wake-up is already set
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at

        def wake() -> None:
            self._timer, self._timer_at = None, math.inf
            self._grant(self.clock())

        self._timer = loop.call_later(max(0.0, at - now), wake)
