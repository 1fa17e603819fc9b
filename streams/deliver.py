"""The deliver stage's rules as a pure batch step: commands → invitation state, records, schedule, sends.

No Kafka, no clock, no channel calls: ``DeliverBatch`` works on an ``Overlay`` of the ``invitations`` table and
collects what the batch changes and emits; the agent (streams.dispatch_agent.DeliverAgent) writes each changed
key once per flush, produces the records, and does the sends in chunks between ``mark`` (the durable
``sending`` marks) and ``finish`` (the outcomes). Unit-tested without Kafka in tests/test_dispatch_steps.py.

Table ``invitations`` (keys JSON strings, values JSON): ``I|<invitation id>`` the invitation (classify reads
``org``, ``segment``, ``survey_id``, ``locale`` of it to join a response; the survey page the rest);
``Q|<partition>|<slot>`` a schedule bucket (``[[what, invitation id], …]``, ``SLOT_MS`` wide);
``L|<partition>`` the last slot the timer emitted; ``Z|<invitation id>`` an erased invitation (``erase``, from
``npsflow forget``: ``{"t": erased at, "p": partition}``, no personal data) — an ``invite`` command for it (a
redelivery, an invite still in flight when the contact was erased) is dropped, and the marker goes with the
invitation's scheduled ``forget``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from streams import contact_rules as rules
from streams import promoter
from streams.dispatch import (CHANNEL_NOT_CONFIGURED, FALLBACK, INVITATION, QUIET_HOURS, REMINDER, RESPONDED,
                              RETRY, RETRY_BACKOFF, SEND_INTERRUPTED)
from streams.dispatch_steps import Overlay
from streams.responses import to_ms

SLOT_MS = 5_000  # schedule bucket width: a scheduled send goes out at most this much after it is due
FORGET_AFTER_EXPIRY_MS = 7 * 86400 * 1000  # an invitation is kept this long after its link expired (edits)
SENDING = "sending"
FAILED = "failed"


def ms_of(delta) -> int:
    return int(delta.total_seconds() * 1000)


def slot_of(at_ms: int) -> int:
    return math.floor(at_ms / SLOT_MS)


def inv_key(inv_id: str) -> str:
    return f"I|{inv_id}"


def erased_key(inv_id: str) -> str:
    return f"Z|{inv_id}"


@dataclass
class Send:
    """A message to hand to a channel: the invitation (as marked), reminder or not, its partition."""

    inv: dict
    kind: str
    partition: int


@dataclass
class DeliverBatch:
    """One batch of the deliver stage (see the module docstring). ``unsent``: (invitation, kind) marked
    ``sending`` by this process and not handed to a channel yet (a batch retried in-process sends them again).
    The schedule timer and the agent share a lock, so a bucket is never filled while the timer empties it, and a
    batch is the only writer of the schedule while it lives: it reads each bucket once (``buckets``: the bucket's
    list and the set of its entries) and appends to it — O(1) a scheduled item instead of a copy and a linear
    search of the whole bucket (thousands of ``forget`` items share one slot at full speed)."""

    book: Any  # streams.dispatch.DispatchBook
    state: Overlay
    now: datetime
    idempotent: Callable[[str], bool]  # channel name → a re-send changes nothing (outbox, newsletter)
    link_ttl_ms: int
    unsent: set = field(default_factory=set)
    records: list[tuple[dict, str]] = field(default_factory=list)  # (invitation as it stands, kind)
    sends: dict[tuple[str, str], Send] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    buckets: dict[str, tuple[list, set]] = field(default_factory=dict)  # schedule key → (items, {(what, id)})
    notes: list[dict] = field(default_factory=list)  # promoter notes for stage 1 (streams.promoter)
    erased: list[tuple[int, str, int]] = field(default_factory=list)  # (partition, invitation id, at): ``erase``

    @property
    def now_ms(self) -> int:
        return to_ms(self.now)

    def inc(self, name: str) -> None:
        self.counts[name] += 1

    def save(self, inv: dict, partition: int) -> None:
        self.state.put(inv_key(inv["inv"]), inv, partition)

    def emit(self, inv: dict, kind: str = INVITATION) -> None:
        self.records.append((dict(inv), kind))

    # ------------------------------------------------------------------------------------------- commands
    def command(self, op: str, inv_id: str, command: dict, partition: int) -> None:
        inv = self.state.get(inv_key(inv_id))
        if op == "erase":
            self.erase(inv, inv_id, command, partition)
        elif inv is None and self.state.get(erased_key(inv_id)) is not None:
            if op == "due" and command.get("what") == "forget":
                self.state.delete(erased_key(inv_id), partition)  # the marker lived as long as the invitation
            else:
                self.inc(f"deliver.{op}_erased")  # e.g. an invite redelivered or in flight: never sent again
        elif op == "invite":
            self.invite(inv, command, partition)
        elif inv is None:
            self.inc(f"deliver.{op}_unknown_invitation")
        elif op == "responded":
            self.responded(inv, command, partition)
        elif op == "due":
            self.due(inv, command.get("what"), partition)
        else:
            self.inc("deliver.unknown_op")

    def erase(self, inv: dict | None, inv_id: str, command: dict, partition: int) -> None:
        """``npsflow forget``: the invitation (addresses, contact key, segments, answer) is tombstoned and the
        marker ``Z|<invitation id>`` kept until the invitation would have been forgotten (its ``forget`` is
        scheduled already when it was sent or concluded; scheduled again here for one that was not). The
        agent also strips the answer's classify memo (``erased``: same partition — raw and invitations are
        co-partitioned and keyed by the invitation id). Idempotent: a repeated note changes nothing."""
        at = int(command.get("at") or self.now_ms)
        self.erased.append((partition, inv_id, at))
        if inv is None and self.state.get(erased_key(inv_id)) is not None:
            self.inc("deliver.erase_repeated")
            return
        self.inc("deliver.erased")
        if inv is not None:
            self.state.delete(inv_key(inv_id), partition)
        self.state.put(erased_key(inv_id), {"t": at, "p": partition}, partition)
        expires = inv.get("expires_at") if inv is not None else None
        self.schedule(max(expires or 0, self.now_ms + self.link_ttl_ms) + FORGET_AFTER_EXPIRY_MS, "forget", inv_id,
                      partition)

    def invite(self, inv: dict | None, command: dict, partition: int) -> None:
        inv_id = command["inv"]
        if inv is not None or (inv_id, INVITATION) in self.sends:
            self.inc("deliver.repeated")  # a repeated command: the invitation is in hand, say where it stands
            if inv is not None and SENDING in (inv.get("st"), inv.get("rst")):
                self.settle_interrupted(inv, partition)  # records what became of the interrupted send
            elif inv is not None:
                self.emit(inv)
            return
        inv = {k: v for k, v in command.items() if k != "op"}
        inv.update(st=rules.SCHEDULED, out=None, rst=None, rout=None, resp=False, tries=0, rtries=0)
        if inv["send_at"] <= self.now_ms:
            self.attempt(inv, INVITATION, partition)
        else:
            self.save(inv, partition)
            self.schedule(inv["send_at"], "send", inv_id, partition)
            self.inc("deliver.scheduled")
            self.emit(inv)

    def responded(self, inv: dict, command: dict, partition: int) -> None:
        # the latest answer (by version) prefills the survey page when the respondent comes back to change it
        answer = {k: command.get(k) for k in ("v", "score", "comment", "follow_up")}
        if (inv.get("answer") or {}).get("v", -1) < (answer["v"] if answer["v"] is not None else 0):
            inv = {**inv, "answer": answer}
            self.save(inv, partition)
        if inv["resp"]:
            return
        # the first answer opens the edit window of the survey page
        inv = {**inv, "resp": True, "answered_at": command.get("at") or self.now_ms}
        if inv["rst"] is None and inv.get("reminder_at") is not None and inv["st"] == rules.SENT:
            inv.update(rst=rules.SUPPRESSED, rout={"reason": RESPONDED, "at": self.now_ms}, to=None)
            self.inc("deliver.reminder_cancelled")
            self.emit(inv, REMINDER)
        inv = self.promoter_note(inv, command)
        self.save(inv, partition)

    def promoter_note(self, inv: dict, command: dict) -> dict:
        """The first answer of an invitation decides its promoter actions, once (streams.promoter): a note for
        stage 1 when it is a 9 or 10 and the program has actions for it. The addresses, kept for this, go."""
        actions = self.book.promoter_actions(inv["org"], inv["program"])
        if actions is None:
            return inv
        note = promoter.note_for(inv, command.get("score"), actions, command.get("at") or self.now_ms)
        if note is not None:
            self.inc("deliver.promoter_note")
            self.notes.append(note)
            inv = {**inv, "pa": note["score"]}
        return {**inv, "to": None} if inv["st"] == rules.SENT and inv.get("rst") != SENDING else inv

    def keeps_address(self, inv: dict) -> bool:
        """The addresses stay after the last send while a promoter answer may still come (actions configured)."""
        return not inv.get("resp") and not promoter.is_action(inv.get("kind")) \
            and self.book.promoter_actions(inv["org"], inv["program"]) is not None

    def due(self, inv: dict, what: str | None, partition: int) -> None:
        if what == "forget":
            self.inc("deliver.forgotten")
            self.state.delete(inv_key(inv["inv"]), partition)
        elif what == "send" and inv["st"] == rules.SCHEDULED:
            self.attempt(inv, INVITATION, partition)
        elif what == "remind" and inv["rst"] is None and inv["st"] == rules.SENT and not inv["resp"]:
            self.attempt(inv, REMINDER, partition)
        else:
            self.settle_interrupted(inv, partition)

    def attempt(self, inv: dict, kind: str, partition: int) -> None:
        """Send now — unless the rules say otherwise *now*: the contact opted out or already answered
        (suppressed), the program is gone (failed), or it is night where the contact is (rescheduled)."""
        block = self.book.send_block(inv, kind, self.now)
        if block is None:
            self.sends.setdefault((inv["inv"], kind), Send(inv, kind, partition))
            return
        what, detail = block
        if what == "reschedule":
            self.inc(f"deliver.{kind}.quiet_hours")
            if kind == INVITATION:
                inv = {**inv, "st": rules.SCHEDULED, "send_at": to_ms(detail), "why": QUIET_HOURS}
                self.emit(inv)
            self.save(inv, partition)
            self.schedule(to_ms(detail), "send" if kind == INVITATION else "remind", inv["inv"], partition)
            return
        status = rules.SUPPRESSED if what == "suppress" else FAILED
        self.inc(f"deliver.{kind}.{status}.{detail}")
        self.conclude(inv, kind, status, {"reason": detail, "at": self.now_ms}, partition)

    def conclude(self, inv: dict, kind: str, status: str, out: dict, partition: int) -> None:
        """The final state of an invitation (or its reminder) other than sent: recorded, addresses dropped."""
        if kind == REMINDER:
            inv = {**inv, "rst": status, "rout": out, "to": inv.get("to") if self.keeps_address(inv) else None}
        else:
            inv = {**inv, "st": status, "out": out, "to": None}
            self.schedule(inv["expires_at"] + FORGET_AFTER_EXPIRY_MS, "forget", inv["inv"], partition)
        self.save(inv, partition)
        self.emit(inv, kind)

    def settle_interrupted(self, inv: dict, partition: int) -> bool:
        """An invitation (or reminder) left ``sending`` by a worker that died: recorded ``failed`` with reason
        ``send_interrupted`` and never sent again — unless its channel is idempotent (the outbox: a re-send
        changes nothing) or the send was never handed to the channel (a batch retried in this process): then it
        is queued again, and True is returned."""
        for status_key, kind in (("st", INVITATION), ("rst", REMINDER)):
            if inv.get(status_key) != SENDING:
                continue
            if (inv["inv"], kind) in self.unsent or self.idempotent(inv["channel"]):
                self.sends.setdefault((inv["inv"], kind), Send(inv, kind, partition))
                return True
            self.inc(f"deliver.{kind}_interrupted")
            self.conclude(inv, kind, FAILED, {"reason": SEND_INTERRUPTED, "at": self.now_ms}, partition)
            inv = self.state.get(inv_key(inv["inv"])) or inv
        return False

    # ------------------------------------------------------------------------------------------- sends
    def mark(self, chunk: list[Send]) -> list[Send]:
        """The chunk's ``sending`` marks (to be made durable before any of it is handed to a channel)."""
        marked = []
        for send in chunk:
            inv = dict(self.state.get(inv_key(send.inv["inv"])) or send.inv)
            if send.kind == REMINDER:
                inv["rst"] = SENDING
            else:  # the link is valid for the link lifetime from the actual send
                inv.update(st=SENDING, expires_at=max(inv["expires_at"], self.now_ms + self.link_ttl_ms))
            self.save(inv, send.partition)
            self.unsent.add((inv["inv"], send.kind))
            marked.append(Send(inv, send.kind, send.partition))
        return marked

    def finish(self, send: Send, result) -> None:
        """A channel's answer (a SendResult, None: no such channel, an exception: a bug in it) → state, record."""
        kind, partition = send.kind, send.partition
        inv = self.state.get(inv_key(send.inv["inv"])) or send.inv  # the latest (a response may have come)
        if result is None:
            reason, retryable, out = CHANNEL_NOT_CONFIGURED, False, None
        elif isinstance(result, BaseException):  # recorded, never lost
            reason, retryable, out = "channel_error", False, None
        elif result.ok:
            reason, retryable = None, False
            cost, currency = self.book.cost(inv, result)
            out = {"reason": None, "at": self.now_ms, "cost": cost, "currency": currency,
                   "attempts": result.attempts, "provider_id": result.provider_id}
        else:
            reason, retryable, out = result.reason, result.retryable, None
        if reason is None:
            self.sent(inv, kind, out, partition)
            return
        tries = inv.get("rtries" if kind == REMINDER else "tries") or 0
        if retryable and tries < len(RETRY_BACKOFF) and self.now_ms + ms_of(RETRY_BACKOFF[tries]) < inv["expires_at"]:
            self.retry_later(inv, kind, reason, tries, partition)
        elif kind == INVITATION and (fallback := self.book.fallback(inv)) is not None:
            self.inc(f"deliver.fallback.{inv['channel']}.{fallback}")  # e.g. the SMS gateway refused the number
            inv = {**inv, "st": rules.SCHEDULED, "channel": fallback, "send_at": self.now_ms, "tries": 0,
                   "why": f"{FALLBACK}:{reason}"}
            self.save(inv, partition)
            self.schedule(self.now_ms, "send", inv["inv"], partition)
            self.emit(inv)
        else:
            self.inc(f"deliver.{kind}.failed.{reason}")
            attempts = None if result is None or isinstance(result, BaseException) else result.attempts
            self.conclude(inv, kind, FAILED, {"reason": reason, "at": self.now_ms, "attempts": attempts}, partition)

    def sent(self, inv: dict, kind: str, out: dict, partition: int) -> None:
        self.inc(f"deliver.{kind}.sent")
        if kind == REMINDER:
            inv = {**inv, "rst": rules.SENT, "rout": out, "to": inv.get("to") if self.keeps_address(inv) else None}
        else:
            inv = {**inv, "st": rules.SENT, "out": out, "reminder_at": self.book.reminder_at(inv, self.now)}
            if inv["reminder_at"] is not None and not inv["resp"]:
                self.schedule(inv["reminder_at"], "remind", inv["inv"], partition)
            elif not self.keeps_address(inv):
                inv["to"] = None  # nothing more will be sent: drop the addresses
            self.schedule(inv["expires_at"] + FORGET_AFTER_EXPIRY_MS, "forget", inv["inv"], partition)
        self.save(inv, partition)
        self.emit(inv, kind)

    def retry_later(self, inv: dict, kind: str, reason: str, tries: int, partition: int) -> None:
        at = self.now_ms + ms_of(RETRY_BACKOFF[tries])  # the channel's quick retries are spent: try again later
        self.inc(f"deliver.{kind}.retry_later.{reason}")
        if kind == REMINDER:
            inv = {**inv, "rst": None, "rtries": tries + 1}
        else:
            inv = {**inv, "st": rules.SCHEDULED, "send_at": at, "tries": tries + 1, "why": f"{RETRY}:{reason}"}
            self.emit(inv)
        self.save(inv, partition)
        self.schedule(at, "remind" if kind == REMINDER else "send", inv["inv"], partition)

    # ------------------------------------------------------------------------------------------- schedule
    def schedule(self, at_ms: int, what: str, inv_id: str, partition: int) -> None:
        """Into the bucket of ``at_ms``'s slot — never one the timer has emitted already (``L|<partition>``)."""
        lkey = f"L|{partition}"
        last = self.state.get(lkey)
        if last is None:
            last = slot_of(self.now_ms) - 1
            self.state.put(lkey, last, partition)
        slot = max(slot_of(at_ms), last + 1)
        qkey = f"Q|{partition}|{slot}"
        items, known = self.bucket(qkey)
        if (what, inv_id) not in known:
            known.add((what, inv_id))
            items.append([what, inv_id])
            self.state.put(qkey, items, partition)  # the same list each time: staged as it stands at a flush

    def bucket(self, qkey: str) -> tuple[list, set]:
        """The bucket's items as this batch left them (read once from the state) and the set of its entries."""
        cached = self.buckets.get(qkey)
        if cached is None:
            items = list(self.state.get(qkey) or [])
            cached = self.buckets[qkey] = (items, {(what, inv_id) for what, inv_id in items})
        return cached
