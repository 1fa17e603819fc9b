"""The Faust application: topics, tables, and the agents wired together.

    npsflow.responses.raw ──classify──► npsflow.responses.classified ──sink──► ClickHouse responses
          (Avro, key=response_id)  │
                                   ├──► npsflow.windows.deltas (JSON, key=segment) ──windows──► npsflow.windows
                                   └──► npsflow.deadletters ──sink──► ClickHouse dead_letters      │
                                                                                 ClickHouse window_updates ◄┘

Agents are thin: the rules live in pure steps (streams.classify, streams.windows, streams.dispatch_steps,
streams.deliver); the agent classes (streams.classify_agent, streams.windows_agent, streams.dispatch_agent,
streams.sink_agents) decode a batch, run the step once, stage outputs and changed state keys in a BatchOutput
(streams.kafka_io: one record batch per topic partition) and ack only after Kafka (or ClickHouse) has it.
Records reach them as whole fetched lists (streams.batch_consumer), not through Faust's per-message path.

At-least-once, made exact by idempotency:
* an agent acks its input only after Kafka acknowledged every output and state change of the batch (acks=all)
  or, for sinks, after the ClickHouse insert returned; a failed send re-sends the very same records;
* classify keeps the latest version per response_id in a table: replays count once, edits replace, and a
  Kafka redelivery of the very same offset re-emits its outputs;
* windows keeps, per segment, the highest applied source offset per raw partition, and every delta item
  names its source: replays and re-emissions count once; an edit's item carries what to retract;
* the sinks insert the due batches of all partitions at once with an insert_deduplication_token naming every
  range, and their tables are ReplacingMergeTrees keyed by natural ids, read with FINAL/argMax.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import faust
from faust.types import TP

from npsflow.config import Settings
from schemas import codec as avro
from streams.batch_consumer import BatchRouter, ack_offsets
from streams.kafka_io import BatchOutput, KafkaSender, Sender, state_table
from streams.windows import WindowEngine

log = logging.getLogger("npsflow.streams")

MAX_PAYLOAD_CHARS = 64 * 1024


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def add_timer(pipeline, name: str, interval: float, job: Callable[[], Any]) -> None:
    """Run ``job()`` every ``interval`` seconds. An exception escaping a Faust timer crashes the whole worker:
    here it is logged and counted (``<name>.error``) and the job runs again at the next tick — every timer job
    of ours is idempotent."""

    async def tick() -> None:  # no parameters: Faust passes the app to a timer function that takes one
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            pipeline.stats.inc(f"{name}.error")
            log.exception("%s failed; retrying at the next tick", name)

    tick.__name__ = tick.__qualname__ = name  # Faust names the timer's task after the function
    pipeline.app.timer(interval=interval)(tick)


STATEFUL_ROLES = ("all", "process")  # the roles that run the stream agents and hold their tables


class Transient(Exception):
    """A failure worth retrying the whole batch for (broker or registry unavailable), never dead-lettered."""


@dataclass
class Stats:
    """Counters shown by /api/v1/stats and the demo. In memory, per worker process."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # gauges read when the counters are shown (e.g. ``state.<table>.keys``); each must be cheap (O(1))
    gauges: dict[str, Callable[[], int]] = field(default_factory=dict)

    def inc(self, name: str, by: int = 1) -> None:
        self.counts[name] += by

    def set(self, name: str, value: int) -> None:
        """A gauge rather than a counter (e.g. ``alerts.hour``: the last hour end the alerts were evaluated at)."""
        self.counts[name] = value

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        """A gauge computed on reading, by ``read()`` (called on the event loop: keep it O(1))."""
        self.gauges[name] = read

    def as_dict(self) -> dict[str, int]:
        out = dict(self.counts)
        for name, read in self.gauges.items():
            try:
                out[name] = int(read())
            except Exception:  # a gauge never breaks the stats endpoint
                continue
        return dict(sorted(out.items()))


async def run_batch(name: str, stats: Stats, process: Callable[[], Any], max_delay: float = 10.0) -> Any:
    """Run ``process`` (one whole batch) until it succeeds and return its result; retry transient failures
    with backoff.

    Re-running a batch is safe: every agent's processing is idempotent per input offset."""
    delay = 0.2
    while True:
        try:
            return await process()
        except (Transient, faust.exceptions.ProducerSendError, asyncio.TimeoutError, OSError) as exc:
            stats.inc(f"{name}.retry")
            log.warning("%s: batch failed (%s); retrying in %.1fs", name, exc, delay)
        except Exception as exc:  # a delivery failure surfaces as the producer's exception
            if "kafka" not in type(exc).__module__.lower():
                raise
            stats.inc(f"{name}.retry")
            log.warning("%s: Kafka delivery failed (%r); retrying in %.1fs", name, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


def position(item) -> tuple:
    """(TP, offset) of a Faust event or a streams.batch_consumer.Record."""
    msg = getattr(item, "message", item)
    tp = getattr(msg, "tp", None)
    return (tp if tp is not None else TP(msg.topic, msg.partition)), msg.offset


RESEEK_AFTER = 5.0  # seconds a guard waits for the re-read of a seek before it seeks again
GUARD_TICK = 5.0  # an agent with no input calls its guard this often (a seek may be overdue)


class GapGuard:
    """Detects records Faust skipped and makes Kafka deliver them again.

    Seen on restarts (SIGKILL e2e test): when a rebalance hits while a fetch is buffered, Faust can drop the
    buffered records and go on from the fetch position, so a stream sees offsets 0…88 then 106…; the records
    in between are never processed and, unacked, block the partition's commit until the next restart. Our
    source topics are plain (not compacted, not transactional), so offsets of one partition are contiguous:
    on a jump the guard seeks the partition back to the first missing offset and holds back the records of
    that partition until the re-read arrives. A step backwards within a generation (a repeated seek's second
    re-read, a redelivery) brings records this guard has let through already — handled and acked by the time
    they come again — and they are dropped (``offset_reread``): every agent would handle them idempotently, but
    not for free.

    The first record of a partition after a start or a rebalance must be at the group's committed offset, or —
    nothing committed yet — at the partition's earliest offset (``auto_offset_reset=earliest``). Found by the
    cluster test (session 9): a survivor took over a partition the SIGKILLed worker had never committed and
    began at its end, 358 records in. Faust's ``perform_seek`` seeks back only partitions that have a committed
    offset, so a fetch dropped across a rebalance (the likely path; not pinned) skips such a partition's head for
    good — its first 205 answers were counted without their dedup memos (the victim died between outputs and
    state), and their replay later counted them again; the other 153 were never processed.

    A seek is repeated when its re-read has not arrived RESEEK_AFTER seconds later (``filter`` checks on every
    call, an idle agent calls it with no records every GUARD_TICK seconds): a re-read that something drops on
    the way leaves the partition waiting — its records held, its commit stopped — for good otherwise. CI found
    one (2026-12-06: one raw partition of the cluster test never processed): a list fetched before the seek went
    through the router's read-offset filter after it, moved the read offset past the re-read and the filter then
    dropped the whole re-read (the filter is gone, ``BatchRouter._records``); the repeat covers paths not
    known."""

    def __init__(self, app, stats: Stats, name: str, clock: Callable[[], float] = time.monotonic,
                 contiguous: bool = True) -> None:
        self.app, self.stats, self.name, self.clock = app, stats, name, clock
        # False for a compacted topic: its offsets have gaps by design, a jump is not a loss (nothing is sought)
        self.contiguous = contiguous
        self.last: dict = {}
        self.sought: dict = {}  # tp → the offset we sought back to and have not seen since
        self.sought_at: dict = {}  # tp → when we (last) sought it there (clock)
        self.start: dict = {}  # tp → where its first record is expected (see expected()), until a rebalance
        self.generation = 0  # +1 on every reset: a filter() that awaited across a rebalance drops its result
        if hasattr(app, "on_partitions_revoked"):
            app.on_partitions_revoked.connect(self.on_rebalance, weak=False)
            app.on_partitions_assigned.connect(self.on_rebalance, weak=False)

    async def on_rebalance(self, sender=None, *args, **kwargs) -> None:
        """Forget every position on a rebalance: a partition that comes back may have been advanced by another
        worker meanwhile; its next record must be the group's committed offset (Faust's view of it), not the
        one after ours."""
        self.reset()

    def reset(self) -> None:
        self.generation += 1
        self.last.clear()
        self.sought.clear()
        self.sought_at.clear()
        self.start.clear()

    async def expected(self, tp) -> int | None:
        """The offset of ``tp``'s first record since a start or a rebalance: the group's committed offset (Faust's
        view of it), else the partition's earliest; None when that cannot be asked now."""
        if tp not in self.start:
            committed = getattr(getattr(self.app, "consumer", None), "_committed_offset", {}).get(tp)
            if isinstance(committed, int) and committed > 0:
                self.start[tp] = committed
            else:
                generation = self.generation
                earliest = await self._earliest(tp)
                if earliest is None or self.generation != generation:  # not cached: asked again / a new generation
                    return earliest
                self.start[tp] = earliest
        return self.start[tp]

    def _can_ask(self) -> bool:
        """False for a pipeline without a broker (the agent tests' harness sets ``earliest_offsets`` to None):
        its guards take a partition's first record as it comes."""
        return callable(getattr(getattr(self.app, "consumer", None), "earliest_offsets", None))

    async def _earliest(self, tp) -> int | None:
        """The partition's earliest offset (the log start), None when it cannot be asked now."""
        try:
            return int((await self.app.consumer.earliest_offsets(tp))[tp])
        except Exception:
            return None

    async def filter(self, events: list) -> list:
        """``events`` without the ones to hold back (after a gap) or handled already; seeks where a gap is.
        Returns nothing when a rebalance happened while it waited for Kafka (the records are the old
        generation's: not handled, not acked, delivered again to the partition's owner)."""
        generation = self.generation
        kept, seeks, unknown, log_starts, reread = [], {}, {}, {}, {}
        for event in events:
            tp, offset = position(event)
            if tp in seeks or tp in unknown:
                continue
            last = self.last.get(tp)
            if last is not None and offset <= last:
                reread[tp] = reread.get(tp, 0) + 1
                continue
            if last is None:  # first record since start or a rebalance: expect the committed (or earliest) offset
                start = await self.expected(tp)
                if self.generation != generation:
                    return self._rebalanced()
                if start is None and self._can_ask():
                    unknown[tp] = offset  # where it belongs cannot be asked now: read it again, ask then
                    continue
                last = start - 1 if start is not None else None
            if last is not None and offset > last + 1:
                if not self.contiguous:  # compaction's gap: tell Faust's commit the offsets are no loss
                    await self._compacted_gap(tp, last + 1, offset - 1)
                else:
                    action, target = await self._on_gap(tp, last, offset, log_starts)
                    if self.generation != generation:
                        return self._rebalanced()
                    if action == "hold":
                        continue
                    if action == "seek":
                        seeks[tp] = (target, offset, tp not in self.last)
                        continue
                    self._give_up(tp, last + 1, target)  # "resume": retention deleted last+1 .. target-1
                    if offset > target:
                        seeks[tp] = (target, offset, False)
                        continue
                if self.generation != generation:
                    return self._rebalanced()
            self.sought.pop(tp, None)
            self.sought_at.pop(tp, None)
            self.last[tp] = offset
            kept.append(event)
        await self._apply(seeks, unknown, reread)
        return kept

    async def _on_gap(self, tp, last: int, offset: int, log_starts: dict) -> tuple[str, int | None]:
        """``offset`` came where ``last + 1`` was due: ("seek", to) a new gap; ("hold", None) a record fetched
        before our seek (the re-read brings it again, in order) or the log start cannot be asked now (the seek
        is repeated); ("resume", at) Kafka's log start is past ``last + 1`` (retention): go on from ``at``."""
        if self.sought.get(tp) != last + 1:
            return "seek", last + 1
        if tp not in log_starts:
            log_starts[tp] = await self._earliest(tp)
        log_start = log_starts[tp]
        if log_start is None or log_start <= last + 1:
            return "hold", None
        return "resume", min(offset, log_start)

    def _give_up(self, tp, first: int, resume: int) -> None:
        self.stats.inc(f"{self.name}.offset_gap_unrecoverable")
        log.error("%s: %s offsets %d..%d are no longer in Kafka; continuing at %d", self.name, tp, first,
                  resume - 1, resume)
        self.last[tp] = resume - 1

    async def _compacted_gap(self, tp, first: int, end: int) -> None:
        """Offsets ``first``..``end`` of a compacted partition do not exist: Faust commits only a contiguous run
        of acked offsets, so they go in its gap bookkeeping (``Consumer._add_gap``, what its own loop does)."""
        self.stats.inc(f"{self.name}.offset_compacted_gap")
        add_gap = getattr(getattr(self.app, "consumer", None), "_add_gap", None)
        if add_gap is not None:
            await add_gap(tp, first, end)

    async def _apply(self, seeks: dict, unknown: dict, reread: dict) -> None:
        """The seeks one filter() decided, the counts, and the repeat of overdue seeks. (Faust's seek does not
        suspend: no rebalance can come in between.)"""
        for tp, offset in unknown.items():
            self.stats.inc(f"{self.name}.offset_start_unknown")
            log.warning("%s: %s: where its first record belongs cannot be asked now; reading %d again", self.name,
                        tp, offset)
            await self._seek(tp, offset)
        for tp, (offset, seen, first) in seeks.items():
            self.stats.inc(f"{self.name}.offset_gap")
            log.warning("%s: %s offsets %d..%d were skipped (%s); seeking back to %d", self.name, tp, offset,
                        seen - 1, "the first record since a start or rebalance is past the committed or earliest "
                        "offset" if first else "a jump", offset)
            await self._seek(tp, offset)
        for count in reread.values():
            self.stats.inc(f"{self.name}.offset_reread", count)
        await self._repeat_overdue()

    @classmethod
    def for_topic(cls, pipeline, topic: str, name: str) -> "GapGuard":
        """The guard of an agent reading ``topic``: a compacted topic (Settings.topics.compacted()) has gaps in its
        offsets by design, so its guard seeks nothing back (``contiguous=False``)."""
        return cls(pipeline.app, pipeline.stats, name,
                   contiguous=topic not in pipeline.settings.topics.compacted())

    def _rebalanced(self) -> list:
        """A rebalance reset the guard while filter() waited for Kafka: hand on nothing, write no position."""
        self.stats.inc(f"{self.name}.offset_filter_rebalanced")
        return []

    async def _seek(self, tp, offset: int) -> None:
        self.sought[tp], self.sought_at[tp] = offset, self.clock()
        try:
            await self.app.consumer.seek(tp, offset)
        except Exception as exc:  # e.g. the partition is being revoked: the rebalance resets the guard
            log.warning("%s: seeking %s to %d failed (%s); trying again in %.0f s", self.name, tp, offset,
                        exc, RESEEK_AFTER)

    async def _repeat_overdue(self) -> None:
        """Seek again the partitions whose re-read has not arrived within RESEEK_AFTER seconds."""
        now = self.clock()
        for tp, offset in list(self.sought.items()):
            if now - self.sought_at[tp] >= RESEEK_AFTER:
                self.stats.inc(f"{self.name}.offset_gap_reseek")
                log.warning("%s: %s offset %d did not come back %.0f s after the seek; seeking again", self.name,
                            tp, offset, now - self.sought_at[tp])
                await self._seek(tp, offset)


TAKE_WITHIN = 0.05  # how long a batch waits for more fetched lists: 0 made batches so small at a steady load
# (one fetch of one partition) that per-batch costs dominated and the agent fell behind (bench: window p50 2.9 s)


async def consume_records(pipeline, topic_key: str, name: str, size: int, prepare: Callable[[list], Any],
                          lock: asyncio.Lock | None = None) -> None:
    """The loop of a batch-native agent (streams.batch_consumer): record lists straight from the fetcher, up to
    ``size`` records or TAKE_WITHIN seconds, offset gaps repaired (``GapGuard``); under ``lock`` (the agent's
    timers and a revocation hold it too) ``prepare(records)`` runs the agent's step and stages the batch's
    outputs and state changes in a BatchOutput, which is flushed — outputs, then state; the same records again
    until Kafka acknowledged them — before the offsets are acked and the next batch is prepared.

    One batch at a time on purpose: overlapping batch N's flush with N+1 (tried) let a retried send of N land
    after N+1's writes (stale changelog values, high-water offsets past N's items) and measured no faster."""
    lock = lock or asyncio.Lock()

    async def handle(records: list) -> None:
        async with lock:
            out = await run_batch(name, pipeline.stats, _prepared(prepare, records))
            await run_batch(name, pipeline.stats, out.flush)

    await _consume(pipeline, topic_key, name, size, handle, lock)


def _prepared(prepare: Callable[[list], Any], records: list):
    async def run():
        return prepare(records)
    return run


async def consume_record_batches(pipeline, topic_key: str, name: str, size: int,
                                 process: Callable[[list], Any], lock: asyncio.Lock | None = None) -> None:
    """consume_records for agents whose ``process(records)`` does everything itself, sequentially (decide,
    write, send, write again — the dispatch stages), run until it succeeds; ``lock`` is the one it takes."""

    async def handle(records: list) -> None:
        await run_batch(name, pipeline.stats, lambda: process(records))

    await _consume(pipeline, topic_key, name, size, handle, lock)


async def _consume(pipeline, topic_key: str, name: str, size: int, handle, lock: asyncio.Lock | None) -> None:
    """Take record lists from the topic's inbox, repair gaps, ``handle`` them, ack them; count where time goes."""
    router = pipeline.router
    router.install()
    inbox_topic = pipeline.topics[topic_key].get_topic_name()
    inbox = router.inbox(inbox_topic)
    if lock is not None:  # a revocation waits for the batch in progress
        router.guard_lock(lock)
    guard = GapGuard.for_topic(pipeline, inbox_topic, name)
    stats = pipeline.stats
    waited = time.monotonic()
    while True:
        taken = await inbox.take(size, within=TAKE_WITHIN, idle=GUARD_TICK)
        started = time.monotonic()
        records = await guard.filter(taken)
        if not taken:  # idle: the guard has checked its seeks
            continue
        stats.inc(f"{name}.batches")
        await handle(records)
        ack_offsets(pipeline.app, records)
        inbox.finished()
        done = time.monotonic()
        # where the agent's time goes (GET /api/v1/stats): waiting for input, handling batches
        stats.inc(f"{name}.wait_ms", int((started - waited) * 1000))
        stats.inc(f"{name}.process_ms", int((done - started) * 1000))
        stats.inc(f"{name}.records", len(taken))  # taken and done with (acked)
        waited = done


SWEEP_CHUNK = 5000  # keys a timer visits per lock hold (the agent waits at most one chunk)


def settled(app) -> bool:
    """No rebalance and no table recovery in progress (Faust's own flags; a pipeline that never joined a group
    has neither): a timer writing a table must wait for this, its view may be partial or moving away."""
    return not (getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))


def owned_partitions(app, topic: str) -> set[int] | None:
    """The partitions of ``topic`` this worker actively owns now; None = every partition (a pipeline that never
    got an assignment, as in the tests' harness: a worker without partitions holds no state to act on)."""
    assignor = getattr(app, "assignor", None)
    actives = assignor.assigned_actives() if assignor is not None else set()
    if not actives:
        return None
    return {tp.partition for tp in actives if tp.topic == topic}


async def sweep_keys(pipeline, name: str, table, keys: list, lock: asyncio.Lock, visit, finish=None,
                     chunk: int = SWEEP_CHUNK) -> int:
    """A timer's pass over ``keys`` of a StateTable, a chunk at a time under the agent's ``lock`` and on the
    keys' current values (the agent writes the same keys): ``visit(out, key, raw_value)`` stages changes and
    returns how many it made, ``finish(out)`` (if given) stages what the chunk's visits collected; each chunk
    is flushed (the same records until Kafka took them) before the next, and the loop yields between chunks
    so heartbeats are not starved. Returns the sum of the visits. ``chunk``: keys per lock hold."""
    total = 0
    for start in range(0, len(keys), chunk):
        async with lock:
            out = pipeline.output()
            for key in keys[start:start + chunk]:
                raw = table.get_raw(key)
                if raw is not None:
                    total += visit(out, key, raw)
            if finish is not None:
                finish(out)
            await run_batch(name, pipeline.stats, out.flush)
        await asyncio.sleep(0)
    return total


def install_batch_agent(pipeline, agent, topic_key: str, name: str, size: int) -> None:
    """Declare the Faust agent of a batch-native ``agent`` (an object with ``prepare(records)`` and ``lock``):
    Faust needs it for the topic's subscription and the assignor; its records come through consume_records."""

    async def run(stream) -> None:
        await consume_records(pipeline, topic_key, name, size, agent.prepare, agent.lock)

    run.__name__ = run.__qualname__ = name
    pipeline.agents[name] = pipeline.app.agent(pipeline.topics[topic_key], name=name)(run)
    pipeline.batch_agents[name] = agent


def dead_letter(stage: str, reason: str, detail: str, *, topic: str | None = None, partition: int | None = None,
                offset: int | None = None, key: Any = None, payload: Any = None) -> dict:
    """A DeadLetter record (Avro io.npsflow.DeadLetter) for bad input that must never vanish."""
    if isinstance(payload, (bytes, bytearray)):
        payload_json = "base64:" + base64.b64encode(bytes(payload)).decode()
    elif payload is None:
        payload_json = None
    else:
        payload_json = json.dumps(payload, default=str, ensure_ascii=False)
    if payload_json is not None and len(payload_json) > MAX_PAYLOAD_CHARS:
        cut = len(payload_json) - MAX_PAYLOAD_CHARS
        payload_json = payload_json[:MAX_PAYLOAD_CHARS] + f"…[truncated {cut} characters]"
    if isinstance(key, (bytes, bytearray)):
        key = bytes(key)[:200].decode("utf-8", "replace")
    ident = (f"{stage}:{topic}:{partition}:{offset}" if offset is not None
             else f"{stage}:{uuid.uuid4().hex}:{time.time_ns()}")
    return {
        "dead_letter_id": ident,
        "stage": stage,
        "reason": reason,
        "detail": detail[:500],
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "key": None if key is None else str(key)[:200],
        "payload_json": payload_json,
        "failed_at": utcnow(),
    }


@dataclass
class Pipeline:
    app: faust.App
    settings: Settings
    codec: avro.AvroCodec
    engine: WindowEngine
    stats: Stats
    topics: dict[str, Any]
    tables: dict[str, Any]
    agents: dict[str, Any] = field(default_factory=dict)
    timers: dict[str, Any] = field(default_factory=dict)
    clock: Callable[[], datetime] = utcnow
    store_holder: dict = field(default_factory=dict)
    book: Any = None  # streams.dispatch.DispatchBook: programs, secret, links
    sender: Sender | None = None  # where BatchOutputs go: Kafka (KafkaSender), or a capture in tests
    router: Any = None  # streams.batch_consumer.BatchRouter: fetched record lists → the batch-native agents
    batch_agents: dict[str, Any] = field(default_factory=dict)  # name → agent object with process(records)
    follow_up: Any = None  # npsflow.follow_up.FollowUp: cases, alert rules, notification targets (NPSFLOW_CASES)
    alert_rules: Any = None  # streams.alerting.AlertRules of the windows agent's alerts; None: AlertRules()

    def output(self) -> BatchOutput:
        """A fresh BatchOutput for one batch's records and state changes (streams.kafka_io)."""
        if self.sender is None:
            self.sender = KafkaSender(self.app)
        return BatchOutput(self.sender)

    def stage_dead_letter(self, out: BatchOutput, record: dict) -> None:
        """Stage a DeadLetter record (``dead_letter(...)``) in ``out`` and count it by stage and reason."""
        self.stats.inc(f"dead_letter.{record['stage']}.{record['reason']}")
        out.add_keyed(self.topics["dead_letters"].get_topic_name(), self.settings.partitions,
                      (record["key"] or "").encode(), self.codec.encode(avro.DEAD_LETTER, record))


def consumer_group(settings: Settings) -> str:
    """The Faust app id = the consumer group of a worker. A sink worker (role ``sink``) consumes only the output
    topics, holds no tables and runs in a group of its own, ``<ns>-sink``: in the stream workers' group it would
    need Faust's assignor (which Faust uses only for apps with tables — without, it picks round-robin and the
    broker refuses the mixed group), and adding or restarting a sink would rebalance the stream workers and
    recover their tables. Roles ``all`` and ``process`` share ``<ns>``; a web worker joins no group."""
    ns = settings.topics.namespace
    return f"{ns}-sink" if settings.role == "sink" else ns


def create_app(settings: Settings, *, broker: str | None = None, clock: Callable[[], datetime] = utcnow,
               store_factory: Callable[[], Any] | None = None, web_enabled: bool = True,
               programs: Any = None, channels: dict | None = None, alert_rules: Any = None) -> Pipeline:
    """Build the Faust app and its agents. ``clock`` is the wall clock used for validation and dispatch
    decisions (injectable). ``programs`` (npsflow.programs.Programs) and ``channels`` (medium → channel)
    default to what ``settings`` names (NPSFLOW_PROGRAMS, NPSFLOW_CHANNELS); ``alert_rules``
    (streams.alerting.AlertRules) to the ``alerts:`` section of NPSFLOW_CASES (none: the defaults). The window
    state keeps the hours the alerts look at (current + baseline) even when every window is shorter."""
    app = faust.App(
        consumer_group(settings),
        broker=f"kafka://{broker or 'localhost:9092'}",
        broker_credentials=settings.kafka_security.faust_credentials(),  # SASL/TLS (npsflow.kafka_security)
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=web_enabled,
        web_bind="127.0.0.1",
        web_in_thread=False,
        autodiscover=False,
        datadir=str(settings.home / "faust"),
        producer_acks=-1,
        producer_max_request_size=4 * 1024 * 1024,
        # the agents hand whole record batches to the producer (streams.kafka_io): large batches, a short linger
        # for Faust's own sends (timers, dispatch); Faust's defaults (16 KiB, no linger) made tiny requests
        producer_max_batch_size=1024 * 1024,
        producer_linger=0.005,
        stream_buffer_maxsize=16_384,
        broker_max_poll_records=10_000,
        stream_wait_empty=False,
        # the listeners are web.server.WebServers (app.web_server): Faust's own aiohttp stack is never built; were
        # it ever, it would serve none of its table, router, graph or statistics views
        web_tables_enabled=False, web_router_enabled=False, web_stats_enabled=False, web_graph_enabled=False,
    )
    book = dispatch_book(settings, programs)
    follow_up = follow_up_config(settings, book.programs)  # FollowUpError: the worker does not start
    if alert_rules is None:
        alert_rules = follow_up.alerts
    engine = WindowEngine(windows=settings.windows or WindowEngine().windows,
                          lateness_seconds=settings.lateness_seconds,
                          keep_seconds=alert_horizon_seconds(alert_rules))
    names = settings.topics
    raw_bytes = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    topics = {
        "raw": app.topic(names.raw_responses, partitions=settings.partitions, **raw_bytes),
        "classified": app.topic(names.classified, partitions=settings.partitions, **raw_bytes),
        "deltas": app.topic(names.window_deltas, partitions=settings.partitions, **raw_bytes),
        "windows": app.topic(names.windows, partitions=settings.partitions, **raw_bytes),
        "dead_letters": app.topic(names.dead_letters, partitions=settings.partitions, **raw_bytes),
        "dispatches": app.topic(names.dispatches, partitions=settings.partitions, **raw_bytes),
        "triggers": app.topic(names.triggers, partitions=settings.partitions, **raw_bytes),
        "invitations": app.topic(names.invitations, partitions=settings.partitions, **raw_bytes),
        "candidates": app.topic(names.candidates, partitions=settings.partitions, **raw_bytes),
        "releases": app.topic(names.releases, partitions=settings.partitions, **raw_bytes),
        "case_events": app.topic(names.case_events, partitions=settings.partitions, **raw_bytes),
        "cases": app.topic(names.cases, partitions=settings.partitions, **raw_bytes),
        "notifications": app.topic(names.notifications, partitions=settings.partitions, **raw_bytes),
        "alerts": app.topic(names.alerts, partitions=settings.partitions, **raw_bytes),
        "owners": app.topic(names.owners, partitions=1, **raw_bytes),  # the owner directory (streams.owners)
    }
    # The stateful agents' tables exist only where those agents run. A sink worker in the same consumer group that
    # declared them would subscribe to their changelogs, and Faust's assignor groups topics by who subscribes to
    # them: the changelogs (subscribed by every member) would then be assigned apart from the raw topics
    # (process workers only) — a process worker would classify partition p against table partitions it does not
    # hold, drop its memos of p at the next recovery, and count replays again (the cluster test found this).
    tables = {} if settings.role not in STATEFUL_ROLES else {
        "seen": state_table(app, "responses-seen", settings.partitions),
        "window_state": state_table(app, "window-state", settings.partitions),
        "dispatch_state": state_table(app, "dispatch-state", settings.partitions),
        "dispatch_caps": state_table(app, "dispatch-caps", settings.partitions),
        "invitations": state_table(app, "invitations", settings.partitions),
        "cases": state_table(app, "cases", settings.partitions),
        "notifications_sent": state_table(app, "notifications-sent", settings.partitions),
    }
    pipeline = Pipeline(app, settings, avro.AvroCodec(), engine, Stats(), topics, tables, clock=clock,
                        router=BatchRouter(app), alert_rules=alert_rules)
    for table in tables.values():  # keys this worker holds per table (its partitions; bench/soak.py samples them)
        pipeline.stats.gauge(f"state.{table.name}.keys", lambda table=table: len(table.data))
    # Faust pauses every stream once 100 sends wait in its producer buffer; a batch of ours makes more.
    app.producer.buffer.max_messages = 20_000

    from streams.classify_agent import install_classify
    from streams.dispatch_agent import install_dispatch
    from streams.windows_agent import install_windows

    pipeline.book, pipeline.follow_up = book, follow_up
    if settings.role == "web":  # the listeners only: Faust starts the web servers and the producer, nothing else
        app.producer_only = True  # no consumer in the group, no tables recovered, no agents, no sinks
        return pipeline
    if settings.role != "sink":  # the stream agents (role all and process)
        from streams.cases_agent import install_cases
        from streams.notify_agent import install_notify

        install_classify(pipeline)
        install_windows(pipeline)
        install_dispatch(pipeline, pipeline.book, channels if channels is not None else load_channels(settings))
        install_cases(pipeline, pipeline.follow_up.cases)
        install_notify(pipeline, pipeline.follow_up.notify, notification_mailer(settings))
        if web_enabled:  # its internal listener answers for the invitations it holds: say which (streams.owners)
            from streams.owners import install_owner_publisher

            install_owner_publisher(pipeline)
    if store_factory is not None:
        from streams.sink_agents import install_sinks

        install_sinks(pipeline, store_factory)
    return pipeline


def alert_horizon_seconds(rules) -> int:
    """How long the window state must keep buckets for ``rules``: current + baseline hours, plus the hour a
    segment's own watermark may lag behind the worker's (its buckets are trimmed by its own)."""
    return (rules.current_hours + rules.baseline_hours + 1) * 3600


def dispatch_book(settings: Settings, programs: Any = None):
    """The dispatch decisions' inputs: survey programs (NPSFLOW_PROGRAMS), secret, survey URL, link lifetime."""
    from datetime import timedelta

    from streams.dispatch import DispatchBook

    if programs is None and settings.programs_file is not None:
        from npsflow.programs import load_programs

        programs = load_programs(settings.programs_file)  # ProgramsError: the worker does not start
    if programs is None:
        log.warning("no survey programs (NPSFLOW_PROGRAMS): every trigger is suppressed with reason no_program")
    return DispatchBook(programs, settings.secret, settings.survey_base_url,
                        timedelta(seconds=settings.link_ttl_seconds))


def follow_up_config(settings: Settings, programs: Any = None):
    """Cases, alert rules and notification targets (NPSFLOW_CASES, npsflow.follow_up); FollowUpError: the worker
    does not start."""
    from npsflow.follow_up import load_follow_up

    return load_follow_up(settings.cases_file, programs)


def notification_mailer(settings: Settings):
    """The e-mail transport of notifications: NPSFLOW_CHANNELS' e-mail (SMTP or the outbox), None when off."""
    from sinks.channels.notice import mailer_from_channels

    return mailer_from_channels(channels_config(settings), settings.home)


def load_channels(settings: Settings) -> dict:
    """The channels of NPSFLOW_CHANNELS (YAML, see sinks.channels.factory); the outbox when unset. The
    newsletter embed (files under NPSFLOW_HOME) is on unless the file turns it off."""
    from sinks.channels.factory import build_channels

    config = channels_config(settings)
    config.setdefault("newsletter", True)
    return build_channels(config, settings.home)


def channels_config(settings: Settings) -> dict:
    """NPSFLOW_CHANNELS as a mapping ({} when unset)."""
    config: dict = {}
    if settings.channels_file is not None:
        import yaml

        try:
            config = yaml.safe_load(settings.channels_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{settings.channels_file}: {exc}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{settings.channels_file}: must be a mapping of channel settings")
    return config
