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

Per batch: drop the (notification, target) pairs marked sent (a replay, a redelivery), deliver the rest
concurrently, mark each delivered one, flush the marks (Kafka acks them), ack the input. A crash between a
delivery and its mark delivers it again with the same ``Idempotency-Key`` (webhook) / ``Message-ID`` (e-mail):
at least once, receivers drop repeats. A permanent refusal (HTTP 4xx, an address the server refuses) is
dead-lettered and marked (retrying cannot help); a transient one after the sender's own retries is retried here
with backoff until it goes through — the partition waits meanwhile (the receiver is down for everyone).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson

from npsflow.follow_up import Notify
from sinks.channels.notice import Mailer, notice_message
from sinks.channels.retry import PERMANENT
from sinks.channels.webhook import WebhookSender
from streams.app import Pipeline, consume_record_batches, dead_letter, run_batch
from streams.kafka_io import BatchOutput, StateTable, json_key
from streams.responses import to_ms

log = logging.getLogger("npsflow.notify")
BATCH = 500
MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class Delivery:
    """One notification to one target (``webhook`` or ``email:<address>``), on its input partition."""

    note: dict
    target: str
    partition: int

    @property
    def mark(self) -> bytes:
        return json_key(f"{self.note['id']}|{self.target}")


def parse_note(value: bytes) -> dict:
    note = orjson.loads(value)
    if not (isinstance(note, dict) and isinstance(note.get("id"), str) and note["id"]
            and isinstance(note.get("event"), str) and isinstance(note.get("data"), dict)):
        raise ValueError("not a notification {\"id\", \"event\", \"data\", …}")
    return note


class NotifyAgent:
    def __init__(self, pipeline: Pipeline, notify: Notify, mailer: Mailer | None) -> None:
        self.pipeline, self.notify, self.mailer = pipeline, notify, mailer
        self.table = StateTable(pipeline.tables["notifications_sent"])
        self.webhook = (WebhookSender(notify.webhook.url, notify.webhook.secret)
                        if notify.webhook is not None else None)
        self.lock = asyncio.Lock()
        self.backoff = 1.0

    def install(self) -> None:
        pipeline = self.pipeline

        async def run(stream) -> None:
            await consume_record_batches(pipeline, "notifications", "notify", BATCH, self.process, self.lock)

        run.__name__ = run.__qualname__ = "notify"
        pipeline.agents["notify"] = pipeline.app.agent(pipeline.topics["notifications"], name="notify")(run)
        pipeline.batch_agents["notify"] = self

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
            except Exception as exc:
                self.pipeline.stage_dead_letter(out, dead_letter(
                    "notify", "bad_notification", f"{type(exc).__name__}: {exc}"[:300], topic=record.topic,
                    partition=record.partition, offset=record.offset, key=record.key, payload=record.value))
                continue
            for target in self.targets(note):
                delivery = Delivery(note, target, record.partition)
                if delivery.mark in found or self.table.get_raw(delivery.mark) is not None:
                    self.pipeline.stats.inc("notify.already_sent")
                    continue
                found[delivery.mark] = delivery
        return list(found.values())

    async def process(self, records: list) -> None:
        """One batch: deliver until every delivery went through or was refused for good (see the docstring)."""
        out = self.pipeline.output()
        todo = self.pending(records, out)
        while True:
            results = await asyncio.gather(*(self.deliver(d) for d in todo))
            retry = []
            for delivery, (ok, kind, reason, detail) in zip(todo, results):
                if ok or kind == PERMANENT:
                    self.finish(out, delivery, ok, reason, detail)
                else:
                    retry.append(delivery)
            await run_batch("notify", self.pipeline.stats, out.flush)
            if not retry:
                self.backoff = 1.0
                return
            self.pipeline.stats.inc("notify.retry", len(retry))
            log.warning("notify: %d deliveries failed for now (%s); retrying in %.0fs", len(retry),
                        results[todo.index(retry[0])][2], self.backoff)
            await asyncio.sleep(self.backoff)
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
            out, todo = self.pipeline.output(), retry

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
        self.table.put(out, delivery.mark, {"at": to_ms(self.pipeline.clock()), "ok": ok}, delivery.partition)

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
