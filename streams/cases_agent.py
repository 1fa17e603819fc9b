"""cases: qualifying answers and owners' commands → follow-up cases, one batch at a time (streams.cases is the
pure state machine; this is its edge).

    npsflow.cases.events ──cases──► npsflow.cases          (Avro io.npsflow.Case, key case_id, compacted) ──sink──► ClickHouse cases
    (JSON, key <org>|<contact>)  ├─► npsflow.notifications (JSON, key idempotency key) ──notify──► webhook / e-mail
    table cases                  └─► npsflow.deadletters   (refused commands, bad events)

Input: classify sends every answer that may open, join or resolve a case (``streams.classify.case_event``), the
CLI and the internal API send commands (ack, note, assign, close) keyed by the case's route. Every key of the
state (``C|<case>``, ``K|<route>``, ``R|<org>|<response>``) lives on the route's partition, so one worker owns a
contact's cases, answers and commands, in order. Per batch: apply the events in offset order over an overlay of
the batch's own changes, stage each changed key ONCE, produce the cases, notifications and dead letters, and
only then ack (streams.app.consume_records). A redelivered or replayed event is a no-op for the state machine
(answer versions, command ids); a crash between outputs and state re-emits the same case records (same case
id and rev: ClickHouse keeps one) and notifications (same idempotency key: the notify agent sends one).

Timers: ``escalate_cases`` ticks the overdue open cases of the partitions this worker actively owns (once per
case: ``escalated_at``), ``expire_cases`` forgets cases closed longer than ``CASE_RETENTION`` ago (their
ClickHouse rows stay).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from schemas import codec as avro
from streams import cases as core
from streams.app import (Pipeline, add_timer, dead_letter, install_batch_agent, owned_partitions, run_batch,
                         settled, sweep_keys)
from streams.kafka_io import BatchOutput, StateTable, json_key, partition_for
from streams.responses import iso_ms as iso, to_ms

BATCH = 2000
ESCALATE_EVERY = 30.0  # seconds between two overdue checks
MAX_CASE_BYTES = 512 * 1024  # a case record above this is refused (Kafka's default message limit is 1 MB)
CASE_RETENTION_MS = 180 * 86_400_000  # a closed case is forgotten by the agent this long after it closed


def notification_record(note: dict) -> dict:
    """streams.cases' notification output → the notify agent's record (see streams.notify_agent)."""
    data = {name: note[name] for name in ("case_id", "owner", "score", "category", "comment", "segment",
                                          "status", "close_reason")}
    data.update(opened_at=iso(note["opened_at"]), due_at=iso(note["due_at"]))
    return {"id": note["idempotency_key"], "event": f"case.{note['kind']}", "org_id": note["org_id"],
            "to": note["to"], "data": data}


def case_record(case: dict) -> dict:
    """A case of the state machine as an io.npsflow.Case record (named fields only)."""
    answers = [{name: a[name] for name in ("response_id", "version", "score", "category", "comment",
                                           "responded_at")} for a in case["answers"]]
    record = {name: case[name] for name in (
        "case_id", "org_id", "route", "response_id", "owner", "score", "category", "comment", "segment",
        "opened_at", "due_at", "status", "close_reason", "first_contact_at", "closed_at", "escalated_at",
        "escalated_to", "notes", "command_ids", "rev", "updated_at")}
    record["log"] = [{"rev": e["rev"], "at": e["at"], "kind": e["kind"], "actor": e["actor"]} for e in case["log"]]
    record["answers"] = answers
    return record


class Overlay:
    """The state as one batch sees it: its own changes over the table (``None`` = deleted)."""

    def __init__(self, table: StateTable) -> None:
        self.table = table
        self.changes: dict[str, Any] = {}
        self.partition: dict[str, int] = {}

    def get(self, key: str) -> Any:
        if key in self.changes:
            return self.changes[key]
        return self.table.get(json_key(key))

    def update(self, changes: dict[str, Any], partition: int) -> None:
        for key, value in changes.items():
            self.changes[key] = value
            self.partition[key] = partition

    def stage(self, out: BatchOutput) -> None:
        for key, value in self.changes.items():
            if value is None:
                self.table.delete(out, json_key(key), self.partition[key])
            else:
                self.table.put(out, json_key(key), value, self.partition[key])


class CasesAgent:
    def __init__(self, pipeline: Pipeline, config: core.CasesConfig) -> None:
        self.pipeline, self.config = pipeline, config
        self.table = StateTable(pipeline.tables["cases"])
        self.partitions = pipeline.settings.partitions
        self.names = {name: pipeline.topics[name].get_topic_name()
                      for name in ("case_events", "cases", "notifications")}
        self.lock = asyncio.Lock()

    def install(self) -> None:
        install_batch_agent(self.pipeline, self, "case_events", "cases", BATCH)
        add_timer(self.pipeline, "escalate_cases", ESCALATE_EVERY, self.escalate)
        add_timer(self.pipeline, "expire_cases", 3600.0, self.expire)
        self.pipeline.timers.update(escalate_cases=self.escalate, expire_cases=self.expire)

    def now_ms(self) -> int:
        return to_ms(self.pipeline.clock())

    def prepare(self, records: list) -> BatchOutput:
        out = self.pipeline.output()
        view = Overlay(self.table)
        now = self.now_ms()
        for record in records:
            event = self.event_of(record, out)
            if event is not None:
                self.apply(out, view, event, now, record)
        view.stage(out)
        return out

    def event_of(self, record, out: BatchOutput) -> dict | None:
        """The record's event, or None (dead-lettered, or re-keyed to the partition of its route)."""
        try:
            event = orjson.loads(record.value)
            if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
                raise ValueError("not a case event {\"kind\": …}")
            route = core.route_of(event)
        except Exception as exc:
            self.refuse(out, record, "bad_case_event", f"{type(exc).__name__}: {exc}"[:300])
            return None
        if not route or (event["kind"] != "answer" and not isinstance(event.get("route"), str)):
            self.refuse(out, record, "bad_case_event", "a command or tick needs the route of its case")
            return None
        if (record.key or b"") != route.encode() or partition_for(route.encode(), self.partitions) != record.partition:
            self.pipeline.stats.inc("cases.rekeyed")
            out.add_keyed(self.names["case_events"], self.partitions, route.encode(), record.value)
            return None
        return event

    def apply(self, out: BatchOutput, view: Overlay, event: dict, now: int, record=None) -> None:
        """One event: its state changes enter the batch's view only once every output of it is encoded (a record
        that cannot be — a bad field type, a case too large for Kafka — is dead-lettered and changes nothing)."""
        try:
            changes, outputs = core.apply(event, view, now, self.config)
            staged = [self.encoded(output) for output in outputs]
        except Exception as exc:  # a malformed answer or command must not stop the agent, nor vanish
            self.refuse(out, record, "bad_case_event", f"{type(exc).__name__}: {exc}"[:300])
            return
        view.update(changes, partition_for(core.route_of(event).encode(), self.partitions))
        for output, encoded in zip(outputs, staged):
            self.pipeline.stats.inc(f"cases.{output['type']}")
            if encoded is not None:
                out.add_keyed(*encoded)
            elif output["type"] == "refused":
                self.refuse(out, record, output["reason"], output["detail"], key=output.get("command_id"))

    def encoded(self, output: dict) -> tuple[str, int, bytes, bytes] | None:
        """(topic, partitions, key, value) of a case or notification output; None for the others."""
        kind = output["type"]
        if kind == "case":
            case = output["case"]
            value = self.pipeline.codec.encode(avro.CASE, case_record(case))
            if len(value) > MAX_CASE_BYTES:
                raise ValueError(f"the case would be {len(value)} bytes (at most {MAX_CASE_BYTES})")
            return self.names["cases"], self.partitions, case["case_id"].encode(), value
        if kind == "tombstone":  # an erased case (npsflow forget): compaction removes its record
            return self.names["cases"], self.partitions, output["key"].encode(), None
        if kind == "notification":
            note = notification_record(output)
            return self.names["notifications"], self.partitions, note["id"].encode(), orjson.dumps(note)
        return None

    def refuse(self, out: BatchOutput, record, reason: str, detail: str, key: str | None = None) -> None:
        """A dead letter (stage ``cases``): a refused command keeps its command id as key (the CLI looks it up)."""
        self.pipeline.stage_dead_letter(out, dead_letter(
            "cases", reason, detail, topic=getattr(record, "topic", None), partition=getattr(record, "partition", None),
            offset=getattr(record, "offset", None), key=key or getattr(record, "key", None),
            payload=getattr(record, "value", None)))

    # ---- timers ----------------------------------------------------------------------------------------

    def active_partitions(self) -> set[int] | None:
        return owned_partitions(self.pipeline.app, self.names["case_events"])

    def open_cases(self) -> list[dict]:
        """The open, not yet escalated cases in the table (byte checks first: only those are decoded)."""
        found = []
        for key, raw in list(self.table.data.items()):
            if key.startswith(b'"C|') and b'"status":"open"' in raw and b'"escalated_at":null' in raw:
                found.append(orjson.loads(raw))
        return found

    async def escalate(self) -> None:
        """Tick every open case at or past its due time (the state machine escalates each once)."""
        if not settled(self.pipeline.app):
            return
        now = self.now_ms()
        owned = self.active_partitions()
        due = [c for c in self.open_cases() if c["case_id"] in core.to_escalate([c], now)
               and (owned is None or partition_for(c["route"].encode(), self.partitions) in owned)]
        for start in range(0, len(due), BATCH):
            async with self.lock:
                out = self.pipeline.output()
                view = Overlay(self.table)
                for case in due[start:start + BATCH]:
                    self.apply(out, view, {"kind": "tick", "case_id": case["case_id"], "route": case["route"]}, now)
                view.stage(out)
                await run_batch("escalate_cases", self.pipeline.stats, out.flush)

    async def expire(self) -> None:
        """Forget cases closed more than CASE_RETENTION_MS ago, with their answers' index keys (in chunks)."""
        if not settled(self.pipeline.app):
            return
        oldest, owned = self.now_ms() - CASE_RETENTION_MS, self.active_partitions()

        def visit(out: BatchOutput, key: bytes, raw: bytes) -> int:
            case = orjson.loads(raw)
            partition = partition_for(case["route"].encode(), self.partitions)
            if case["closed_at"] >= oldest or (owned is not None and partition not in owned):
                return 0
            for answer in case["answers"]:
                rkey = json_key(core.answer_index_key(case["org_id"], answer["response_id"]))
                link = self.table.get(rkey)
                if link is not None and link.get("case_id") == case["case_id"]:
                    self.table.delete(out, rkey, partition)
            self.table.delete(out, key, partition)
            return 1

        keys = [k for k, raw in list(self.table.data.items()) if k.startswith(b'"C|') and b'"status":"closed"' in raw]
        forgotten = await sweep_keys(self.pipeline, "expire_cases", self.table, keys, self.lock, visit)
        self.pipeline.stats.inc("cases.forgotten", forgotten)


def install_cases(pipeline: Pipeline, config: core.CasesConfig) -> CasesAgent:
    agent = CasesAgent(pipeline, config)
    agent.install()
    return agent
