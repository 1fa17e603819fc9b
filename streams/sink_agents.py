"""ClickHouse sink agents: Kafka topic → rows → one insert per partition batch → ack → commit.

Each sink agent reads with ``noack_take(max_rows, within=max_age)`` (the size and time bound), hands rows
to a ``sinks.batching.BatchingSink`` that groups them per partition and inserts each group with an
``insert_deduplication_token`` naming its offsets. Only the events of a batch whose insert returned are
acked; Faust commits acked offsets only (after flushing its producer). If ClickHouse is down the agent
retries with backoff and holds its offsets: nothing is lost and nothing is committed ahead of the data.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from schemas import codec as avro
from sinks import rows as row_mappers
from sinks.batching import BatchingSink
from streams.app import Pipeline, dead_letter

log = logging.getLogger("npsflow.sink")

SINKS = (
    # (topic key in pipeline.topics, table, Avro subject, row mapper)
    ("classified", "responses", avro.CLASSIFIED_RESPONSE, row_mappers.response_row),
    ("windows", "window_updates", avro.WINDOW_UPDATE, row_mappers.window_update_row),
    ("dead_letters", "dead_letters", avro.DEAD_LETTER, row_mappers.dead_letter_row),
)


def install_sinks(pipeline: Pipeline, store_factory: Callable[[], Any]) -> None:
    app, settings, codec, stats = pipeline.app, pipeline.settings, pipeline.codec, pipeline.stats
    holder: dict = {}

    def store():
        if "store" not in holder:
            holder["store"] = store_factory()
        return holder["store"]

    for topic_key, table, subject, mapper in SINKS:
        topic = pipeline.topics[topic_key]
        _install_one(app, topic, table, subject, mapper, codec, stats, store, settings,
                     pipeline.topics["dead_letters"])
    pipeline.store_holder.update(holder)


def _install_one(app, topic, table, subject, mapper, codec, stats, store, settings, dead_letters) -> None:
    async def writer(rows: list[dict], token: str) -> None:
        await store().ainsert(table, rows, dedup_token=token)

    @app.agent(topic, name=f"sink-{table}")
    async def sink(stream):
        batching = BatchingSink(table=table, topic=topic.get_topic_name(), writer=writer,
                                max_rows=settings.sink_max_rows, max_age=settings.sink_max_age)
        async for events in stream.noack_take(settings.sink_max_rows, within=settings.sink_max_age):
            for event in events:
                msg = event.message
                try:
                    record = codec.decode(event.value, expected=subject)
                    row = mapper(record, msg.partition, msg.offset)
                except Exception as exc:  # bad input must not kill the sink, nor vanish
                    reason = getattr(exc, "reason", "sink_row_error")
                    detail = getattr(exc, "detail", None) or repr(exc)
                    dl = dead_letter("sink", reason, f"{table}: {detail}", topic=msg.topic,
                                     partition=msg.partition, offset=msg.offset, key=msg.key, payload=event.value)
                    if table == "dead_letters":  # never loop: write the undecodable dead letter directly
                        row = row_mappers.dead_letter_row(dl, msg.partition, msg.offset)
                    else:
                        stats.inc(f"dead_letter.sink.{reason}")
                        await dead_letters.send(key=b"", value=codec.encode(avro.DEAD_LETTER, dl))
                        batching.add(msg.partition, msg.offset, None, event)
                        continue
                batching.add(msg.partition, msg.offset, row, event)
            delay = 0.2
            while True:
                acked = await batching.flush_due(force=True)
                for event in acked:
                    await stream.ack(event)
                if not batching.pending():
                    break
                stats.inc(f"sink.{table}.retry")
                log.warning("ClickHouse insert into %s failed; retrying in %.1fs", table, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            stats.inc(f"sink.{table}.rows", len(events))  # records written (or dead-lettered) and acked
