"""The dispatch decisions as pure batch steps: stage 1 (per contact) and the cap stage (per org program).

No Kafka, no clock: a batch of decoded inputs + a read-only view of the state → the outputs and the changed
state keys (``Overlay.changes``), which the agents (streams.dispatch_agent) write once per batch and produce as
one record batch per (topic, partition). Unit-tested without Kafka in tests/test_dispatch_steps.py.

**Stage 1, ``DecideStep``** — input ``npsflow.triggers`` keyed ``<org>|<contact_id>``
(``streams.triggers.trigger_key``): every trigger of one contact meets on one partition, one organization spreads
over all of them. Per trigger, in offset order: re-key a trigger that arrived with another key or on another
partition (whoever produced it, the decisions stay exact); the event-id memory ``E|<org>|<event>`` (a
duplicate is dropped, a Kafka redelivery of the very offset re-emits the memo's outputs); the contact rules
against the contact's state ``C|<org>|<contact key>`` (opt-out, quarantine, sampling, timing) — everything but
the org's daily cap. Outcome: a ``suppressed`` record, an ``invite`` for the deliver stage (program without a
cap), or a *candidate* for the cap stage (program with a daily cap). A candidate quarantines its contact at
once (the contact state names the event, and keeps the state before it, ``prev``), so a contact never has two
candidates in flight.

**Cap stage, ``CapStep``** — input ``npsflow.dispatch.candidates`` keyed ``<org>|<program>``: every would-be
invitation of one program, and nothing else, meets on one partition. Per candidate, in offset order: an
invitation already accepted (memo ``A|<invitation id>``) is re-emitted without counting; otherwise it is
accepted while the program's count for the invitation's day (``O|<org>|<program>``, org-local days) is below
the cap, else refused: a ``suppressed``/``cap`` record, and a *release* back to the contact's partition
(topic ``npsflow.dispatch.releases``) that restores the contact's state before the candidate — a refused
candidate does not quarantine anybody (``DecideStep.release``).

Why the cap is exact (N accepted per program and day, never more, never fewer while candidates come):

1. one writer, one order: all candidates of (org, program) are on one partition of the candidates topic and
   are applied by one agent in offset order; its state (counts and memos) lives in a table partitioned like
   that topic;
2. each accepted candidate raises the count of its day by one and writes its memo in the same batch; the
   batch's state changes go to ONE changelog partition as ONE record batch (``BatchOutput``: one record
   batch per (topic, partition); a cap batch of ``CAP_BATCH`` candidates is ~100 KB ≪ the 1 MiB batch limit),
   so Kafka stores all of them or none, and the input is acked only after that;
3. none stored (crash before the write): Kafka redelivers the batch and it is decided again from the same
   state in the same order — the same decisions (a decision depends on the count of its day only, and counts
   only grow within the days kept); all stored (crash after the write, before the ack): an accepted candidate
   finds its memo (re-emitted, not counted), a refused one finds the count still ≥ the cap (refused again,
   the same record and release);
4. the same candidate emitted again by stage 1 (its own redelivery, or a replay after a lost event memo) carries
   the same invitation id: its memo makes it a repetition. Invites are idempotent downstream (the deliver
   stage keeps one entry per invitation id and sends at most once), records are keyed by dispatch id.

The cap stage also claims **reward codes** of promoter actions (``CapStep.reward``, streams.promoter): a
program's pool on the program's partition, the claim (pool cursor ``W|<org>|<program>`` + memo ``A|<message id>``
with the code's index) in the same state write as the batch's other changes — the same argument as the cap's.
Stage 1 decides promoter notes from the releases topic (``DecideStep.promoter``; memo ``P|<org>|<invitation>``,
quarantines ``PQ|<org>|<contact key>``).

Memos are kept for the dedup retention (longest ``max_event_age`` + 1 d: stage 1 cannot repeat a candidate
later than that); counts for today and yesterday (org-local), as before.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable

import orjson

from streams import contact_rules as rules
from streams import promoter
from streams.responses import Rejected, to_ms
from streams.triggers import redact, revalidate, trigger_key

CAP_BATCH = 500  # candidates per cap-stage batch: its state changes stay one record batch (see the docstring)


class Overlay:
    """The state as one batch sees it: reads fall through to ``read(key)``, changes are kept per key (the last
    one wins) and written once per batch by the agent. ``changes``: key → (partition, value or None = delete)."""

    def __init__(self, read: Callable[[str], Any]) -> None:
        self.read = read
        self.changes: dict[str, tuple[int, Any]] = {}

    def get(self, key: str) -> Any:
        if key in self.changes:
            return self.changes[key][1]
        return self.read(key)

    def put(self, key: str, value: Any, partition: int) -> None:
        self.changes[key] = (partition, value)

    def delete(self, key: str, partition: int) -> None:
        self.changes[key] = (partition, None)

    def drain(self) -> dict[str, tuple[int, Any]]:
        changes, self.changes = self.changes, {}
        return changes


@dataclass(slots=True)
class Output:
    """A record to produce: ``name`` is the pipeline's topic name; partition None = by the key (murmur2)."""

    name: str
    key: bytes
    value: bytes
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class TriggerIn:
    """One record of the triggers topic: where it came from, and the decoded trigger (or why it is refused)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    trigger: dict | None
    error: tuple[str, str] | None = None  # (reason, detail): undecodable — dead-lettered without payload


@dataclass(slots=True)
class Refusal:
    partition: int
    offset: int
    key: bytes | None
    reason: str
    detail: str
    payload: Any


@dataclass
class StepOutcome:
    outputs: list[Output] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def candidate_key(org_id: str, program_id: str) -> bytes:
    """The key of a candidate on the candidates topic: every would-be invitation of one program meets there."""
    return f"{org_id}|{program_id}".encode()


def once(memo_key: str, partition: int, offset: int, name: str, state: "Overlay", now: datetime,
         out: "StepOutcome", decide) -> None:
    """Decide an input once: its memo (``memo_key``) keeps the source position and the outputs; a redelivery of
    the very record re-emits them (Kafka may not have taken them), any other repetition is dropped."""
    source = [partition, offset]
    memo = state.get(memo_key)
    if memo is not None:
        if memo["src"] == source and memo.get("o"):
            out.counts[f"{name}.redelivered"] += 1
            out.outputs.extend(Output(n, key.encode(), base64.b64decode(value)) for n, key, value in memo["o"])
        else:
            out.counts[f"{name}.duplicate"] += 1
        return
    outputs = decide()
    state.put(memo_key, {"src": source, "t": to_ms(now), "o": [
        [o.name, o.key.decode(), base64.b64encode(o.value).decode()] for o in outputs]}, partition)
    out.outputs.extend(outputs)


@dataclass
class DecideStep:
    """Stage 1 (see the module docstring). ``partition_of(key)``: the triggers topic's partitioner; ``encode``:
    a DispatchedMessage dict → bytes (Avro)."""

    book: Any  # streams.dispatch.DispatchBook
    partition_of: Callable[[bytes], int]
    encode: Callable[[dict], bytes]

    def run(self, triggers: list[TriggerIn], state: Overlay, now: datetime) -> StepOutcome:
        out = StepOutcome()
        for item in triggers:
            try:
                self.one(item, state, now, out)
            except Rejected as exc:
                out.refused.append(Refusal(item.partition, item.offset, item.key, exc.reason, exc.detail,
                                           redact(item.trigger)))
            except Exception as exc:  # a bug or an unforeseen input must not stop the agent, nor vanish
                out.counts["dispatch.internal_error"] += 1
                out.refused.append(Refusal(item.partition, item.offset, item.key, "dispatch_internal_error",
                                           f"{type(exc).__name__}: {exc}",
                                           redact(item.trigger) if item.trigger is not None else None))
        return out

    def one(self, item: TriggerIn, state: Overlay, now: datetime, out: StepOutcome) -> None:
        if item.error is not None:  # no payload: undecodable bytes may hold addresses
            out.refused.append(Refusal(item.partition, item.offset, item.key, *item.error, None))
            return
        trigger = revalidate(item.trigger, now)  # any producer may write to the topic: the CLI's rules here
        org_id, event_id = trigger["org_id"], trigger["event_id"]
        route = trigger_key(org_id, trigger["contact"]["contact_id"])
        if item.key != route or self.partition_of(route) != item.partition:
            out.counts["dispatch.rekeyed"] += 1  # a contact's triggers must meet on one partition
            out.outputs.append(Output("triggers", route, item.value))
            return
        once(f"E|{org_id}|{event_id}", item.partition, item.offset, "dispatch", state, now, out,
             lambda: self.decide(trigger, item.partition, state, now, out))

    def decide(self, trigger: dict, partition: int, state: Overlay, now: datetime, out: StepOutcome) -> list[Output]:
        book = self.book
        org_id, event_id = trigger["org_id"], trigger["event_id"]
        key = rules.contact_key(org_id, trigger["contact"]["contact_id"], book.secret)
        erased = state.get(f"X|{org_id}|{key}")
        if erased is not None and to_ms(rules._aware(trigger["occurred_at"], "occurred_at")) <= erased["t"]:
            out.counts["dispatch.suppressed.erased"] += 1  # see erase(): no pseudonym in the record
            from streams.dispatch import invitation_id

            record = book.record(trigger, invitation_id(org_id, event_id, book.secret), "",
                                 status=rules.SUPPRESSED, reason="erased", decided_at=now)
            return [Output("dispatches", record["dispatch_id"].encode(), self.encode(record))]
        ckey = f"C|{org_id}|{key}"
        before = state.get(ckey)
        contact_state = rules.ContactState.from_dict(before)
        # Decided before (the contact's state names this very event) but the memo is gone: decide again as
        # before, counting nothing twice. Not when the memo may simply have expired: then the quarantine holds.
        replay = contact_state.last_event_id == event_id and not book.beyond_memory(trigger, now)
        outcome = book.decide(trigger, None if replay else contact_state, None, now, key)
        if replay and outcome.invite is None:
            out.counts["dispatch.replay_suppressed"] += 1  # it was an invitation: never overwrite that now
            return []
        if outcome.record is not None:
            out.counts[f"dispatch.{outcome.status}.{outcome.reason}"] += 1
            return [Output("dispatches", outcome.dispatch_id.encode(), self.encode(outcome.record))]
        if not replay:
            state.put(ckey, {**outcome.contact_state.to_dict(), "p": partition}, partition)
        if outcome.cap is None:
            out.counts[f"dispatch.{outcome.status}"] += 1
            return [Output("invitations", outcome.dispatch_id.encode(), orjson.dumps(outcome.invite))]
        out.counts["dispatch.candidate"] += 1
        prev = None if before is None else {k: v for k, v in before.items() if k != "p"}
        candidate = {"op": "candidate", "invite": outcome.invite, "st": outcome.status, "cap": outcome.cap,
                     "day": outcome.cap_day, "zone": outcome.zone, "ck": ckey, "ev": event_id, "p": partition,
                     "rk": trigger_key(org_id, trigger["contact"]["contact_id"]).decode("utf-8", "surrogatepass"),
                     "prev": prev, "replay": replay}
        return [Output("candidates", candidate_key(org_id, outcome.invite["program"]), orjson.dumps(candidate))]

    def note(self, note: dict, partition: int, offset: int, state: Overlay, now: datetime, out: StepOutcome) -> None:
        """A record of the releases topic: the cap stage's release, or a promoter note (streams.promoter)."""
        if note.get("op") == "promoter":
            self.promoter(note, partition, offset, state, now, out)
        elif note.get("op") == "erase":
            self.erase(note, partition, state, out)
        else:
            self.release(note, partition, state, out)

    def promoter(self, note: dict, partition: int, offset: int, state: Overlay, now: datetime,
                 out: StepOutcome) -> None:
        """The promoter actions of an answered invitation, decided once (memo ``P|<org>|<invitation>``; a
        redelivery of the very record re-emits the memo's outputs, any other repetition is dropped)."""
        once(f"P|{note['org']}|{note['inv']}", partition, offset, "promoter", state, now, out,
             lambda: self.promoter_outputs(note, partition, state, now, out))

    def promoter_outputs(self, note: dict, partition: int, state: Overlay, now: datetime,
                         out: StepOutcome) -> list[Output]:
        book = self.book
        found = book.found(note["org"], note["program"])
        actions = getattr(found[1], "promoter_actions", None) if found else None
        if actions is None:
            out.counts["promoter.program_removed"] += 1
            return []
        org, program = found
        kinds = tuple(k for k in note.get("kinds") or actions.actions_for(note["score"]) if k in promoter.KINDS)
        qkey = f"PQ|{note['org']}|{note['contact_key']}"
        before = promoter.Quarantines.from_dict(state.get(qkey))
        decisions, after = promoter.decide(note, kinds, actions, book.rule_config(org, program),
                                           org.is_opted_out(note["to"].get("contact_id") or ""), before, now)
        if after != before:
            state.put(qkey, after.to_dict(actions.quarantine, partition), partition)
        outputs = []
        for d in decisions:
            if d.status == rules.SUPPRESSED:
                out.counts[f"promoter.{d.kind}.suppressed.{d.reason}"] += 1
                outputs.append(Output("dispatches", book.action_id(note["org"], note["inv"], d.kind).encode(),
                                      self.encode(book.promoter_record(note, d, now))))
                continue
            invite = book.promoter_invite(note, d, now)
            if d.kind == promoter.REWARD:  # the code is claimed where the program's pool lives
                out.counts["promoter.reward.candidate"] += 1
                outputs.append(Output("candidates", candidate_key(note["org"], note["program"]),
                                      orjson.dumps({"op": "reward", "invite": invite, "st": d.status})))
            else:
                out.counts[f"promoter.{d.kind}.{d.status}"] += 1
                outputs.append(Output("invitations", invite["inv"].encode(), orjson.dumps(invite)))
        return outputs

    @staticmethod
    def erase(note: dict, partition: int, state: Overlay, out: StepOutcome) -> None:
        """``npsflow forget`` (npsflow.forget): tombstone what this partition holds of the contact — its state
        ``C|<org>|<key>``, promoter quarantine ``PQ|<org>|<key>``, the event memos ``E|<org>|<event>`` of its
        events (their outputs hold its address for an hour) and promoter memos ``P|<org>|<invitation>`` — and
        keep the marker ``X|<org>|<key>`` = when it was erased, so that a trigger of the contact that occurred
        before the erasure (a replay, a late copy: its event memo is gone) is suppressed (``erased``, a record
        without the pseudonym) instead of surveying the contact again. Triggers that occur later are decided
        as usual: erasure is not an objection (an opt-out is the programs file's ``opted_out``). Idempotent."""
        org, key = note["org"], note["key"]
        keys = [f"C|{org}|{key}", f"PQ|{org}|{key}", *(f"E|{org}|{e}" for e in note.get("events") or ()),
                *(f"P|{org}|{i}" for i in note.get("invs") or ())]
        for k in keys:
            if state.get(k) is not None:
                state.delete(k, partition)
                out.counts["erasure.state_keys"] += 1
        marker = f"X|{org}|{key}"
        if (state.get(marker) or {}).get("t", -1) < note["at"]:
            state.put(marker, {"t": note["at"], "p": partition}, partition)
        out.counts["erasure.requests"] += 1

    @staticmethod
    def release(note: dict, partition: int, state: Overlay, out: StepOutcome) -> None:
        """The cap stage refused the contact's candidate: restore the contact's state before it — unless the
        state names another event by now (a later decision; never undo that)."""
        current = state.get(note["ck"])
        if current is None or current.get("last_event_id") != note["ev"]:
            out.counts["dispatch.release_stale"] += 1
            return
        out.counts["dispatch.released"] += 1
        if note.get("prev"):
            state.put(note["ck"], {**note["prev"], "p": partition}, partition)
        else:
            state.delete(note["ck"], partition)


@dataclass
class CapStep:
    """The cap stage (see the module docstring): candidates of a program → invites, or cap records + releases."""

    book: Any  # streams.dispatch.DispatchBook (the cap record)
    encode: Callable[[dict], bytes]

    def run(self, candidates: list[tuple[int, dict]], state: Overlay, now: datetime) -> StepOutcome:
        out = StepOutcome()
        for partition, candidate in candidates:
            self.one(partition, candidate, state, now, out)
        return out

    def one(self, partition: int, candidate: dict, state: Overlay, now: datetime, out: StepOutcome) -> None:
        if candidate.get("op") == "reward":
            self.reward(partition, candidate, state, now, out)
            return
        invite = candidate["invite"]
        inv_id = invite["inv"]
        akey, okey = f"A|{inv_id}", f"O|{invite['org']}|{invite['program']}"
        if state.get(akey) is not None:
            out.counts["cap.repeated"] += 1
            out.outputs.append(Output("invitations", inv_id.encode(), orjson.dumps(invite)))
            return
        counts = rules.OrgDayState.from_dict(state.get(okey))
        day = date.fromisoformat(candidate["day"])
        if counts.count(day) >= candidate["cap"]:
            out.counts["dispatch.suppressed.cap"] += 1
            out.outputs.append(Output("dispatches", inv_id.encode(), self.encode(self.book.cap_record(invite))))
            if not candidate.get("replay"):  # a replay's contact state is the original candidate's to release
                note = {"op": "release", "ck": candidate["ck"], "ev": candidate["ev"], "prev": candidate["prev"]}
                out.outputs.append(Output("releases", candidate["rk"].encode("utf-8", "surrogatepass"),
                                          orjson.dumps(note), candidate["p"]))
            return
        today = now.astimezone(rules.load_zone(candidate["zone"])).date()
        state.put(okey, counts.with_invitation(day, today).to_dict(), partition)
        state.put(akey, {"t": to_ms(now), "d": candidate["day"], "p": partition}, partition)
        out.counts[f"dispatch.{candidate['st']}"] += 1
        out.outputs.append(Output("invitations", inv_id.encode(), orjson.dumps(invite)))

    def reward(self, partition: int, candidate: dict, state: Overlay, now: datetime, out: StepOutcome) -> None:
        """A reward message: claim the program's next code (streams.promoter.claim). The claim — the pool's cursor
        and the memo ``A|<message id>`` naming the code's index — goes into the same state write as every other
        change of the batch (one record batch on this partition's changelog, before the ack): a replay of this
        message finds its memo and gets the same code, another message the cursor's next one."""
        invite = candidate["invite"]
        inv_id, akey = invite["inv"], f"A|{invite['inv']}"
        memo = state.get(akey)
        if memo is not None:
            out.counts["promoter.reward.repeated"] += 1
            out.outputs.append(Output("invitations", inv_id.encode(),
                                      orjson.dumps({**invite, "code": memo["c"], "codefp": memo["f"]})))
            return
        pool = self.book.pool(invite["org"], invite["program"])
        wkey = promoter.pool_key(invite["org"], invite["program"])
        claim = promoter.claim(pool, state.get(wkey)) if pool is not None else \
            promoter.Claim(None, None, promoter.POOL_EXHAUSTED, None)
        if claim.index is None:
            status = rules.SUPPRESSED if claim.reason == promoter.POOL_EXHAUSTED else "failed"
            out.counts[f"promoter.reward.{status}.{claim.reason}"] += 1
            out.outputs.append(Output("dispatches", inv_id.encode(),
                                      self.encode(self.book.cap_record(invite, claim.reason, status))))
            return
        state.put(wkey, {**claim.state, "p": partition}, partition)
        state.put(akey, {"t": to_ms(now), "p": partition, "c": claim.index, "f": claim.fingerprint}, partition)
        out.counts[f"promoter.reward.{candidate.get('st') or rules.SENT}"] += 1
        out.outputs.append(Output("invitations", inv_id.encode(),
                                  orjson.dumps({**invite, "code": claim.index, "codefp": claim.fingerprint})))
