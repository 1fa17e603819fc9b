"""Readiness of a worker in its role: ``GET /readyz`` on both listeners (no token, like ``/healthz``).

    200 {"status": "ready", "role": "all", "checks": {"kafka": "ok", "clickhouse": "ok", "lag": {...}}}
    503 {"status": "unhealthy", "role": "sink", "reasons": ["clickhouse: ..."], "checks": {...}}

``/healthz`` stays the liveness answer (the process serves HTTP); ``/readyz`` says whether the worker can do its
role's work now. The rules (checks by role; a check a role does not need reads "not used"):

* **kafka** (every role): the worker finished starting; a metadata request through the worker's own producer
  answers within ``PROBE_TIMEOUT`` (a stopped or unreachable broker fails it). Roles that consume (all, process,
  sink) also need a partition assignment received (one rebalance done) and no rebalance or table recovery going
  on for longer than ``NPSFLOW_READY_GRACE`` seconds (default 60: a normal rebalance is not a failure).
* **clickhouse** (roles with a store): ``SELECT 1`` on the store's thread within ``PROBE_TIMEOUT``. It queues
  behind the sinks' inserts on that thread, so a store too busy to answer in time is reported as such. And (roles
  with sinks) no sink's inserts have been failing for ``SINK_FAILING_GRACE`` seconds or longer: ``SELECT 1`` alone
  misses a store that answers reads but refuses writes (a full disk, a read-only replica, a broken insert path,
  too many parts) — the rows then wait in memory, their offsets uncommitted, and nothing reaches ClickHouse. A
  single failed insert that the next retry writes (within the grace) is not reported.
* **lag** (roles that consume): end offset − committed offset, summed over the partitions of the role's input
  topics this worker holds (changelogs excluded: they are read only in recovery); above
  ``NPSFLOW_READY_MAX_LAG`` (default 100 000 records) is unhealthy. The end offsets are asked from the broker.
  Not evaluated while the kafka check fails or a rebalance/recovery is going on.

The broker and ClickHouse probes are cached for ``PROBE_TTL`` seconds (one probe at a time, whatever the
number of callers), so a probe storm cannot load Kafka or ClickHouse. Reasons name a topic, counts, the probe
and the error's class and first line with any ``user:password@`` removed — never a DSN's password, a token,
an address or a record.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web
from faust.sensors import Sensor

from web.common import json_reply

PROBE_TIMEOUT = 3.0
PROBE_TTL = 5.0
SINK_FAILING_GRACE = 2.0  # seconds a sink's inserts may fail before /readyz says so (the first retry is at 0.2 s)
# seconds a sink stays unready after an insert ends a run of failures that /readyz reported: on a full disk
# ClickHouse's merges free some space now and then, one insert lands and the next fails again (the fault suite's
# disk case saw /readyz flap to ready for 2 polls mid-fault) — ready again once inserts land for this long
SINK_RECOVERY_HOLD = 10.0
CONSUMING_ROLES = frozenset({"all", "process", "sink"})
_CREDENTIALS = re.compile(r"://[^/@\s]*@")


def describe_error(exc: BaseException) -> str:
    """An error in one line, short, with no ``user:password@`` of a URL in it."""
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {PROBE_TIMEOUT:g} s"
    first = (str(exc).strip().splitlines() or [""])[0]
    first = _CREDENTIALS.sub("://***@", first)[:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class CachedProbe:
    """Runs ``probe`` (async, returns None when fine or a reason) at most once per ``ttl`` seconds, with a
    timeout; concurrent callers share the probe in flight."""

    def __init__(self, probe: Callable[[], Awaitable[str | None]], ttl: float = PROBE_TTL,
                 timeout: float = PROBE_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        self.probe, self.ttl, self.timeout, self.clock = probe, ttl, timeout, clock
        self._result: str | None = None
        self._at: float | None = None
        self._task: asyncio.Task | None = None

    async def _run(self) -> str | None:
        try:
            result = await asyncio.wait_for(self.probe(), self.timeout)
        except Exception as exc:
            result = describe_error(exc)
        self._result, self._at = result, self.clock()
        return result

    async def result(self) -> str | None:
        if self._at is not None and self.clock() - self._at < self.ttl:
            return self._result
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._task)


async def kafka_metadata(client) -> None:
    """A metadata request over ``client`` (aiokafka ``AIOKafkaClient``); raises when no broker answers."""
    await client.fetch_all_metadata()


async def clickhouse_select_one(store) -> None:
    """``SELECT 1`` on the store's thread; raises when the store is closed or the server does not answer."""
    await store.aquery("SELECT 1 AS one")


class RebalanceClock(Sensor):
    """A Faust sensor remembering since when the worker has been rebalancing (``busy_since``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.busy_since: float | None = clock()  # starting counts as busy until the first assignment

    def on_rebalance_start(self, app) -> dict:
        if self.busy_since is None:
            self.busy_since = self.clock()
        return {}

    def busy_for(self, busy: bool) -> float:
        """Seconds the worker has been busy (rebalancing, recovering), 0.0 when ``busy`` is False."""
        if not busy:
            self.busy_since = None
            return 0.0
        if self.busy_since is None:
            self.busy_since = self.clock()
        return self.clock() - self.busy_since


def input_topics(app) -> set[str]:
    """The topics the app's agents consume (the role's input topics)."""
    names: set[str] = set()
    for agent in app.agents.values():
        names.update(getattr(agent.channel, "topics", ()) or ())
    return names


@dataclass
class Readiness:
    """The checks of one worker. ``producer_client`` returns the aiokafka client of the worker's producer."""

    app: Any
    role: str
    store: Any = None
    max_lag: int = 100_000
    grace_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    started: bool = False  # set once the worker finished starting (npsflow.worker.NpsWorker)
    producer_client: Callable[[], Any] | None = None
    sinks: Callable[[], dict] | None = None  # table → sinks.batching.BatchingSink of this worker (none: not a sink)
    sink_grace_seconds: float = SINK_FAILING_GRACE
    sink_recovery_hold: float = SINK_RECOVERY_HOLD
    rebalances: RebalanceClock = field(init=False)

    def __post_init__(self) -> None:
        self.rebalances = RebalanceClock(clock=self.clock)
        client = self.producer_client or (lambda: self.app.producer._ensure_producer().client)
        self.kafka_probe = CachedProbe(lambda: kafka_metadata(client()), clock=self.clock)
        self.clickhouse_probe = CachedProbe(lambda: clickhouse_select_one(self.store), clock=self.clock)
        self.lag_probe = CachedProbe(self.measure_lag, clock=self.clock)
        self.last_lag: dict = {}

    @property
    def consuming(self) -> bool:
        return self.role in CONSUMING_ROLES

    def install(self) -> None:
        """Register the rebalance sensor (before the app starts)."""
        if self.consuming:
            self.app.sensors.add(self.rebalances)

    async def kafka(self) -> str | None:
        if not self.started:
            return "kafka: the worker is still starting (connecting, joining the group, recovering tables)"
        problem = await self.kafka_probe.result()
        if problem:
            return f"kafka: broker metadata request failed: {problem}"
        if not self.consuming:
            return None
        busy = bool(getattr(self.app, "rebalancing", False) or getattr(self.app, "in_recovery", False))
        seconds = self.rebalances.busy_for(busy)
        if busy and seconds > self.grace_seconds:
            return f"kafka: rebalancing or recovering tables for {seconds:.0f} s (more than {self.grace_seconds:g} s)"
        if not getattr(self.app, "rebalancing_count", 0):
            return "kafka: no partition assignment received yet"
        return None

    async def clickhouse(self) -> str | None:
        if self.store is None:
            return None
        problem = await self.clickhouse_probe.result()
        if problem:
            return f"clickhouse: SELECT 1 failed: {problem}"
        return self.sink_inserts()

    def sink_inserts(self) -> str | None:
        """A reason when a sink's inserts have been failing for ``sink_grace_seconds`` or longer (the worst one)."""
        failing = []
        for table, batching in (self.sinks() if self.sinks else {}).items():
            state = batching.failing()
            if state is not None and state[0] >= self.sink_grace_seconds:
                failing.append((state[0], table, state[1], state[2]))
        if not failing:
            return self.sink_recovering()
        seconds, table, attempts, error = max(failing, key=lambda f: f[0])
        more = f" (and {len(failing) - 1} more tables)" if len(failing) > 1 else ""
        return (f"clickhouse: inserts into {table}{more} failing for {seconds:.0f} s ({attempts} attempts; rows kept, "
                f"offsets not committed): {describe_error(error)}")

    def sink_recovering(self) -> str | None:
        """A reason while a sink's inserts landed again less than ``sink_recovery_hold`` seconds after a run of
        failures long enough to have been reported (``sink_grace_seconds``)."""
        for table, batching in (self.sinks() if self.sinks else {}).items():
            state = batching.since_recovery()
            if state is not None and state[1] >= self.sink_grace_seconds and state[0] < self.sink_recovery_hold:
                return (f"clickhouse: inserts into {table} landed again {state[0]:.0f} s ago after failing for "
                        f"{state[1]:.0f} s; ready once they keep landing for {self.sink_recovery_hold:g} s")
        return None

    async def measure_lag(self) -> str | None:
        """Records behind per input topic of this worker (``last_lag``); a reason when over ``max_lag``."""
        consumer = self.app.consumer
        names = input_topics(self.app)
        tps = [tp for tp in consumer.assignment() if tp.topic in names]
        if not tps:
            self.last_lag = {"records": 0, "partitions": 0}
            return None
        ends = await consumer.highwaters(*tps)
        starts = None
        behind: dict[str, int] = {}
        for tp in tps:
            committed = consumer._committed_offset.get(tp)
            if committed is None:  # nothing committed yet: the group starts at the earliest offset
                starts = starts if starts is not None else await consumer.earliest_offsets(*tps)
                committed = starts.get(tp, 0)
            end = ends.get(tp)
            if end is not None:
                behind[tp.topic] = behind.get(tp.topic, 0) + max(0, end - committed)
        total = sum(behind.values())
        self.last_lag = {"records": total, "partitions": len(tps)}
        if total > self.max_lag:
            worst = max(behind, key=behind.get)
            return (f"lag: {total} records behind on {len(tps)} partitions (most on {worst}: {behind[worst]}), "
                    f"more than NPSFLOW_READY_MAX_LAG={self.max_lag}")
        return None

    async def lag(self) -> str | None:
        if not self.consuming:
            return None
        problem = await self.lag_probe.result()
        return problem if problem is None or problem.startswith("lag:") else f"lag: cannot measure: {problem}"

    async def report(self) -> tuple[int, dict]:
        """(HTTP status, body) of /readyz."""
        checks: dict[str, Any] = {}
        reasons: list[str] = []
        kafka = await self.kafka()
        checks["kafka"] = "ok" if kafka is None else "failed"
        clickhouse = await self.clickhouse()
        checks["clickhouse"] = "not used" if self.store is None else ("ok" if clickhouse is None else "failed")
        lag = None
        if not self.consuming:
            checks["lag"] = "not used"
        elif kafka is not None:
            checks["lag"] = "not measured"
        else:
            lag = await self.lag()
            checks["lag"] = {**self.last_lag, "max": self.max_lag, "ok": lag is None}
        reasons = [r for r in (kafka, clickhouse, lag) if r]
        if reasons:
            return 503, {"status": "unhealthy", "role": self.role, "reasons": reasons, "checks": checks}
        return 200, {"status": "ready", "role": self.role, "checks": checks}

    async def handle(self, request: web.Request) -> web.Response:
        status, body = await self.report()
        return json_reply(body, status=status, headers={"Cache-Control": "no-store"})
