"""Contact rules (pure): order, quarantine, quiet hours across DST, channels, sampling, caps, reminders."""

from __future__ import annotations

import copy
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from streams import contact_rules as cr
from streams.contact_rules import (
    ContactState, Decision, OrgDayState, RuleConfig, contact_key, decide, hash_address,
    move_out_of_quiet_hours, reminder_due, sample_value, should_send_reminder,
)

UTC = timezone.utc
SECRET = b"test-secret"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # 13:00 in Stockholm (CET)
STHLM = ZoneInfo("Europe/Stockholm")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def trigger(event_id="ev-1", org_id="acme", occurred_at=NOW, contact_id="c-17", email="anna@example.se",
            phone="+46701234567", tz="Europe/Stockholm", event_type="job.completed") -> dict:
    return {"event_id": event_id, "org_id": org_id, "event_type": event_type, "occurred_at": occurred_at,
            "contact": {"contact_id": contact_id, "email": email, "phone": phone, "locale": "sv", "timezone": tz},
            "segment": {"location": "Espoo"}, "received_at": occurred_at}


def config(**kw) -> RuleConfig:
    kw.setdefault("timezone", "Europe/Stockholm")
    return RuleConfig(**kw)


def run(t=None, cfg=None, contact=None, org=None, now=NOW, secret=SECRET, opted_out=False) -> Decision:
    return decide(t or trigger(), cfg or config(), contact, org, now, secret, opted_out=opted_out)


# --- the happy path and rule order ------------------------------------------------------------------------


def test_default_trigger_is_sent_now_by_sms_and_state_updated():
    d = run()
    assert (d.status, d.reason, d.channel) == ("sent", None, "sms")
    assert d.send_at == NOW and d.scheduled_for is None and d.decided_at == NOW
    assert d.contact_key == contact_key("acme", "c-17", SECRET)
    assert d.contact_state == ContactState(last_invited_at=NOW, last_event_id="ev-1", invitations=1)
    assert d.org_day_state.counts == {"2026-11-20": 1}
    assert d.cap_day == date(2026, 11, 20) and d.timezone == "Europe/Stockholm" and d.notes == ()


ALL_BAD = dict(t=trigger(email=None, phone=None, occurred_at=NOW - timedelta(days=30), event_type="other"),
               contact=ContactState(last_invited_at=NOW - timedelta(days=1)))


@pytest.mark.parametrize("opted_out,event_types,max_age,contact,reason", [
    # every rule would refuse: the first in the documented order wins
    (True, {"job.completed"}, timedelta(days=7), ALL_BAD["contact"], "opted_out"),
    (False, {"job.completed"}, timedelta(days=7), ALL_BAD["contact"], "unknown_event_type"),
    (False, None, timedelta(days=7), ALL_BAD["contact"], "too_old"),
    (False, None, None, ALL_BAD["contact"], "no_contact"),
])
def test_rule_order_first_refusal_wins(opted_out, event_types, max_age, contact, reason):
    cfg = config(event_types=event_types, max_event_age=max_age, sampling_rate=0.0, daily_cap=0)
    d = run(ALL_BAD["t"], cfg, contact=contact, opted_out=opted_out)
    assert (d.status, d.reason) == ("suppressed", reason)
    assert d.send_at is None and d.scheduled_for is None and d.invitation is None


@pytest.mark.parametrize("cfg_kw,contact,reason", [
    ({"sampling_rate": 0.0, "daily_cap": 0}, ContactState(last_invited_at=NOW - timedelta(days=1)), "quarantine"),
    ({"sampling_rate": 0.0, "daily_cap": 0}, None, "sampled_out"),
    ({"sampling_rate": 1.0, "daily_cap": 0}, None, "cap"),
])
def test_rule_order_quarantine_then_sampling_then_cap(cfg_kw, contact, reason):
    d = run(cfg=config(**cfg_kw), contact=contact)
    assert (d.status, d.reason) == ("suppressed", reason)


def test_opted_out_even_for_a_perfectly_fine_trigger():
    d = run(opted_out=True)
    assert (d.status, d.reason) == ("suppressed", "opted_out")
    assert d.contact_state == ContactState() and d.org_day_state == OrgDayState()


def test_unknown_event_type_only_when_event_types_configured():
    assert run(cfg=config(event_types=["purchase"])).reason == "unknown_event_type"
    assert run(cfg=config(event_types=["purchase", "job.completed"])).status == "sent"
    assert run(cfg=config(event_types=None)).status == "sent"


@pytest.mark.parametrize("age,status", [
    (timedelta(days=7) - timedelta(seconds=1), "sent"),
    (timedelta(days=7), "sent"),  # exactly at the limit: still fine
    (timedelta(days=7, seconds=1), "suppressed"),
])
def test_too_old_boundary(age, status):
    d = run(trigger(occurred_at=NOW - age), cfg=config(channels=["email"]))
    assert d.status == status
    assert d.reason == (None if status == "sent" else "too_old")


# --- quarantine ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("since_last,status", [
    (timedelta(days=90) - timedelta(seconds=1), "suppressed"),
    (timedelta(days=90), "sent"),  # exactly at last + quarantine: allowed again
    (timedelta(days=90, seconds=1), "sent"),
    (timedelta(days=400), "sent"),
])
def test_quarantine_boundary_to_the_second(since_last, status):
    state = ContactState(last_invited_at=NOW - since_last, last_event_id="old", invitations=3)
    d = run(contact=state)
    assert d.status == status
    if status == "suppressed":
        assert d.reason == "quarantine" and d.contact_state == state
    else:
        assert d.contact_state == ContactState(last_invited_at=NOW, last_event_id="ev-1", invitations=4)


def test_quarantine_counts_from_a_scheduled_send_time_in_the_future():
    """A first trigger scheduled for tomorrow morning blocks a second one arriving before it is sent."""
    cfg = config(quarantine=timedelta(days=90))
    late = utc(2026, 11, 20, 21, 0)  # 22:00 Stockholm → SMS at 08:00
    first = run(trigger(occurred_at=late), cfg, now=late)
    assert first.status == "scheduled"
    second = run(trigger("ev-2", occurred_at=late + timedelta(minutes=5)), cfg, contact=first.contact_state,
                 now=late + timedelta(minutes=5))
    assert second.reason == "quarantine"
    assert first.contact_state.last_invited_at == utc(2026, 11, 21, 7, 0)


def test_quarantine_is_per_org():
    state = run().contact_state
    other_org = run(trigger(org_id="globex"), contact=None)
    assert other_org.status == "sent"
    assert other_org.contact_key != run().contact_key  # states are keyed by (org, contact key)
    assert run(contact=state, now=NOW + timedelta(days=1)).reason == "quarantine"


# --- timing: delay, quiet hours, timezones, DST --------------------------------------------------------------


@pytest.mark.parametrize("tz,occurred_local,expected_utc", [
    # Eve of spring-forward (2026-03-29 02:00 CET → 03:00 CEST): 20:30 CET + 1 h = 21:30, quiet → 08:00 CEST
    ("Europe/Stockholm", datetime(2026, 3, 28, 20, 30), utc(2026, 3, 29, 6, 0)),
    # Eve of fall-back (2026-10-25 03:00 CEST → 02:00 CET): 20:30 CEST + 1 h, quiet → 08:00 CET
    ("Europe/Stockholm", datetime(2026, 10, 24, 20, 30), utc(2026, 10, 25, 7, 0)),
    # An ordinary winter and summer evening
    ("Europe/Stockholm", datetime(2026, 11, 19, 20, 30), utc(2026, 11, 20, 7, 0)),
    ("Europe/Stockholm", datetime(2026, 7, 1, 20, 30), utc(2026, 7, 2, 6, 0)),
    # New York's DST starts 2026-03-08 and ends 2026-11-01
    ("America/New_York", datetime(2026, 3, 7, 20, 30), utc(2026, 3, 8, 12, 0)),
    ("America/New_York", datetime(2026, 10, 31, 20, 30), utc(2026, 11, 1, 13, 0)),
    ("Europe/Helsinki", datetime(2026, 3, 28, 20, 30), utc(2026, 3, 29, 5, 0)),
])
def test_sms_evening_trigger_moves_to_08_local_next_morning_across_dst(tz, occurred_local, expected_utc):
    occurred = occurred_local.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
    d = run(trigger(occurred_at=occurred, tz=tz), config(delay_after_event=timedelta(hours=1)), now=occurred)
    assert (d.status, d.channel) == ("scheduled", "sms")
    assert d.scheduled_for == expected_utc == d.send_at
    assert d.scheduled_for.astimezone(ZoneInfo(tz)).time() == time(8, 0)
    assert "quiet_hours" in d.notes


def test_same_instant_new_york_vs_helsinki():
    at = utc(2026, 11, 20, 3, 0)  # Helsinki 05:00 (EET), New York 22:00 the evening before (EST)
    hel = run(trigger(occurred_at=at, tz="Europe/Helsinki"), now=at)
    ny = run(trigger(occurred_at=at, tz="America/New_York"), now=at)
    assert hel.scheduled_for == utc(2026, 11, 20, 6, 0)  # 08:00 EET
    assert ny.scheduled_for == utc(2026, 11, 20, 13, 0)  # 08:00 EST
    afternoon = utc(2026, 11, 20, 14, 0)  # Helsinki 16:00, New York 09:00: both fine
    assert run(trigger(occurred_at=afternoon, tz="Europe/Helsinki"), now=afternoon).status == "sent"
    assert run(trigger(occurred_at=afternoon, tz="America/New_York"), now=afternoon).status == "sent"


@pytest.mark.parametrize("local,expected_local", [
    (datetime(2026, 11, 20, 20, 59, 59), None),  # just before the start: not quiet
    (datetime(2026, 11, 20, 21, 0), datetime(2026, 11, 21, 8, 0)),  # start is quiet
    (datetime(2026, 11, 20, 23, 59), datetime(2026, 11, 21, 8, 0)),
    (datetime(2026, 11, 21, 0, 0), datetime(2026, 11, 21, 8, 0)),  # after midnight: same day's 08:00
    (datetime(2026, 11, 21, 7, 59, 59), datetime(2026, 11, 21, 8, 0)),
    (datetime(2026, 11, 21, 8, 0), None),  # end is not quiet
])
def test_quiet_hours_are_half_open_and_wrap_midnight(local, expected_local):
    instant = local.replace(tzinfo=STHLM).astimezone(UTC)
    moved = move_out_of_quiet_hours(instant, STHLM, (time(21, 0), time(8, 0)))
    expected = instant if expected_local is None else expected_local.replace(tzinfo=STHLM).astimezone(UTC)
    assert moved == expected


def test_quiet_end_inside_the_spring_forward_gap_is_the_transition_instant():
    # Quiet 22:00–02:30; 02:30 does not exist on 2026-03-29 in Stockholm (02:00 CET → 03:00 CEST = 01:00Z)
    instant = datetime(2026, 3, 28, 23, 0, tzinfo=STHLM).astimezone(UTC)
    assert move_out_of_quiet_hours(instant, STHLM, (time(22, 0), time(2, 30))) == utc(2026, 3, 29, 1, 0)


def test_quiet_end_at_an_ambiguous_fall_back_time_is_its_first_occurrence():
    # 02:30 happens twice on 2026-10-25 in Stockholm: 00:30Z (CEST) and 01:30Z (CET)
    instant = datetime(2026, 10, 24, 23, 0, tzinfo=STHLM).astimezone(UTC)
    assert move_out_of_quiet_hours(instant, STHLM, (time(22, 0), time(2, 30))) == utc(2026, 10, 25, 0, 30)


def test_quiet_hours_do_not_apply_to_email_by_default():
    night = datetime(2026, 11, 20, 23, 30, tzinfo=STHLM).astimezone(UTC)
    d = run(trigger(occurred_at=night, phone=None), now=night)
    assert (d.status, d.channel, d.send_at) == ("sent", "email", night)
    assert "quiet_hours" not in d.notes


def test_quiet_hours_apply_to_email_when_configured():
    night = datetime(2026, 11, 20, 23, 30, tzinfo=STHLM).astimezone(UTC)
    d = run(trigger(occurred_at=night), config(channels=["email"], quiet_hours_channels={"sms", "email"}), now=night)
    assert (d.status, d.channel, d.scheduled_for) == ("scheduled", "email", utc(2026, 11, 21, 7, 0))


def test_delay_after_event_schedules_later_and_sends_when_due():
    cfg = config(delay_after_event=timedelta(hours=2))
    d = run(trigger(occurred_at=NOW), cfg, now=NOW)
    assert (d.status, d.scheduled_for) == ("scheduled", NOW + timedelta(hours=2))
    due = run(trigger(occurred_at=NOW - timedelta(hours=2)), cfg, now=NOW)
    assert (due.status, due.send_at, due.scheduled_for) == ("sent", NOW, None)


def test_backlog_in_quiet_hours_is_delayed_not_sent_at_night():
    """Nominal send time (18:00) long past, but it is 23:00 now: an SMS waits for 08:00 — delay, don't drop."""
    occurred = datetime(2026, 11, 20, 17, 0, tzinfo=STHLM).astimezone(UTC)
    now = datetime(2026, 11, 20, 23, 0, tzinfo=STHLM).astimezone(UTC)
    d = run(trigger(occurred_at=occurred), config(delay_after_event=timedelta(hours=1)), now=now)
    assert (d.status, d.scheduled_for) == ("scheduled", utc(2026, 11, 21, 7, 0))


@pytest.mark.parametrize("tz", [None, "", "Mars/Olympus"])
def test_missing_or_invalid_contact_timezone_falls_back_to_org_timezone(tz):
    at = utc(2026, 11, 20, 3, 0)  # 04:00 in Stockholm (org), 22:00 in New York
    d = run(trigger(occurred_at=at, tz=tz), config(timezone="Europe/Stockholm"), now=at)
    assert d.timezone == "Europe/Stockholm"
    assert d.scheduled_for == utc(2026, 11, 20, 7, 0)
    assert ("contact_timezone_invalid" in d.notes) == (tz == "Mars/Olympus")


# --- channels ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels,email,phone,expected", [
    (["sms", "email"], "a@example.se", "+46701234567", "sms"),
    (["sms", "email"], "a@example.se", None, "email"),  # fallback: no phone
    (["sms", "email"], None, "+46701234567", "sms"),
    (["email", "sms"], "a@example.se", "+46701234567", "email"),
    (["email", "sms"], None, "+46701234567", "sms"),
    (["email"], None, "+46701234567", None),  # only e-mail allowed, none known
    (["sms", "email"], None, None, None),
    (["sms", "email"], "  ", "", None),  # blank addresses do not count
])
def test_channel_preference_and_fallback(channels, email, phone, expected):
    d = run(trigger(email=email, phone=phone), config(channels=channels))
    assert d.channel == expected
    assert (d.status, d.reason) == (("sent", None) if expected else ("suppressed", "no_contact"))


# --- sampling -----------------------------------------------------------------------------------------------------


def test_sampling_is_deterministic_and_keyed():
    cfg = config(sampling_rate=0.5, channels=["email"])
    ids = [f"ev-{i}" for i in range(200)]
    first = [run(trigger(i), cfg).status for i in ids]
    again = [run(trigger(i), cfg).status for i in ids]  # "after a restart": same inputs, same decisions
    assert first == again
    assert {"sent", "suppressed"} == set(first)
    other = [run(trigger(i), cfg, secret=b"another-secret").status for i in ids]
    assert other != first
    values = [sample_value("acme", "k", i, SECRET) for i in ids]
    assert all(0.0 <= v < 1.0 for v in values)
    assert sample_value("acme", "k", "ev-1", SECRET) != sample_value("globex", "k", "ev-1", SECRET)
    assert sample_value("acme", "k", "ev-1", SECRET) != sample_value("acme", "k2", "ev-1", SECRET)


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.9])
def test_sampled_share_matches_rate_over_20000_ids(rate):
    n = 20_000
    kept = sum(cr.is_sampled_in("acme", f"contact-{i % 997}", f"ev-{i}", rate, SECRET) for i in range(n))
    sd = (rate * (1 - rate) / n) ** 0.5
    assert abs(kept / n - rate) < 5 * sd  # ±5 σ: ~0.35–0.6 percentage points


def test_samples_under_two_secrets_are_independent():
    n = 20_000
    a = [cr.is_sampled_in("acme", "k", f"ev-{i}", 0.5, b"secret-a") for i in range(n)]
    b = [cr.is_sampled_in("acme", "k", f"ev-{i}", 0.5, b"secret-b") for i in range(n)]
    both = sum(x and y for x, y in zip(a, b)) / n
    assert abs(both - 0.25) < 0.02  # independent: P(a ∧ b) ≈ 0.5 · 0.5


@pytest.mark.parametrize("rate,status", [(0.0, "suppressed"), (1.0, "sent")])
def test_sampling_rate_extremes(rate, status):
    statuses = {run(trigger(f"ev-{i}"), config(sampling_rate=rate)).status for i in range(100)}
    assert statuses == {status}


# --- daily cap -------------------------------------------------------------------------------------------------------


def test_cap_allows_n_then_suppresses_and_next_local_day_resets():
    cfg = config(daily_cap=3, channels=["email"])
    org = None
    statuses = []
    for i in range(5):
        d = run(trigger(f"ev-{i}", contact_id=f"c-{i}"), cfg, org=org)
        statuses.append(d.reason or d.status)
        org = d.org_day_state
    assert statuses == ["sent", "sent", "sent", "cap", "cap"]
    assert org.counts == {"2026-11-20": 3}  # suppressed ones do not count
    tomorrow = NOW + timedelta(days=1)
    d = run(trigger("ev-9", contact_id="c-9", occurred_at=tomorrow), cfg, org=org, now=tomorrow)
    assert d.status == "sent"
    assert d.org_day_state.counts == {"2026-11-20": 3, "2026-11-21": 1}


@pytest.mark.parametrize("now,status,day", [
    (utc(2026, 11, 20, 22, 59, 59), "suppressed", date(2026, 11, 20)),  # 23:59:59 in Stockholm: same day
    (utc(2026, 11, 20, 23, 0, 0), "sent", date(2026, 11, 21)),  # 00:00 in Stockholm: a new day (still the 20th in UTC)
])
def test_cap_day_boundary_is_the_org_local_midnight(now, status, day):
    org = OrgDayState({"2026-11-20": 2})
    d = run(trigger(occurred_at=now), config(daily_cap=2, channels=["email"]), org=org, now=now)
    assert d.status == status and d.cap_day == day


def test_cap_uses_org_timezone_not_contact_timezone():
    now = utc(2026, 11, 20, 23, 30)  # 00:30 on the 21st in Stockholm (org); 18:30 on the 20th in New York
    org = OrgDayState({"2026-11-20": 1})
    d = run(trigger(occurred_at=now, tz="America/New_York"), config(daily_cap=1, channels=["email"]), org=org, now=now)
    assert d.status == "sent" and d.cap_day == date(2026, 11, 21)


def test_cap_counts_the_day_a_scheduled_invitation_goes_out():
    night = datetime(2026, 11, 20, 23, 30, tzinfo=STHLM).astimezone(UTC)
    cfg = config(daily_cap=1)
    full_today = OrgDayState({"2026-11-20": 1})
    d = run(trigger(occurred_at=night), cfg, org=full_today, now=night)  # SMS goes out tomorrow 08:00
    assert d.status == "scheduled" and d.cap_day == date(2026, 11, 21)
    assert d.org_day_state.counts == {"2026-11-20": 1, "2026-11-21": 1}
    again = run(trigger("ev-2", contact_id="c-2", occurred_at=night), cfg, org=d.org_day_state, now=night)
    assert again.reason == "cap"


def test_old_days_are_pruned_from_org_state():
    org = OrgDayState({"2026-11-01": 50, "2026-11-18": 7, "2026-11-19": 4})
    d = run(cfg=config(channels=["email"]), org=org)
    assert d.org_day_state.counts == {"2026-11-19": 4, "2026-11-20": 1}


# --- purity and state round trips --------------------------------------------------------------------------------


def test_inputs_are_not_mutated():
    t = trigger()
    contact = ContactState(last_invited_at=NOW - timedelta(days=100), last_event_id="old", invitations=1)
    org = OrgDayState({"2026-11-20": 1})
    snapshot = copy.deepcopy((t, contact, org))
    d = run(t, config(daily_cap=5), contact=contact, org=org)
    assert d.status == "sent"
    assert (t, contact, org) == snapshot
    assert d.contact_state is not contact and d.org_day_state is not org
    assert org.counts == {"2026-11-20": 1} and d.org_day_state.counts == {"2026-11-20": 2}


def test_states_and_invitation_round_trip_through_json_dicts():
    import json
    d = run(cfg=config(reminder_after=timedelta(days=3)))
    for obj in (d.contact_state, d.org_day_state, d.invitation):
        assert type(obj).from_dict(json.loads(json.dumps(obj.to_dict()))) == obj
    assert ContactState.from_dict(None) == ContactState() and OrgDayState.from_dict({}) == OrgDayState()


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError):
        run(now=datetime(2026, 11, 20, 12, 0))
    with pytest.raises(ValueError):
        run(trigger(occurred_at=datetime(2026, 11, 20, 12, 0)))


# --- reminders --------------------------------------------------------------------------------------------------------


def test_reminder_due_respects_quiet_hours_for_sms_not_email():
    cfg = config(reminder_after=timedelta(days=2))
    sent = datetime(2026, 11, 20, 22, 30, tzinfo=STHLM).astimezone(UTC)  # e.g. an e-mail sent late
    assert reminder_due(sent, cfg, "email", "Europe/Stockholm") == sent + timedelta(days=2)
    assert reminder_due(sent, cfg, "sms", "Europe/Stockholm") == utc(2026, 11, 23, 7, 0)
    assert reminder_due(sent, config(reminder_after=None), "sms") is None


@pytest.mark.parametrize("responded,reminders_sent,now,expected", [
    (False, 0, utc(2026, 11, 23, 12, 0), True),  # due (13:00 Stockholm)
    (False, 0, utc(2026, 11, 23, 11, 59, 59), False),  # one second early
    (True, 0, utc(2026, 11, 23, 12, 0), False),  # never after a response
    (False, 1, utc(2026, 11, 23, 12, 0), False),  # exactly one reminder
    (False, 0, utc(2026, 11, 23, 21, 30), False),  # due, but 22:30 local: quiet hours for SMS
    (False, 0, utc(2026, 11, 24, 7, 0), True),  # 08:00 local the next morning
])
def test_should_send_reminder(responded, reminders_sent, now, expected):
    d = run(cfg=config(reminder_after=timedelta(days=3)))
    inv = d.invitation
    assert inv.reminder_due_at == NOW + timedelta(days=3) and inv.channel == "sms"
    assert should_send_reminder(inv, responded, reminders_sent, now) is expected


def test_reminders_off_means_never():
    inv = run(cfg=config(reminder_after=None)).invitation
    assert inv.reminder_due_at is None
    assert should_send_reminder(inv, False, 0, NOW + timedelta(days=30)) is False


def test_reminder_of_a_scheduled_invitation_counts_from_its_send_time():
    night = datetime(2026, 11, 20, 23, 0, tzinfo=STHLM).astimezone(UTC)
    d = run(trigger(occurred_at=night), config(reminder_after=timedelta(hours=6)), now=night)
    assert d.invitation.sent_at == utc(2026, 11, 21, 7, 0)
    assert d.invitation.reminder_due_at == utc(2026, 11, 21, 13, 0)


# --- pseudonyms and configuration ----------------------------------------------------------------------------------


def test_contact_key_and_hash_address_are_keyed_pseudonyms():
    k = contact_key("acme", "c-17", SECRET)
    assert len(k) == 32 and int(k, 16) >= 0
    assert k == contact_key("acme", "c-17", SECRET.decode())
    assert k != contact_key("acme", "c-17", b"other") != contact_key("globex", "c-17", SECRET)
    assert contact_key("a:b", "c", SECRET) != contact_key("a", "b:c", SECRET)
    h = hash_address(" Anna@Example.SE ", SECRET)
    assert h == hash_address("anna@example.se", SECRET) and len(h) == 32 and "anna" not in h
    assert hash_address("+46 70-123 45 67", SECRET) == hash_address("+46701234567", SECRET)
    with pytest.raises(ValueError):
        contact_key("acme", "c", b"")


@pytest.mark.parametrize("kw", [
    {"sampling_rate": 1.5}, {"sampling_rate": -0.1}, {"daily_cap": -1}, {"channels": ["pigeon"]},
    {"channels": []}, {"timezone": "Mars/Olympus"}, {"quarantine": timedelta(days=-1)},
])
def test_invalid_config_is_refused(kw):
    with pytest.raises(ValueError):
        RuleConfig(**kw)


def test_config_from_dict():
    cfg = RuleConfig.from_dict({"sampling_rate": 0.3, "quarantine": "30d", "quiet_hours": {"start": "22:00",
                                "end": "07:30"}, "delay_after_event": "2h", "daily_cap": 500,
                                "channels": ["email", "sms"], "reminder_after": "3d", "timezone": "Europe/Helsinki"})
    assert cfg.quarantine == timedelta(days=30) and cfg.quiet_hours == (time(22, 0), time(7, 30))
    assert cfg.delay_after_event == timedelta(hours=2) and cfg.channels == ("email", "sms")
    assert cfg.reminder_after == timedelta(days=3)
    assert RuleConfig.from_dict({"quiet_hours": None}).quiet_hours is None
    with pytest.raises(ValueError):
        RuleConfig.from_dict({"quarantaine": "30d"})
