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
        its invitation id), under the classify agent's lock, flushed before it returns (an erased memo keeps its
        ``w``: the expiry index lists it where it was). Returns memos changed."""
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
        self.index = ExpiryIndex()
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
            app.on_partitions_revoked.connect(self.index.on_rebalance, weak=False)
            app.on_partitions_assigned.connect(self.index.on_rebalance, weak=False)
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
        pipeline, names, index = self.pipeline, self.names, self.index
        for name, count in outcome.counts.items():
            pipeline.stats.inc(name, count)
        for rid, (partition, memo) in outcome.memos.items():
            key = json_key(rid)
            self.seen.put(out, key, memo, partition)
            index.add(key, written_ms(memo))
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
        must not be extended from a half-recovered view, nor written for a partition that moved away.

        Which memos are read comes from the ``ExpiryIndex``: once it is complete, only the keys of the hours that
        may hold a memo due (usually none, or one hour's writes); the first settled pass after a start or a
        rebalance reads every memo, as all passes did before the index, and completes it. Stats:
        ``classify.forgotten``, ``classify.expiry_visited`` (memos read), ``classify.expiry_full_scans``."""
        if not self.settled():
            return
        oldest = to_ms(self.pipeline.clock()) - self.pipeline.settings.dedup_retention_seconds * 1000
        index, generation = self.index, self.index.generation

        def undisturbed() -> bool:  # settled, and no rebalance began since the pass started
            return self.settled() and index.generation == generation

        full = not index.complete
        if full:  # every memo (other keys start with NUL); what is not forgotten is listed again
            hours, keys = None, index.take_all([key for key in self.seen.data.keys() if key[:1] == b'"'])
        else:
            hours, keys = index.take_due(oldest)
        expiry = MemoExpiry(self.seen, self.registers, oldest, self.active_partitions(), undisturbed,
                            index.add if full else index.keeper(hours))
        try:
            expired = await sweep_keys(self.pipeline, "expire_seen", self.seen, keys, self.lock, expiry.visit,
                                       expiry.finish)
        except BaseException:  # keys taken out of the index may not all have been visited: rebuild it
            index.complete = False
            raise
        finally:
            self.pipeline.stats.inc("classify.expiry_visited", expiry.visited)
        if full and index.generation == generation:
            index.complete = True
        self.pipeline.stats.inc("classify.expiry_full_scans", full)
        self.pipeline.stats.inc("classify.forgotten", expired)


HOUR_MS = 3_600_000


def written_ms(memo: dict) -> int:
    """When a memo was last written (``w``; a memo written before ``w`` existed: its ``t``)."""
    return memo.get("w", memo["t"])


class ExpiryIndex:
    """Where the expiry pass looks: the keys of the memos this worker wrote, bucketed by the hour of their ``w``
    (``buckets``: hour number since the epoch → keys), so a pass reads only the memos of the hours that may be
    due instead of every memo.

    Lazy deletion: an overwritten memo leaves its entry in its old hour (and a memo written twice in one hour is
    listed twice). The pass re-reads each memo it takes out of the index and forgets it only if its current
    ``w`` is due; a memo it does not forget is listed again only if the hour of its current ``w`` is one the
    pass took out (``keeper``: else it is listed under that later hour already), one deleted meanwhile is
    dropped. So correctness never depends on the index being free of stale entries, only on every memo being
    listed under the hour of its current ``w``.

    Memos recovered from the changelog (start, rebalance) never pass through the agent: ``complete`` is false
    from the start and after every rebalance (``invalidate`` also drops the buckets and bumps ``generation``),
    and the next settled pass reads every memo of the table (``take_all``) and lists what it does not forget;
    only a full pass during which no rebalance began (same ``generation``) makes the index complete again.

    Memory (tracemalloc, CPython 3.11, 1 M memos of 36-character ids): 8.3 bytes per listed memo whose key
    object is the table's own — every memo listed by a full pass, and every memo the agent wrote for the first
    time —, i.e. one list slot: ~8 MB per million memos, the hours are few (2 160 for a 90-day memory). A memo
    the agent overwrote (an edit, an erasure) is listed with a key object of its own (the table keeps its first
    one): 79 bytes instead of 8 until it is forgotten or a full pass lists it again, and its stale entry (8
    bytes) stays until its old hour is due. A full pass holds the list of every memo key on top (8 bytes each,
    as before the index)."""

    def __init__(self) -> None:
        self.buckets: dict[int, list[bytes]] = {}
        self.complete = False  # every memo of the table is listed (after a full pass)
        self.generation = 0  # bumped by every rebalance

    def add(self, key: bytes, written: int) -> None:
        """List a memo the agent just wrote (``written``: its ``w``, ms)."""
        bucket = self.buckets.get(written // HOUR_MS)
        if bucket is None:
            self.buckets[written // HOUR_MS] = [key]
        else:
            bucket.append(key)

    def keeper(self, hours: set[int]):
        """What an index pass does with a memo it read and did not forget, ``keep(key, written_ms)``: list it
        again if the pass took out the hour of its current ``w`` (``hours``), else nothing — it is listed under
        that later hour already (a full pass lists every such memo: ``add``)."""

        def keep(key: bytes, written: int) -> None:
            if written // HOUR_MS in hours:
                self.add(key, written)
        return keep

    def take_all(self, keys: list[bytes]) -> list[bytes]:
        """A full pass over ``keys`` (every memo of the table) begins: the buckets are dropped (the pass lists
        again what it does not forget; writes from now on are added as usual)."""
        self.buckets = {}
        return keys

    def take_due(self, oldest_ms: int) -> tuple[set[int], list[bytes]]:
        """Take out the hours that may hold a memo written before ``oldest_ms`` (the one holding ``oldest_ms``
        included: it is read every pass until it is past); returns those hours and their distinct keys."""
        hours = {hour for hour in self.buckets if hour * HOUR_MS < oldest_ms}
        keys = dict.fromkeys(key for hour in sorted(hours) for key in self.buckets.pop(hour))
        return hours, list(keys)

    def invalidate(self) -> None:
        """Partitions were revoked or assigned (the table recovers memos): drop everything, rebuild."""
        self.buckets = {}
        self.complete = False
        self.generation += 1

    async def on_rebalance(self, sender=None, *args, **kwargs) -> None:
        self.invalidate()


class MemoExpiry:
    """One expiry pass: ``visit`` picks the memos to forget, ``finish`` stages a sweep chunk's changes — the
    register chunks first, then the memos' tombstones (same changelog partition, in this order: a crash between
    them leaves an id registered and still remembered, which is harmless, never forgotten unregistered). Memos
    of partitions not in ``partitions`` (None: all) are left alone, and nothing is picked once ``settled()``
    turns false (a rebalance began during the pass). Every memo read and not picked is passed to
    ``keep(key, written_ms)`` (the ExpiryIndex); ``visited`` counts the memos read."""

    def __init__(self, seen: StateTable, registers: ForgottenRegisters, oldest_ms: int,
                 partitions: set[int] | None, settled, keep=None) -> None:
        self.seen, self.registers, self.oldest_ms = seen, registers, oldest_ms
        self.partitions, self.settled, self.keep = partitions, settled, keep
        self.picked: dict[int, list[tuple[bytes, str]]] = defaultdict(list)  # partition → (key, response id)
        self.visited = 0

    def visit(self, out: BatchOutput, key: bytes, raw: bytes) -> int:
        self.visited += 1
        memo = orjson.loads(raw)
        partition = memo["src"][0]
        written = written_ms(memo)
        if written >= self.oldest_ms or not self.settled() or (
                self.partitions is not None and partition not in self.partitions):
            if self.keep is not None:
                self.keep(key, written)
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
