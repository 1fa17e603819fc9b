"""notify: notifications (case owners, alert receivers) → signed webhooks and e-mails, at least once.

    npsflow.notifications (JSON, key = idempotency key) ──notify──► webhook (sinks.channels.webhook)
                                                        └──────────► e-mail (SMTP or the outbox, sinks.channels.notice)
    table notifications-sent: one mark per delivered (notification, target)

A notification record (written by streams.cases_agent and the windows agent's alerts)::

    {"id": "<idempotency key>", "event": "case.opened" | … | "alert.opened" | "alert.closed",
     "org_id": "…", "to": "<owner>" | null, "data": {…what the receiver needs: no contact details…}}

Targets come from NPSFLOW_CASES' ``notify`` section only (npsflow.follow_up): the webhook (if the event is in its
``events``) and, for case events, the owner's e-mail address (``owners`` or an owner named by an address); for
alert events the ``alerts`` addresses. A respondent's address is never a target: the records carry none.

Per batch: drop the (notification, target) pairs marked sent or already waiting for a retry (a replay, a
redelivery), deliver the rest concurrently (the channels' own short retries), mark each delivered one, flush the
marks (Kafka acks them), ack the input. A crash between a delivery and its mark delivers it again with the same
``Idempotency-Key`` (webhook) / ``Message-ID`` (e-mail): at least once, receivers drop repeats. A permanent
refusal (HTTP 4xx, an address the server refuses) is dead-lettered and marked (retrying cannot help). A transient
one is parked in the table (``\x00r|<mark>``: the notification, the target, attempts, next attempt time) and the
input is acked: a receiver that is down never holds up the batch, nor — through the shared fetcher — the other
agents. The ``retry_notifications`` timer retries the parked ones that are due, with backoff (5 s doubling up to
15 min), until they go through or are refused; on the partitions this worker owns, when no rebalance runs.
``expire_notification_marks`` forgets marks after ``MARK_RETENTION_MS`` (longer than any redelivery).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson

from npsflow.follow_up import Notify
from sinks.channels.notice import Mailer, notice_message
from sinks.channels.retry import PERMANENT, RetryPolicy
from sinks.channels.webhook import WebhookSender
from streams.app import (Pipeline, add_timer, consume_record_batches, dead_letter, owned_partitions, run_batch,
                         settled)
from streams.kafka_io import BatchOutput, StateTable, json_key
from streams.responses import to_ms

log = logging.getLogger("npsflow.notify")
BATCH = 500
RETRY_EVERY = 5.0  # seconds between two looks at the parked deliveries
FIRST_BACKOFF_MS, MAX_BACKOFF_MS = 5_000, 15 * 60_000
RETRIES_PER_TICK = 200
MARK_RETENTION_MS = 14 * 86_400_000  # a delivered mark is kept this long (redeliveries come within hours)
QUICK = RetryPolicy(max_attempts=2, base_delay=0.5, max_delay=2.0)  # in a batch: then park it


@dataclass(frozen=True)
class Delivery:
    """One notification to one target (``webhook`` or ``email:<address>``), on its input partition."""

    note: dict
    target: str
    partition: int

    @property
    def mark(self) -> bytes:
        return json_key(f"{self.note['id']}|{self.target}")

    @property
    def parked(self) -> bytes:
        return PARKED + self.mark


PARKED = b"\x00r|"  # prefix of a parked delivery's key (marks are JSON strings: they never start with NUL)


def backoff_ms(attempts: int) -> int:
    return min(FIRST_BACKOFF_MS * 2 ** max(0, attempts - 1), MAX_BACKOFF_MS)


def parse_note(value: bytes) -> dict:
    note = orjson.loads(value)
    if not (isinstance(note, dict) and isinstance(note.get("id"), str) and 0 < len(note["id"]) <= 300
            and isinstance(note.get("event"), str) and isinstance(note.get("data"), dict)
            and (note.get("to") is None or isinstance(note["to"], str))):
        raise ValueError("not a notification {\"id\", \"event\", \"to\": text or null, \"data\", …}")
    return note


class NotifyAgent:
    def __init__(self, pipeline: Pipeline, notify: Notify, mailer: Mailer | None) -> None:
        self.pipeline, self.notify, self.mailer = pipeline, notify, mailer
        self.table = StateTable(pipeline.tables["notifications_sent"])
        self.webhook = (WebhookSender(notify.webhook.url, notify.webhook.secret, retry=QUICK)
                        if notify.webhook is not None else None)
        self.lock = asyncio.Lock()

    def install(self) -> None:
        pipeline = self.pipeline

        async def run(stream) -> None:
            await consume_record_batches(pipeline, "notifications", "notify", BATCH, self.process, self.lock)

        run.__name__ = run.__qualname__ = "notify"
        pipeline.agents["notify"] = pipeline.app.agent(pipeline.topics["notifications"], name="notify")(run)
        pipeline.batch_agents["notify"] = self
        add_timer(pipeline, "retry_notifications", RETRY_EVERY, self.retry_parked)
        add_timer(pipeline, "expire_notification_marks", 3600.0, self.expire_marks)
        pipeline.timers.update(retry_notifications=self.retry_parked, expire_notification_marks=self.expire_marks)

    def targets(self, note: dict) -> list[str]:
        found = []
        hook = self.notify.webhook
        if hook is not None and note["event"] in hook.events:
            found.append("webhook")
        email = self.notify.email
        if email is not None and self.mailer is not None:
            if note["event"].startswith("alert."):
                found += [f"email:{a}" for a in email.alerts]
            else:
                address = email.address_of(note.get("to"))
                if address:
                    found.append(f"email:{address}")
        return found

    def pending(self, records: list, out: BatchOutput) -> list[Delivery]:
        """The batch's deliveries not marked sent (each once); bad records dead-lettered into ``out``."""
        found: dict[bytes, Delivery] = {}
        for record in records:
            try:
                note = parse_note(record.value)
                targets = self.targets(note)
            except Exception as exc:
                self.pipeline.stage_dead_letter(out, dead_letter(
                    "notify", "bad_notification", f"{type(exc).__name__}: {exc}"[:300], topic=record.topic,
                    partition=record.partition, offset=record.offset, key=record.key, payload=record.value))
                continue
            for target in targets:
                delivery = Delivery(note, target, record.partition)
                if (delivery.mark in found or self.table.get_raw(delivery.mark) is not None
                        or self.table.get_raw(delivery.parked) is not None):
                    self.pipeline.stats.inc("notify.already_sent")
                    continue
                found[delivery.mark] = delivery
        return list(found.values())

    async def process(self, records: list) -> None:
        """One batch: deliver each (notification, target) once; park what failed for now (see the docstring)."""
        out = self.pipeline.output()
        todo = self.pending(records, out)
        results = await asyncio.gather(*(self.deliver(d) for d in todo))
        for delivery, (ok, kind, reason, detail) in zip(todo, results):
            if ok or kind == PERMANENT:
                self.finish(out, delivery, ok, reason, detail)
            else:
                self.park(out, delivery, 1, reason)
        await run_batch("notify", self.pipeline.stats, out.flush)

    def now_ms(self) -> int:
        return to_ms(self.pipeline.clock())

    def park(self, out: BatchOutput, delivery: Delivery, attempts: int, reason: str | None) -> None:
        """Keep a delivery that failed for now, to be retried by the timer after a backoff."""
        self.pipeline.stats.inc("notify.parked")
        log.warning("notify: a %s delivery failed for now (%s); retrying in %d s", delivery.target.split(":")[0],
                    reason, backoff_ms(attempts) // 1000)
        self.table.put_raw(out, delivery.parked, orjson.dumps({
            "note": delivery.note, "target": delivery.target, "p": delivery.partition, "attempts": attempts,
            "next": self.now_ms() + backoff_ms(attempts)}), delivery.partition)

    def owned(self) -> set[int] | None:
        return owned_partitions(self.pipeline.app, self.pipeline.topics["notifications"].get_topic_name())

    async def retry_parked(self) -> None:
        """Timer: deliver the parked deliveries that are due (at most RETRIES_PER_TICK at a time)."""
        if not settled(self.pipeline.app):
            return
        now, owned = self.now_ms(), self.owned()
        due = []
        for key, raw in list(self.table.data.items()):
            if key.startswith(PARKED):
                entry = orjson.loads(raw)
                if entry["next"] <= now and (owned is None or entry["p"] in owned):
                    due.append(entry)
        for start in range(0, len(due), RETRIES_PER_TICK):
            async with self.lock:
                await self.retry_chunk(due[start:start + RETRIES_PER_TICK])

    async def retry_chunk(self, entries: list[dict]) -> None:
        out = self.pipeline.output()
        deliveries = [Delivery(e["note"], e["target"], e["p"]) for e in entries]
        results = await asyncio.gather(*(self.deliver(d) for d in deliveries))
        for entry, delivery, (ok, kind, reason, detail) in zip(entries, deliveries, results):
            if self.table.get_raw(delivery.parked) is None:
                continue  # gone meanwhile (a rebalance moved it): the new owner retries it
            if ok or kind == PERMANENT:
                self.table.delete(out, delivery.parked, delivery.partition)
                self.finish(out, delivery, ok, reason, detail)
            else:
                self.park(out, delivery, entry["attempts"] + 1, reason)
        await run_batch("retry_notifications", self.pipeline.stats, out.flush)

    async def expire_marks(self) -> None:
        """Timer: forget delivered marks older than MARK_RETENTION_MS (parked deliveries stay until done)."""
        if not settled(self.pipeline.app):
            return
        oldest, owned, dropped = self.now_ms() - MARK_RETENTION_MS, self.owned(), 0
        async with self.lock:
            out = self.pipeline.output()
            for key, raw in list(self.table.data.items()):
                if key.startswith(PARKED):
                    continue
                mark = orjson.loads(raw)
                if mark["at"] < oldest and (owned is None or mark.get("p") in owned):
                    self.table.delete(out, key, mark["p"])
                    dropped += 1
            await run_batch("expire_notification_marks", self.pipeline.stats, out.flush)
        self.pipeline.stats.inc("notify.marks_expired", dropped)

    def finish(self, out: BatchOutput, delivery: Delivery, ok: bool, reason: str | None, detail: str | None) -> None:
        """Mark a delivery done; a refused one is dead-lettered first (never retried)."""
        channel = delivery.target.split(":")[0]
        if ok:
            self.pipeline.stats.inc(f"notify.{channel}.sent")
        else:
            self.pipeline.stats.inc(f"notify.{channel}.refused")
            self.pipeline.stage_dead_letter(out, dead_letter(
                "notify", reason or "notification_refused", f"{channel}: {detail or reason}"[:300],
                key=delivery.note["id"], payload={"event": delivery.note["event"], "id": delivery.note["id"]}))
        self.table.put(out, delivery.mark, {"at": self.now_ms(), "ok": ok, "p": delivery.partition},
                       delivery.partition)

    async def deliver(self, delivery: Delivery) -> tuple[bool, str | None, str | None, str | None]:
        """(ok, failure kind, reason, detail) of one attempt series; never raises."""
        note = delivery.note
        try:
            if delivery.target == "webhook":
                outcome = await self.webhook.deliver(note["event"], note, note["id"])
            else:
                message = notice_message(note, delivery.target.split(":", 1)[1], self.notify.email.sender)
                outcome = await self.mailer.send(message)
        except Exception as exc:  # a bug in a channel must not kill the worker, nor loop: dead-lettered
            log.exception("notify: %s delivery failed", delivery.target.split(":")[0])
            return False, PERMANENT, "notify_internal_error", type(exc).__name__
        return outcome.ok, outcome.kind, outcome.reason, outcome.detail


def install_notify(pipeline: Pipeline, notify: Notify, mailer: Mailer | None) -> NotifyAgent:
    agent = NotifyAgent(pipeline, notify, mailer)
    agent.install()
    return agent
