"""ClickHouse sink agents: Kafka topic → rows → one insert per partition batch → ack → commit.

Each sink agent takes fetched record lists (streams.batch_consumer, up to max_rows or max_age), hands rows
to a ``sinks.batching.BatchingSink`` that groups them per partition and writes the due batches of all
partitions as ONE insert (``combine=True``) with an ``insert_deduplication_token`` naming every (partition,
offsets) range and the content. Only the offsets of batches whose insert returned are acked; Faust commits
acked offsets only.

Failures (see ``sinks.batching``):

* transient (ClickHouse down, connection refused, timeouts, a schema not migrated yet): the group of batches
  stays queued as it is (same rows, same token), is retried with exponential backoff and its offsets are held
  (no ack): nothing is lost, nothing is committed ahead of the data. The agent goes on consuming (new rows
  form the next group), and a background task retries even when no new records arrive. Backpressure: once more than
  ``MAX_PENDING_BATCHES × max_rows`` entries are queued (ClickHouse down for everyone) the agent stops
  taking new records until inserts succeed again.
* permanent (a row ClickHouse refuses: a value out of range, a parse/type error): the group is written batch
  by batch with their own tokens, a failing batch is bisected,
  the good rows are inserted, each row that fails on its own is dead-lettered (Avro ``io.npsflow.DeadLetter``
  to the dead letters topic: stage ``sink``, reason ``sink_rejected_row``, detail = table + the first line
  of the ClickHouse error, payload = the row as JSON), then everything is acked.
  For the ``dead_letters`` table itself, sending a dead letter would loop, so a *replacement* row is written
  directly: the same dead_letter_id, stage ``sink``, reason ``sink_rejected_row``, the error as detail and
  the refused row as JSON (payload). If even that is refused, the record is logged, counted
  (``sink.dead_letters.lost``) and acked — the only place a record is dropped, and never silently.

Revoked partitions: queued rows are NOT dropped. Faust does not seek back when a rebalance hands a partition
straight back to this worker (the usual case: a restarted worker's stale membership expiring), so dropped
rows would never be read again and their offsets never committed. If the partition really moved to another
worker, inserting our queued rows anyway only writes rows the other worker writes too: ReplacingMergeTree +
argMax make that harmless, and acks for partitions we no longer own are ignored by Faust.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Callable

from schemas import codec as avro
from sinks import rollup
from sinks import rows as row_mappers
from sinks.batching import BatchingSink, first_line, is_permanent, rows_digest
from streams.app import GUARD_TICK, GapGuard, Pipeline, add_timer, dead_letter
from streams.batch_consumer import ack_offsets

log = logging.getLogger("npsflow.sink")

SINKS = (
    # (topic key in pipeline.topics, table, Avro subject, row mapper)
    ("classified", "responses", avro.CLASSIFIED_RESPONSE, row_mappers.response_row),
    ("windows", "window_updates", avro.WINDOW_UPDATE, row_mappers.window_update_row),
    ("dead_letters", "dead_letters", avro.DEAD_LETTER, row_mappers.dead_letter_row),
    ("dispatches", "dispatches", avro.DISPATCHED_MESSAGE, row_mappers.dispatch_row),
    ("cases", "cases", avro.CASE, row_mappers.case_row),
    ("alerts", "alerts", avro.ALERT, row_mappers.alert_row),
)

REJECTED = "sink_rejected_row"
MAX_PENDING_BATCHES = 4  # queued entries beyond this many × max_rows stop the agent from taking more
# longest wait between retries of a failed insert: one insert per table per worker every 5 s costs a recovering
# ClickHouse nothing, and the rows land at most ~5 s after it is back (30 s, the BatchingSink default, made the
# fault suite's ClickHouse case ready again only 26 s after the fault ended; tests/test_faults.py)
RETRY_BACKOFF_MAX = 5.0
RETRY_POLL = 0.5  # the background retry task looks at least this often (seconds)


ROLLUP_INTERVAL_SECONDS = 30.0
ROLLUP_DAYS_PER_TICK = 31
ROLLUP_BUDGET_SECONDS = 2.0  # no new day after 2 s: the store's thread also serves the sinks' inserts


def install_sinks(pipeline: Pipeline, store_factory: Callable[[], Any]) -> None:
    store = LazyStore(store_factory)
    sinks: dict[str, BatchingSink] = {}
    for topic_key, table, subject, mapper in SINKS:
        agent = SinkAgent(pipeline, pipeline.topics[topic_key], table, subject, mapper, store)
        sinks[table] = agent.batching
        agent.install()
    pipeline.store_holder["sinks"] = sinks

    async def refresh_rollups() -> None:
        """Recompute the daily rollup of days that went quiet (sinks.rollup): reads stay exact without it, only
        slower. Idempotent: every worker may run it."""
        result = await store().arun(rollup.refresh, limit=ROLLUP_DAYS_PER_TICK, budget_seconds=ROLLUP_BUDGET_SECONDS)
        pipeline.stats.inc("rollup.days_refreshed", len(result.days))

    add_timer(pipeline, "refresh_rollups", ROLLUP_INTERVAL_SECONDS, refresh_rollups)
    pipeline.timers["refresh_rollups"] = refresh_rollups


class LazyStore:
    """The ClickHouse store, opened on first use (a worker that never writes does not open it)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory, self.store = factory, None

    def __call__(self):
        if self.store is None:
            self.store = self.factory()
        return self.store


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SinkAgent:
    """One ClickHouse table fed from one topic: rows batched per partition (BatchingSink), inserted with a dedup
    token, offsets acked only after the insert returned; bad rows dead-lettered (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, topic, table: str, subject: str, mapper, store: LazyStore) -> None:
        self.pipeline, self.topic, self.table, self.subject, self.mapper = pipeline, topic, table, subject, mapper
        self.store, self.stats, self.codec = store, pipeline.stats, pipeline.codec
        self.dead_letters = pipeline.topics["dead_letters"]
        settings = pipeline.settings
        self.batching = BatchingSink(table=table, topic=topic.get_topic_name(), writer=self.write,
                                     max_rows=settings.sink_max_rows, max_age=settings.sink_max_age,
                                     on_rejected=self.on_rejected, combine=True, backoff_max=RETRY_BACKOFF_MAX)
        self.lock = asyncio.Lock()  # one flush at a time: the agent and its retry task share the batches

    def install(self) -> None:
        @self.pipeline.app.agent(self.topic, name=f"sink-{self.table}")
        async def sink(stream):  # declared for the subscription; records come batched (streams.batch_consumer)
            await self.run()

        self.pipeline.agents[f"sink-{self.table}"] = sink

    async def write(self, rows: list[dict], token: str) -> None:
        await self.store().ainsert(self.table, rows, dedup_token=token)

    async def run(self) -> None:
        router = self.pipeline.router
        router.install()
        settings = self.pipeline.settings
        topic = self.topic.get_topic_name()
        inbox = router.inbox(topic)
        guard = GapGuard.for_topic(self.pipeline, topic, f"sink.{self.table}")
        retry_task = asyncio.ensure_future(self.retry_stuck())
        try:
            while True:
                taken = await inbox.take(settings.sink_max_rows, within=settings.sink_max_age, idle=GUARD_TICK)
                records = await guard.filter(taken)
                if not taken:  # idle: the guard has checked its seeks
                    continue
                for record in records:
                    self.batching.add(record.partition, record.offset, await self.row(record), record)
                await self.flush(seal_all=True)
                inbox.finished()
                await self.backpressure()
        finally:
            retry_task.cancel()

    async def backpressure(self) -> None:
        """ClickHouse down for everyone: stop taking records until the queued ones are written."""
        while self.batching.pending() > MAX_PENDING_BATCHES * self.batching.max_rows:
            due = self.batching.next_due_in()
            await asyncio.sleep(min(max(due or 0.0, 0.01), RETRY_POLL))
            await self.flush()

    async def flush(self, **kw) -> None:
        async with self.lock:
            failures_before = self.batching.failed_attempts
            acked = await self.batching.flush_due(**kw)
            if self.batching.failed_attempts > failures_before:
                self.stats.inc(f"sink.{self.table}.retry", self.batching.failed_attempts - failures_before)
        ack_offsets(self.pipeline.app, acked)
        if acked:
            self.stats.inc(f"sink.{self.table}.rows", len(acked))  # records written (or dead-lettered) and acked

    async def retry_stuck(self) -> None:
        """Retry partitions backing off even when no new records arrive (the take loop would not wake)."""
        while True:
            due = self.batching.next_due_in()
            await asyncio.sleep(RETRY_POLL if due is None else min(max(due, 0.01), RETRY_POLL))
            if self.batching.pending():
                try:
                    await self.flush()
                except Exception:  # never let the retry task die; the agent's own flush reports too
                    log.exception("retrying ClickHouse inserts into %s failed", self.table)

    async def row(self, msg) -> dict | None:
        """The record's row; a record that does not decode is dead-lettered (None: an ack-only entry). A tombstone
        (null value: an erased case on the compacted cases topic, npsflow forget) is an ack-only entry."""
        if msg.value is None:
            return None
        try:
            record = self.codec.decode(msg.value, expected=self.subject)
            return self.mapper(record, msg.partition, msg.offset)
        except Exception as exc:  # bad input must not kill the sink, nor vanish
            reason = getattr(exc, "reason", "sink_row_error")
            detail = getattr(exc, "detail", None) or repr(exc)
            dl = dead_letter("sink", reason, f"{self.table}: {detail}", topic=msg.topic, partition=msg.partition,
                             offset=msg.offset, key=msg.key, payload=msg.value)
            if self.table == "dead_letters":  # never loop: write the undecodable dead letter directly
                return row_mappers.dead_letter_row(dl, msg.partition, msg.offset)
            self.stats.inc(f"dead_letter.sink.{reason}")
            await self.send_dead_letter(dl)
            return None

    async def send_dead_letter(self, record: dict) -> None:
        """Send a dead letter and wait until Kafka has it: the record it stands for is acked right after."""
        delivered = await self.dead_letters.send(key=b"", value=self.codec.encode(avro.DEAD_LETTER, record))
        await delivered

    async def on_rejected(self, partition: int, offset: int, row: dict, source, exc: BaseException) -> None:
        """A row ClickHouse refused on its own (after bisection): dead-letter it; raising keeps the batch."""
        detail = f"{self.table}: {first_line(exc)}"
        source_topic = getattr(source, "topic", None) or self.batching.topic
        key = getattr(source, "key", None)
        self.stats.inc(f"sink.{self.table}.rejected")
        dl = dead_letter("sink", REJECTED, detail, topic=source_topic, partition=partition, offset=offset,
                         key=key, payload=row)
        if self.table != "dead_letters":
            await self.send_dead_letter(dl)
            self.stats.inc(f"dead_letter.sink.{REJECTED}")
            return
        await self.replace_dead_letter(partition, offset, row, dl)

    async def replace_dead_letter(self, partition: int, offset: int, row: dict, dl: dict) -> None:
        """Never loop through the dead letters topic: write a replacement dead letter row directly."""
        ident = str(row.get("dead_letter_id") or f"sink:{dl['source_topic']}:{partition}:{offset}")
        replacement = row_mappers.dead_letter_row({**dl, "dead_letter_id": ident, "failed_at": _utcnow()},
                                                  partition, offset)
        token = f"{self.table}:replacement:{partition}:{offset}:{rows_digest([row])}"
        try:
            await self.store().ainsert(self.table, [replacement], dedup_token=token)
        except Exception as again:
            if not is_permanent(again):
                raise  # ClickHouse went away meanwhile: keep the batch, retry later
            self.stats.inc("sink.dead_letters.lost")
            log.error("dead letter from partition %d offset %d refused by ClickHouse twice (%s); dropped: %r",
                      partition, offset, first_line(again), row)
            return
        self.stats.inc(f"dead_letter.sink.{REJECTED}")
