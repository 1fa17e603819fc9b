"""dispatch, cap, release and deliver: trigger events → contact rules → org cap → invitations sent.

The edges of the pure steps (streams.dispatch_steps, streams.deliver): decode a batch, run the step once, write
each changed state key once per batch (``StateTable`` via ``BatchOutput``), produce the outputs as one record
batch per (topic, partition) and ack the input only after Kafka acknowledged all of it::

    npsflow.triggers ──dispatch──────────────────────► npsflow.invitations ──deliver──► channels
    (Avro, key <org>|<contact>)  │ (program with a cap)  ▲ (JSON, key invitation id)   + npsflow.dispatches
    table dispatch-state         ▼                       │ invite     table invitations (+ schedule, timer)
    npsflow.dispatch.candidates ──cap────────────────────┘
    (JSON, key <org>|<program>)    table dispatch-caps   └──► refused: cap record + npsflow.dispatch.releases
                                                              (key <org>|<contact>) ──release──► dispatch-state

Every trigger gets exactly one dispatch record (stage 1's suppression, the cap stage's ``cap``, or the deliver
stage's record of the invitation). Sends are **at most once**: a chunk of sends is marked ``sending`` in the
invitations table and that mark is durable (acknowledged by Kafka) before any of it is handed to a channel; a
command that finds an invitation still ``sending`` (the worker died in between) records
``failed``/``send_interrupted`` instead of sending again (idempotent channels are re-sent). A crash leaves at
most one chunk (``SEND_CHUNK``) per worker in doubt.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from schemas import codec as avro
from streams.app import (Pipeline, Transient, add_timer, consume_record_batches, dead_letter, run_batch,
                         sweep_keys)
from streams.deliver import DeliverBatch, Send, slot_of
from streams.dispatch import REMINDER, DispatchBook
from streams.dispatch_steps import (CAP_BATCH, CapStep, DecideStep, Output, Overlay, Refusal, StepOutcome,
                                    TriggerIn)
from streams.kafka_io import BatchOutput, StateTable, json_key, partition_for
from streams.responses import to_ms
from streams.triggers import redact, trigger_key

log = logging.getLogger("npsflow.dispatch")

BATCH = 1000  # triggers / commands per batch
SEND_CHUNK = 256  # sends marked "sending" at a time (made durable, then sent concurrently, then recorded)
OUTPUTS_KEPT_MS = 3600 * 1000  # a trigger's outputs are kept this long for redelivery, then only its id


def redact_bytes(value: bytes) -> str | None:
    """An undecodable command as text for its dead letter, addresses removed (None if not even text)."""
    try:
        return redact(value.decode("utf-8"))
    except (UnicodeDecodeError, AttributeError):
        return None


def overlay(table: StateTable) -> Overlay:
    return Overlay(lambda key: table.get(json_key(key)))


def stage_changes(table: StateTable, changes: dict, out: BatchOutput) -> None:
    """Each changed key once: its latest value (or a tombstone) on its partition's changelog."""
    for key, (partition, value) in changes.items():
        if value is None:
            table.delete(out, json_key(key), partition)
        else:
            table.put(out, json_key(key), value, partition)


class DispatchEdge:
    """What every dispatch agent shares: topic names, the partitioner, dead letters, stats."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.partitions = pipeline.settings.partitions
        self.names = {name: topic.get_topic_name() for name, topic in pipeline.topics.items()}

    def partition_of(self, key: bytes) -> int:
        return partition_for(key, self.partitions)

    async def flush(self, out: BatchOutput, name: str) -> None:
        """Send ``out`` until Kafka took it: a retry re-sends the very same records, state changes included
        (recomputing would find them applied in memory already and stage nothing)."""
        await run_batch(name, self.pipeline.stats, out.flush)

    def encode_record(self, record: dict) -> bytes:
        return self.pipeline.codec.encode(avro.DISPATCHED_MESSAGE, record)

    def stage_outcome(self, outcome: StepOutcome, out: BatchOutput, stage: str, source: str) -> None:
        for name, count in outcome.counts.items():
            self.pipeline.stats.inc(name, count)
        for o in outcome.outputs:
            self.add(o, out)
        for refusal in outcome.refused:
            self.dead_letter(out, stage, refusal, source)

    def add(self, o: Output, out: BatchOutput) -> None:
        if o.partition is None:
            out.add_keyed(self.names[o.name], self.partitions, o.key, o.value)
        else:
            out.add(self.names[o.name], o.partition, o.key, o.value)

    def dead_letter(self, out: BatchOutput, stage: str, r: Refusal, source: str) -> None:
        self.pipeline.stage_dead_letter(out, dead_letter(stage, r.reason, r.detail, topic=self.names[source],
                                                         partition=r.partition, offset=r.offset, key=r.key,
                                                         payload=r.payload))


class DispatchAgent(DispatchEdge):
    """Stage 1 (triggers, per contact) and the releases from the cap stage: one table, one lock."""

    def __init__(self, pipeline: Pipeline, book: DispatchBook, lock: asyncio.Lock) -> None:
        super().__init__(pipeline)
        self.state = StateTable(pipeline.tables["dispatch_state"])
        self.step = DecideStep(book, self.partition_of, self.encode_record)
        self.lock = lock

    def install(self) -> None:
        app, pipeline = self.pipeline.app, self.pipeline

        @app.agent(pipeline.topics["triggers"], name="dispatch")
        async def dispatch(stream):
            await consume_record_batches(pipeline, "triggers", "dispatch", BATCH, self.process, self.lock)

        @app.agent(pipeline.topics["releases"], name="release")
        async def release(stream):
            await consume_record_batches(pipeline, "releases", "release", BATCH, self.release, self.lock)

        pipeline.agents.update(dispatch=dispatch, release=release)

    def incoming(self, event) -> TriggerIn:
        msg = event.message
        try:
            trigger = self.pipeline.codec.decode(event.value, expected=avro.TRIGGER_EVENT)
        except avro.CodecError as exc:
            if exc.reason == avro.SCHEMA_REGISTRY_ERROR:
                raise Transient(exc.detail) from None
            return TriggerIn(msg.partition, msg.offset, msg.key, event.value, None, (exc.reason, exc.detail))
        return TriggerIn(msg.partition, msg.offset, msg.key, event.value, trigger)

    async def process(self, events: list) -> None:
        items = [self.incoming(event) for event in events]
        async with self.lock:
            state = overlay(self.state)
            outcome = self.step.run(items, state, self.pipeline.clock())
            out = self.pipeline.output()
            stage_changes(self.state, state.drain(), out)
            self.stage_outcome(outcome, out, "dispatch", "triggers")
            await self.flush(out, "dispatch")

    async def release(self, events: list) -> None:
        async with self.lock:
            state, outcome = overlay(self.state), StepOutcome()
            now = self.pipeline.clock()
            for event in events:
                try:
                    self.step.note(orjson.loads(event.value), event.message.partition, event.message.offset, state,
                                   now, outcome)
                except Exception as exc:  # an internal topic, but a malformed note must not stop the agent
                    msg = event.message
                    outcome.refused.append(Refusal(msg.partition, msg.offset, msg.key, "invalid_release",
                                                   f"{type(exc).__name__}: {exc}", None))
            out = self.pipeline.output()
            stage_changes(self.state, state.drain(), out)
            self.stage_outcome(outcome, out, "dispatch", "releases")
            await self.flush(out, "release")


class CapAgent(DispatchEdge):
    """The cap stage: candidates of one program on one partition, counted per org-local day."""

    def __init__(self, pipeline: Pipeline, book: DispatchBook, lock: asyncio.Lock) -> None:
        super().__init__(pipeline)
        self.state = StateTable(pipeline.tables["dispatch_caps"])
        self.step = CapStep(book, self.encode_record)
        self.lock = lock

    def install(self) -> None:
        pipeline = self.pipeline

        @pipeline.app.agent(pipeline.topics["candidates"], name="cap")
        async def cap(stream):
            await consume_record_batches(pipeline, "candidates", "cap", CAP_BATCH, self.process, self.lock)

        pipeline.agents["cap"] = cap

    async def process(self, events: list) -> None:
        candidates, refused = [], []
        for event in events:
            msg = event.message
            try:
                candidate = orjson.loads(event.value)
                candidate["invite"]["inv"]  # noqa: B018 (shape check)
                if candidate.get("op") != "reward":  # a reward (streams.promoter) claims a code, counts no cap
                    candidate["day"], candidate["cap"]  # noqa: B018
                candidates.append((msg.partition, candidate))
            except (ValueError, TypeError, KeyError) as exc:
                refused.append(Refusal(msg.partition, msg.offset, msg.key, "invalid_candidate",
                                       f"{type(exc).__name__}: {exc}", redact_bytes(event.value)))
        async with self.lock:
            state = overlay(self.state)
            outcome = self.step.run(candidates, state, self.pipeline.clock())
            outcome.refused.extend(refused)
            out = self.pipeline.output()
            stage_changes(self.state, state.drain(), out)
            self.stage_outcome(outcome, out, "cap", "candidates")
            await self.flush(out, "cap")


class DeliverAgent(DispatchEdge):
    """The deliver stage (streams.deliver) and its schedule timer, sharing one lock over the invitations."""

    def __init__(self, pipeline: Pipeline, book: DispatchBook, channels: dict) -> None:
        super().__init__(pipeline)
        self.book, self.channels = book, channels
        self.table = StateTable(pipeline.tables["invitations"])
        self.link_ttl_ms = int(book.link_ttl.total_seconds() * 1000)
        self.unsent: set[tuple[str, str]] = set()  # marked "sending" by this process, not handed to a channel
        self.lock = asyncio.Lock()

    def install(self) -> None:
        pipeline = self.pipeline

        @pipeline.app.agent(pipeline.topics["invitations"], name="deliver")
        async def deliver(stream):
            await consume_record_batches(pipeline, "invitations", "deliver", BATCH, self.process, self.lock)

        add_timer(pipeline, "fire_due", 1.0, self.fire_due)
        pipeline.agents["deliver"] = deliver
        pipeline.timers["fire_due"] = self.fire_due

    def idempotent(self, channel: str) -> bool:
        return bool(getattr(self.channels.get(channel), "idempotent", False))

    def new_batch(self) -> DeliverBatch:
        return DeliverBatch(self.book, overlay(self.table), self.pipeline.clock(), self.idempotent,
                            self.link_ttl_ms, self.unsent)

    async def process(self, events: list) -> None:
        async with self.lock:
            batch, out = self.new_batch(), self.pipeline.output()
            for event in events:
                self.command(event, batch, out)
            queue = list(batch.sends.values())
            for start in range(0, len(queue), SEND_CHUNK):  # a crash leaves at most one chunk in doubt
                batch.now = self.pipeline.clock()
                chunk = batch.mark(queue[start:start + SEND_CHUNK])
                self.stage(batch, out)
                await self.flush(out, "deliver")  # the marks are durable (with everything staged before them)
                results = await self.send_all(chunk)
                batch.now = self.pipeline.clock()
                for send, result in zip(chunk, results):
                    if isinstance(result, BaseException):
                        log.error("deliver: channel %s raised %r", send.inv["channel"], result)
                    batch.finish(send, result)
            self.stage(batch, out)
            await self.flush(out, "deliver")
            if batch.erased:
                await self.erase_memos(batch.erased)

    async def erase_memos(self, erased: list[tuple[int, str, int]]) -> None:
        """The classify memos of erased invitations' answers (``responses-seen``, written by the classify agent
        under its own lock: streams.classify_agent.ClassifyView.erase_memos). After the invitations' tombstones
        are durable and before the erase notes are acked: a crash in between redelivers the notes, and both
        steps are idempotent."""
        classify = self.pipeline.batch_agents.get("classify")
        if classify is not None:
            await classify.view.erase_memos(self.pipeline, erased, classify.lock)

    def command(self, event, batch: DeliverBatch, out: BatchOutput) -> None:
        msg = event.message
        try:
            command = orjson.loads(event.value)
            op, inv_id = command["op"], command["inv"]
        except (ValueError, TypeError, KeyError) as exc:
            self.dead_letter(out, "deliver", Refusal(msg.partition, msg.offset, msg.key, "invalid_command",
                                                     f"{type(exc).__name__}: {exc}", redact_bytes(event.value)),
                             "invitations")
            return
        try:
            batch.command(op, inv_id, command, msg.partition)
        except Exception as exc:
            log.exception("deliver: internal error")
            self.pipeline.stats.inc("deliver.internal_error")
            self.dead_letter(out, "deliver", Refusal(msg.partition, msg.offset, msg.key, "deliver_internal_error",
                                                     f"{type(exc).__name__}: {exc}", redact(command)), "invitations")

    def stage(self, batch: DeliverBatch, out: BatchOutput) -> None:
        """The batch's changed keys (once each) and its records, into ``out``."""
        stage_changes(self.table, batch.state.drain(), out)
        records, batch.records = batch.records, []
        for inv, kind in records:
            record = self.book.invitation_record(inv, kind=kind)
            out.add_keyed(self.names["dispatches"], self.partitions, record["dispatch_id"].encode(),
                          self.encode_record(record))
        notes, batch.notes = batch.notes, []
        for note in notes:  # to the contact's stage-1 partition (streams.promoter)
            out.add_keyed(self.names["releases"], self.partitions,
                          trigger_key(note["org"], note["to"]["contact_id"]), orjson.dumps(note))
        counts, batch.counts = batch.counts, type(batch.counts)(int)
        for name, count in counts.items():
            self.pipeline.stats.inc(name, count)

    async def send_all(self, chunk: list[Send]) -> list:
        async def one(send: Send):
            self.unsent.discard((send.inv["inv"], send.kind))  # from here on, the outcome of a crash is unknown
            channel = self.channels.get(send.inv["channel"])
            if channel is None:
                return None
            return await channel.send(self.book.channel_invitation(send.inv, reminder=send.kind == REMINDER))

        return await asyncio.gather(*(one(send) for send in chunk), return_exceptions=True)

    # --------------------------------------------------------------------------------------- schedule
    def recovering(self) -> bool:
        """While partitions move or tables are rebuilt from their changelogs the state is incomplete: a timer
        acting on it could skip a bucket it cannot see yet, or forget what is still being restored."""
        app = self.pipeline.app
        return bool(getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))

    async def fire_due(self, partitions=None) -> int:
        """Emit ``due`` commands for every bucket whose slot has ended, partition by partition, then forget the
        buckets. Visits only buckets by their key (slot after slot since the last visit): no state scan."""
        if partitions is None:
            if self.recovering():
                return 0
            name = self.names["invitations"]
            partitions = sorted(tp.partition for tp in self.pipeline.app.assignor.assigned_actives()
                                if tp.topic == name)
        fired = 0
        async with self.lock:
            now_slot = slot_of(to_ms(self.pipeline.clock()))
            for partition in partitions:
                fired += await self.fire_partition(partition, now_slot)
        self.pipeline.stats.inc("deliver.due_fired", fired)
        return fired

    async def fire_partition(self, partition: int, now_slot: int) -> int:
        lkey = json_key(f"L|{partition}")
        last = self.table.get(lkey)
        if last is None or last >= now_slot - 1:
            return 0
        out, emptied, fired = self.pipeline.output(), [], 0
        for i, slot in enumerate(range(last + 1, now_slot)):
            qkey = json_key(f"Q|{partition}|{slot}")
            for what, inv_id in self.table.get(qkey) or ():
                out.add_keyed(self.names["invitations"], self.partitions, inv_id.encode(),
                              orjson.dumps({"op": "due", "what": what, "inv": inv_id}))
                fired += 1
            if self.table.get_raw(qkey) is not None:
                emptied.append(qkey)
            if i % 5000 == 4999:
                await asyncio.sleep(0)
        await self.flush(out, "deliver.fire_due")  # the commands are durable before their buckets are forgotten
        for qkey in emptied:
            self.table.delete(out, qkey, partition)
        self.table.put(out, lkey, now_slot - 1, partition)
        await self.flush(out, "deliver.fire_due")
        return fired


class StateExpiry:
    """Forgets, every few minutes: event ids older than the dedup retention (their outputs after an hour),
    contact states whose quarantine has passed, the cap stage's memos older than the dedup retention."""

    def __init__(self, pipeline: Pipeline, book: DispatchBook, dispatch: DispatchAgent, cap: CapAgent) -> None:
        self.pipeline, self.book, self.dispatch, self.cap = pipeline, book, dispatch, cap

    def install(self) -> None:
        add_timer(self.pipeline, "expire_dispatch_state", 300.0, self.expire)
        self.pipeline.timers["expire_dispatch_state"] = self.expire

    async def expire(self) -> int:
        app = self.pipeline.app
        if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
            return 0
        expired = await self.sweep(self.dispatch.state, self.dispatch.lock, self.stage_one)
        expired += await self.sweep(self.cap.state, self.cap.lock, self.cap_memo)
        self.pipeline.stats.inc("dispatch.forgotten", expired)
        return expired

    async def sweep(self, table: StateTable, lock: asyncio.Lock, rule) -> int:
        now = self.pipeline.clock()
        now_ms = to_ms(now)
        retention_ms = self.book.dedup_retention.total_seconds() * 1000

        def visit(out: BatchOutput, raw_key: bytes, raw: bytes) -> int:
            return rule(table, out, orjson.loads(raw_key), orjson.loads(raw), raw_key, now, now_ms, retention_ms)

        return await sweep_keys(self.pipeline, "dispatch.expiry", table, list(table.data.keys()), lock, visit)

    def stage_one(self, table, out, key: str, value, raw_key, now, now_ms, retention_ms) -> int:
        if not isinstance(value, dict):
            return 0
        if key.startswith(("E|", "P|")):
            partition = value["src"][0]
            if value["t"] < now_ms - retention_ms:
                table.delete(out, raw_key, partition)
                return 1
            if value.get("o") and value["t"] < now_ms - OUTPUTS_KEPT_MS:
                table.put(out, raw_key, {**value, "o": []}, partition)
        elif key.startswith("PQ|"):
            if value.get("u", 0) < now_ms:
                table.delete(out, raw_key, value["p"])
                return 1
        elif key.startswith("C|") and value.get("p") is not None:
            from streams.contact_rules import ContactState

            last = ContactState.from_dict(value).last_invited_at
            if last is None or last + self.book.quarantine_of(key.split("|", 2)[1]) < now:
                table.delete(out, raw_key, value["p"])
                return 1
        return 0

    @staticmethod
    def cap_memo(table, out, key: str, value, raw_key, now, now_ms, retention_ms) -> int:
        if key.startswith("A|") and isinstance(value, dict) and value["t"] < now_ms - retention_ms:
            table.delete(out, raw_key, value["p"])
            return 1
        return 0


def install_dispatch(pipeline: Pipeline, book: DispatchBook, channels: dict) -> None:
    lock = asyncio.Lock()
    dispatch = DispatchAgent(pipeline, book, lock)
    cap = CapAgent(pipeline, book, asyncio.Lock())
    dispatch.install()
    cap.install()
    DeliverAgent(pipeline, book, channels).install()
    StateExpiry(pipeline, book, dispatch, cap).install()
