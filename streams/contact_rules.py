"""Contact rules: one trigger event → one dispatch decision (sent, scheduled or suppressed). Pure.

No I/O, no Kafka, no clock: ``now`` is always a parameter, state comes in and new state goes out (inputs are
never mutated). The dispatch agent keeps ``ContactState`` per ``(org_id, contact_key)`` and ``OrgDayState``
per ``org_id`` in Faust tables (both round-trip through ``to_dict``/``from_dict`` as JSON-able dicts).

Order of the rules (the first that refuses gives the reason; later ones are not looked at)::

    1. opted_out           the caller says the contact opted out — always wins, whatever else is wrong
    2. unknown_event_type  ``config.event_types`` is set and does not contain the trigger's event_type
    3. too_old             now − occurred_at > ``config.max_event_age`` (exactly at the limit is still fine)
    4. no_contact          no channel of ``config.channels`` has an address (sms/whatsapp → phone, email → e-mail;
                           newsletter needs none)
    5. quarantine          now < last_invited_at + ``config.quarantine`` (exactly at the boundary: allowed)
    6. sampled_out         HMAC(secret, org_id, contact_key, event_id) ↦ u ∈ [0, 1); kept iff u < sampling_rate
    7. cap                 the org already has ``daily_cap`` invitations on the send day (org's local calendar)
    8. timing              never refuses: send_at = max(occurred_at + delay, now), moved out of quiet hours

Decisions worth knowing:

* **Send time.** ``send_at = max(occurred_at + delay_after_event, now)``, then, if the channel observes quiet
  hours (SMS by default), moved to the end of the quiet period in the *contact's* timezone (the org's when the
  contact has none or an unknown one — the latter adds the note ``contact_timezone_invalid``). Starting from
  ``now`` matters: a backlog replayed at 23:00 must not send an SMS at 23:00 because its nominal time (18:00)
  has passed. ``sent`` ⇔ ``send_at == now``; otherwise ``scheduled`` with ``scheduled_for = send_at``.
  A move out of quiet hours adds the note ``quiet_hours``.
* **Quiet hours** are the half-open local wall-clock interval [start, end); start > end wraps midnight;
  start == end means none. Arithmetic is done on local wall times and converted to UTC with zoneinfo, so DST
  days are right (08:00 local is 06:00Z or 07:00Z depending on the date). An end time that does not exist on
  that day (spring-forward gap) becomes the transition instant; an ambiguous one (fall-back) its first occurrence.
* **Quarantine** is per contact per org, measured at decision time against ``last_invited_at``, which is the
  *send time* of the previous invitation (a scheduled one counts from its scheduled time, so two triggers
  within the quarantine never both get through even before the first one is sent).
* **Daily cap** counts invitations (sent or scheduled; a suppressed decision does not count) per org per local
  day of the org's timezone — the day the invitation *goes out* (an SMS triggered at 23:30 and scheduled for
  08:00 counts for the next day). Days older than yesterday (org-local, relative to ``now``) are pruned.
* **Sampling** is deterministic per (org_id, contact_key, event_id) under a secret: the same input gives the
  same decision across restarts and replays; another secret gives an independent sample.
* **Reminders**: at most one, never after a response, at ``send_at + reminder_after`` moved out of quiet hours;
  ``should_send_reminder`` also refuses while ``now`` is in the invitation's quiet hours.
* **Pseudonyms**: ``contact_key`` is a keyed HMAC of (org_id, contact_id); analytics only ever see that key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc

SENT = "sent"
SCHEDULED = "scheduled"
SUPPRESSED = "suppressed"

OPTED_OUT = "opted_out"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
TOO_OLD = "too_old"
NO_CONTACT = "no_contact"
QUARANTINE = "quarantine"
SAMPLED_OUT = "sampled_out"
CAP = "cap"
SUPPRESSION_REASONS = frozenset({OPTED_OUT, UNKNOWN_EVENT_TYPE, TOO_OLD, NO_CONTACT, QUARANTINE, SAMPLED_OUT, CAP})

NOTE_QUIET_HOURS = "quiet_hours"
NOTE_CONTACT_TIMEZONE_INVALID = "contact_timezone_invalid"

# Which contact field a channel delivers to. The newsletter channel needs none: it produces an embed the
# organization sends with its own mailing tool, so every contact can get one (never in quiet hours either).
CHANNEL_ADDRESS = {"sms": "phone", "whatsapp": "phone", "email": "email", "newsletter": None}


# ---------------------------------------------------------------------------------------------------------
# Configuration


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """``timedelta`` | seconds (int/float) | ``"90d"``, ``"1h"``, ``"30m"``, ``"45s"``, ``"2w"`` → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration (use e.g. 90d, 1h, 30m, 45s): {value!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_time(value: object) -> time:
    """``time`` | ``"21:00"`` | ``"08:30:00"`` → naive wall-clock time."""
    if isinstance(value, time):
        return value
    try:
        return time.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"not a time of day (use HH:MM): {value!r}") from None


def load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"not an IANA timezone: {name!r}") from None


@dataclass(frozen=True)
class RuleConfig:
    """The contact rules of one survey program (or org). Validated on construction; lists become tuples."""

    sampling_rate: float = 1.0
    quarantine: timedelta = timedelta(days=90)
    quiet_hours: tuple[time, time] | None = (time(21, 0), time(8, 0))
    quiet_hours_channels: frozenset[str] = frozenset({"sms"})
    delay_after_event: timedelta = timedelta(0)
    daily_cap: int | None = None
    channels: tuple[str, ...] = ("sms", "email")
    reminder_after: timedelta | None = None
    max_event_age: timedelta | None = timedelta(days=7)
    timezone: str = "UTC"  # the org's default timezone: contacts without one, and the daily cap's calendar
    event_types: frozenset[str] | None = None  # None: every event type may trigger

    def __post_init__(self) -> None:
        if isinstance(self.sampling_rate, bool) or not isinstance(self.sampling_rate, (int, float)) \
                or not 0.0 <= self.sampling_rate <= 1.0:
            raise ValueError(f"sampling_rate must be between 0 and 1, got {self.sampling_rate!r}")
        for name in ("quarantine", "delay_after_event", "reminder_after", "max_event_age"):
            value = getattr(self, name)
            if value is None and name in ("reminder_after", "max_event_age"):
                continue
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise ValueError(f"{name} must be a non-negative timedelta, got {value!r}")
        if self.quiet_hours is not None:
            start, end = (parse_time(t) for t in self.quiet_hours)
            object.__setattr__(self, "quiet_hours", None if start == end else (start, end))
        object.__setattr__(self, "quiet_hours_channels", frozenset(self.quiet_hours_channels))
        if self.daily_cap is not None and (isinstance(self.daily_cap, bool) or not isinstance(self.daily_cap, int)
                                           or self.daily_cap < 0):
            raise ValueError(f"daily_cap must be a non-negative integer or None, got {self.daily_cap!r}")
        channels = tuple(self.channels)
        if not channels:
            raise ValueError("channels must name at least one channel")
        unknown = [c for c in (*channels, *self.quiet_hours_channels) if c not in CHANNEL_ADDRESS]
        if unknown:
            raise ValueError(f"unknown channel {unknown[0]!r} (known: {', '.join(sorted(CHANNEL_ADDRESS))})")
        if len(set(channels)) != len(channels):
            raise ValueError(f"channels contains duplicates: {channels!r}")
        object.__setattr__(self, "channels", channels)
        load_zone(self.timezone)
        if self.event_types is not None:
            object.__setattr__(self, "event_types", frozenset(self.event_types))

    @property
    def zone(self) -> ZoneInfo:
        return load_zone(self.timezone)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> RuleConfig:
        """From YAML/JSON: durations as ``"90d"``/seconds, times as ``"21:00"``, ``quiet_hours`` as
        ``{"start": "21:00", "end": "08:00"}``, ``[start, end]`` or null."""
        known = set(cls.__dataclass_fields__)
        unknown = set(obj) - known
        if unknown:
            raise ValueError(f"unknown contact rule setting(s): {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = dict(obj)
        for name in ("quarantine", "delay_after_event", "reminder_after", "max_event_age"):
            if kw.get(name) is not None:
                kw[name] = parse_duration(kw[name])
        if "quiet_hours" in kw and kw["quiet_hours"] is not None:
            qh = kw["quiet_hours"]
            if isinstance(qh, Mapping):
                qh = (qh.get("start"), qh.get("end"))
            if not isinstance(qh, (list, tuple)) or len(qh) != 2:
                raise ValueError(f"quiet_hours must be {{start, end}} or [start, end], got {qh!r}")
            kw["quiet_hours"] = (parse_time(qh[0]), parse_time(qh[1]))
        for name in ("quiet_hours_channels", "event_types"):
            if isinstance(kw.get(name), str):
                kw[name] = [kw[name]]
        if isinstance(kw.get("channels"), str):
            kw["channels"] = [kw["channels"]]
        return cls(**kw)

    def quiet_hours_for(self, channel: str | None) -> tuple[time, time] | None:
        return self.quiet_hours if channel in self.quiet_hours_channels else None


# ---------------------------------------------------------------------------------------------------------
# State


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _from_iso(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value)
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {value!r}")
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class ContactState:
    """Per (org_id, contact_key): when the last invitation was (or will be) sent, and how many so far."""

    last_invited_at: datetime | None = None
    last_event_id: str | None = None
    invitations: int = 0

    def to_dict(self) -> dict:
        return {"last_invited_at": _iso(self.last_invited_at), "last_event_id": self.last_event_id,
                "invitations": self.invitations}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any] | None) -> ContactState:
        if not obj:
            return cls()
        return cls(last_invited_at=_from_iso(obj.get("last_invited_at")), last_event_id=obj.get("last_event_id"),
                   invitations=int(obj.get("invitations") or 0))


@dataclass(frozen=True)
class OrgDayState:
    """Per org_id: invitations per local calendar day of the org's timezone (``"YYYY-MM-DD"`` → count).

    Never mutated: ``counts`` is a fresh dict in every new state (treat it as read-only)."""

    counts: Mapping[str, int] = field(default_factory=dict)

    def count(self, day: date) -> int:
        return int(self.counts.get(day.isoformat(), 0))

    def with_invitation(self, day: date, today: date) -> OrgDayState:
        """One more invitation on ``day``; days before ``today − 1`` are dropped."""
        oldest = (today - timedelta(days=1)).isoformat()
        counts = {d: c for d, c in self.counts.items() if d >= oldest}
        counts[day.isoformat()] = counts.get(day.isoformat(), 0) + 1
        return OrgDayState(dict(sorted(counts.items())))

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any] | None) -> OrgDayState:
        if not obj:
            return cls()
        return cls({str(k): int(v) for k, v in (obj.get("counts") or {}).items()})


# ---------------------------------------------------------------------------------------------------------
# Pseudonyms and sampling


def _key(secret: bytes | str) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the secret must not be empty")
    return key


@lru_cache(maxsize=16)
def _keyed(key: bytes):
    """HMAC-SHA256 with ``key`` set up (its pads hashed) once: ``_mac`` copies it for each message."""
    return hmac.new(key, digestmod=hashlib.sha256)


def _mac(secret: bytes | str, purpose: str, *parts: str) -> bytes:
    # Length-prefixed parts: ("a:b", "c") and ("a", "b:c") never collide.
    encoded = [p.encode() for p in parts]
    mac = _keyed(_key(secret)).copy()
    mac.update(purpose.encode() + b"".join(b"\x00%d:%s" % (len(e), e) for e in encoded))
    return mac.digest()


def contact_key(org_id: str, contact_id: str, secret: bytes | str) -> str:
    """Keyed pseudonym of a contact within an org: 32 hex characters, no personal data."""
    return _mac(secret, "contact", org_id, contact_id).hex()[:32]


def normalize_address(address: str) -> str:
    """E-mail: trimmed and lower-cased; phone: spaces, dashes and parentheses removed."""
    text = address.strip()
    return text.lower() if "@" in text else re.sub(r"[\s()-]", "", text)


def hash_address(address: str, secret: bytes | str) -> str:
    """Keyed pseudonym of an e-mail address or phone number (normalized first): 32 hex characters."""
    return _mac(secret, "address", normalize_address(address)).hex()[:32]


def sample_value(org_id: str, key: str, event_id: str, secret: bytes | str) -> float:
    """Deterministic u ∈ [0, 1) from HMAC-SHA256(secret, org_id, contact_key, event_id) (top 53 bits)."""
    return (int.from_bytes(_mac(secret, "sample", org_id, key, event_id)[:8], "big") >> 11) / float(1 << 53)


def is_sampled_in(org_id: str, key: str, event_id: str, rate: float, secret: bytes | str) -> bool:
    return rate >= 1.0 or (rate > 0.0 and sample_value(org_id, key, event_id, secret) < rate)


# ---------------------------------------------------------------------------------------------------------
# Time: quiet hours across DST


def _in_window(t: time, window: tuple[time, time]) -> bool:
    start, end = window
    return start <= t < end if start < end else (t >= start or t < end)


def _local_instant(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first UTC instant at which the local clock in ``tz`` shows ``day wall`` — or, if that wall time does
    not exist (spring-forward gap), the instant the gap ends."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return first.astimezone(UTC)  # exists; fold=0 is its first occurrence when ambiguous
    # In a gap: fold=1 reads it with the offset after the transition → an instant before the gap; fold=0 with
    # the offset before → an instant after it. The transition lies between: bisect on the UTC offset.
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = first.astimezone(UTC)
    after = hi.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0) if hi.astimezone(tz).utcoffset() == after else hi


def in_quiet_hours(instant: datetime, tz: ZoneInfo, quiet_hours: tuple[time, time] | None) -> bool:
    if quiet_hours is None:
        return False
    return _in_window(instant.astimezone(tz).time().replace(tzinfo=None), quiet_hours)


def move_out_of_quiet_hours(instant: datetime, tz: ZoneInfo, quiet_hours: tuple[time, time] | None) -> datetime:
    """``instant`` (UTC) if the local wall time in ``tz`` is outside [start, end), else the UTC instant at which
    the quiet period ends (local ``end`` on the same or the next local day)."""
    instant = instant.astimezone(UTC)
    if not in_quiet_hours(instant, tz, quiet_hours):
        return instant
    start, end = quiet_hours  # type: ignore[misc]
    local = instant.astimezone(tz)
    day = local.date()
    if start > end and local.time().replace(tzinfo=None) >= start:
        day += timedelta(days=1)  # the evening part of a period that wraps midnight ends tomorrow
    return _local_instant(day, end, tz)


def resolve_timezone(name: str | None, config: RuleConfig) -> tuple[ZoneInfo, str, tuple[str, ...]]:
    """Contact timezone name → (zone, effective name, notes); none or unknown → the org's, noted if unknown."""
    if name:
        try:
            return ZoneInfo(name), name, ()
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            return config.zone, config.timezone, (NOTE_CONTACT_TIMEZONE_INVALID,)
    return config.zone, config.timezone, ()


# ---------------------------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True)
class Invitation:
    """What the dispatcher keeps about a sent/scheduled invitation to drive its (single) reminder."""

    org_id: str
    contact_key: str
    event_id: str
    channel: str
    timezone: str
    sent_at: datetime
    quiet_hours: tuple[time, time] | None = None  # of this channel, for the reminder
    reminder_due_at: datetime | None = None

    def to_dict(self) -> dict:
        return {"org_id": self.org_id, "contact_key": self.contact_key, "event_id": self.event_id,
                "channel": self.channel, "timezone": self.timezone, "sent_at": _iso(self.sent_at),
                "quiet_hours": None if self.quiet_hours is None else [t.isoformat() for t in self.quiet_hours],
                "reminder_due_at": _iso(self.reminder_due_at)}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Invitation:
        qh = obj.get("quiet_hours")
        return cls(org_id=obj["org_id"], contact_key=obj["contact_key"], event_id=obj["event_id"],
                   channel=obj["channel"], timezone=obj["timezone"], sent_at=_from_iso(obj["sent_at"]),
                   quiet_hours=None if qh is None else (parse_time(qh[0]), parse_time(qh[1])),
                   reminder_due_at=_from_iso(obj.get("reminder_due_at")))


@dataclass(frozen=True)
class Decision:
    status: str  # sent | scheduled | suppressed
    reason: str | None  # one of SUPPRESSION_REASONS when suppressed, else None
    contact_key: str
    decided_at: datetime
    contact_state: ContactState
    org_day_state: OrgDayState
    channel: str | None = None
    send_at: datetime | None = None  # sent: = decided_at; scheduled: = scheduled_for; suppressed: None
    scheduled_for: datetime | None = None  # only when scheduled
    timezone: str | None = None  # the effective timezone of the contact (quiet hours)
    cap_day: date | None = None  # the org-local day the invitation counts for
    notes: tuple[str, ...] = ()  # quiet_hours, contact_timezone_invalid
    invitation: Invitation | None = None

    @property
    def suppressed(self) -> bool:
        return self.status == SUPPRESSED


def _address_of(contact: Mapping[str, Any], channel: str) -> str | None:
    field = CHANNEL_ADDRESS[channel]
    value = contact.get(field) if field else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def choose_channel(contact: Mapping[str, Any], config: RuleConfig) -> str | None:
    """The first channel of ``config.channels`` the contact has an address for (newsletter: always), else None."""
    return next((c for c in config.channels if CHANNEL_ADDRESS[c] is None or _address_of(contact, c)), None)


def _aware(value: object, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def reminder_due(invitation_sent_at: datetime, config: RuleConfig, channel: str | None = None,
                 contact_timezone: str | None = None) -> datetime | None:
    """When the one reminder is due: ``sent_at + reminder_after`` moved out of the channel's quiet hours in the
    contact's timezone (the org's if none/unknown); None when reminders are off."""
    if config.reminder_after is None:
        return None
    tz, _, _ = resolve_timezone(contact_timezone, config)
    return move_out_of_quiet_hours(_aware(invitation_sent_at, "invitation_sent_at") + config.reminder_after,
                                   tz, config.quiet_hours_for(channel))


def should_send_reminder(invitation: Invitation, responded: bool, reminders_sent: int, now: datetime) -> bool:
    """Exactly one reminder, never after a response, not before it is due, never inside quiet hours (a caller
    woken inside them re-checks at ``move_out_of_quiet_hours(now, …)``)."""
    if responded or reminders_sent >= 1 or invitation.reminder_due_at is None:
        return False
    now = _aware(now, "now")
    if now < invitation.reminder_due_at:
        return False
    return not in_quiet_hours(now, load_zone(invitation.timezone), invitation.quiet_hours)


def decide(trigger: Mapping[str, Any], config: RuleConfig, contact_state: ContactState | None,
           org_day_state: OrgDayState | None, now: datetime, secret_seed: bytes | str, *,
           opted_out: bool = False, key: str | None = None) -> Decision:
    """One trigger (an Avro TriggerEvent dict, as ``streams.triggers.validate_trigger`` makes it) → a Decision.

    ``contact_state`` is the state of ``(trigger.org_id, contact_key(...))`` and ``org_day_state`` that of the
    org (None: nothing yet). The decision carries the new states (equal to the inputs when suppressed)."""
    now = _aware(now, "now")
    occurred_at = _aware(trigger["occurred_at"], "trigger.occurred_at")
    org_id = trigger["org_id"]
    event_id = trigger["event_id"]
    contact = trigger.get("contact") or {}
    key = key or contact_key(org_id, contact["contact_id"], secret_seed)  # the caller may know it already
    contact_state = contact_state or ContactState()
    org_day_state = org_day_state or OrgDayState()
    tz, tz_name, notes = resolve_timezone(contact.get("timezone"), config)
    channel = choose_channel(contact, config)

    def suppress(reason: str) -> Decision:
        return Decision(status=SUPPRESSED, reason=reason, contact_key=key, decided_at=now,
                        contact_state=contact_state, org_day_state=org_day_state, channel=channel,
                        timezone=tz_name, notes=notes)

    if opted_out:
        return suppress(OPTED_OUT)
    if config.event_types is not None and trigger.get("event_type") not in config.event_types:
        return suppress(UNKNOWN_EVENT_TYPE)
    if config.max_event_age is not None and now - occurred_at > config.max_event_age:
        return suppress(TOO_OLD)
    if channel is None:
        return suppress(NO_CONTACT)
    last = contact_state.last_invited_at
    if last is not None and now < last.astimezone(UTC) + config.quarantine:
        return suppress(QUARANTINE)
    if not is_sampled_in(org_id, key, event_id, config.sampling_rate, secret_seed):
        return suppress(SAMPLED_OUT)

    # Timing never refuses; it is computed before the cap because the cap counts the day the invitation goes out.
    earliest = max(occurred_at + config.delay_after_event, now)
    quiet = config.quiet_hours_for(channel)
    send_at = move_out_of_quiet_hours(earliest, tz, quiet)
    if send_at != earliest:
        notes = (*notes, NOTE_QUIET_HOURS)
    org_zone = config.zone
    cap_day = send_at.astimezone(org_zone).date()
    if config.daily_cap is not None and org_day_state.count(cap_day) >= config.daily_cap:
        return replace(suppress(CAP), cap_day=cap_day)

    status = SENT if send_at <= now else SCHEDULED
    invitation = Invitation(org_id=org_id, contact_key=key, event_id=event_id, channel=channel, timezone=tz_name,
                            sent_at=send_at, quiet_hours=quiet,
                            reminder_due_at=None if config.reminder_after is None
                            else move_out_of_quiet_hours(send_at + config.reminder_after, tz, quiet))
    return Decision(
        status=status, reason=None, contact_key=key, decided_at=now,
        contact_state=ContactState(last_invited_at=send_at, last_event_id=event_id,
                                   invitations=contact_state.invitations + 1),
        org_day_state=org_day_state.with_invitation(cap_day, today=now.astimezone(org_zone).date()),
        channel=channel, send_at=send_at, scheduled_for=send_at if status == SCHEDULED else None,
        timezone=tz_name, cap_day=cap_day, notes=notes, invitation=invitation)


def decide_many(triggers: Iterable[Mapping[str, Any]], config: RuleConfig, now: datetime,
                secret_seed: bytes | str) -> list[Decision]:
    """Convenience for tests and simulations: decide a sequence in order, threading the state through."""
    contacts: dict[tuple[str, str], ContactState] = {}
    orgs: dict[str, OrgDayState] = {}
    out = []
    for trigger in triggers:
        ck = (trigger["org_id"], contact_key(trigger["org_id"], trigger["contact"]["contact_id"], secret_seed))
        d = decide(trigger, config, contacts.get(ck), orgs.get(trigger["org_id"]), now, secret_seed)
        contacts[ck] = d.contact_state
        orgs[trigger["org_id"]] = d.org_day_state
        out.append(d)
    return out
