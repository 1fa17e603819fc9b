"""dispatch + deliver: trigger events → contact rules → invitations sent over the channels.

Two stages, each the single writer of its table::

    npsflow.triggers (Avro, key org_id) ──dispatch──► npsflow.invitations (JSON, key invitation_id) ──deliver──►
         table dispatch-state: event ids,                 table invitations: one entry per invitation,
         contact states, the org's daily counts           schedule buckets              │
                                 │                                                      ├─► channels (SMTP, SMS …)
                                 └──► npsflow.dispatches (suppressed) ◄─────────────────┘   npsflow.dispatches

**dispatch** is keyed by org: event-id deduplication, the contact's quarantine and the org's daily cap are then
all on one partition and exact (a very large tenant is one partition's worth of decisions per second — thousands;
sending, the slow part, is spread over all partitions by stage 2). Per trigger it emits exactly one outcome:
a ``suppressed`` dispatch record with the reason, or an ``invite`` command. It remembers each event id with
its outputs and source offset: a duplicate is dropped, a Kafka *redelivery* of the same offset (after a crash)
re-emits the same outputs.

**deliver** is keyed by invitation id. It keeps the invitation (which the classify agent also reads, to join a
response to the invitation's segments — the topics are co-partitioned), sends what is due, schedules the rest
in time buckets ``Q|<partition>|<slot>`` (``SLOT_MS`` wide) that a timer visits one by one — it never scans
the state — and records every outcome as a dispatch record. Commands: ``invite``, ``due`` (from the timer:
send, remind or forget), ``responded`` (from classify: cancels the reminder).

Sends are **at most once**: before a send its invitation is marked ``sending`` and that mark is durable in
the changelog; a command that finds an invitation still ``sending`` (the worker died in between) records
``failed``/``send_interrupted`` instead of sending again. Offsets are acked only after every output and every
changelog write of the batch was acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math

from schemas import codec as avro
from streams import contact_rules as rules
from streams.app import (Deliveries, Pipeline, Transient, add_timer, consume_batches, dead_letter, delete_key,
                         write_key)
from streams.dispatch import (CHANNEL_NOT_CONFIGURED, FALLBACK, INVITATION, QUIET_HOURS, REMINDER, RESPONDED,
                              RETRY, RETRY_BACKOFF, SEND_INTERRUPTED, DispatchBook)
from streams.responses import Rejected, to_ms
from streams.triggers import redact, revalidate

log = logging.getLogger("npsflow.dispatch")

SLOT_MS = 5_000  # schedule bucket width: a scheduled send goes out at most this much after it is due
SEND_CHUNK = 16  # sends marked "sending" at a time (made durable, then sent concurrently, then recorded)
FORGET_AFTER_EXPIRY_MS = 7 * 86400 * 1000  # an invitation is kept this long after its link expired (edits)
OUTPUTS_KEPT_MS = 3600 * 1000  # a trigger's outputs are kept this long for redelivery, then only its id
SENDING = "sending"
FAILED = "failed"


def ms_of(delta) -> int:
    return int(delta.total_seconds() * 1000)


def redact_bytes(value: bytes) -> str | None:
    """An undecodable command as text for its dead letter, addresses removed (None if not even text)."""
    try:
        return redact(value.decode("utf-8"))
    except (UnicodeDecodeError, AttributeError):
        return None


def install_dispatch(pipeline: Pipeline, book: DispatchBook, channels: dict) -> None:
    app, codec, stats, topics, clock = pipeline.app, pipeline.codec, pipeline.stats, pipeline.topics, pipeline.clock
    state = pipeline.tables["dispatch_state"]
    invitations = pipeline.tables["invitations"]
    short = {"dispatches": topics["dispatches"], "invitations": topics["invitations"]}
    link_ttl_ms = ms_of(book.link_ttl)
    scanning: dict[int, int] = {}  # partition → the bucket slot the timer is emitting right now
    unsent: set[tuple[str, str]] = set()  # (invitation, kind) marked "sending" by this process, not yet handed
    # to a channel: a batch retried in-process sends these again instead of calling them interrupted

    def track(deliveries: Deliveries, table, key, value, partition: int) -> None:
        deliveries.futures.append(write_key(table, key, value, partition))

    # --------------------------------------------------------------------------------------- stage 1
    @app.agent(topics["triggers"], name="dispatch")
    async def dispatch(stream):
        await consume_batches(pipeline, stream, "dispatch", 500, decide_batch)

    async def decide_batch(events: list) -> None:
        deliveries = Deliveries()
        for event in events:
            await dispatch_one(event, deliveries)
        await deliveries.wait()

    async def dispatch_one(event, deliveries: Deliveries) -> None:
        msg = event.message
        where = dict(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key)
        trigger = None
        try:
            try:
                trigger = codec.decode(event.value, expected=avro.TRIGGER_EVENT)
            except avro.CodecError as exc:
                if exc.reason == avro.SCHEMA_REGISTRY_ERROR:
                    raise Transient(exc.detail) from None
                # no payload: undecodable bytes may hold addresses; the record stays at its offset
                await pipeline.send_dead_letter(
                    dead_letter("dispatch", exc.reason, exc.detail, **where), deliveries)
                return
            try:  # the CLI validates, but any producer may write to the topic: the same rules here
                trigger = revalidate(trigger, clock())
            except Rejected as exc:
                await pipeline.send_dead_letter(
                    dead_letter("dispatch", exc.reason, exc.detail, payload=redact(trigger), **where), deliveries)
                return
            await decide_one(event, trigger, deliveries)
        except Transient:
            raise
        except Exception as exc:  # a bug or an unforeseen input must not stop the agent, nor vanish
            log.exception("dispatch: internal error")
            stats.inc("dispatch.internal_error")
            await pipeline.send_dead_letter(
                dead_letter("dispatch", "dispatch_internal_error", f"{type(exc).__name__}: {exc}",
                            payload=redact(trigger) if trigger is not None else None, **where), deliveries)

    async def decide_one(event, trigger: dict, deliveries: Deliveries) -> None:
        msg = event.message
        org_id, event_id = trigger["org_id"], trigger["event_id"]
        if msg.key != org_id.encode():
            stats.inc("dispatch.rekeyed")  # every trigger of an org must meet on one partition
            await deliveries.send(topics["triggers"], org_id.encode(), event.value)
            return
        partition, source = msg.partition, [msg.partition, msg.offset]
        ekey = f"E|{org_id}|{event_id}"
        memo = state.get(ekey)
        if memo is not None:
            if memo["src"] == source and memo.get("o"):
                stats.inc("dispatch.redelivered")
                for name, key, value in memo["o"]:
                    await deliveries.send(short[name], key.encode(), base64.b64decode(value))
            else:
                stats.inc("dispatch.duplicate")
            return
        now = clock()
        program_id = book.program_id(trigger)
        okey = f"O|{org_id}|{program_id}"  # the daily cap is a program's: counted per (org, program)
        ckey = f"C|{org_id}|{rules.contact_key(org_id, trigger['contact']['contact_id'], book.secret)}"
        contact_state = rules.ContactState.from_dict(state.get(ckey))
        # Decided before (the contact's state names this very event) but the memo is gone: a crash between the
        # batch's changelog writes. Not a replay when the memo may simply have expired: then the quarantine holds.
        replay = contact_state.last_event_id == event_id and not book.beyond_memory(trigger, now)
        if replay:  # decide again as before, without counting it twice (quarantine, cap)
            outcome = book.decide(trigger, None, None, now)
        else:
            outcome = book.decide(trigger, contact_state, rules.OrgDayState.from_dict(state.get(okey)), now)
        if replay and outcome.invite is None:
            # it was an invitation (its contact state says so): never overwrite that with a suppression now
            stats.inc("dispatch.replay_suppressed")
            outcome.record = None
        outputs = []
        if outcome.record is not None:
            outputs.append(("dispatches", outcome.dispatch_id, codec.encode(avro.DISPATCHED_MESSAGE, outcome.record)))
        if outcome.invite is not None:
            outputs.append(("invitations", outcome.dispatch_id, json.dumps(outcome.invite).encode()))
        stats.inc(f"dispatch.{outcome.status}" + (f".{outcome.reason}" if outcome.reason else ""))
        if outcome.contact_state is not None and not replay:
            track(deliveries, state, ckey, {**outcome.contact_state.to_dict(), "p": partition}, partition)
        if outcome.org_state is not None and not replay and program_id is not None:
            track(deliveries, state, okey, outcome.org_state.to_dict(), partition)
        track(deliveries, state, ekey, {"src": source, "t": to_ms(now), "o": [
            [name, key, base64.b64encode(value).decode()] for name, key, value in outputs]}, partition)
        for name, key, value in outputs:
            await deliveries.send(short[name], key.encode(), value)

    # --------------------------------------------------------------------------------------- stage 2
    @app.agent(topics["invitations"], name="deliver")
    async def deliver(stream):
        await consume_batches(pipeline, stream, "deliver", 500, deliver_batch)

    async def deliver_batch(events: list) -> None:
        deliveries = Deliveries()
        sends: dict[tuple[str, str], tuple[dict, str, int]] = {}  # (invitation, kind) → what to send
        for event in events:
            await deliver_one(event, deliveries, sends)
        await deliveries.wait()
        queue = list(sends.values())
        for start in range(0, len(queue), SEND_CHUNK):  # a crash leaves at most one chunk in doubt
            await send_chunk(queue[start:start + SEND_CHUNK], deliveries)

    async def deliver_one(event, deliveries: Deliveries, sends: dict) -> None:
        msg = event.message
        where = dict(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key)
        try:
            command = json.loads(event.value)
            op, inv_id = command["op"], command["inv"]
        except (ValueError, TypeError, KeyError) as exc:
            await pipeline.send_dead_letter(dead_letter("deliver", "invalid_command", f"{type(exc).__name__}: {exc}",
                                                        payload=redact_bytes(event.value), **where), deliveries)
            return
        try:
            await handle(op, inv_id, command, msg.partition, deliveries, sends)
        except Transient:
            raise
        except Exception as exc:
            log.exception("deliver: internal error")
            stats.inc("deliver.internal_error")
            await pipeline.send_dead_letter(dead_letter("deliver", "deliver_internal_error",
                                                        f"{type(exc).__name__}: {exc}", payload=redact(command),
                                                        **where), deliveries)

    async def emit(inv: dict, deliveries: Deliveries, kind: str = INVITATION) -> None:
        record = book.invitation_record(inv, kind=kind)
        await deliveries.send(topics["dispatches"], record["dispatch_id"].encode(),
                              codec.encode(avro.DISPATCHED_MESSAGE, record))

    def save(inv: dict, partition: int, deliveries: Deliveries) -> None:
        track(deliveries, invitations, f"I|{inv['inv']}", inv, partition)

    async def handle(op: str, inv_id: str, command: dict, partition: int, deliveries: Deliveries,
                     sends: dict) -> None:
        ikey = f"I|{inv_id}"
        inv = invitations.get(ikey)
        now = clock()
        now_ms = to_ms(now)
        if op == "invite":
            if inv is not None or (inv_id, INVITATION) in sends:
                # a repeated command: the invitation is already in hand, say where it stands
                stats.inc("deliver.repeated")
                if inv is not None and not await settle_interrupted(inv, partition, deliveries, sends):
                    await emit(inv, deliveries)
                return
            inv = {k: v for k, v in command.items() if k != "op"}
            inv.update(st=rules.SCHEDULED, out=None, rst=None, rout=None, resp=False, tries=0, rtries=0)
            if inv["send_at"] <= now_ms:
                await attempt(inv, INVITATION, partition, deliveries, sends, now)
            else:
                save(inv, partition, deliveries)
                schedule(inv["send_at"], "send", inv_id, partition, deliveries)
                stats.inc("deliver.scheduled")
                await emit(inv, deliveries)
        elif inv is None:
            stats.inc(f"deliver.{op}_unknown_invitation")
        elif op == "responded":
            # the latest answer (by version) prefills the survey page when the respondent comes back to change it
            answer = {k: command.get(k) for k in ("v", "score", "comment", "follow_up")}
            if (inv.get("answer") or {}).get("v", -1) < (answer["v"] if answer["v"] is not None else 0):
                inv = {**inv, "answer": answer}
                save(inv, partition, deliveries)
            if inv["resp"]:
                return
            # the first answer opens the edit window of the survey page
            inv = {**inv, "resp": True, "answered_at": command.get("at") or now_ms}
            if inv["rst"] is None and inv.get("reminder_at") is not None and inv["st"] == rules.SENT:
                inv.update(rst=rules.SUPPRESSED, rout={"reason": RESPONDED, "at": now_ms}, to=None)
                stats.inc("deliver.reminder_cancelled")
                await emit(inv, deliveries, REMINDER)
            save(inv, partition, deliveries)
        elif op == "due":
            what = command.get("what")
            if what == "forget":
                stats.inc("deliver.forgotten")
                deliveries.futures.append(delete_key(invitations, ikey, partition))
            elif what == "send" and inv["st"] == rules.SCHEDULED:
                await attempt(inv, INVITATION, partition, deliveries, sends, now)
            elif what == "remind" and inv["rst"] is None and inv["st"] == rules.SENT and not inv["resp"]:
                await attempt(inv, REMINDER, partition, deliveries, sends, now)
            else:
                await settle_interrupted(inv, partition, deliveries, sends)
        else:
            stats.inc("deliver.unknown_op")

    async def attempt(inv: dict, kind: str, partition: int, deliveries: Deliveries, sends: dict, now) -> None:
        """Send now — unless the rules say otherwise *now*: the contact opted out or already answered
        (suppressed), the program is gone (failed), or it is night where the contact is (rescheduled)."""
        block = book.send_block(inv, kind, now)
        if block is None:
            start_send(inv, kind, partition, sends)
            return
        what, detail = block
        if what == "reschedule":
            stats.inc(f"deliver.{kind}.quiet_hours")
            if kind == INVITATION:
                inv = {**inv, "st": rules.SCHEDULED, "send_at": to_ms(detail), "why": QUIET_HOURS}
                await emit(inv, deliveries)
            save(inv, partition, deliveries)
            schedule(to_ms(detail), "send" if kind == INVITATION else "remind", inv["inv"], partition, deliveries)
            return
        status = rules.SUPPRESSED if what == "suppress" else FAILED
        stats.inc(f"deliver.{kind}.{status}.{detail}")
        await conclude(inv, kind, status, {"reason": detail, "at": to_ms(now)}, partition, deliveries)

    async def conclude(inv: dict, kind: str, status: str, out: dict, partition: int, deliveries: Deliveries) -> None:
        """The final state of an invitation (or its reminder) other than sent: recorded, addresses dropped."""
        if kind == REMINDER:
            inv = {**inv, "rst": status, "rout": out, "to": None}
        else:
            inv = {**inv, "st": status, "out": out, "to": None}
            schedule(inv["expires_at"] + FORGET_AFTER_EXPIRY_MS, "forget", inv["inv"], partition, deliveries)
        save(inv, partition, deliveries)
        await emit(inv, deliveries, kind)

    def idempotent(inv: dict) -> bool:
        return bool(getattr(channels.get(inv["channel"]), "idempotent", False))

    async def settle_interrupted(inv: dict, partition: int, deliveries: Deliveries, sends: dict) -> bool:
        """An invitation (or reminder) left ``sending`` by a worker that died: recorded ``failed`` with reason
        ``send_interrupted`` and never sent again — unless its channel is idempotent (the outbox: a re-send
        changes nothing) or the send was never handed to the channel (a batch retried in this process): then it
        is queued again, and True is returned."""
        for status_key, kind in (("st", INVITATION), ("rst", REMINDER)):
            if inv.get(status_key) == SENDING and ((inv["inv"], kind) in unsent or idempotent(inv)):
                start_send(inv, kind, partition, sends)
                return True
            if inv.get(status_key) == SENDING:
                stats.inc(f"deliver.{kind}_interrupted")
                await conclude(inv, kind, FAILED, {"reason": SEND_INTERRUPTED, "at": to_ms(clock())}, partition,
                               deliveries)
                inv = invitations.get(f"I|{inv['inv']}") or inv
        return False

    def start_send(inv: dict, kind: str, partition: int, sends: dict) -> None:
        sends.setdefault((inv["inv"], kind), (inv, kind, partition))

    async def send_chunk(chunk: list, deliveries: Deliveries) -> None:
        """Mark the chunk ``sending`` (durable in the changelog), send it concurrently, record the outcomes."""
        now_ms = to_ms(clock())
        marked_chunk = []
        for inv, kind, partition in chunk:
            marked = {**(invitations.get(f"I|{inv['inv']}") or inv)}
            if kind == REMINDER:
                marked["rst"] = SENDING
            else:  # the link is valid for the link lifetime from the actual send
                marked.update(st=SENDING, expires_at=max(marked["expires_at"], now_ms + link_ttl_ms))
            save(marked, partition, deliveries)
            unsent.add((inv["inv"], kind))
            marked_chunk.append((marked, kind, partition))
        await deliveries.wait()

        async def one(inv: dict, kind: str):
            unsent.discard((inv["inv"], kind))  # from here on, the outcome of a crash is unknown
            channel = channels.get(inv["channel"])
            if channel is None:
                return None
            return await channel.send(book.channel_invitation(inv, reminder=kind == REMINDER))

        results = await asyncio.gather(*(one(inv, kind) for inv, kind, _ in marked_chunk), return_exceptions=True)
        for (inv, kind, partition), result in zip(marked_chunk, results):
            await finish_send(inv, kind, partition, result, deliveries)
        await deliveries.wait()

    async def finish_send(inv: dict, kind: str, partition: int, result, deliveries: Deliveries) -> None:
        now = clock()
        now_ms = to_ms(now)
        inv = invitations.get(f"I|{inv['inv']}") or inv  # the latest state (a response may have come meanwhile)
        if result is None:
            reason, retryable, out = CHANNEL_NOT_CONFIGURED, False, None
        elif isinstance(result, BaseException):  # a bug in a channel: recorded, never lost
            log.error("deliver: channel %s raised %r", inv["channel"], result)
            reason, retryable, out = "channel_error", False, None
        elif result.ok:
            reason, retryable = None, False
            cost, currency = book.cost(inv, result)
            out = {"reason": None, "at": now_ms, "cost": cost, "currency": currency, "attempts": result.attempts,
                   "provider_id": result.provider_id}
        else:
            reason, retryable, out = result.reason, result.retryable, None
        failed_out = {"reason": reason, "at": now_ms,
                      "attempts": getattr(result, "attempts", None) if not isinstance(result, BaseException) else None}
        tries_key = "rtries" if kind == REMINDER else "tries"
        tries = inv.get(tries_key) or 0
        if reason is None:
            stats.inc(f"deliver.{kind}.sent")
            if kind == REMINDER:
                inv = {**inv, "rst": rules.SENT, "rout": out, "to": None}
            else:
                inv = {**inv, "st": rules.SENT, "out": out, "reminder_at": book.reminder_at(inv, now)}
                if inv["reminder_at"] is not None and not inv["resp"]:
                    schedule(inv["reminder_at"], "remind", inv["inv"], partition, deliveries)
                else:
                    inv["to"] = None  # nothing more will be sent: drop the addresses
                schedule(inv["expires_at"] + FORGET_AFTER_EXPIRY_MS, "forget", inv["inv"], partition, deliveries)
            save(inv, partition, deliveries)
            await emit(inv, deliveries, kind)
        elif retryable and tries < len(RETRY_BACKOFF) and now_ms + ms_of(RETRY_BACKOFF[tries]) < inv["expires_at"]:
            at = now_ms + ms_of(RETRY_BACKOFF[tries])  # the channel's quick retries are spent: try again later
            stats.inc(f"deliver.{kind}.retry_later.{reason}")
            if kind == REMINDER:
                inv = {**inv, "rst": None, "rtries": tries + 1}
            else:
                inv = {**inv, "st": rules.SCHEDULED, "send_at": at, "tries": tries + 1, "why": f"{RETRY}:{reason}"}
                await emit(inv, deliveries)
            save(inv, partition, deliveries)
            schedule(at, "remind" if kind == REMINDER else "send", inv["inv"], partition, deliveries)
        elif kind == INVITATION and (fallback := book.fallback(inv)) is not None:
            stats.inc(f"deliver.fallback.{inv['channel']}.{fallback}")  # e.g. the SMS gateway refused the number
            inv = {**inv, "st": rules.SCHEDULED, "channel": fallback, "send_at": now_ms, "tries": 0,
                   "why": f"{FALLBACK}:{reason}"}
            save(inv, partition, deliveries)
            schedule(now_ms, "send", inv["inv"], partition, deliveries)
            await emit(inv, deliveries)
        else:
            stats.inc(f"deliver.{kind}.failed.{reason}")
            await conclude(inv, kind, FAILED, failed_out, partition, deliveries)

    # --------------------------------------------------------------------------------------- schedule
    def recovering() -> bool:
        """While partitions move or tables are rebuilt from their changelogs the state is incomplete: a timer
        acting on it could skip a bucket it cannot see yet, or forget what is still being restored."""
        return bool(getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))

    def slot_of(at_ms: int) -> int:
        return math.floor(at_ms / SLOT_MS)

    def schedule(at_ms: int, what: str, inv_id: str, partition: int, deliveries: Deliveries) -> None:
        lkey = f"L|{partition}"
        last = invitations.get(lkey)
        if last is None:
            last = slot_of(to_ms(clock())) - 1
            track(deliveries, invitations, lkey, last, partition)
        slot = max(slot_of(at_ms), last + 1, scanning.get(partition, last) + 1)
        qkey = f"Q|{partition}|{slot}"
        items = list(invitations.get(qkey) or [])
        if [what, inv_id] not in items:
            items.append([what, inv_id])
            track(deliveries, invitations, qkey, items, partition)

    async def fire_due(partitions=None) -> int:
        """Emit ``due`` commands for every bucket whose slot has ended, partition by partition, then forget the
        bucket. Visits only buckets by their key (slot after slot since the last visit): no state scan."""
        if partitions is None:
            if recovering():
                return 0
            name = topics["invitations"].get_topic_name()
            partitions = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name)
        now_slot = slot_of(to_ms(clock()))
        fired = 0
        for partition in partitions:
            lkey = f"L|{partition}"
            last = invitations.get(lkey)
            if last is None or last >= now_slot - 1:
                continue
            deliveries = Deliveries()
            for i, slot in enumerate(range(last + 1, now_slot)):
                scanning[partition] = slot
                qkey = f"Q|{partition}|{slot}"
                items = invitations.get(qkey)
                if items:
                    for what, inv_id in items:
                        await deliveries.send(topics["invitations"], inv_id.encode(),
                                              json.dumps({"op": "due", "what": what, "inv": inv_id}).encode())
                    await deliveries.wait()  # the commands are durable before the bucket is forgotten
                    await delete_key_durably(qkey, partition)
                    fired += len(items)
                if i % 5000 == 4999:
                    await asyncio.sleep(0)
            deliveries.futures.append(write_key(invitations, lkey, now_slot - 1, partition))
            await deliveries.wait()
            scanning.pop(partition, None)
        stats.inc("deliver.due_fired", fired)
        return fired

    async def delete_key_durably(key: str, partition: int) -> None:
        future = delete_key(invitations, key, partition)
        if future is not None:
            await future

    async def expire_state() -> int:
        """Forget event ids older than the dedup retention, outputs older than an hour, and contact states whose
        quarantine has passed. Runs every few minutes over stage 1's state."""
        if recovering():
            return 0
        now = clock()
        now_ms = to_ms(now)
        retention_ms = book.dedup_retention.total_seconds() * 1000
        expired = 0
        for i, (key, value) in enumerate(list(state.data.items())):
            if not isinstance(value, dict):
                continue
            partition = value["src"][0] if key.startswith("E|") else value.get("p")
            if key.startswith("E|"):
                if value["t"] < now_ms - retention_ms:
                    delete_key(state, key, partition)
                    expired += 1
                elif value.get("o") and value["t"] < now_ms - OUTPUTS_KEPT_MS:
                    write_key(state, key, {**value, "o": []}, partition)
            elif key.startswith("C|") and partition is not None:
                last = rules.ContactState.from_dict(value).last_invited_at
                org_id = key.split("|", 2)[1]
                if last is None or last + book.quarantine_of(org_id) < now:
                    delete_key(state, key, partition)
                    expired += 1
            if i % 5000 == 4999:
                await asyncio.sleep(0)
        stats.inc("dispatch.forgotten", expired)
        return expired

    add_timer(pipeline, "fire_due", 1.0, fire_due)
    add_timer(pipeline, "expire_dispatch_state", 300.0, expire_state)
    pipeline.agents["dispatch"] = dispatch
    pipeline.agents["deliver"] = deliver
    pipeline.timers["fire_due"] = fire_due
    pipeline.timers["expire_dispatch_state"] = expire_state
