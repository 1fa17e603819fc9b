"""The pure steps of survey dispatch without Kafka or Faust: stage 1 (DecideStep), the cap stage (CapStep) and
the deliver stage (DeliverBatch), over plain dicts standing in for the tables."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from npsflow.programs import parse_programs
from sinks.channels.base import SendResult
from streams.deliver import DeliverBatch, SENDING
from streams.dispatch import DispatchBook, invitation_id
from streams.dispatch_steps import CapStep, DecideStep, Overlay, StepOutcome, TriggerIn, candidate_key
from streams.kafka_io import partition_for
from streams.triggers import trigger_key, validate_trigger
from tests.programs import DEFAULT, acme, program, programs_yaml, service

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
SECRET = b"steps-secret-0123456789"
PARTITIONS = 6


def programs(cap: int) -> str:
    """Acme's service program, at most ``cap`` invitations a day, and its uncapped open program."""
    return programs_yaml(acme(service(daily_cap=cap, reminder_after="2d"),
                              program("open", "nps-open", ["order.delivered"], quiet_hours=DEFAULT)))


def book(cap: int = 7) -> DispatchBook:
    return DispatchBook(parse_programs(programs(cap)), SECRET, "https://nps.acme.fi/s")


def trigger(i: int, contact: str | None = None, event_type: str = "job.completed") -> dict:
    return validate_trigger({"event_id": f"ev-{i}", "org_id": "acme", "event_type": event_type,
                             "occurred_at": (NOW - timedelta(minutes=1)).isoformat(),
                             "contact": {"contact_id": contact or f"c-{i}", "email": f"c{i}@kunde.fi"}}, NOW)


class Store(dict):
    """A table: the step reads through an Overlay; ``apply`` writes a batch's changes (once per key)."""

    def view(self) -> Overlay:
        return Overlay(self.get)

    def apply(self, overlay: Overlay) -> dict:
        changes = overlay.drain()
        for key, (_, value) in changes.items():
            if value is None:
                self.pop(key, None)
            else:
                self[key] = json.loads(json.dumps(value))  # what the changelog keeps: JSON
        return changes


def decide_step(b: DispatchBook) -> DecideStep:
    return DecideStep(b, lambda key: partition_for(key, PARTITIONS), encode=lambda record: json.dumps(
        record, default=str).encode())


def routed(t: dict, offset: int) -> TriggerIn:
    key = trigger_key(t["org_id"], t["contact"]["contact_id"])
    return TriggerIn(partition_for(key, PARTITIONS), offset, key, b"<avro>", t)


def stage1(step: DecideStep, store: Store, triggers: list[TriggerIn]) -> StepOutcome:
    """Stage 1 per partition, in offset order, as the agents run it (one batch per partition here)."""
    outcome = StepOutcome()
    for _, items in itertools.groupby(sorted(triggers, key=lambda t: (t.partition, t.offset)),
                                      key=lambda t: t.partition):
        view = store.view()
        one = step.run(list(items), view, NOW)
        store.apply(view)
        outcome.outputs += one.outputs
        outcome.refused += one.refused
    return outcome


def of(outcome: StepOutcome, name: str) -> list:
    return [o for o in outcome.outputs if o.name == name]


# ------------------------------------------------------------------------------------------- stage 1
def test_a_contacts_triggers_meet_on_one_partition_and_one_org_spreads_over_all():
    partitions = {partition_for(trigger_key("acme", f"c-{i}"), PARTITIONS) for i in range(200)}
    assert partitions == set(range(PARTITIONS))


def test_stage1_rekeys_a_trigger_on_the_wrong_key_or_partition_and_decides_nothing():
    step, store = decide_step(book()), Store()
    t = trigger(1)
    right = routed(t, 0)
    wrong_key = TriggerIn(right.partition, 0, b"acme", b"<avro>", t)
    wrong_partition = TriggerIn((right.partition + 1) % PARTITIONS, 0, right.key, b"<avro>", t)
    outcome = step.run([wrong_key, wrong_partition], store.view(), NOW)
    assert [(o.name, o.key, o.value) for o in outcome.outputs] == [("triggers", right.key, b"<avro>")] * 2
    assert outcome.counts["dispatch.rekeyed"] == 2 and store == {}


def test_stage1_duplicates_are_dropped_and_a_redelivered_offset_re_emits_the_same_outputs():
    step, store = decide_step(book()), Store()
    first = stage1(step, store, [routed(trigger(1), 0), routed(trigger(1), 1)])
    (candidate,) = of(first, "candidates")
    again = stage1(step, store, [routed(trigger(1), 0)])  # Kafka redelivers offset 0
    assert [(o.name, o.key, o.value) for o in again.outputs] == [(candidate.name, candidate.key, candidate.value)]
    assert candidate.key == candidate_key("acme", "service")


def test_stage1_sends_programs_without_a_cap_straight_to_the_deliver_stage():
    outcome = stage1(decide_step(book()), Store(), [routed(trigger(1, event_type="order.delivered"), 0)])
    (invite,) = of(outcome, "invitations")
    assert json.loads(invite.value)["program"] == "open" and of(outcome, "candidates") == []


def test_a_candidate_quarantines_its_contact_and_a_release_gives_the_state_back():
    step, store = decide_step(book()), Store()
    outcome = stage1(step, store, [routed(trigger(1, "c-x"), 0), routed(trigger(2, "c-x"), 1)])
    (candidate,) = of(outcome, "candidates")
    assert [json.loads(o.value)["reason"] for o in of(outcome, "dispatches")] == ["quarantine"]
    body = json.loads(candidate.value)
    assert body["prev"] is None and store[body["ck"]]["last_event_id"] == "ev-1"
    view, out = store.view(), StepOutcome()
    step.release({"op": "release", "ck": body["ck"], "ev": "ev-9"}, 0, view, out)  # another event: stale
    assert view.changes == {} and out.counts["dispatch.release_stale"] == 1
    step.release({"op": "release", "ck": body["ck"], "ev": "ev-1", "prev": None}, 0, view, out)
    store.apply(view)
    assert body["ck"] not in store  # the contact may be invited again
    later = stage1(step, store, [routed(trigger(3, "c-x"), 2)])
    assert len(of(later, "candidates")) == 1


# ------------------------------------------------------------------------------------------- cap stage
def run_cap(step: CapStep, store: Store, candidates: list, *, batch: int = 9, crash: str | None = None,
            now: datetime = NOW) -> StepOutcome:
    """The cap stage in batches; ``crash``: each batch is run again after a crash "before" its state write (the
    changes are lost) or "after" it (kept), as Kafka redelivers an unacked batch."""
    outcome = StepOutcome()
    for start in range(0, len(candidates), batch):
        chunk = candidates[start:start + batch]
        if crash is not None:
            view = store.view()
            step.run(chunk, view, now)  # its outputs may or may not have reached Kafka: ignored
            if crash == "after":
                store.apply(view)
        view = store.view()
        one = step.run(chunk, view, now)
        store.apply(view)
        outcome.outputs += one.outputs
        for k, v in one.counts.items():
            outcome.counts[k] += v
    return outcome


@pytest.mark.parametrize("crash", [None, "before", "after"])
def test_the_daily_cap_is_exact_for_one_org_spread_over_six_partitions(crash):
    """200 contacts of one org over 6 partitions, cap 7: exactly 7 invitations, 193 suppressed/cap records, each
    refused contact released — also when the cap stage's batches are redelivered, and when stage 1 re-emits
    every candidate (its own redelivery)."""
    b, cap = book(7), 7
    step1, store1, caps = decide_step(b), Store(), Store()
    triggers = [routed(trigger(i), i) for i in range(200)]
    assert {t.partition for t in triggers} == set(range(PARTITIONS))
    candidates = [(0, json.loads(o.value)) for o in of(stage1(step1, store1, triggers), "candidates")]
    assert len(candidates) == 200
    step = CapStep(b, encode=lambda record: json.dumps(record, default=str).encode())
    outcome = run_cap(step, caps, candidates, crash=crash)
    invited = [json.loads(o.value)["inv"] for o in of(outcome, "invitations")]
    refused = [json.loads(o.value) for o in of(outcome, "dispatches")]
    assert len(invited) == len(set(invited)) == cap
    assert len(refused) == 200 - cap and {(r["status"], r["reason"]) for r in refused} == {("suppressed", "cap")}
    assert set(invited).isdisjoint(r["dispatch_id"] for r in refused)
    assert caps["O|acme|service"]["counts"] == {"2026-11-20": cap}
    # every trigger has exactly one outcome: an invitation or a cap record
    ids = {invitation_id("acme", f"ev-{i}", SECRET) for i in range(200)}
    assert set(invited) | {r["dispatch_id"] for r in refused} == ids
    # the refused contacts are released on their own partitions: their quarantine is gone
    releases = of(outcome, "releases")
    assert len(releases) == 200 - cap
    assert all(o.partition == partition_for(o.key, PARTITIONS) for o in releases)
    for o in releases:
        view = store1.view()
        step1.release(json.loads(o.value), o.partition, view, StepOutcome())
        store1.apply(view)
    assert sum(k.startswith("C|") for k in store1) == cap
    # stage 1 emits every candidate again (say, its batches were redelivered): nothing changes
    repeat = run_cap(step, caps, candidates, crash=crash)
    assert sorted(json.loads(o.value)["inv"] for o in of(repeat, "invitations")) == sorted(invited)
    assert repeat.counts["cap.repeated"] == cap and caps["O|acme|service"]["counts"] == {"2026-11-20": cap}


def test_the_cap_counts_the_day_the_invitation_goes_out_and_keeps_today_and_yesterday():
    b = book(1)
    step = CapStep(b, encode=lambda record: json.dumps(record, default=str).encode())
    caps = Store()
    candidates = [(0, json.loads(o.value)) for o in of(stage1(decide_step(b), Store(), [
        routed(trigger(i), i) for i in range(3)]), "candidates")]
    day2 = {**candidates[1][1], "day": "2026-11-21"}
    outcome = run_cap(step, caps, [candidates[0], (0, day2), candidates[2]])
    assert len(of(outcome, "invitations")) == 2 and len(of(outcome, "dispatches")) == 1
    later = NOW + timedelta(days=2)
    run_cap(step, caps, [(0, {**candidates[2][1], "day": "2026-11-22", "invite": {
        **candidates[2][1]["invite"], "inv": "x" * 20}})], now=later)
    assert caps["O|acme|service"]["counts"] == {"2026-11-21": 1, "2026-11-22": 1}  # the 20th is pruned


# ------------------------------------------------------------------------------------------- deliver
def invite_command(b: DispatchBook, i: int = 1) -> dict:
    outcome = stage1(decide_step(b), Store(), [routed(trigger(i, event_type="order.delivered"), 0)])
    return json.loads(of(outcome, "invitations")[0].value)


def deliver_batch(b: DispatchBook, store: Store, now: datetime = NOW, idempotent=False, unsent=None) -> DeliverBatch:
    return DeliverBatch(b, store.view(), now, lambda channel: idempotent, 30 * 86400 * 1000,
                        set() if unsent is None else unsent)


def test_deliver_marks_a_send_before_it_goes_and_records_the_outcome():
    b, store = book(), Store()
    command = invite_command(b)
    batch = deliver_batch(b, store)
    batch.command("invite", command["inv"], command, 0)
    batch.command("invite", command["inv"], command, 0)  # the same command twice in a batch: one send
    (send,) = batch.sends.values()
    (marked,) = batch.mark([send])
    store.apply(batch.state)
    assert store[f"I|{command['inv']}"]["st"] == SENDING and (command["inv"], "invitation") in batch.unsent
    batch.finish(marked, SendResult.sent(attempts=1, provider_id="<m@acme.fi>", cost=0.001, currency="EUR"))
    store.apply(batch.state)
    inv = store[f"I|{command['inv']}"]
    assert inv["st"] == "sent" and inv["out"]["provider_id"] == "<m@acme.fi>"
    assert [(r["st"], kind) for r, kind in batch.records] == [("sent", "invitation")]
    buckets = Counter(what for k, v in store.items() if k.startswith("Q|") for what, _ in v)
    assert buckets == {"remind": 0, "forget": 1} or buckets == Counter({"forget": 1})  # no reminder program


def test_deliver_an_interrupted_send_is_failed_unless_the_channel_is_idempotent():
    b = book()
    command = invite_command(b)
    for idempotent, expected in ((False, "failed"), (True, None)):
        store = Store({f"I|{command['inv']}": {**{k: v for k, v in command.items() if k != "op"}, "st": SENDING,
                                               "out": None, "rst": None, "rout": None, "resp": False}})
        batch = deliver_batch(b, store, idempotent=idempotent)
        batch.command("due", command["inv"], {"op": "due", "what": "send", "inv": command["inv"]}, 0)
        if expected:
            ((inv, kind),) = batch.records
            assert (inv["st"], inv["out"]["reason"], inv["to"]) == ("failed", "send_interrupted", None)
            assert batch.sends == {}
        else:
            assert list(batch.sends) == [(command["inv"], "invitation")] and batch.records == []


def test_deliver_a_response_cancels_the_reminder_and_the_schedule_never_reuses_an_emitted_slot():
    b, store = book(), Store()
    t = trigger(5)
    command = json.loads(of(stage1(decide_step(b), Store(), [routed(t, 0)]), "candidates")[0].value)["invite"]
    batch = deliver_batch(b, store)
    batch.command("invite", command["inv"], command, 0)
    (send,) = batch.mark(list(batch.sends.values()))
    batch.finish(send, SendResult.sent(attempts=1, provider_id="p", cost=None, currency=None))
    store.apply(batch.state)
    assert store[f"I|{command['inv']}"]["reminder_at"] is not None
    batch = deliver_batch(b, store)
    batch.command("responded", command["inv"], {"op": "responded", "inv": command["inv"], "at": 1, "v": 1,
                                                 "score": 9}, 0)
    store.apply(batch.state)
    ((inv, kind),) = batch.records
    assert (kind, inv["rst"], inv["rout"]["reason"]) == ("reminder", "suppressed", "responded")
    store["L|0"] = 10**12  # the timer emitted slots up to this one
    batch = deliver_batch(b, store)
    batch.schedule(0, "send", "x", 0)
    assert batch.state.changes["Q|0|1000000000001"][1] == [["send", "x"]]


def test_deliver_schedule_appends_to_a_bucket_once_per_item_across_flushes():
    """A batch reads a bucket once and appends to it (an index of its items): the same bucket contents as a
    fresh read and a linear search per item — the stored items kept, repeats ignored, flushes in between."""
    b = book()
    store = Store({"L|0": 10, "Q|0|20": [["forget", "old"], ["send", "a-1"]]})
    batch = deliver_batch(b, store)
    expected = [["forget", "old"], ["send", "a-1"]]
    for i in range(300):
        for what, inv_id in (("forget", f"a-{i}"), ("send", f"a-{i}"), ("forget", f"a-{i // 2}")):
            batch.schedule(20 * 5000, what, inv_id, 0)
            if [what, inv_id] not in expected:
                expected.append([what, inv_id])
        if i % 97 == 0:
            store.apply(batch.state)  # a flush: the next changes stage the whole bucket again
    store.apply(batch.state)
    assert store["Q|0|20"] == expected
    batch.schedule(0, "send", "late", 0)  # a slot the timer has emitted: into the first one it has not
    store.apply(batch.state)
    assert store["Q|0|11"] == [["send", "late"]]


def test_channel_invitation_is_what_it_was_before_its_parts_were_cached():
    """Links signed with the prepared key and the (org, program, locale) texts and branding computed once: the
    very Invitation the uncached code built, and each one with dicts of its own."""
    from npsflow.programs import branding, texts
    from sinks.channels.base import Invitation
    from streams import links
    from streams.dispatch import LINK_KEY_ID, link_key
    from streams.responses import from_ms

    b = book()
    for i, (channel, locale, reminder) in enumerate([("email", "fi", False), ("email", "sv", True),
                                                     ("sms", "fi", False), ("email", "fi", True)]):
        command = {**invite_command(b, i), "channel": channel, "locale": locale}
        command["to"]["phone"] = "+358401234567"
        org, program = b.found(command["org"], command["program"])
        expires, key = from_ms(command["expires_at"]), link_key(SECRET)
        url = (links.short_survey_url(b.survey_url, command["inv"], expires, key, LINK_KEY_ID) if channel == "sms"
               else links.survey_url(b.survey_url, links.sign_token(command["inv"], expires, key, LINK_KEY_ID)))
        brand = branding(org, locale)
        expected = Invitation(
            invitation_id=command["inv"], org_id="acme", org_name=brand["name"], locale=locale,
            to_email=command["to"]["email"], to_phone="+358401234567", survey_url=url,
            score_urls=links.one_click_urls(b.survey_url, command["inv"], expires, key, LINK_KEY_ID),
            texts=texts(org, locale, program),
            branding={"name": brand["name"], "logo_url": brand.get("logo_url"), "colors": brand.get("colors") or {},
                      "sender_name": brand.get("sender_name"), "sender_email": brand.get("sender_email"),
                      "sms_sender": brand.get("sms_sender_id")},
            reminder=reminder, contact_ref=command["to"]["contact_id"], campaign=None)
        first, second = (b.channel_invitation(command, reminder=reminder) for _ in range(2))
        assert first == expected == second
        assert first.texts is not second.texts and first.branding["colors"] is not second.branding["colors"]


def test_ids_pseudonyms_and_locales_are_what_they_were_before_their_parts_were_cached():
    """The HMAC key prepared once (``_keyed``), base32 of the digest's first 15 bytes, the locale resolved once per
    (org, program, requested locale): the same values as computed from scratch."""
    import base64
    import hashlib
    import hmac

    from npsflow.programs import resolve_locale
    from streams import contact_rules

    def mac(secret, purpose, *parts):
        key = secret.encode() if isinstance(secret, str) else secret
        message = purpose.encode() + b"".join(b"\x00%d:%s" % (len(p.encode()), p.encode()) for p in parts)
        return hmac.new(key, message, hashlib.sha256).digest()

    for secret in (SECRET, "a-text-secret-åäö", b"another-secret-0123456789"):
        for i, (org, event) in enumerate([("acme", "ev-1"), ("a:b", "c"), ("a", "b:c"), ("örg", "€vent-" * 30)]):
            digest = mac(secret, "invitation-late" if i % 2 else "invitation", org, event)
            assert invitation_id(org, event, secret, late=bool(i % 2)) == \
                base64.b32encode(digest).decode("ascii")[:20].lower()
            assert contact_rules.contact_key(org, event, secret) == mac(secret, "contact", org, event).hex()[:32]
    b = book()
    org, program = b.found("acme", "service")
    for requested in (None, "fi", "sv-FI", "en", "xx", "fi", None):
        assert b.locale(org, program, requested) == resolve_locale(org, requested, program)
    with pytest.raises(ValueError):
        contact_rules.contact_key("acme", "c-1", b"")


def test_found_is_looked_up_once_per_programs_object():
    b = book(cap=7)
    org, program = b.found("acme", "service")
    assert (org.id, program.id, program.daily_cap) == ("acme", "service", 7)
    assert b.found("acme", "service")[1] is program and b.found("acme", "nope") is None
    assert b.found("nobody", "service") is None
    b.programs = book(cap=3).programs  # another programs object (tests swap them): looked up again
    assert b.found("acme", "service")[1].daily_cap == 3
    b.programs = None
    assert b.found("acme", "service") is None


def test_deliver_erase_tombstones_the_invitation_keeps_a_marker_and_never_sends_it_again():
    b, store = book(), Store()
    command = invite_command(b)
    inv_id = command["inv"]
    batch = deliver_batch(b, store)
    batch.command("invite", inv_id, command, 0)
    (send,) = batch.sends.values()
    batch.finish(batch.mark([send])[0], SendResult.sent(attempts=1, provider_id="<m@acme.fi>", cost=0.001,
                                                        currency="EUR"))
    store.apply(batch.state)
    at = int(NOW.timestamp() * 1000) + 5
    batch = deliver_batch(b, store)
    batch.command("erase", inv_id, {"op": "erase", "inv": inv_id, "at": at}, 0)
    store.apply(batch.state)
    assert f"I|{inv_id}" not in store and store[f"Z|{inv_id}"] == {"t": at, "p": 0}
    assert batch.erased == [(0, inv_id, at)] and batch.counts["deliver.erased"] == 1
    forget_at = [k for k, v in store.items() if k.startswith("Q|") and ["forget", inv_id] in v]
    assert len(forget_at) >= 1  # the marker goes with the invitation's forget (expiry + 7 days)

    batch = deliver_batch(b, store)  # a repeated note, a redelivered invite, a late answer: nothing
    batch.command("erase", inv_id, {"op": "erase", "inv": inv_id, "at": at + 1}, 0)
    batch.command("invite", inv_id, command, 0)
    batch.command("responded", inv_id, {"op": "responded", "inv": inv_id, "v": 2, "score": 9}, 0)
    assert batch.state.changes == {} and batch.sends == {} and batch.records == []
    assert (batch.counts["deliver.erase_repeated"], batch.counts["deliver.invite_erased"],
            batch.counts["deliver.responded_erased"]) == (1, 1, 1)
    assert batch.erased == [(0, inv_id, at + 1)]  # the agent strips the memo again (idempotent)
    batch.command("due", inv_id, {"op": "due", "what": "forget", "inv": inv_id}, 0)
    store.apply(batch.state)
    assert f"Z|{inv_id}" not in store and f"I|{inv_id}" not in store
