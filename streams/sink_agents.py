"""ClickHouse sink agents: Kafka topic → rows → one insert per partition batch → ack → commit.

Each sink agent reads with ``noack_take(max_rows, within=max_age)`` (the size and time bound), hands rows
to a ``sinks.batching.BatchingSink`` that groups them per partition and inserts each group with an
``insert_deduplication_token`` naming its offsets and content. Only the events of a batch whose insert
returned are acked; Faust commits acked offsets only (after flushing its producer).

Failures (see ``sinks.batching``):

* transient (ClickHouse down, connection refused, timeouts): the partition's batch stays queued, is retried
  with exponential backoff and its offsets are held (no ack): nothing is lost, nothing is committed ahead of
  the data. Retries are per partition: the agent goes on consuming, so other partitions keep flowing, and a
  background task retries stuck partitions even when no new records arrive. Backpressure: once more than
  ``MAX_PENDING_BATCHES × max_rows`` entries are queued (ClickHouse down for everyone) the agent stops
  taking new records until inserts succeed again.
* permanent (a row ClickHouse refuses: a value out of range, a parse/type error): the batch is bisected,
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
from streams.app import GapGuard, Pipeline, add_timer, dead_letter
from streams.batch_consumer import ack_offsets

log = logging.getLogger("npsflow.sink")

SINKS = (
    # (topic key in pipeline.topics, table, Avro subject, row mapper)
    ("classified", "responses", avro.CLASSIFIED_RESPONSE, row_mappers.response_row),
    ("windows", "window_updates", avro.WINDOW_UPDATE, row_mappers.window_update_row),
    ("dead_letters", "dead_letters", avro.DEAD_LETTER, row_mappers.dead_letter_row),
    ("dispatches", "dispatches", avro.DISPATCHED_MESSAGE, row_mappers.dispatch_row),
)

REJECTED = "sink_rejected_row"
MAX_PENDING_BATCHES = 4  # queued entries beyond this many × max_rows stop the agent from taking more
RETRY_POLL = 0.5  # the background retry task looks at least this often (seconds)


ROLLUP_INTERVAL_SECONDS = 30.0
ROLLUP_DAYS_PER_TICK = 31
ROLLUP_BUDGET_SECONDS = 2.0  # no new day after 2 s: the store's thread also serves the sinks' inserts


def install_sinks(pipeline: Pipeline, store_factory: Callable[[], Any]) -> None:
    app, settings, codec, stats = pipeline.app, pipeline.settings, pipeline.codec, pipeline.stats
    holder: dict = {}

    def store():
        if "store" not in holder:
            holder["store"] = store_factory()
        return holder["store"]

    sinks: dict[str, BatchingSink] = {}
    for topic_key, table, subject, mapper in SINKS:
        topic = pipeline.topics[topic_key]
        sinks[table], pipeline.agents[f"sink-{table}"] = _install_one(
            app, topic, table, subject, mapper, codec, stats, store, settings, pipeline.topics["dead_letters"],
            pipeline.router)
    pipeline.store_holder.update(holder)
    pipeline.store_holder["sinks"] = sinks

    async def refresh_rollups() -> None:
        """Recompute the daily rollup of days that went quiet (sinks.rollup): reads stay exact without it, only
        slower. Idempotent: every worker may run it."""
        result = await store().arun(rollup.refresh, limit=ROLLUP_DAYS_PER_TICK, budget_seconds=ROLLUP_BUDGET_SECONDS)
        stats.inc("rollup.days_refreshed", len(result.days))

    add_timer(pipeline, "refresh_rollups", ROLLUP_INTERVAL_SECONDS, refresh_rollups)
    pipeline.timers["refresh_rollups"] = refresh_rollups


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _install_one(app, topic, table, subject, mapper, codec, stats, store, settings, dead_letters, router):
    """Install one sink agent; returns (its BatchingSink, the agent)."""
    async def writer(rows: list[dict], token: str) -> None:
        await store().ainsert(table, rows, dedup_token=token)

    async def on_rejected(partition: int, offset: int, row: dict, event, exc: BaseException) -> None:
        """A row ClickHouse refused on its own (after bisection): dead-letter it; raising keeps the batch."""
        detail = f"{table}: {first_line(exc)}"
        source_topic = getattr(event, "topic", None) or batching.topic
        key = getattr(event, "key", None)
        stats.inc(f"sink.{table}.rejected")
        if table != "dead_letters":
            dl = dead_letter("sink", REJECTED, detail, topic=source_topic, partition=partition, offset=offset,
                             key=key, payload=row)
            await dead_letters.send(key=b"", value=codec.encode(avro.DEAD_LETTER, dl))
            stats.inc(f"dead_letter.sink.{REJECTED}")
            return
        # never loop through the dead letters topic: write a replacement dead letter row directly
        replacement = row_mappers.dead_letter_row(
            {**dead_letter("sink", REJECTED, detail, topic=source_topic, partition=partition, offset=offset,
                           key=key, payload=row),
             "dead_letter_id": str(row.get("dead_letter_id") or f"sink:{source_topic}:{partition}:{offset}"),
             "failed_at": _utcnow()}, partition, offset)
        try:
            await store().ainsert(table, [replacement], dedup_token=f"{table}:replacement:{partition}:{offset}:{rows_digest([row])}")
        except Exception as again:
            if not is_permanent(again):
                raise  # ClickHouse went away meanwhile: keep the batch, retry later
            stats.inc("sink.dead_letters.lost")
            log.error("dead letter from partition %d offset %d refused by ClickHouse twice (%s); dropped: %r",
                      partition, offset, first_line(again), row)
            return
        stats.inc(f"dead_letter.sink.{REJECTED}")

    batching = BatchingSink(table=table, topic=topic.get_topic_name(), writer=writer,
                            max_rows=settings.sink_max_rows, max_age=settings.sink_max_age,
                            on_rejected=on_rejected)
    lock = asyncio.Lock()  # one flush at a time: the agent and its retry task share the batches

    @app.agent(topic, name=f"sink-{table}")
    async def sink(stream):  # declared for the subscription; records come batched (streams.batch_consumer)
        router.install()
        inbox = router.inbox(topic.get_topic_name())

        async def flush(**kw) -> None:
            async with lock:
                failures_before = batching.failed_attempts
                acked = await batching.flush_due(**kw)
                if batching.failed_attempts > failures_before:
                    stats.inc(f"sink.{table}.retry", batching.failed_attempts - failures_before)
            ack_offsets(app, acked)
            if acked:
                stats.inc(f"sink.{table}.rows", len(acked))  # records written (or dead-lettered) and acked

        async def retry_stuck() -> None:
            """Retry partitions backing off even when no new records arrive (the take loop would not wake)."""
            while True:
                due = batching.next_due_in()
                await asyncio.sleep(RETRY_POLL if due is None else min(max(due, 0.01), RETRY_POLL))
                if batching.pending():
                    try:
                        await flush()
                    except Exception:  # never let the retry task die; the agent's own flush reports too
                        log.exception("retrying ClickHouse inserts into %s failed", table)

        guard = GapGuard(app, stats, f"sink.{table}")
        retry_task = asyncio.ensure_future(retry_stuck())
        try:
            while True:
                records = await guard.filter(await inbox.take(settings.sink_max_rows, within=settings.sink_max_age))
                for record in records:
                    batching.add(record.partition, record.offset, await _row(record), record)
                await flush(seal_all=True)
                inbox.finished()
                while batching.pending() > MAX_PENDING_BATCHES * batching.max_rows:  # backpressure
                    due = batching.next_due_in()
                    await asyncio.sleep(min(max(due or 0.0, 0.01), RETRY_POLL))
                    await flush()
        finally:
            retry_task.cancel()

    async def _row(msg) -> dict | None:
        try:
            record = codec.decode(msg.value, expected=subject)
            return mapper(record, msg.partition, msg.offset)
        except Exception as exc:  # bad input must not kill the sink, nor vanish
            reason = getattr(exc, "reason", "sink_row_error")
            detail = getattr(exc, "detail", None) or repr(exc)
            dl = dead_letter("sink", reason, f"{table}: {detail}", topic=msg.topic, partition=msg.partition,
                             offset=msg.offset, key=msg.key, payload=msg.value)
            if table == "dead_letters":  # never loop: write the undecodable dead letter directly
                return row_mappers.dead_letter_row(dl, msg.partition, msg.offset)
            stats.inc(f"dead_letter.sink.{reason}")
            await dead_letters.send(key=b"", value=codec.encode(avro.DEAD_LETTER, dl))
            return None  # ack-only entry: its ack still waits for the rows before it

    return batching, sink
