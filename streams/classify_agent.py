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
from streams.app import Pipeline, Transient, add_timer, dead_letter, install_batch_agent, sweep_keys
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
                      for name in ("raw", "classified", "deltas", "invitations")}
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
        """Everything the batch changed and produced, into ``out`` (the state — memos, then the watermarks — goes
        to Kafka after the outputs: BatchOutput.flush)."""
        pipeline, names = self.pipeline, self.names
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
            pipeline.stage_dead_letter(out, dead_letter(
                "classify", refused.reason, refused.detail, topic=names["raw"], partition=rec.partition,
                offset=rec.offset, key=rec.key, payload=refused.payload))

    async def expire(self) -> None:
        """Forget memos not written for the dedup retention (processing time, so imported history is not
        forgotten at once). A version arriving later and older than the memory is refused by the step
        (``older_than_dedup_memory``): an answer can never be counted again on a forgotten day."""
        oldest = to_ms(self.pipeline.clock()) - self.pipeline.settings.dedup_retention_seconds * 1000

        def forget(out: BatchOutput, key: bytes, raw: bytes) -> int:
            memo = orjson.loads(raw)
            if memo.get("w", memo["t"]) >= oldest:
                return 0
            self.seen.delete(out, key, memo["src"][0])
            return 1

        keys = [key for key in self.seen.data.keys() if key[:1] == b'"']  # memos (watermarks are not JSON keys)
        expired = await sweep_keys(self.pipeline, "expire_seen", self.seen, keys, self.lock, forget)
        self.pipeline.stats.inc("classify.forgotten", expired)


def install_classify(pipeline: Pipeline) -> None:
    ClassifyAgent(pipeline).install()
