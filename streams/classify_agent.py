"""classify: raw responses → classified topic + window deltas + dead letters, one batch at a time.

The rules are the pure step ``streams.classify.ClassifyStep``; this module is its edge: decode the batch, run
the step once, stage each changed memo and the partitions' watermarks ONCE (table ``responses-seen``, raw JSON
values), stage the outputs (classified records on the source partition — the topics are co-partitioned and
keyed alike —, one window-delta message per segment for the whole batch, ``responded`` notes for the deliver
agent, the answers the cases agent must see — keyed by the contact —, re-keyed records, dead letters), produce them as one record batch per (topic, partition) and wait
until Kafka acknowledged all of it. Only then is the input acked (streams.app.consume_records).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson

from schemas import codec as avro
from streams.app import (Pipeline, Transient, add_timer, dead_letter, install_batch_agent, owned_partitions,
                         run_batch, settled, sweep_keys)
from streams import text
from streams.cases import qualifier
from streams.classify import ClassifyOutcome, ClassifyStep, Incoming, erased_memo
from streams.forgotten import ForgottenRegister
from streams.kafka_io import BatchOutput, StateTable, json_key, partition_for
from streams.responses import to_ms

BATCH = 2000


def watermark_key(partition: int) -> bytes:
    """The key of a raw partition's watermark in ``responses-seen`` (never a JSON string: no response id)."""
    return b"\x00wm|%d" % partition


class ForgottenRegisters:
    """The registers of forgotten answers (streams.forgotten) of the partitions this worker holds, each loaded
    from ``responses-seen`` on first use and checked against the table before every use (``current``): a
    partition that comes back may have been extended by another worker, a table may still be recovering."""

    def __init__(self, seen: StateTable) -> None:
        self.seen = seen
        self.loaded: dict[int, ForgottenRegister] = {}

    def of(self, partition: int) -> ForgottenRegister:
        register = self.loaded.get(partition)
        if register is None or not register.current(self.seen.get_raw):
            register = self.loaded[partition] = ForgottenRegister(partition, self.seen.get_raw)
        return register

    async def on_rebalance(self, sender=None, *args, **kwargs) -> None:
        self.loaded.clear()


class ClassifyView:
    """ClassifyState over the agent's tables."""

    def __init__(self, seen: StateTable, invitations, registers: ForgottenRegisters) -> None:
        self.seen, self.invitations, self.registers = seen, invitations, registers

    def forgotten(self, partition: int, response_id: str) -> bool:
        return response_id in self.registers.of(partition)

    def memo(self, response_id: str) -> dict | None:
        return self.seen.get(json_key(response_id))

    def watermark(self, partition: int) -> int:
        return self.seen.get(watermark_key(partition)) or 0

    def invitation(self, invitation_id: str) -> dict | None:
        return self.invitations.get(json_key(f"I|{invitation_id}"))

    def invitation_erased(self, invitation_id: str) -> bool:
        return self.invitations.get_raw(json_key(f"Z|{invitation_id}")) is not None

    async def erase_memos(self, pipeline: Pipeline, erased: list[tuple[int, str, int]], lock: asyncio.Lock) -> int:
        """Strip the memos of erased answers (streams.classify.erased_memo) — called by the deliver agent for
        the invitations it erased (same partition: raw and invitations are co-partitioned, an answer's key is
        its invitation id), under the classify agent's lock, flushed before it returns. Returns memos changed."""
        async with lock:
            out, changed = pipeline.output(), 0
            for partition, rid, at in erased:
                memo = self.memo(rid)
                if memo is not None and memo.get("x") is None:
                    self.seen.put(out, json_key(rid), erased_memo(memo, at), partition)
                    changed += 1
            if changed:
                await run_batch("classify.erase", pipeline.stats, out.flush)
        pipeline.stats.inc("classify.memos_erased", changed)
        return changed


class ClassifyAgent:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.seen = StateTable(pipeline.tables["seen"])
        self.registers = ForgottenRegisters(self.seen)
        self.view = ClassifyView(self.seen, StateTable(pipeline.tables["invitations"]), self.registers)
        settings = pipeline.settings
        self.partitions = settings.partitions
        self.step = ClassifyStep(
            dimensions=tuple(settings.dimensions), lateness_ms=settings.lateness_seconds * 1000,
            dedup_retention_ms=settings.dedup_retention_seconds * 1000,
            partition_of=lambda key: partition_for(key, self.partitions),
            encode=lambda record: pipeline.codec.encode(avro.CLASSIFIED_RESPONSE, record), analyse=text.analyse,
            wants_case=qualifier(pipeline.follow_up.cases) if pipeline.follow_up is not None else None)
        self.names = {name: pipeline.topics[name].get_topic_name()
                      for name in ("raw", "classified", "deltas", "invitations", "case_events")}
        self.lock = asyncio.Lock()

    def install(self) -> None:
        install_batch_agent(self.pipeline, self, "raw", "classify", BATCH)
        add_timer(self.pipeline, "expire_seen", 300.0, self.expire)
        app = self.pipeline.app
        if hasattr(app, "on_partitions_revoked"):
            app.on_partitions_revoked.connect(self.registers.on_rebalance, weak=False)
            app.on_partitions_assigned.connect(self.registers.on_rebalance, weak=False)
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
        for route, event in outcome.case_events:
            out.add_keyed(names["case_events"], self.partitions, route.encode(), orjson.dumps(event))
        for key, value in outcome.rekeyed:
            out.add_keyed(names["raw"], self.partitions, key, value)
        for refused in outcome.refused:
            rec = refused.record
            pipeline.stage_dead_letter(out, dead_letter(
                "classify", refused.reason, refused.detail, topic=names["raw"], partition=rec.partition,
                offset=rec.offset, key=rec.key, payload=refused.payload))

    def settled(self) -> bool:
        return settled(self.pipeline.app)

    def active_partitions(self) -> set[int] | None:
        """The raw partitions this worker actively owns now (None: every partition — see owned_partitions)."""
        return owned_partitions(self.pipeline.app, self.names["raw"])

    async def expire(self) -> None:
        """Forget memos not written for the dedup retention (processing time, so imported history is not
        forgotten at once), registering their ids as forgotten first (streams.forgotten): a version arriving
        later is refused by the step (``edit_after_dedup_memory``; one older than the memory:
        ``older_than_dedup_memory``), so an answer can never be counted again after it was forgotten. Only the
        partitions this worker actively owns, and never while a rebalance or a table recovery runs: a register
        must not be extended from a half-recovered view, nor written for a partition that moved away."""
        if not self.settled():
            return
        oldest = to_ms(self.pipeline.clock()) - self.pipeline.settings.dedup_retention_seconds * 1000
        expiry = MemoExpiry(self.seen, self.registers, oldest, self.active_partitions(), self.settled)
        keys = [key for key in self.seen.data.keys() if key[:1] == b'"']  # memos (other keys start with NUL)
        expired = await sweep_keys(self.pipeline, "expire_seen", self.seen, keys, self.lock, expiry.visit,
                                   expiry.finish)
        self.pipeline.stats.inc("classify.forgotten", expired)


class MemoExpiry:
    """One expiry pass: ``visit`` picks the memos to forget, ``finish`` stages a sweep chunk's changes — the
    register chunks first, then the memos' tombstones (same changelog partition, in this order: a crash between
    them leaves an id registered and still remembered, which is harmless, never forgotten unregistered). Memos
    of partitions not in ``partitions`` (None: all) are left alone, and nothing is picked once ``settled()``
    turns false (a rebalance began during the pass)."""

    def __init__(self, seen: StateTable, registers: ForgottenRegisters, oldest_ms: int,
                 partitions: set[int] | None, settled) -> None:
        self.seen, self.registers, self.oldest_ms = seen, registers, oldest_ms
        self.partitions, self.settled = partitions, settled
        self.picked: dict[int, list[tuple[bytes, str]]] = defaultdict(list)  # partition → (key, response id)

    def visit(self, out: BatchOutput, key: bytes, raw: bytes) -> int:
        memo = orjson.loads(raw)
        partition = memo["src"][0]
        if memo.get("w", memo["t"]) >= self.oldest_ms or not self.settled() or (
                self.partitions is not None and partition not in self.partitions):
            return 0
        self.picked[partition].append((key, orjson.loads(key)))
        return 1

    def finish(self, out: BatchOutput) -> None:
        for partition, picked in self.picked.items():
            for key, value in self.registers.of(partition).add(rid for _, rid in picked).items():
                self.seen.put_raw(out, key, value, partition)
            for key, _ in picked:
                self.seen.delete(out, key, partition)
        self.picked.clear()


def install_classify(pipeline: Pipeline) -> None:
    ClassifyAgent(pipeline).install()
