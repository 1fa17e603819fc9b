"""classify: raw responses → classified topic + window deltas + dead letters, one batch at a time.

The rules are the pure step ``streams.classify.ClassifyStep``; this module is its edge: decode the batch, run
the step once, stage each changed memo and the partitions' watermarks ONCE (table ``responses-seen``, raw JSON
values), stage the outputs (classified records on the source partition — the topics are co-partitioned and
keyed alike —, one window-delta message per segment for the whole batch, ``responded`` notes for the deliver
agent, re-keyed records, dead letters), produce them as one record batch per (topic, partition) and wait
until Kafka acknowledged all of it. Only then is the input acked (streams.app.consume_records).
"""

from __future__ import annotations

import asyncio

import orjson

from schemas import codec as avro
from streams.app import Pipeline, Transient, add_timer, install_batch_agent, dead_letter
from streams.classify import ClassifyOutcome, ClassifyStep, Incoming
from streams.kafka_io import BatchOutput, StateTable, json_key, partition_for
from streams.responses import to_ms

BATCH = 2000


def watermark_key(partition: int) -> bytes:
    """The key of a raw partition's watermark in ``responses-seen`` (never a JSON string: no response id)."""
    return b"\x00wm|%d" % partition


class ClassifyView:
    """ClassifyState over the agent's tables."""

    def __init__(self, seen: StateTable, invitations) -> None:
        self.seen, self.invitations = seen, invitations

    def memo(self, response_id: str) -> dict | None:
        return self.seen.get(json_key(response_id))

    def watermark(self, partition: int) -> int:
        return self.seen.get(watermark_key(partition)) or 0

    def invitation(self, invitation_id: str) -> dict | None:
        return self.invitations.get(json_key(f"I|{invitation_id}"))


class ClassifyAgent:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.seen = StateTable(pipeline.tables["seen"])
        self.view = ClassifyView(self.seen, StateTable(pipeline.tables["invitations"]))
        settings = pipeline.settings
        self.partitions = settings.partitions
        self.step = ClassifyStep(
            dimensions=tuple(settings.dimensions), lateness_ms=settings.lateness_seconds * 1000,
            dedup_retention_ms=settings.dedup_retention_seconds * 1000,
            partition_of=lambda key: partition_for(key, self.partitions),
            encode=lambda record: pipeline.codec.encode(avro.CLASSIFIED_RESPONSE, record))
        self.names = {name: pipeline.topics[name].get_topic_name()
                      for name in ("raw", "classified", "deltas", "dead_letters", "invitations")}
        self.lock = asyncio.Lock()

    def install(self) -> None:
        install_batch_agent(self.pipeline, self, "raw", "classify", BATCH)
        add_timer(self.pipeline, "expire_seen", 300.0, self.expire)
        self.pipeline.timers["expire_seen"] = self.expire

    def prepare(self, fetched: list) -> BatchOutput:
        """One batch: decode, run the step, stage its state changes and outputs (consume_records sends them)."""
        records = [self.incoming(record) for record in fetched]
        outcome = self.step.run(records, self.view, self.pipeline.clock())
        out = self.pipeline.output()
        self.stage(outcome, out)
        return out

    async def process(self, fetched: list) -> None:
        """prepare + flush in one go (the agent's timers and tests)."""
        async with self.lock:
            out = self.prepare(fetched)
            await out.flush()

    def incoming(self, record) -> Incoming:
        """A fetched record (streams.batch_consumer.Record), decoded."""
        try:
            raw = self.pipeline.codec.decode(record.value, expected=avro.RAW_RESPONSE)
            return Incoming(record.partition, record.offset, record.key, raw, value=record.value)
        except avro.CodecError as exc:
            if exc.reason == avro.SCHEMA_REGISTRY_ERROR:
                raise Transient(exc.detail) from None
            return Incoming(record.partition, record.offset, record.key, None, (exc.reason, exc.detail), record.value)

    def stage(self, outcome: ClassifyOutcome, out: BatchOutput) -> None:
        """Everything the batch changed and produced, into ``out`` (state first: memos, then watermarks)."""
        pipeline, names, codec = self.pipeline, self.names, self.pipeline.codec
        for name, count in outcome.counts.items():
            pipeline.stats.inc(name, count)
        for rid, (partition, memo) in outcome.memos.items():
            self.seen.put(out, json_key(rid), memo, partition)
        for partition, watermark in outcome.watermarks.items():
            self.seen.put(out, watermark_key(partition), watermark, partition)
        for partition, rid, encoded in outcome.classified:
            out.add(names["classified"], partition, rid.encode(), encoded)
        for segment, items in outcome.deltas.items():
            out.add_keyed(names["deltas"], self.partitions, segment.encode(), orjson.dumps({"i": items}))
        for partition, invitation_id, note in outcome.responded:
            out.add(names["invitations"], partition, invitation_id.encode(), orjson.dumps(note))
        for key, value in outcome.rekeyed:
            out.add_keyed(names["raw"], self.partitions, key, value)
        for refused in outcome.refused:
            rec = refused.record
            record = dead_letter("classify", refused.reason, refused.detail, topic=names["raw"],
                                 partition=rec.partition, offset=rec.offset, key=rec.key, payload=refused.payload)
            pipeline.stats.inc(f"dead_letter.classify.{refused.reason}")
            out.add_keyed(names["dead_letters"], self.partitions, (record["key"] or "").encode(),
                          codec.encode(avro.DEAD_LETTER, record))

    async def expire(self) -> None:
        """Forget memos not written for the dedup retention (processing time, so imported history is not
        forgotten at once). A version arriving later and older than the memory is refused by the step
        (``older_than_dedup_memory``): an answer can never be counted again on a forgotten day."""
        oldest = to_ms(self.pipeline.clock()) - self.pipeline.settings.dedup_retention_seconds * 1000
        expired = 0
        keys = [key for key in self.seen.data.keys() if key[:1] == b'"']
        for start in range(0, len(keys), 5000):
            async with self.lock:  # a chunk at a time, on the current values: the agent writes the same keys
                out = self.pipeline.output()
                for key in keys[start:start + 5000]:
                    raw = self.seen.get_raw(key)
                    memo = orjson.loads(raw) if raw else None
                    if memo is not None and memo.get("w", memo["t"]) < oldest:
                        self.seen.delete(out, key, memo["src"][0])
                        expired += 1
                await out.flush()
            await asyncio.sleep(0)  # do not starve heartbeats on a big table
        self.pipeline.stats.inc("classify.forgotten", expired)

def install_classify(pipeline: Pipeline) -> None:
    ClassifyAgent(pipeline).install()
