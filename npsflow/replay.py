"""``npsflow replay``: re-sink ClickHouse tables from their Kafka topics, then recompute the touched rollup days.

What it does, per table (``streams.sink_agents.SINKS``: topic → table → Avro subject → row mapper):

1. plan: one offset range ``[start, stop)`` per partition of the table's topic. ``start`` from ``--from``
   (Kafka record time via ``offsets_for_times``, or ``earliest``) or ``--from-offset P:O``; ``stop`` from ``--to``
   (a time: the first offset at or after it; ``P:O``: that offset) or else the end offset seen when the replay
   started (records produced meanwhile are left to the sink agents). A start below the partition's log start
   (deleted by retention) begins at the log start and is reported as ``gone``.
2. read with its own consumer: partitions assigned, no consumer group, nothing committed, nothing produced —
   a replay changes no Kafka state, so it is safe against production topics and may be repeated.
3. decode with the codec and map with the sink's own row mapper; insert through ``sinks.batching.BatchingSink``
   like the sink agents, per partition (``combine=False``), sealed only at ``batch_rows`` entries or at the end
   of the range. Batch boundaries therefore depend only on the offsets, so replaying the same range again sends
   the same ``insert_deduplication_token`` and ClickHouse drops the repeat (within its deduplication window,
   ``non_replicated_deduplication_window`` = 10 000 inserts per table). Where tokens do not match (another
   range, the live sink's combined batches) the rows are identical to the ones already there (same mapper,
   same Kafka coordinates) and every table is a ReplacingMergeTree read latest-wins: no number changes.
4. re-apply every erasure recorded in ``erasures`` (``sinks.erasure.reapply``, the deletion ``npsflow forget``
   ran: the topics still hold an erased contact's records within their retention, and step 3 wrote them back),
   reported in the output (counts only);
5. recompute the daily rollup (``sinks.rollup.refresh_day``) of every day a replayed answer touches (its
   ``responded_at`` day and its ``earlier_days``).

Records that do not decode (or that the mapper refuses) and rows ClickHouse refuses are counted and reported,
not dead-lettered again: the sink agent dead-lettered each of them when it first met it (with the id
``sink:<topic>:<partition>:<offset>``), so the ``deadletters`` topic holds them already and a replay of the
``dead_letters`` table restores those rows; sending them again would add Kafka records on every replay, and a
replay writes nothing to Kafka. The one exception mirrors the sink agent: an undecodable record of the dead
letters topic itself becomes the same direct ``dead_letters`` row the agent writes (``failed_at`` = the
record's Kafka time, so a repeat is deduplicated).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable

from sinks import erasure, rollup
from sinks import rows as row_mappers
from sinks.batching import BatchingSink, first_line
from streams.sink_agents import SINKS

BATCH_ROWS = 5000  # entries per partition batch (the sink agents' default NPSFLOW_SINK_MAX_ROWS)
MAX_INSERT_ATTEMPTS = 8  # transient insert failures of one batch before giving up (~25 s of backoff)
IDLE_SECONDS = 30.0  # a partition that does not advance for this long while below its stop offset: an error
POLL_MS = 500


class ReplayError(Exception):
    """A replay that cannot run or finish: one line for the user."""


class ReplayArgumentError(ReplayError):
    """Arguments that do not fit the topic (a partition it does not have): a usage error."""


# ------------------------------------------------------------------------------------------------ arguments
TABLES = {table: (topic_key, subject, mapper) for topic_key, table, subject, mapper in SINKS}


def parse_tables(values: tuple[str, ...] | list[str]) -> list[str]:
    """``--table`` values (repeatable, comma-separated) → table names in SINKS order; none given = all."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise ValueError(f"unknown table {unknown[0]!r} (one of: {', '.join(TABLES)})")
    return [t for t in TABLES if t in names] if names else list(TABLES)


_OFFSETS = re.compile(r"^\s*\d+\s*:\s*\d+\s*(,\s*\d+\s*:\s*\d+\s*)*$")


def looks_like_offsets(text: str) -> bool:
    """``--to`` is offsets (``P:O[,P:O…]``) rather than a time."""
    return bool(_OFFSETS.match(text))


def parse_offsets(text: str) -> dict[int, int]:
    """``P:O[,P:O…]`` → {partition: offset}; ValueError with the reason."""
    result: dict[int, int] = {}
    for part in (p.strip() for p in text.split(",")):
        pieces = part.split(":")
        if len(pieces) != 2 or not all(x.strip().isdigit() for x in pieces):
            raise ValueError(f"{part!r} is not PARTITION:OFFSET (e.g. 0:1500; several: 0:1500,3:200)")
        partition, offset = int(pieces[0]), int(pieces[1])
        if partition in result:
            raise ValueError(f"partition {partition} is named twice")
        result[partition] = offset
    return result


@dataclass(frozen=True)
class Bound:
    """Where a replay starts or stops: a Kafka record time (ms), offsets per partition, or the log start."""

    timestamp_ms: int | None = None
    offsets: dict[int, int] | None = None
    earliest: bool = False

    @classmethod
    def at_time(cls, when: datetime) -> "Bound":
        return cls(timestamp_ms=int(when.astimezone(timezone.utc).timestamp() * 1000))

    def describe(self) -> str:
        if self.earliest:
            return "earliest"
        if self.offsets is not None:
            return ",".join(f"{p}:{o}" for p, o in sorted(self.offsets.items()))
        return datetime.fromtimestamp(self.timestamp_ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------ report
@dataclass
class Range:
    partition: int
    start: int  # first offset read
    stop: int  # exclusive
    gone: int = 0  # offsets asked for that retention had deleted already (below the log start)


@dataclass
class TableReport:
    table: str
    topic: str
    ranges: list[Range] = field(default_factory=list)
    records: int = 0  # Kafka records read within the ranges
    rows: int = 0  # rows handed to ClickHouse (inserted, or dropped by it as a repeat of the same batch)
    undecodable: int = 0  # records that did not decode or map
    rejected: int = 0  # rows ClickHouse refused on their own (after bisection)
    tombstones: int = 0  # null records (erased cases on a compacted topic): skipped
    batches: int = 0
    first_problem: str = ""
    days: set = field(default_factory=set)  # UTC days the answers touch (responses only)

    @property
    def gone(self) -> int:
        return sum(r.gone for r in self.ranges)

    def note(self, problem: str) -> None:
        if not self.first_problem:
            self.first_problem = problem

    def line(self) -> str:
        text = (f"{self.table:<15} {self.topic}  {len(self.ranges)} partitions  {self.records} records → "
                f"{self.rows} rows in {self.batches} batches, {self.undecodable} undecodable, "
                f"{self.rejected} rejected")
        if self.gone:
            text += f", {self.gone} offsets gone (retention)"
        if self.first_problem:
            text += f"; first problem: {self.first_problem}"
        return text

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "days"}
        data["gone"] = self.gone
        return data


@dataclass
class ReplayResult:
    start: str
    stop: str
    tables: list[TableReport] = field(default_factory=list)
    rollup_days: list[date] = field(default_factory=list)
    seconds: float = 0.0
    erasures: dict = field(default_factory=lambda: {"contacts": 0, "rows": {}})  # sinks.erasure.reapply

    def lines(self) -> list[str]:
        out = [t.line() for t in self.tables]
        out.append(erasure_line(self.erasures))
        if any(t.table == "responses" for t in self.tables):
            out.append(rollup_line(self.rollup_days))
        return out

    def as_dict(self) -> dict:
        return {"from": self.start, "to": self.stop, "tables": [t.as_dict() for t in self.tables],
                "erasures": self.erasures, "rollup_days": [d.isoformat() for d in self.rollup_days],
                "seconds": round(self.seconds, 3)}


def erasure_line(erasures: dict) -> str:
    rows = erasures.get("rows") or {}
    deleted = ", ".join(f"{n} {t}" for t, n in rows.items()) or "no row"
    return (f"erasures        re-applied {erasures.get('contacts', 0)} recorded erasures (npsflow forget): "
            f"deleted {deleted} again")


def rollup_line(days: list[date]) -> str:
    if not days:
        return "rollup          no day to recompute"
    span = f"{days[-1]}..{days[0]}" if len(days) > 1 else f"{days[0]}"
    return (f"rollup          recomputed {len(days)} days ({span}); they read from the rollup once recomputed "
            f"{rollup.MARGIN_SECONDS} s after their last insert (a worker does it; else `npsflow rollup refresh` "
            f"later), exact from the ledger meanwhile")


# ------------------------------------------------------------------------------------------------ planning
def plan(consumer, topic: str, start: Bound, stop: Bound | None) -> list[Range]:
    """One ``[start, stop)`` offset range per partition to read (empty ranges left out)."""
    from kafka import TopicPartition

    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise ReplayError(f"topic {topic} does not exist (or has no partitions): wrong NPSFLOW_NAMESPACE or "
                          f"NPSFLOW_KAFKA?")
    for bound, name in ((start, "--from-offset"), (stop, "--to")):
        extra = sorted(set((bound.offsets if bound else None) or ()) - set(partitions))
        if extra:
            raise ReplayArgumentError(f"{name} names partition {extra[0]}, but {topic} has partitions "
                                      f"0..{max(partitions)}")
    chosen = sorted(start.offsets) if start.offsets is not None else sorted(partitions)
    tps = [TopicPartition(topic, p) for p in chosen]
    first = consumer.beginning_offsets(tps)
    end = consumer.end_offsets(tps)
    starts = _offsets(consumer, tps, start, first, end)
    stops = _offsets(consumer, tps, stop, first, end) if stop else {tp: end[tp] for tp in tps}
    ranges = []
    for tp in tps:
        begin = max(starts[tp], first[tp])
        finish = min(stops[tp], end[tp])
        if begin < finish:
            ranges.append(Range(tp.partition, begin, finish, gone=max(0, first[tp] - starts[tp])))
    return ranges


def _offsets(consumer, tps: list, bound: Bound, first: dict, end: dict) -> dict:
    """The offset of ``bound`` in every partition: a time → the first record at or after it (none: the end)."""
    if bound.earliest:
        return {tp: first[tp] for tp in tps}
    if bound.offsets is not None:
        return {tp: bound.offsets.get(tp.partition, end[tp]) for tp in tps}
    found = consumer.offsets_for_times({tp: bound.timestamp_ms for tp in tps})
    return {tp: (found[tp].offset if found.get(tp) is not None else end[tp]) for tp in tps}


# ------------------------------------------------------------------------------------------------ one table
class TableReplay:
    """Reads one table's ranges and writes them through a BatchingSink (per partition, deterministic batches)."""

    def __init__(self, consumer, store, codec, table: str, topic: str, ranges: list[Range], batch_rows: int):
        topic_key, self.subject, self.mapper = TABLES[table]
        self.consumer, self.store, self.codec = consumer, store, codec
        self.report = TableReport(table, topic, ranges)
        self.sink = BatchingSink(table=table, topic=topic, writer=self.write, max_rows=batch_rows,
                                 max_age=float("inf"), on_rejected=self.on_rejected, combine=False)

    async def write(self, rows: list[dict], token: str) -> None:
        await self.store.ainsert(self.report.table, rows, dedup_token=token)
        self.report.rows += len(rows)
        self.report.batches += 1

    async def on_rejected(self, partition: int, offset: int, row: dict, ack: Any, exc: BaseException) -> None:
        self.report.rejected += 1
        self.report.note(f"partition {partition} offset {offset}: ClickHouse refused the row: {first_line(exc)}")

    async def run(self) -> TableReport:
        from kafka import TopicPartition

        ranges = {r.partition: r for r in self.report.ranges}
        if not ranges:
            return self.report
        tps = {p: TopicPartition(self.report.topic, p) for p in ranges}
        self.consumer.assign(list(tps.values()))
        for p, r in ranges.items():
            self.consumer.seek(tps[p], r.start)
        active = set(ranges)
        last_progress = time.monotonic()
        while active:
            polled = self.consumer.poll(timeout_ms=POLL_MS, max_records=self.sink.max_rows)
            for tp, messages in polled.items():
                self.take(messages, ranges[tp.partition])
            await self.write_due(final=False)
            done = {p for p in active if self.consumer.position(tps[p]) >= ranges[p].stop}
            if polled or done:
                last_progress = time.monotonic()
            active -= done
            if active and time.monotonic() - last_progress > IDLE_SECONDS:
                stuck = ", ".join(f"{p} at {self.consumer.position(tps[p])} of {ranges[p].stop}" for p in sorted(active))
                raise ReplayError(f"{self.report.topic}: no progress for {IDLE_SECONDS:.0f} s (partition {stuck})")
        await self.write_due(final=True)
        return self.report

    def take(self, messages: list, r: Range) -> None:
        """Queue the rows of one partition's polled records that lie in its range."""
        for msg in messages:
            if msg.offset < r.start or msg.offset >= r.stop:
                continue
            self.report.records += 1
            self.sink.add(msg.partition, msg.offset, self.row(msg), None)

    def row(self, msg) -> dict | None:
        if msg.value is None:  # a tombstone (an erased case on the compacted cases topic): nothing to write
            self.report.tombstones += 1
            return None
        try:
            row = self.mapper(self.codec.decode(msg.value, expected=self.subject), msg.partition, msg.offset)
        except Exception as exc:  # counted, not dead-lettered again (module doc)
            self.report.undecodable += 1
            self.report.note(f"partition {msg.partition} offset {msg.offset}: "
                             f"{getattr(exc, 'detail', None) or first_line(exc)}")
            return self.undecodable_dead_letter(msg, exc)
        if self.report.table == "responses":
            self.report.days.add(row["responded_at"].date())
            self.report.days.update(row["earlier_days"])
        return row

    def undecodable_dead_letter(self, msg, exc: BaseException) -> dict | None:
        """The direct row the sink agent writes for an undecodable record of the dead letters topic (else None):
        the same id, reason and detail (``SinkAgent.row``), ``failed_at`` the record's Kafka time."""
        if self.report.table != "dead_letters":
            return None
        from streams.app import dead_letter

        detail = getattr(exc, "detail", None) or repr(exc)
        dl = dead_letter("sink", getattr(exc, "reason", "sink_row_error"), f"dead_letters: {detail}",
                         topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key,
                         payload=msg.value)
        dl["failed_at"] = datetime.fromtimestamp(msg.timestamp / 1000, timezone.utc)
        return row_mappers.dead_letter_row(dl, msg.partition, msg.offset)

    async def write_due(self, final: bool) -> None:
        """Write the sealed batches (``final``: every queued one), waiting out transient failures up to
        MAX_INSERT_ATTEMPTS per batch."""
        while True:
            await self.sink.flush_due(seal_all=final)
            waiting = [s for s in self.sink.partitions.values() if s.sealed or (final and s.open)]
            if not waiting:
                return
            worst = max(waiting, key=lambda s: s.failures)
            if worst.failures >= MAX_INSERT_ATTEMPTS:
                raise ReplayError(f"inserts into {self.report.table} failed {worst.failures} times: "
                                  f"{first_line(worst.last_error) if worst.last_error else 'unknown error'} "
                                  f"(nothing is lost: run the replay again)")
            await asyncio.sleep(min(max(self.sink.next_due_in() or 0.0, 0.01), 5.0))


# ------------------------------------------------------------------------------------------------ the whole
def open_consumer(bootstrap: str, security=None):
    """A group-less kafka-python consumer with the settings' Kafka security (npsflow.kafka_security)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from npsflow.kafka_security import ConnectionDiagnosis

    diagnosis = ConnectionDiagnosis(security)
    try:
        with diagnosis:
            return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", client_id="npsflow-replay",
                                 allow_auto_create_topics=False,  # a missing topic is an error, never created here
                                 max_partition_fetch_bytes=4 * 1024 * 1024, request_timeout_ms=30000,
                                 **(security.kafka_python_kwargs() if security is not None else {}))
    except KafkaError as exc:
        raise ReplayError(f"cannot connect to Kafka at {bootstrap}: {diagnosis.explain(exc)}") from None


def refresh_days(store, days: set) -> list[date]:
    """Recompute the rollup of ``days``, newest first (idempotent: absolute counts)."""
    chosen = sorted(days, reverse=True)
    for day in chosen:
        rollup.refresh_day(store, day)
    return chosen


async def _replay(consumer, store, codec, topics: dict[str, str], start: Bound, stop: Bound | None,
                  batch_rows: int, progress: Callable[[str], None] | None, secret: str | None = None) -> ReplayResult:
    result = ReplayResult(start.describe(), stop.describe() if stop else "end offsets at start")
    for table, topic in topics.items():
        ranges = plan(consumer, topic, start, stop)
        report = await TableReplay(consumer, store, codec, table, topic, ranges, batch_rows).run()
        result.tables.append(report)
        if progress:
            progress(report.line())
    # the topics still hold erased contacts' records (within their retention): every recorded erasure again, with
    # the same deletion (sinks.erasure), before the rollup days are recomputed
    result.erasures = await store.arun(erasure.reapply, secret)
    if progress:
        progress(erasure_line(result.erasures))
    days = set().union(*(t.days for t in result.tables))
    result.rollup_days = await store.arun(refresh_days, days) if days else []
    return result


def replay(settings, store, tables: list[str], start: Bound, stop: Bound | None = None, *,
           bootstrap: str, batch_rows: int = BATCH_ROWS, progress: Callable[[str], None] | None = None,
           codec=None) -> ReplayResult:
    """Replay ``tables`` (names of SINKS) from their topics into ``store`` (migrated); see the module doc."""
    from schemas import codec as avro

    began = time.monotonic()
    topics = {t: getattr(settings.topics, TABLES[t][0]) for t in tables}
    consumer = open_consumer(bootstrap, getattr(settings, "kafka_security", None))
    try:
        result = asyncio.run(_replay(consumer, store, codec or avro.AvroCodec(), topics, start, stop,
                                     batch_rows, progress, getattr(settings, "secret", None)))
    finally:
        consumer.close()
    result.seconds = time.monotonic() - began
    return result
