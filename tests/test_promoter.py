"""Promoter actions (issue 12 point 3) without Kafka: configuration, the deliver stage's note, stage 1's decisions,
the cap stage's claims of reward codes, the message a channel gets — over plain dicts standing in for the tables.

Oracles are independent of the code under test: the expected kinds per score come from the configuration written
here, the expected codes from the list written here, the quiet-hours end from the wall clock written here."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from npsflow.programs import ProgramsError, parse_programs
from sinks.channels.base import SendResult
from sinks.channels.email import MailTemplates
from sinks.channels.sms import sms_body
from streams import promoter
from streams.deliver import DeliverBatch
from streams.dispatch import DispatchBook
from streams.dispatch_steps import CapStep, DecideStep, Overlay, StepOutcome
from streams.kafka_io import partition_for
from streams.triggers import trigger_key
from tests.programs import DEFAULT, acme, program, programs_yaml, service

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)  # 14:00 in Helsinki
SECRET = b"promoter-secret-0123456789"
PARTITIONS = 6
CODES = ["SPRING-001", "SPRING-002", "SPRING-003"]


def actions(codes=CODES, channels=("email", "sms")) -> dict:
    """The promoter actions of Acme's service: a 10 asks for a review and gets a reward code, a 9 a thank-you."""
    return {10: ["review_request", "reward"], 9: ["thank_you"], "channels": list(channels), "quarantine": "30d",
            "reward_codes": codes}


def programs(promoter_actions: dict, *more: dict, review_url="https://reviews.example.com/acme") -> str:
    """Acme's service program with these promoter actions, its plain program, and ``more`` programs."""
    return programs_yaml(acme(
        service(quiet_hours={"start": "21:00", "end": "08:00"}, reminder_after="2d",
                cost={"email": 0.002, "sms": 0.1, "currency": "EUR"}, promoter_actions=promoter_actions),
        program("plain", "nps-plain", ["order.delivered"], quiet_hours=DEFAULT),
        *more, brand={"sms_sender_id": "Acme"}, review_url=review_url, opt_out=["c-out"]))


def book(codes=CODES, channels=("email", "sms")) -> DispatchBook:
    return DispatchBook(parse_programs(programs(actions(codes, channels))), SECRET, "https://nps.acme.fi/s")


class Store(dict):
    def view(self) -> Overlay:
        return Overlay(self.get)

    def apply(self, overlay: Overlay) -> None:
        for key, (_, value) in overlay.drain().items():
            if value is None:
                self.pop(key, None)
            else:
                self[key] = json.loads(json.dumps(value))


def encode(record: dict) -> bytes:
    return json.dumps(record, default=str).encode()


def invitation(i: int, contact: str | None = None, program: str = "service", email: str | None = "x",
               phone: str | None = None, timezone_name: str = "Europe/Helsinki") -> dict:
    """An invitation as the deliver stage keeps it after it was sent."""
    contact = contact or f"c-{i}"
    return {"inv": f"inv-{i}", "org": "acme", "program": program, "survey_id": "nps-service", "event_id": f"ev-{i}",
            "contact_key": f"key-{contact}", "channel": "email", "locale": "fi",
            "to": {"email": f"{contact}@kunde.fi" if email else None, "phone": phone, "contact_id": contact},
            "timezone": timezone_name, "segment": {"location": "Espoo"}, "send_at": 0, "reminder_at": None,
            "expires_at": 10**13, "decided_at": 0, "why": "delay", "st": "sent", "out": {}, "rst": None,
            "rout": None, "resp": False, "tries": 0, "rtries": 0}


def answered(b: DispatchBook, store: Store, inv: dict, score: int, version: int = 1, now=NOW) -> list[dict]:
    """The deliver stage gets the classify agent's ``responded`` note; → the promoter notes it emits."""
    store[f"I|{inv['inv']}"] = store.get(f"I|{inv['inv']}") or inv
    batch = DeliverBatch(b, store.view(), now, lambda c: False, 30 * 86400 * 1000, set())
    batch.command("responded", inv["inv"], {"op": "responded", "inv": inv["inv"], "at": 1, "v": version,
                                            "score": score, "comment": None, "follow_up": None}, 0)
    store.apply(batch.state)
    return batch.notes


def stage1(b: DispatchBook, store: Store, notes: list[dict], now=NOW, offset=0) -> StepOutcome:
    step, out = DecideStep(b, lambda key: partition_for(key, PARTITIONS), encode), StepOutcome()
    view = store.view()
    for i, note in enumerate(notes):
        step.note(note, partition_for(trigger_key("acme", note["to"]["contact_id"]), PARTITIONS), offset + i, view,
                  now, out)
    store.apply(view)
    return out


def cap(b: DispatchBook, store: Store, candidates: list[bytes], now=NOW) -> StepOutcome:
    view = store.view()
    out = CapStep(b, encode).run([(0, json.loads(c)) for c in candidates], view, now)
    store.apply(view)
    return out


def outputs(outcome: StepOutcome, name: str) -> list:
    return [o for o in outcome.outputs if o.name == name]


def kinds_of(outcome: StepOutcome) -> dict[str, str]:
    """What stage 1 decided per kind: 'invite', 'candidate' (reward) or the suppression reason."""
    out = {}
    for o in outcome.outputs:
        value = json.loads(o.value)
        if o.name == "invitations":
            out[value["kind"]] = "invite"
        elif o.name == "candidates":
            out[value["invite"]["kind"]] = "candidate"
        else:
            out[value["kind"]] = value["reason"]
    return out


def pipeline(b: DispatchBook, contact_store: Store, deliver_store: Store, cap_store: Store, inv: dict,
             score: int) -> list[dict]:
    """deliver (note) → stage 1 → cap stage: the invite commands the deliver stage gets."""
    notes = answered(b, deliver_store, inv, score)
    first = stage1(b, contact_store, notes)
    invites = [json.loads(o.value) for o in outputs(first, "invitations")]
    if outputs(first, "candidates"):
        invites += [json.loads(o.value) for o in outputs(cap(b, cap_store, [o.value for o in
                                                                          outputs(first, "candidates")]),
                                                         "invitations")]
    return invites


# ------------------------------------------------------------------------------------------- configuration
def test_the_configuration_names_every_mistake_on_its_own_line():
    text = programs({10: ["review_request", "raffle"], 8: ["thank_you"], "channels": ["newsletter"],
                     "quarantine": "soon", "reward_codes": ["A-1", "A-1", "bad code"]}, review_url=DEFAULT)
    with pytest.raises(ProgramsError) as exc:
        parse_programs(text)
    lines = exc.value.errors
    at = "organizations[0].programs[0].promoter_actions"
    assert f"{at}.score_10: unknown action 'raffle' (known: thank_you, review_request, reward)" in lines
    assert any(line.startswith(f"{at}.8: unknown key") for line in lines)
    assert any(line.startswith(f"{at}.channels: unknown channel 'newsletter'") for line in lines)
    assert any(line.startswith(f"{at}.quarantine: must be a duration") for line in lines)
    assert f"{at}.reward_codes: code [1] is the same as code [0]: each code may be issued once" in lines
    assert f"{at}: review_request needs the organization's review_url" in lines
    assert not any("A-1" in line for line in lines), "codes are vouchers: never echoed"


def test_reward_codes_come_from_a_file_and_a_reward_needs_them(tmp_path):
    (tmp_path / "codes.txt").write_text("# spring campaign\nF-1\n\nF-2  # second\n", encoding="utf-8")
    text = programs(actions({"file": "codes.txt"}, ["email"]))
    loaded = parse_programs(text, base_dir=tmp_path).organization("acme").program("service").promoter_actions
    assert loaded.reward_codes == ("F-1", "F-2") and loaded.actions_for(10) == ("review_request", "reward")
    assert loaded.actions_for(9) == ("thank_you",) and loaded.actions_for(8) == ()
    with pytest.raises(ProgramsError, match=r"reward_codes: required when an action is reward"):
        parse_programs(programs({k: v for k, v in actions(channels=["email"]).items() if k != "reward_codes"}))


# ------------------------------------------------------------------------------------------- deliver: the note
def test_a_first_answer_of_9_or_10_makes_one_note_and_nothing_else_does():
    b = book()
    assert answered(b, Store(), invitation(1), 8) == []
    assert answered(b, Store(), invitation(2), 6) == []
    (ten,) = answered(b, Store(), invitation(3), 10)
    (nine,) = answered(b, Store(), invitation(4), 9)
    assert (ten["kinds"], nine["kinds"]) == (["review_request", "reward"], ["thank_you"])
    assert ten["to"]["email"] == "c-3@kunde.fi" and ten["op"] == "promoter"
    plain = invitation(5, program="plain")
    assert answered(b, Store(), plain, 10) == []  # no promoter actions configured


def test_edits_never_add_or_recall_an_action_and_the_address_goes_after_the_first_answer():
    b, store = book(), Store()
    inv = invitation(1)
    assert len(answered(b, store, inv, 9)) == 1
    assert store["I|inv-1"]["to"] is None and store["I|inv-1"]["pa"] == 9
    assert answered(b, store, inv, 10, version=2) == []  # 9 → 10: no review request, no reward
    assert answered(b, store, inv, 6, version=3) == []  # → 6: nothing recalled, nothing new
    store2 = Store()
    assert answered(b, store2, invitation(2), 6) == []
    assert answered(b, store2, invitation(2), 10, version=2) == []  # 6 → 10: the first answer decided


def test_the_address_is_kept_after_the_send_only_while_a_promoter_answer_may_come():
    b = book()
    for program_id, kept in (("service", True), ("plain", False)):
        store = Store()
        inv = {**invitation(1, program=program_id), "st": "scheduled", "out": None}
        store["I|inv-1"] = inv
        batch = DeliverBatch(b, store.view(), NOW, lambda c: False, 30 * 86400 * 1000, set())
        batch.command("due", "inv-1", {"op": "due", "what": "send", "inv": "inv-1"}, 0)
        (marked,) = batch.mark(list(batch.sends.values()))
        batch.finish(marked, SendResult.sent(attempts=1, provider_id="p", cost=None, currency=None))
        store.apply(batch.state)
        assert (store["I|inv-1"]["to"] is not None) is kept


# ------------------------------------------------------------------------------------------- stage 1
def test_9s_and_10s_get_their_own_actions():
    b = book()
    ten = stage1(b, Store(), answered(b, Store(), invitation(1), 10))
    nine = stage1(b, Store(), answered(b, Store(), invitation(2), 9))
    assert kinds_of(ten) == {"review_request": "invite", "reward": "candidate"}
    assert kinds_of(nine) == {"thank_you": "invite"}
    (review,) = [json.loads(o.value) for o in outputs(ten, "invitations")]
    assert review["event_id"] == "promoter:inv-1" and review["reminder_at"] is None and review["channel"] == "email"


def test_opted_out_and_unreachable_contacts_get_suppressed_records_of_the_action_kinds():
    b = book(channels=["sms"])
    out = stage1(b, Store(), answered(b, Store(), invitation(1, contact="c-out", phone="+358401234567"), 9))
    assert kinds_of(out) == {"thank_you": "opted_out"}
    out = stage1(b, Store(), answered(b, Store(), invitation(2), 10))  # e-mail only, actions by SMS
    assert kinds_of(out) == {"review_request": "no_contact", "reward": "no_contact"}
    (record,) = [json.loads(o.value) for o in outputs(out, "dispatches")][:1]
    assert record["status"] == "suppressed" and record["event_id"] == "promoter:inv-2"


def test_each_action_kind_has_its_own_quarantine_apart_from_the_surveys():
    b, contacts = book(), Store()
    contacts["C|acme|survey"] = {"last_invited_at": NOW.isoformat(), "p": 0}  # the survey quarantine: untouched
    first = stage1(b, contacts, answered(b, Store(), invitation(1, contact="c-9"), 9))
    assert kinds_of(first) == {"thank_you": "invite"}
    later = NOW + timedelta(days=10)
    again = stage1(b, contacts, answered(b, Store(), invitation(2, contact="c-9"), 10, now=later), now=later,
                   offset=10)
    assert kinds_of(again) == {"review_request": "invite", "reward": "candidate"}  # other kinds: not blocked
    third = stage1(b, contacts, answered(b, Store(), invitation(3, contact="c-9"), 9, now=later), now=later,
                   offset=20)
    assert kinds_of(third) == {"thank_you": "quarantine"}  # 10 days after a thank-you: within 30 d
    after = NOW + timedelta(days=31)
    fourth = stage1(b, contacts, answered(b, Store(), invitation(4, contact="c-9"), 9, now=after), now=after,
                    offset=30)
    assert kinds_of(fourth) == {"thank_you": "invite"}
    assert contacts["C|acme|survey"] == {"last_invited_at": NOW.isoformat(), "p": 0}


def test_an_sms_action_at_night_waits_for_the_end_of_the_contacts_quiet_hours():
    b = book(channels=["sms"])
    night = datetime(2026, 11, 20, 21, 30, tzinfo=timezone.utc)  # 23:30 in Helsinki (UTC+2 in November)
    inv = invitation(1, email=None, phone="+358401234567")
    out = stage1(b, Store(), answered(b, Store(), inv, 9, now=night), now=night)
    (invite,) = [json.loads(o.value) for o in outputs(out, "invitations")]
    assert invite["channel"] == "sms" and invite["why"] == "quiet_hours"
    assert invite["send_at"] == int(datetime(2026, 11, 21, 6, 0, tzinfo=timezone.utc).timestamp() * 1000)  # 08:00


def test_a_note_seen_again_decides_nothing_and_its_redelivery_re_emits_the_same_outputs():
    b, contacts = book(), Store()
    (note,) = answered(b, Store(), invitation(1), 10)
    first = stage1(b, contacts, [note], offset=5)
    redelivered = stage1(b, contacts, [note], offset=5)
    duplicate = stage1(b, contacts, [note], offset=9)
    assert [(o.name, o.key, o.value) for o in redelivered.outputs] == [(o.name, o.key, o.value)
                                                                      for o in first.outputs]
    assert duplicate.outputs == [] and duplicate.counts["promoter.duplicate"] == 1


# ------------------------------------------------------------------------------------------- reward codes
def reward_candidate(b: DispatchBook, i: int) -> bytes:
    (note,) = answered(b, Store(), invitation(i), 10)
    (candidate,) = outputs(stage1(b, Store(), [note]), "candidates")
    return candidate.value


def codes_of(b: DispatchBook, outcome: StepOutcome) -> dict[str, str]:
    """message id → the code the channel would send (looked up like the deliver stage does)."""
    return {inv["inv"]: b.reward_code(inv) for inv in (json.loads(o.value) for o in outputs(outcome, "invitations"))}


def test_a_replay_gets_the_same_code_and_another_event_the_next_until_the_pool_is_exhausted():
    b, store = book(), Store()
    first, second, third, fourth = (reward_candidate(b, i) for i in range(1, 5))
    got = codes_of(b, cap(b, store, [first]))
    assert list(got.values()) == ["SPRING-001"]
    assert codes_of(b, cap(b, store, [first])) == got  # a replay: its memo, the same code
    within = [b.reward_code(json.loads(o.value)) for o in outputs(cap(b, store, [second, third, second]),
                                                                  "invitations")]
    assert within == ["SPRING-002", "SPRING-003", "SPRING-002"]  # a repeat within one batch, too
    exhausted = cap(b, store, [fourth])
    (record,) = [json.loads(o.value) for o in outputs(exhausted, "dispatches")]
    assert (record["kind"], record["status"], record["reason"]) == ("reward", "suppressed", "reward_pool_exhausted")
    assert exhausted.counts["promoter.reward.suppressed.reward_pool_exhausted"] == 1
    appended = book(codes=CODES + ["SPRING-004"])  # codes appended: the pool goes on
    assert list(codes_of(appended, cap(appended, store, [fourth])).values()) == ["SPRING-004"]
    assert "SPRING" not in json.dumps(store), "the state holds indices and fingerprints, never a code"


def test_a_pool_whose_claimed_codes_changed_stops_instead_of_issuing_a_code_twice():
    b, store = book(), Store()
    cap(b, store, [reward_candidate(b, 1)])
    reordered = book(codes=["SPRING-002", "SPRING-001", "SPRING-003"])  # the claimed prefix changed
    out = cap(reordered, store, [reward_candidate(b, 2)])
    (record,) = [json.loads(o.value) for o in outputs(out, "dispatches")]
    assert (record["status"], record["reason"]) == ("failed", "reward_pool_changed")
    claimed = json.loads(outputs(cap(b, Store(), [reward_candidate(b, 3)]), "invitations")[0].value)
    assert reordered.send_block(claimed, "invitation", NOW) == ("fail", "reward_pool_changed")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 7), min_size=1, max_size=4),
                          st.sampled_from(["new", "replay", "lost"])), min_size=1, max_size=30), st.integers(1, 6))
def test_no_code_is_ever_issued_to_two_messages_across_replays_and_lost_state_writes(script, pool_size):
    """Any interleaving of batches of reward messages: decided once, redelivered at once ("replay": the batch
    again after its state was written), or "lost": decided, its outputs produced, then the crash before the state
    write — and Kafka redelivers the same records, in the same order but in other batches. Oracle: a code is
    issued to one message only, a message keeps its code, and min(messages, pool) codes are issued in order."""
    codes = [f"P-{i:03d}" for i in range(pool_size)]
    b, store = book(codes=codes), Store()
    candidates = {i: reward_candidate(b, 100 + i) for i in {i for batch, _ in script for i in batch}}
    issued: dict[str, str] = {}

    def record(outcome: StepOutcome) -> None:
        for o in outputs(outcome, "invitations"):
            invite = json.loads(o.value)
            assert issued.setdefault(invite["inv"], b.reward_code(invite)) == b.reward_code(invite), \
                "a message got two codes"

    for batch, how in script:
        values = [candidates[i] for i in batch]
        if how == "lost":
            record(cap(b, Store(json.loads(json.dumps(store))), values))  # its outputs reached Kafka, its state not
            for value in values:  # redelivered one by one
                record(cap(b, store, [value]))
        else:
            record(cap(b, store, values))
            if how == "replay":
                record(cap(b, store, values))
    assert len(set(issued.values())) == len(issued), "a code went to two messages"
    assert len(issued) == min(len(candidates), pool_size)
    assert sorted(issued.values()) == codes[:len(issued)]


# ------------------------------------------------------------------------------------------- the message
def test_the_messages_carry_their_texts_the_review_link_and_the_code_and_are_audited_by_kind():
    b, deliver_store = book(), Store()
    invites = pipeline(b, Store(), Store(), Store(), invitation(1), 10)
    assert sorted(i["kind"] for i in invites) == ["review_request", "reward"]
    batch = DeliverBatch(b, deliver_store.view(), NOW, lambda c: False, 30 * 86400 * 1000, set())
    for invite in invites:
        batch.command("invite", invite["inv"], invite, 0)
    marked = batch.mark(list(batch.sends.values()))
    messages = {s.inv["kind"]: b.channel_invitation(s.inv) for s in marked}
    for send in marked:
        batch.finish(send, SendResult.sent(attempts=1, provider_id="p", cost=0.001, currency="EUR"))
    records = [b.invitation_record(inv, kind=kind) for inv, kind in batch.records]
    assert sorted((r["kind"], r["status"], r["cost"]) for r in records) == [("review_request", "sent", 0.002),
                                                                           ("reward", "sent", 0.002)]
    assert all(r["event_id"] == "promoter:inv-1" for r in records)
    assert "SPRING" not in json.dumps(records, default=str) and "SPRING" not in json.dumps(deliver_store)
    mail = MailTemplates(sender_email="nps@acme.fi").build(messages["reward"], NOW).data.decode()
    assert "SPRING-001" in mail and "To: c-1@kunde.fi" in mail
    review = MailTemplates(sender_email="nps@acme.fi").build(messages["review_request"], NOW).data.decode()
    assert "https://reviews.example.com/acme" in review.replace("=\r\n", "")
    sms = b.channel_invitation({**marked[0].inv, "channel": "sms", "kind": "thank_you"})
    assert sms_body(sms).startswith("Kiitos ystävällisistä sanoistasi")
    assert not any(inv.get("reminder_at") for inv, _ in batch.records)


def test_no_promoter_actions_leave_the_survey_path_as_it_was():
    b, store = book(), Store()
    inv = invitation(1, program="plain")
    assert answered(b, store, inv, 10) == []
    assert "pa" not in store["I|inv-1"] and promoter.note_for(inv, 10, None, 0) is None


def test_a_promoter_message_falls_back_only_to_the_actions_channels():
    b = book(channels=["email", "sms"])
    inv = {**invitation(1, phone="+358401234567"), "kind": "thank_you"}
    assert b.fallback(inv) == "sms"
    only_mail = book(channels=["email"])
    assert only_mail.fallback(inv) is None  # the survey program's channels are not the actions'
    assert only_mail.fallback({**inv, "kind": "invitation"}) is None  # survey: email only, too


def test_a_code_in_two_pools_is_refused():
    text = programs(actions(CODES, ["email"]),
                    program("third", "nps-third", ["visit.done"], quiet_hours=DEFAULT,
                            promoter_actions={10: ["reward"], "reward_codes": ["OTHER-1", "SPRING-002"]}))
    with pytest.raises(ProgramsError) as exc:
        parse_programs(text)
    assert exc.value.errors == ["organizations[0].programs[2].promoter_actions.reward_codes: code [1] is also in "
                                "the pool of organizations[0].programs[0]: each code may be issued once"]
