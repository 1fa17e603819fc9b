"""The dispatch, cap, release and deliver agents without a broker (agent.test_context), with an injectable clock.

Outputs are captured at the topic boundary (see tests/test_agents.py Harness); the cap stage is fed with the
candidates stage 1 emitted (and stage 1 with the cap stage's releases), the deliver stage with the invites, and
the schedule timer is called directly with the clock moved forward.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from npsflow.programs import parse_programs
from schemas import codec as avro
from sinks.channels.base import SendResult
from streams import links
from streams.dispatch import invitation_id, link_key
from streams.triggers import trigger_key
from tests.programs import DEFAULT, acme, program, programs_yaml, service
from tests.test_agents import Harness, until

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
CODEC = avro.AvroCodec()
SECRET = "test-secret-0123456789"


def acme_programs(delivery: dict | None = None, **service_settings) -> str:
    """Acme's service and delivery programs; ``service_settings`` and ``delivery``: settings that differ."""
    return programs_yaml(acme(
        service(**{"channels": ["sms", "email"], "daily_cap": 4, "reminder_after": "2d",
                   "cost": {"sms": 0.15, "email": 0.002, "currency": "EUR"}, **service_settings}),
        program("delivery", "nps-delivery", ["order.delivered"],
                **{"delay": "2h", "quiet_hours": DEFAULT, **(delivery or {})}),
        brand={"sms_sender_id": "Acme", "logo_url": "https://acme.fi/l.png"}, opt_out=["c-opted"]))


PROGRAMS = acme_programs()


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """A channel that records what it was asked to send (the real channels are tested in test_channels and
    end to end against aiosmtpd and an HTTP gateway)."""

    def __init__(self, name: str, fail: str | None = None):
        self.name, self.fail, self.sent = name, fail, []

    async def send(self, invitation):
        self.sent.append(invitation)
        if self.fail:
            return SendResult.failed(self.fail, attempts=3, detail="550")
        return SendResult.sent(attempts=1, provider_id=f"p-{invitation.delivery_id}", cost=0.5, currency="SEK")


def trigger(event_id="ev-1", contact_id="c-1", event_type="job.completed", org="acme", email="a@acme-kunde.fi",
            phone="+358401234567", at=NOW - timedelta(minutes=5), now=NOW, **segment) -> dict:
    from streams.triggers import validate_trigger

    contact = {"contact_id": contact_id, "email": email, "phone": phone, "locale": "fi-FI"}
    obj = {"event_id": event_id, "org_id": org, "event_type": event_type, "occurred_at": at.isoformat(),
           "contact": {k: v for k, v in contact.items() if v}, "segment": {"location": "Espoo", **segment}}
    return validate_trigger(obj, now)


def encoded(t: dict) -> bytes:
    return CODEC.encode(avro.TRIGGER_EVENT, t)


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture
def channels():
    return {"sms": Recorder("sms"), "email": Recorder("email"), "newsletter": Recorder("newsletter")}


@pytest.fixture
def harness(tmp_path, clock, channels):
    return Harness(tmp_path, clock=clock, env={"NPSFLOW_SECRET": SECRET, "NPSFLOW_SURVEY_URL": "https://nps.acme.fi/s"},
                   programs=parse_programs(PROGRAMS), channels=channels)


def records(harness) -> list[dict]:
    return harness.decoded("dispatches", avro.DISPATCHED_MESSAGE)


def commands(harness) -> list[tuple[bytes, dict]]:
    return [(k, json.loads(v)) for k, v in harness.sent["invitations"]]


def table(harness, name: str) -> dict:
    """A state table as {key: value} (keys and values are raw JSON in the tables)."""
    return {json.loads(k): json.loads(v) for k, v in harness.pipeline.tables[name].data.items()}


def put_state(harness, name: str, key: str, value) -> None:
    harness.pipeline.tables[name].data[json.dumps(key).encode()] = json.dumps(value).encode()


def logged(harness, name: str) -> list[tuple[int, str, object]]:
    """The changelog records a table wrote: (partition, key, value or None)."""
    return [(p, json.loads(k), None if v is None else json.loads(v)) for p, k, v in harness.changelog[name]]


async def run_agent(harness, name: str, items: list[tuple[bytes, bytes]]) -> None:
    """Put ``items`` and wait until the batched agent acked them all (its sends may suspend it)."""
    done = harness.pipeline.stats.counts[f"{name}.records"] + len(items)
    async with harness.feed(name) as agent:
        for key, value in items:
            await agent.put(value, key=key, partition=0)
        await until(lambda: harness.pipeline.stats.counts[f"{name}.records"] >= done)


async def run_dispatch(harness, *triggers, key=None):
    """Stage 1 over the triggers, then the cap stage over its candidates, then stage 1 over the releases."""
    candidates, releases = len(harness.sent["candidates"]), len(harness.sent["releases"])
    await run_agent(harness, "dispatch", [
        (key or trigger_key(t["org_id"], t["contact"]["contact_id"]), encoded(t)) if isinstance(t, dict)
        else (key or b"acme|c-1", t) for t in triggers])
    if len(harness.sent["candidates"]) > candidates:
        await run_agent(harness, "cap", harness.sent["candidates"][candidates:])
    if len(harness.sent["releases"]) > releases:
        await run_agent(harness, "release", harness.sent["releases"][releases:])


async def run_deliver(harness, items, records_expected: int | None = None):
    """Feed commands to the deliver agent; with ``records_expected``, wait for that many dispatch records (a
    channel doing real I/O finishes after the put returns)."""
    await run_agent(harness, "deliver", [(key, json.dumps(command).encode()) for key, command in items])
    if records_expected is not None:
        await until(lambda: len(harness.sent["dispatches"]) >= records_expected)


async def test_trigger_becomes_an_sms_invitation_with_a_short_signed_link(harness, channels):
    await run_dispatch(harness, trigger())
    assert records(harness) == []  # stage 1 emits no record for an invitation: stage 2 records the send
    ((key, invite),) = commands(harness)
    inv_id = invitation_id("acme", "ev-1", SECRET.encode())
    assert key == inv_id.encode() and invite["op"] == "invite" and invite["channel"] == "sms"
    assert invite["segment"] == {"location": "Espoo"} and invite["locale"] == "fi"

    await run_deliver(harness, commands(harness))
    (sms,) = channels["sms"].sent
    assert sms.to_phone == "+358401234567" and sms.invitation_id == inv_id and not sms.reminder
    assert sms.survey_url.startswith("https://nps.acme.fi/s/") and len(sms.survey_url) <= 60
    claims = links.verify_token(sms.survey_url.rsplit("/", 1)[1], {"k1": link_key(SECRET.encode())}, NOW)
    assert claims.invitation_id == inv_id and claims.expires_at == NOW.replace(microsecond=0) + timedelta(days=30)
    assert [links.verify_token(u.rsplit("/", 1)[1], {"k1": link_key(SECRET.encode())}, NOW).score
            for u in sms.score_urls] == list(range(11))
    assert sms.texts["question"].startswith("Kuinka todennäköisesti") and sms.branding["sms_sender"] == "Acme"
    (rec,) = records(harness)
    assert (rec["dispatch_id"], rec["invitation_id"], rec["status"], rec["kind"]) == (inv_id, inv_id, "sent",
                                                                                      "invitation")
    assert (rec["cost"], rec["currency"]) == (0.15, "EUR")  # the program's price wins over the channel's
    assert (rec["provider_id"], rec["attempts"], rec["survey_id"]) == (f"p-{inv_id}", 1, "nps-service")
    assert rec["contact_key"] != "c-1" and "358" not in json.dumps(rec, default=str)  # no personal data


async def test_each_trigger_gets_exactly_one_outcome_duplicates_are_dropped(harness):
    await run_dispatch(harness, trigger(), trigger(), trigger(event_id="ev-2", contact_id="c-2"))
    assert [c["event_id"] for _, c in commands(harness)] == ["ev-1", "ev-2"]
    assert harness.pipeline.stats.as_dict()["dispatch.duplicate"] == 1


@pytest.mark.parametrize("kw,reason", [
    (dict(org="nobody"), "unknown_org"),
    (dict(event_type="invoice.paid"), "no_program"),
    (dict(contact_id="c-opted"), "opted_out"),
    (dict(email=None, phone=None), "no_contact"),
    (dict(at=NOW - timedelta(days=8)), "too_old"),
])
async def test_suppressions_are_recorded_with_their_reason(harness, kw, reason):
    t = trigger(**kw)
    await run_dispatch(harness, t)
    (rec,) = records(harness)
    assert (rec["status"], rec["reason"], rec["event_id"], rec["invitation_id"]) == ("suppressed", reason, "ev-1", None)
    assert rec["segment"] == {"location": "Espoo"} and commands(harness) == []


async def test_quarantine_and_daily_cap_hold_across_triggers(harness):
    await run_dispatch(harness, trigger(event_id="a", contact_id="c-1"), trigger(event_id="b", contact_id="c-1"),
                       *[trigger(event_id=f"x{i}", contact_id=f"c-x{i}") for i in range(5)])
    invited = [c["event_id"] for _, c in commands(harness)]
    reasons = {r["event_id"]: r["reason"] for r in records(harness)}
    assert invited == ["a", "x0", "x1", "x2"]  # daily cap 4
    assert reasons == {"b": "quarantine", "x3": "cap", "x4": "cap"}


async def test_a_trigger_keyed_wrongly_is_rekeyed_to_its_organization_and_contact(harness):
    await run_dispatch(harness, trigger(), key=b"acme")  # keyed by org, as before
    assert harness.sent["triggers"] == [(b"acme|c-1", encoded(trigger()))] and commands(harness) == []


async def test_undecodable_trigger_is_dead_lettered(harness):
    await run_dispatch(harness, b"\x07junk")
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert (dl["stage"], dl["reason"]) == ("dispatch", "not_avro_wire_format")


async def test_a_redelivered_offset_re_emits_its_outputs_a_new_offset_does_not(harness):
    await run_dispatch(harness, trigger())
    first = list(harness.sent["invitations"])
    # Kafka redelivers offset 0 after a crash: the state says it was decided from that very offset.
    memo = table(harness, "dispatch_state")["E|acme|ev-1"]
    assert memo["src"] == [0, 0]
    candidates = list(harness.sent["candidates"])  # the program has a daily cap: via the cap stage
    await run_dispatch(harness, trigger())  # offset 0 again: a fresh test context counts from 0
    assert harness.sent["candidates"] == candidates * 2 and harness.sent["invitations"] == first * 2
    stats = harness.pipeline.stats.as_dict()
    assert (stats["dispatch.redelivered"], stats["cap.repeated"], stats["dispatch.sent"]) == (1, 1, 1)
    assert table(harness, "dispatch_state")["E|acme|ev-1"] == memo


async def test_scheduled_invitation_is_sent_when_its_slot_has_passed(harness, clock, channels):
    await run_dispatch(harness, trigger(event_type="order.delivered"))  # delay 2h, e-mail
    await run_deliver(harness, commands(harness))
    (scheduled,) = records(harness)
    assert scheduled["status"] == "scheduled" and scheduled["reason"] == "delay"
    assert scheduled["scheduled_for"] == NOW - timedelta(minutes=5) + timedelta(hours=2)
    assert channels["email"].sent == []
    fire_due = harness.pipeline.timers["fire_due"]
    assert await fire_due([0]) == 0  # not yet
    clock.now = scheduled["scheduled_for"] + timedelta(seconds=10)
    harness.sent["invitations"].clear()
    assert await fire_due([0]) == 1
    due = commands(harness)
    assert [c for _, c in due] == [{"op": "due", "what": "send", "inv": scheduled["invitation_id"]}]
    assert await fire_due([0]) == 0  # a bucket fires once
    await run_deliver(harness, due)
    (mail,) = channels["email"].sent
    assert mail.to_email == "a@acme-kunde.fi"
    sent = records(harness)[-1]
    assert (sent["dispatch_id"], sent["status"], sent["decided_at"]) == (scheduled["dispatch_id"], "sent", clock.now)
    await run_deliver(harness, due)  # the same due command again: nothing is sent twice
    assert len(channels["email"].sent) == 1


async def test_reminder_goes_out_once_after_the_delay_and_not_after_a_response(harness, clock, channels):
    await run_dispatch(harness, trigger(event_id="ev-1", contact_id="c-1"), trigger(event_id="ev-2", contact_id="c-2"))
    invites = commands(harness)
    await run_deliver(harness, invites)
    assert len(channels["sms"].sent) == 2
    answered = invites[1][1]["inv"]
    await run_deliver(harness, [(answered.encode(), {"op": "responded", "inv": answered, "at": 0})])
    cancelled = records(harness)[-1]
    assert (cancelled["dispatch_id"], cancelled["kind"], cancelled["status"], cancelled["reason"]) == (
        f"{answered}:reminder", "reminder", "suppressed", "responded")
    clock.now = NOW + timedelta(days=2, minutes=1)
    harness.sent["invitations"].clear()
    assert await harness.pipeline.timers["fire_due"]([0]) == 2
    await run_deliver(harness, commands(harness))
    reminders = [i for i in channels["sms"].sent if i.reminder]
    assert [r.invitation_id for r in reminders] == [invites[0][1]["inv"]]
    rec = records(harness)[-1]
    assert (rec["dispatch_id"], rec["kind"], rec["status"]) == (f"{invites[0][1]['inv']}:reminder", "reminder", "sent")
    await run_deliver(harness, commands(harness))  # replayed due commands: no second reminder
    assert len([i for i in channels["sms"].sent if i.reminder]) == 1


async def test_a_send_interrupted_by_a_crash_is_recorded_failed_not_resent(harness, channels):
    await run_dispatch(harness, trigger())
    ((key, invite),) = commands(harness)
    # What a worker that died during the send left behind: the durable "sending" mark.
    put_state(harness, "invitations", f"I|{invite['inv']}", {**{k: v for k, v in invite.items() if k != "op"},
                                                             "st": "sending", "out": None, "rst": None,
                                                             "rout": None, "resp": False})
    await run_deliver(harness, [(key, invite)])
    assert channels["sms"].sent == []
    (rec,) = records(harness)
    assert (rec["status"], rec["reason"]) == ("failed", "send_interrupted")


async def test_a_permanent_failure_falls_back_to_the_next_channel(harness, clock, channels):
    channels["sms"].fail = "gateway_4xx"
    await run_dispatch(harness, trigger())
    await run_deliver(harness, commands(harness))
    (rec,) = records(harness)
    assert (rec["status"], rec["reason"], rec["channel"]) == ("scheduled", "fallback:gateway_4xx", "email")
    clock.now = NOW + timedelta(seconds=10)
    harness.sent["invitations"].clear()
    assert await harness.pipeline.timers["fire_due"]([0]) == 1
    await run_deliver(harness, commands(harness))
    sent = records(harness)[-1]
    assert (sent["dispatch_id"], sent["status"], sent["channel"], sent["cost"]) == (rec["dispatch_id"], "sent",
                                                                                   "email", 0.002)
    assert [i.to_email for i in channels["email"].sent] == ["a@acme-kunde.fi"]


async def test_a_permanent_failure_without_another_channel_is_recorded(harness, channels):
    channels["sms"].fail = "gateway_4xx"
    await run_dispatch(harness, trigger(email=None))
    await run_deliver(harness, commands(harness))
    (rec,) = records(harness)
    assert (rec["status"], rec["reason"], rec["attempts"], rec["cost"]) == ("failed", "gateway_4xx", 3, None)
    assert table(harness, "invitations")[f"I|{rec['invitation_id']}"]["to"] is None


async def test_a_passing_failure_is_tried_again_later_with_backoff(harness, clock, channels):
    class Flaky(Recorder):
        calls = 0

        async def send(self, invitation):
            Flaky.calls += 1
            if Flaky.calls <= 2:
                return SendResult.failed("gateway_unreachable", attempts=4, retryable=True)
            return await super().send(invitation)

    channels["sms"] = Flaky("sms")
    await run_dispatch(harness, trigger())
    await run_deliver(harness, commands(harness))
    fire_due = harness.pipeline.timers["fire_due"]
    for wait in (timedelta(minutes=1), timedelta(minutes=5)):  # the first two backoff steps
        rec = records(harness)[-1]
        assert (rec["status"], rec["reason"]) == ("scheduled", "retry:gateway_unreachable")
        assert rec["scheduled_for"] == clock.now + wait
        clock.now += wait + timedelta(seconds=6)
        harness.sent["invitations"].clear()
        assert await fire_due([0]) == 1
        await run_deliver(harness, commands(harness))
    assert records(harness)[-1]["status"] == "sent" and Flaky.calls == 3 and len(channels["sms"].sent) == 1


async def test_rules_are_checked_again_when_a_scheduled_send_is_due(harness, clock, channels):
    """Opted out since, answered already, or night at the contact's: suppressed / suppressed / delayed."""
    from streams.contact_rules import contact_key

    await run_dispatch(harness, trigger(event_type="order.delivered"),
                       trigger(event_id="ev-2", contact_id="c-2", event_type="order.delivered"))
    invites = [c for _, c in commands(harness)]
    opted = {**invites[0], "event_id": "ev-9", "inv": "optedoutinvitation22",
             "contact_key": contact_key("acme", "c-opted", SECRET.encode())}
    await run_deliver(harness, [(c["inv"].encode(), c) for c in (*invites, opted)])
    await run_deliver(harness, [(invites[1]["inv"].encode(), {"op": "responded", "inv": invites[1]["inv"], "at": 0})])
    clock.now = NOW + timedelta(hours=2)
    harness.sent["invitations"].clear()
    assert await harness.pipeline.timers["fire_due"]([0]) == 3
    await run_deliver(harness, commands(harness), records_expected=6)
    latest = {r["invitation_id"]: r for r in records(harness)}
    assert (latest[invites[0]["inv"]]["status"], latest[invites[1]["inv"]]["status"]) == ("sent", "suppressed")
    assert latest[invites[1]["inv"]]["reason"] == "responded"
    assert (latest["optedoutinvitation22"]["status"], latest["optedoutinvitation22"]["reason"]) == ("suppressed",
                                                                                                    "opted_out")
    assert [i.invitation_id for i in channels["email"].sent] == [invites[0]["inv"]]


QUIET = acme_programs(delay="1h", quiet_hours=DEFAULT)


async def test_an_sms_due_at_night_waits_for_the_morning_and_its_reminder_counts_from_the_real_send(tmp_path, clock,
                                                                                                 channels):
    harness = Harness(tmp_path, clock=clock, env={"NPSFLOW_SECRET": SECRET, "NPSFLOW_SURVEY_URL": "https://nps.acme.fi/s"},
                      programs=parse_programs(QUIET), channels=channels)
    evening = datetime(2026, 11, 20, 16, 30, tzinfo=timezone.utc)  # 18:30 in Helsinki; due 19:30, before 21:00
    clock.now = evening
    await run_dispatch(harness, trigger(at=evening, now=evening))
    await run_deliver(harness, commands(harness))
    assert records(harness)[-1]["scheduled_for"] == evening + timedelta(hours=1)
    clock.now = datetime(2026, 11, 20, 21, 30, tzinfo=timezone.utc)  # the worker was down: 23:30 in Helsinki
    harness.sent["invitations"].clear()
    assert await harness.pipeline.timers["fire_due"]([0]) == 1
    await run_deliver(harness, commands(harness))
    moved = records(harness)[-1]
    morning = datetime(2026, 11, 21, 6, 0, tzinfo=timezone.utc)  # 08:00 in Helsinki
    assert (moved["status"], moved["reason"], moved["scheduled_for"]) == ("scheduled", "quiet_hours", morning)
    assert channels["sms"].sent == []
    clock.now = morning + timedelta(seconds=7)
    harness.sent["invitations"].clear()
    assert await harness.pipeline.timers["fire_due"]([0]) == 1
    await run_deliver(harness, commands(harness))
    assert records(harness)[-1]["status"] == "sent" and len(channels["sms"].sent) == 1
    inv = table(harness, "invitations")[f"I|{moved['invitation_id']}"]
    assert inv["reminder_at"] == int((clock.now + timedelta(days=2)).timestamp() * 1000)


async def test_an_interrupted_send_is_forgotten_in_time(harness, channels):
    await run_dispatch(harness, trigger())
    ((key, invite),) = commands(harness)
    put_state(harness, "invitations", f"I|{invite['inv']}", {**{k: v for k, v in invite.items() if k != "op"},
                                                             "st": "sending", "out": None, "rst": None,
                                                             "rout": None, "resp": False})
    await run_deliver(harness, [(key, invite)])
    buckets = [v for k, v in table(harness, "invitations").items() if k.startswith("Q|")]
    assert ["forget", invite["inv"]] in [item for items in buckets for item in items]
    assert table(harness, "invitations")[f"I|{invite['inv']}"]["to"] is None


async def test_a_late_duplicate_beyond_the_event_memory_still_meets_the_quarantine(tmp_path, clock, channels):
    programs = acme_programs(max_event_age=None, quarantine="180d")
    harness = Harness(tmp_path, clock=clock, env={"NPSFLOW_SECRET": SECRET, "NPSFLOW_SURVEY_URL": "https://nps.acme.fi/s"},
                      programs=parse_programs(programs), channels=channels)
    await run_dispatch(harness, trigger())
    clock.now = NOW + timedelta(days=95)
    assert await harness.pipeline.timers["expire_dispatch_state"]() == 2  # the event id (and the cap memo)
    await run_dispatch(harness, trigger())
    (rec,) = records(harness)
    assert (rec["status"], rec["reason"]) == ("suppressed", "quarantine")
    assert rec["dispatch_id"] != invitation_id("acme", "ev-1", SECRET.encode())
    assert re.fullmatch(r"[a-z2-7]{20}", rec["dispatch_id"])
    assert len(commands(harness)) == 1


async def test_a_replay_after_a_lost_memo_re_emits_the_invitation_and_counts_nothing_twice(tmp_path, clock, channels):
    programs = acme_programs(daily_cap=1)
    harness = Harness(tmp_path, clock=clock, env={"NPSFLOW_SECRET": SECRET, "NPSFLOW_SURVEY_URL": "https://nps.acme.fi/s"},
                      programs=parse_programs(programs), channels=channels)
    await run_dispatch(harness, trigger())
    counts = table(harness, "dispatch_caps")["O|acme|service"]
    del harness.pipeline.tables["dispatch_state"].data[b'"E|acme|ev-1"']  # a crash lost the memo, not the rest
    clock.now = NOW + timedelta(seconds=5)
    await run_dispatch(harness, trigger())
    assert records(harness) == []  # no "cap" record overwrites the invitation
    assert [c["inv"] for _, c in commands(harness)] == [invitation_id("acme", "ev-1", SECRET.encode())] * 2
    assert table(harness, "dispatch_caps")["O|acme|service"] == counts
    assert harness.pipeline.stats.as_dict()["cap.repeated"] == 1


async def test_the_daily_cap_is_counted_per_program(tmp_path, clock, channels):
    programs = acme_programs(daily_cap=1, delivery={"delay": "0m"})
    harness = Harness(tmp_path, clock=clock, env={"NPSFLOW_SECRET": SECRET, "NPSFLOW_SURVEY_URL": "https://nps.acme.fi/s"},
                      programs=parse_programs(programs), channels=channels)
    await run_dispatch(harness, trigger(event_id="a", contact_id="c-a", event_type="order.delivered"),
                       trigger(event_id="b", contact_id="c-b"), trigger(event_id="c", contact_id="c-c"))
    assert [c["event_id"] for _, c in commands(harness)] == ["a", "b"]  # the other program's invite did not count
    assert [(r["event_id"], r["reason"]) for r in records(harness)] == [("c", "cap")]


async def test_a_trigger_written_by_another_producer_is_validated_and_dead_lettered_without_addresses(harness):
    t = trigger()
    bad = {**t, "contact": {**t["contact"], "phone": "0401234567"}, "occurred_at": NOW + timedelta(days=2)}
    await run_dispatch(harness, bad)
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert (dl["stage"], dl["reason"]) == ("dispatch", "occurred_at_in_future")
    assert "a@acme-kunde.fi" not in dl["payload_json"] and "0401234567" not in dl["payload_json"]
    assert json.loads(dl["payload_json"])["contact"]["contact_id"] == "c-1"
    assert commands(harness) == [] and records(harness) == []


async def test_deliver_dead_letters_carry_no_addresses(harness):
    await run_deliver(harness, [(b"x", {"op": "invite", "inv": "x", "to": {"email": "a@acme-kunde.fi"}})])
    (dl,) = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == "deliver_internal_error" and "a@acme-kunde.fi" not in dl["payload_json"]
    await run_agent(harness, "deliver", [(b"y", b'{"op": "invite", "to": "a@acme-kunde.fi"')])
    dl = harness.decoded("dead_letters", avro.DEAD_LETTER)[-1]
    assert dl["reason"] == "invalid_command" and "a@acme-kunde.fi" not in dl["payload_json"]


async def test_classify_joins_a_response_to_its_invitation_and_cancels_the_reminder(harness):
    from tests.test_agents import raw

    await run_dispatch(harness, trigger(employee="e-7"))
    ((key, invite),) = commands(harness)
    await run_deliver(harness, [(key, invite)])
    inv_id = invite["inv"]
    harness.sent["invitations"].clear()
    async with harness.feed("classify") as agent:
        body = raw(rid=inv_id, score=3, location="somewhere-else", invitation_id=inv_id)
        await agent.put(body, key=inv_id.encode(), partition=0)
        await agent.put(body, key=inv_id.encode(), partition=0)  # a replay
    (out,) = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    assert out["segment"] == {"location": "Espoo", "employee": "e-7"}  # the invitation's segments win
    assert (out["survey_id"], out["locale"], out["invitation_id"]) == ("nps-service", "fi", inv_id)
    (responded,) = [c for _, c in commands(harness)]
    at = int(datetime(2026, 11, 20, 10, tzinfo=timezone.utc).timestamp() * 1000)
    assert responded == {"op": "responded", "inv": inv_id, "at": at, "v": out["version"], "score": 3,
                         "comment": None, "follow_up": None}
    await run_deliver(harness, commands(harness))
    stored = table(harness, "invitations")[f"I|{inv_id}"]
    assert (stored["resp"], stored["answered_at"], stored["answer"]["score"]) == (True, at, 3)
    # a later version (an edit) refreshes the stored answer but not the start of the edit window
    later = {**responded, "at": at + 60_000, "v": responded["v"] + 1, "score": 8, "comment": "ok"}
    older = {**responded, "v": responded["v"] - 1, "score": 0}
    await run_deliver(harness, [(key, later), (key, older)])
    stored = table(harness, "invitations")[f"I|{inv_id}"]
    assert (stored["answered_at"], stored["answer"]["score"], stored["answer"]["comment"]) == (at, 8, "ok")


async def test_an_interrupted_send_on_an_idempotent_channel_is_sent_again(harness, channels):
    channels["sms"].idempotent = True  # like the outbox: a second send of a delivery id changes nothing
    await run_dispatch(harness, trigger())
    ((key, invite),) = commands(harness)
    put_state(harness, "invitations", f"I|{invite['inv']}", {
        **{k: v for k, v in invite.items() if k != "op"}, "st": "sending", "out": None, "rst": None, "rout": None,
        "resp": False})
    await run_deliver(harness, [(key, invite)])
    assert [i.invitation_id for i in channels["sms"].sent] == [invite["inv"]]
    assert [r["status"] for r in records(harness)] == ["sent"]


async def test_the_same_invitation_twice_in_one_batch_is_sent_once(harness, channels):
    await run_dispatch(harness, trigger())
    ((key, invite),) = commands(harness)
    await run_deliver(harness, [(key, invite), (key, invite), (key, {"op": "due", "what": "send", "inv": invite["inv"]})])
    assert len(channels["sms"].sent) == 1
    assert {r["status"] for r in records(harness)} == {"sent"}


async def test_every_send_is_marked_durably_before_the_channel_is_called(harness, channels):
    marks = []

    class Watching(Recorder):
        async def send(self, invitation):
            entry = table(harness, "invitations")[f"I|{invitation.invitation_id}"]
            written = [v for _, k, v in logged(harness, "invitations") if k == f"I|{invitation.invitation_id}"]
            marks.append((entry["st"], written[-1]["st"]))
            return await super().send(invitation)

    channels["sms"] = Watching("sms")
    await run_dispatch(harness, *[trigger(event_id=f"e{i}", contact_id=f"c{i}") for i in range(3)])
    await run_deliver(harness, commands(harness))
    assert marks == [("sending", "sending")] * 3
    assert [r["status"] for r in records(harness)] == ["sent"] * 3


NEWSLETTER = acme_programs(delivery={"delay": "0m", "channels": ["email", "newsletter"], "quiet_hours": None})


async def test_contacts_without_an_address_get_a_newsletter_embed(tmp_path, clock):
    from sinks.channels.newsletter import NewsletterChannel

    channels = {"email": Recorder("email"), "newsletter": NewsletterChannel(tmp_path)}
    harness = Harness(tmp_path, clock=clock, env={"NPSFLOW_SECRET": SECRET, "NPSFLOW_SURVEY_URL": "https://nps.acme.fi/s"},
                      programs=parse_programs(NEWSLETTER), channels=channels)
    await run_dispatch(harness, trigger(event_type="order.delivered", email=None, phone=None),
                       trigger(event_id="ev-2", contact_id="c-2", event_type="order.delivered", phone=None))
    await run_deliver(harness, commands(harness), records_expected=2)
    by_channel = {r["channel"]: r for r in records(harness)}
    assert set(by_channel) == {"newsletter", "email"} and {r["status"] for r in by_channel.values()} == {"sent"}
    snippet = (tmp_path / "outbox" / "newsletter" / f"{by_channel['newsletter']['invitation_id']}.html").read_text()
    tokens = re.findall(r'href="https://nps\.acme\.fi/s/([^"]+)"', snippet)
    claims = [links.verify_token(t, {"k1": link_key(SECRET.encode())}, NOW) for t in tokens]
    assert sorted(c.score for c in claims) == list(range(11))
    assert {c.invitation_id for c in claims} == {by_channel["newsletter"]["invitation_id"]}
    (entry,) = [json.loads(line) for line in (tmp_path / "outbox" / "newsletter" / "index.jsonl").read_text().splitlines()]
    assert (entry["invitation_id"], entry["contact_id"], entry["file"]) == (
        by_channel["newsletter"]["invitation_id"], "c-1", f"{by_channel['newsletter']['invitation_id']}.html")


async def test_state_expiry_forgets_old_event_ids_outputs_and_passed_quarantines(harness, clock):
    await run_dispatch(harness, trigger())
    expire = harness.pipeline.timers["expire_dispatch_state"]
    (ckey,) = [k for k in table(harness, "dispatch_state") if k.startswith("C|")]
    assert "A|" + invitation_id("acme", "ev-1", SECRET.encode()) in table(harness, "dispatch_caps")
    clock.now = NOW + timedelta(hours=2)
    assert await expire() == 0
    state = table(harness, "dispatch_state")
    assert state["E|acme|ev-1"]["o"] == [] and ckey in state  # outputs pruned, id still remembered
    clock.now = NOW + timedelta(days=8, minutes=1)  # past max_event_age (7 d) + 1 d
    assert await expire() == 2  # the event id, and the cap stage's memo of the invitation
    state = table(harness, "dispatch_state")
    assert "E|acme|ev-1" not in state and ckey in state and not any(k.startswith("A|") for k in
                                                                       table(harness, "dispatch_caps"))
    clock.now = NOW + timedelta(days=91)  # past the 90-day quarantine
    assert await expire() == 1 and ckey not in table(harness, "dispatch_state")
    tombstones = [k for _, k, v in logged(harness, "dispatch_state") if v is None]
    assert sorted(tombstones) == sorted(["E|acme|ev-1", ckey])


async def test_timers_wait_while_partitions_move_or_tables_recover(harness, clock):
    await run_dispatch(harness, trigger(event_type="order.delivered"))
    await run_deliver(harness, commands(harness))
    clock.now = NOW + timedelta(hours=3)
    app = harness.pipeline.app
    app.assignor.assigned_actives = lambda: {type("TP", (), {"topic": harness.pipeline.topics["invitations"]
                                                             .get_topic_name(), "partition": 0})()}
    for flag in ("rebalancing", "in_recovery"):
        setattr(app, flag, True)
        assert await harness.pipeline.timers["fire_due"]() == 0
        assert await harness.pipeline.timers["expire_dispatch_state"]() == 0
        setattr(app, flag, False)
    assert await harness.pipeline.timers["fire_due"]() == 1  # the assigned partition, once all is in place
