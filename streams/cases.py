"""Detractor follow-up cases (issue 12, point 1) as a pure state machine: no I/O, no clock.

``apply(event, state, now_ms, config) -> (changes, outputs)``: one event, a read-only view of the state
(``state.get(key)``) and the injected time → the changed state keys and the records to produce. The agent
writes ``changes`` (key → JSON-able value, None = delete) to its table and produces ``outputs``; everything
here is unit-tested without Kafka (tests/test_cases.py).

**Partitioning.** The agent partitions its input by the *contact*: ``route_of(event)``, which is
``<org>|<respondent>`` (the classified answer's keyed contact pseudonym; an anonymous answer is its own
contact, ``<org>|r:<response_id>``). One agent thus owns a contact's open case, its answers and their
edits, in order. Every case record carries its ``route``; a command (ack/note/assign/close) must carry it
too (the CLI / HTTP API read it from the case record) and be produced keyed by it. A tick names one case and
goes to that case's route as well (``to_escalate`` lists the cases a partition's timer must tick).

**State keys** (all on the contact's partition):
``C|<case_id>`` the case; ``K|<route>`` the contact's open case id (deleted on close);
``R|<org>|<response_id>`` the case an answer belongs to (edits and replays find their case through it).
The agent may expire closed cases and their ``R|`` keys after a retention; an edit arriving after that is
taken as a new answer.

**Events** (dicts with ``kind``): ``answer`` (``{"kind": "answer", "answer": <ClassifiedResponse dict>}``,
``answer_event``), ``ack`` / ``note`` / ``assign`` / ``close`` (``case_id``, ``route``, ``actor``, ``text``;
``owner`` for assign; ``reason`` for close; optional ``command_id``: a repeated one is a no-op), ``tick``
(``case_id``: the overdue check).

**Outputs** (dicts with ``type``): ``case`` (the full case after each change, keyed by ``case_id``: the
compacted topic and ClickHouse), ``notification`` (to the owner / escalation owner, ``idempotency_key`` =
``<case_id>:<kind>:<rev>`` — the webhook sender may retry it, the receiver deduplicates), ``escalated`` and
``refused`` (a command the agent dead-letters or answers with 4xx: ``reason`` is ``unknown_case``,
``case_closed``, ``already_acknowledged``, ``already_owner``, ``missing_actor``, ``missing_text``,
``missing_owner``, ``invalid_reason``, ``text_too_long``, ``too_many_notes``, ``wrong_route``,
``unknown_event``; ``detail`` says more). Commands on an open case may carry a ``text`` (appended as a note;
ack: the first contact's note; close: why).

Rules and decisions:

* **Opening.** An answer qualifies when its category or its score is in the org's ``open_on`` (default:
  detractors; passives and scores 0–8 may be added; promoter scores are refused in the configuration — they
  belong to promoter actions). A qualifying answer of a contact without an open case opens one: the case id
  is ``case-`` + 16 hex of BLAKE2b(org, contact, response_id, version), so a replay finds the same case (and
  its ``R|`` key) and opens nothing. The case copies the answer's score, category, masked comment and segment
  (never contact details: the classified record has none, and only named fields are copied).
* **Times** are epoch ms (UTC). ``opened_at`` is the processing time ``now_ms`` (the clock starts when the
  case exists: a backlog does not open cases overdue); ``due_at`` = opened_at + SLA (default 48 h
  wall-clock), or, with ``business_hours``, SLA counted in business hours only (local wall times of the org's
  ``timezone`` converted with zoneinfo, so a DST change moves the UTC instants; no public holidays).
* **Owner**: the first owner rule whose dimension's segment value is listed, else ``fallback_owner``, else
  ``unassigned``. Edits never change the owner (it may have been assigned by hand); ``assign`` does.
* **A second qualifying answer** of the same contact while its case is open joins that case (``answers``;
  notification ``answer_added``); the due time stays. After the case is closed, a new qualifying answer opens
  a new case.
* **Edits** (a newer version of an answer of the case; older or equal versions are ignored: latest wins)
  update the answer; the opening answer's current version is what the case's top-level score/comment/segment
  show. An edit to a promoter closes the case as ``resolved_by_edit`` when no other answer of the case still
  qualifies. **An edit to a passive** that does not qualify keeps the case open (only a promoter means the
  problem is gone; the owner's call is still useful) and just updates it. A newer version of an answer whose
  case was closed by ``resolved_by_edit`` that qualifies again is taken as a new answer (joins the contact's
  open case or opens a new one); newer versions of answers of cases closed otherwise are ignored.
* **Status**: stored ``open`` or ``closed`` (with ``close_reason``: ``resolved_by_edit``, or the command's
  reason, default ``closed``). Acknowledged is ``open`` with ``first_contact_at``. ``overdue`` is derived
  (``status_at``: open and now ≥ due_at): the SLA is the time to close, an ack does not stop it.
* **Escalation**: a tick on an open case at or past its due time sets ``escalated_at`` once and emits
  ``escalated`` plus a notification to the escalation owner (none configured: no notification). Ticks on
  unknown, closed, not yet due or already escalated cases produce nothing. Nobody is notified at
  ``unassigned``.
* ``rev`` counts the case's changes (1 when opened): notification keys use it, so a redelivered event
  (decided again from the same state) makes the same keys.
* ``summary(cases, now_ms)``: ``open`` (open, not overdue), ``overdue``, ``closed_within_sla`` (closed_at ≤
  due_at) and ``closed_late``; every case is in exactly one of them.
* Answers without an organization (``org_id`` null: not an answer to an invitation) belong to org ``""``,
  which has the default configuration unless one is given for ``""``.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from npsflow.programs import _fail, _message, _path, _show, iana_timezone, parse_clock, parse_duration
from streams.contact_rules import _local_instant
from streams.nps import classify as category_of

UNASSIGNED = "unassigned"
OPEN, CLOSED, OVERDUE = "open", "closed", "overdue"
RESOLVED_BY_EDIT = "resolved_by_edit"
DEFAULT_SLA = timedelta(hours=48)
MAX_NOTES = 200
MAX_TEXT_CHARS = 2000
MAX_COMMAND_IDS = 50  # the last command ids a case remembers (a repeated command is a no-op)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
COMMANDS = ("ack", "note", "assign", "close")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_DAY_MS = 86_400_000


# ---------------------------------------------------------------------------------------------------------
# Configuration


class CasesConfigError(ValueError):
    """Invalid cases configuration: ``errors`` holds one line per mistake (``<path>: <message>``)."""

    def __init__(self, errors: Iterable[str]):
        self.errors = list(dict.fromkeys(errors))
        super().__init__("\n".join(self.errors))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _text(value: Any, what: str = "a non-empty text of at most 200 characters") -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise _fail(f"must be {what}, got {_show(value)}")
    return value.strip()


class BusinessHours(_Model):
    """Working time of the org: local [start, end) on ``days`` (no overnight windows)."""

    days: tuple[str, ...] = WEEKDAYS[:5]
    start: time = time(8, 0)
    end: time = time(17, 0)

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not value or any(d not in WEEKDAYS for d in value):
            raise _fail(f"must be a non-empty list of {', '.join(WEEKDAYS)}, got {_show(value)}")
        return tuple(dict.fromkeys(value))

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> time:
        return parse_clock(value)

    @model_validator(mode="after")
    def _order(self) -> "BusinessHours":
        if self.start >= self.end:
            raise _fail(f"start must be before end (no overnight business hours), got {self.start:%H:%M}"
                        f"–{self.end:%H:%M}")
        return self


class OwnerRule(_Model):
    """``{dimension: {segment value: owner}}`` as written in YAML."""

    dimension: str
    owners: dict[str, str]

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and set(value) != {"dimension", "owners"}:
            if len(value) != 1:
                raise _fail(f"must be one mapping dimension: {{value: owner}}, got {_show(value)}")
            (dimension, owners), = value.items()
            return {"dimension": dimension, "owners": owners}
        return value

    @field_validator("owners", mode="before")
    @classmethod
    def _owners(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or not value:
            raise _fail(f"must be a non-empty mapping of segment value: owner, got {_show(value)}")
        return {str(k): _text(v, "an owner (a non-empty text of at most 200 characters)")
                for k, v in value.items()}

    def owner_for(self, segment: Mapping[str, str]) -> str | None:
        value = segment.get(self.dimension)
        return None if value is None else self.owners.get(value)


class OrgCases(_Model):
    """The cases settings of one organization (``id``); everything has a default."""

    id: str = ""
    timezone: str = "UTC"
    open_on: tuple[str | int, ...] = ("detractor",)
    owners: tuple[OwnerRule, ...] = ()
    fallback_owner: str | None = None
    escalation_owner: str | None = None
    sla: timedelta = DEFAULT_SLA
    business_hours: BusinessHours | None = None

    @field_validator("timezone", mode="before")
    @classmethod
    def _tz(cls, value: Any) -> str:
        return iana_timezone(value, "Europe/Helsinki")

    @field_validator("open_on", mode="before")
    @classmethod
    def _open_on(cls, value: Any) -> Any:
        ok = isinstance(value, (list, tuple)) and all(
            v in ("detractor", "passive") or (type(v) is int and 0 <= v <= 8) for v in value)
        if not ok:  # [] = this organization opens no cases
            raise _fail(f"must be a list of detractor, passive or scores 0–8, got {_show(value)}")
        return tuple(value)

    @field_validator("owners", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        if isinstance(value, Mapping):  # one mapping: its rules in the order written
            return [{k: v} for k, v in value.items()]
        return value

    @field_validator("fallback_owner", "escalation_owner", mode="before")
    @classmethod
    def _owner(cls, value: Any) -> str | None:
        return None if value is None else _text(value, "an owner (a non-empty text of at most 200 characters)")

    @field_validator("sla", mode="before")
    @classmethod
    def _sla(cls, value: Any) -> timedelta:
        return parse_duration(value, positive=True)

    def qualifies(self, score: int) -> bool:
        return score in self.open_on or category_of(score).value in self.open_on

    def owner_for(self, segment: Mapping[str, str]) -> str:
        for rule in self.owners:
            owner = rule.owner_for(segment)
            if owner is not None:
                return owner
        return self.fallback_owner or UNASSIGNED

    def due_at(self, opened_ms: int) -> int:
        if self.business_hours is None:
            return opened_ms + _ms(self.sla)
        return business_due(opened_ms, _ms(self.sla), self.business_hours, ZoneInfo(self.timezone))


class CasesConfig(_Model):
    organizations: tuple[OrgCases, ...] = ()

    @cached_property
    def _by_id(self) -> dict:  # the memo of for_org (a plain attribute: pydantic's private ones are slow to read)
        return {}

    @model_validator(mode="after")
    def _unique(self) -> "CasesConfig":
        ids = [org.id for org in self.organizations]
        if len(set(ids)) != len(ids):
            raise _fail(f"organization ids must be unique, got {', '.join(map(repr, ids))}")
        return self

    def for_org(self, org_id: str) -> OrgCases:
        """The org's settings; an org without any: owner ``unassigned``, SLA 48 h wall-clock, no escalation.
        (Memoized: the agent asks it for every event.)"""
        found = self._by_id.get(org_id)
        if found is None:
            found = next((o for o in self.organizations if o.id == org_id), None) or OrgCases(id=org_id)
            if len(self._by_id) < 100_000:
                self._by_id[org_id] = found
        return found

    @classmethod
    def from_yaml_dict(cls, doc: Any) -> "CasesConfig":
        """``{"organizations": [{"id": ..., ...}]}`` (None: no configuration) → config, or
        ``CasesConfigError`` with every mistake, one line each."""
        if doc is None:
            return cls()
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise CasesConfigError(f"{_path(e['loc'])}: {_error(e)}" for e in exc.errors()) from None


def qualifier(config: "CasesConfig"):
    """``wants(org_id, score)``: would a first answer with this score open a case in this org? (Memoized per
    org and score: classify asks it for every answer.)"""
    known: dict[tuple[str, int], bool] = {}

    def wants(org_id: str, score: int) -> bool:
        hit = known.get((org_id, score))
        if hit is None:
            hit = known[(org_id, score)] = config.for_org(org_id).qualifies(score)
        return hit

    return wants


def _error(error: Mapping[str, Any]) -> str:
    """programs' wording; an unknown key names the keys allowed where it is."""
    model = {1: CasesConfig, 3: OrgCases, 4: BusinessHours}.get(len(error["loc"]))
    if error["type"] != "extra_forbidden" or model is None:
        return _message(error)
    return f"unknown key (allowed: {', '.join(model.model_fields)})"


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def business_due(opened_ms: int, sla_ms: int, hours: BusinessHours, zone: ZoneInfo) -> int:
    """``opened_ms`` + ``sla_ms`` of business time: day by day (local calendar of ``zone``), each working
    day's [start, end) as UTC instants, counting only the part after ``opened_ms``."""
    cursor, left = opened_ms, sla_ms
    day = datetime.fromtimestamp(opened_ms / 1000, tz=timezone.utc).astimezone(zone).date()
    for _ in range(366 * 50):  # a working day each week at least: ends long before (bounds a bad input)
        if WEEKDAYS[day.weekday()] in hours.days:
            start, end = (_instant_ms(day, t, zone) for t in (hours.start, hours.end))
            begin = max(start, cursor)
            if begin + left <= end:
                return begin + left
            left -= max(0, end - begin)
        day += timedelta(days=1)
    raise ValueError("business hours too short for the SLA")


def _instant_ms(day: date, wall: time, zone: ZoneInfo) -> int:
    return int(_local_instant(day, wall, zone).timestamp() * 1000)


# ---------------------------------------------------------------------------------------------------------
# Keys and ids


class StateView(Protocol):
    def get(self, key: str) -> Any: ...


def case_key(case_id: str) -> str:
    return f"C|{case_id}"


def contact_index_key(route: str) -> str:
    return f"K|{route}"


def answer_index_key(org_id: str, response_id: str) -> str:
    return f"R|{org_id}|{response_id}"


def answer_route(answer: Mapping[str, Any]) -> str:
    """The contact of an answer: ``<org>|<respondent>``; an anonymous answer is its own contact."""
    respondent = answer.get("respondent") or f"r:{answer['response_id']}"
    return f"{answer.get('org_id') or ''}|{respondent}"


def route_of(event: Mapping[str, Any]) -> str:
    """The key the agent must partition ``event`` by: the contact (commands and ticks carry their case's)."""
    if event.get("kind") == "answer":
        return answer_route(event["answer"])
    return str(event.get("route") or "")


def case_id_of(route: str, response_id: str, version: int) -> str:
    digest = hashlib.blake2b(f"{route}\x1f{response_id}\x1f{version}".encode(), digest_size=8).hexdigest()
    return f"case-{digest}"


def answer_event(record: Mapping[str, Any]) -> dict:
    return {"kind": "answer", "answer": dict(record)}


# ---------------------------------------------------------------------------------------------------------
# The step


class _Step:
    """One ``apply``: reads through the staged changes, collects outputs."""

    def __init__(self, state: StateView, now_ms: int, config: CasesConfig) -> None:
        self.state, self.now, self.config = state, now_ms, config
        self.changes: dict[str, Any] = {}
        self.outputs: list[dict] = []

    def get(self, key: str) -> Any:
        return self.changes[key] if key in self.changes else self.state.get(key)

    def put(self, key: str, value: Any) -> None:
        self.changes[key] = value

    def save(self, case: dict, kind: str, actor: str | None = None) -> dict:
        """A changed case: next revision, logged, stored and emitted (the full case)."""
        case = {**case, "rev": case["rev"] + 1, "updated_at": self.now,
                "log": [*case["log"], {"rev": case["rev"] + 1, "at": self.now, "kind": kind, "actor": actor}][-MAX_LOG:]}
        self.put(case_key(case["case_id"]), case)
        self.outputs.append({"type": "case", "key": case["case_id"], "case": case})
        return case

    def notify(self, case: dict, kind: str, to: str | None, answer: Mapping[str, Any] | None = None) -> None:
        """A notification request: only what the owner needs (the masked comment, score, segment, times)."""
        if not to or to == UNASSIGNED:
            return
        shown = answer or case
        self.outputs.append({
            "type": "notification", "idempotency_key": f"{case['case_id']}:{kind}:{case['rev']}", "kind": kind,
            "to": to, "case_id": case["case_id"], "org_id": case["org_id"], "owner": case["owner"],
            "score": shown["score"], "category": shown["category"], "comment": shown["comment"],
            "segment": dict(shown["segment"]), "opened_at": case["opened_at"], "due_at": case["due_at"],
            "status": case["status"], "close_reason": case["close_reason"]})

    def refuse(self, event: Mapping[str, Any], reason: str, detail: str) -> None:
        self.outputs.append({"type": "refused", "kind": event.get("kind"), "case_id": event.get("case_id"),
                             "command_id": event.get("command_id"), "reason": reason, "detail": detail})


def apply(event: Mapping[str, Any], state: StateView, now_ms: int,
          config: CasesConfig) -> tuple[dict[str, Any], list[dict]]:
    """One event → (state changes: key → value or None = delete, outputs). See the module docstring."""
    step = _Step(state, now_ms, config)
    kind = event.get("kind")
    if kind == "answer":
        _answer(step, event["answer"])
    elif kind in COMMANDS:
        _command(step, event)
    elif kind == "tick":
        _tick(step, event)
    elif kind == "erase":
        _erase(step, event)
    else:
        step.refuse(event, "unknown_event", f"unknown event kind {kind!r}")
    return step.changes, step.outputs


# ---------------------------------------------------------------------------------------------------------
# Answers


_INT64 = 2 ** 63 - 1
MAX_COMMENT_CHARS = 10_000
MAX_LOG = 100  # a case keeps its last 100 changes (``changes`` counts all)


def _entry(answer: Mapping[str, Any]) -> dict:
    """What a case keeps of an answer: named fields only (never contact details), each checked (a bad type or an
    out-of-range number is a ValueError: the agent dead-letters the event)."""
    score, version, at = int(answer["score"]), int(answer["version"]), _to_ms(answer["responded_at"])
    comment, segment = answer.get("comment"), answer.get("segment") or {}
    if not (0 <= score <= 10 and 0 <= version <= _INT64 and 0 <= at <= _INT64):
        raise ValueError("score, version or responded_at out of range")
    if not (comment is None or isinstance(comment, str)) or not isinstance(segment, Mapping):
        raise ValueError("comment must be a text or null, segment a mapping")
    if not isinstance(answer["response_id"], str) or not answer["response_id"]:
        raise ValueError("response_id must be a non-empty text")
    return {"response_id": answer["response_id"][:200], "version": version, "score": score,
            "category": category_of(score).value, "comment": None if comment is None else comment[:MAX_COMMENT_CHARS],
            "segment": {str(k)[:100]: str(v)[:200] for k, v in segment.items()}, "responded_at": at}


def _to_ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, str):
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    return int(value)


def _answer(step: _Step, answer: Mapping[str, Any]) -> None:
    entry = _entry(answer)
    org, route = answer.get("org_id") or "", answer_route(answer)
    settings = step.config.for_org(org)
    rkey = answer_index_key(org, entry["response_id"])
    link = step.get(rkey)
    if link is not None:
        if entry["version"] <= link["version"]:
            return  # a replay or an older version: latest wins
        step.put(rkey, {**link, "version": entry["version"]})
        case = step.get(case_key(link["case_id"]))
        if case is not None and case["status"] == OPEN:
            return _edit(step, case, entry, settings)
        if case is not None and case["close_reason"] != RESOLVED_BY_EDIT:
            return  # the answer of a case closed by its owner stays there
    if not settings.qualifies(entry["score"]):
        return
    open_id = step.get(contact_index_key(route))
    case = step.get(case_key(open_id)) if open_id else None
    if case is not None and case["status"] == OPEN:
        _join(step, case, entry, rkey)
    else:
        _open(step, org, route, entry, settings, rkey)


def _open(step: _Step, org: str, route: str, entry: dict, settings: OrgCases, rkey: str) -> None:
    case_id = case_id_of(route, entry["response_id"], entry["version"])
    if step.get(case_key(case_id)) is not None:
        return  # opened before (its answer index was expired): never twice
    now = step.now
    case = {"case_id": case_id, "org_id": org, "route": route, "response_id": entry["response_id"],
            "owner": settings.owner_for(entry["segment"]), "score": entry["score"], "category": entry["category"],
            "comment": entry["comment"], "segment": entry["segment"], "answers": [entry], "opened_at": now,
            "due_at": settings.due_at(now), "status": OPEN, "close_reason": None, "first_contact_at": None,
            "closed_at": None, "escalated_at": None, "escalated_to": None, "notes": [], "command_ids": [],
            "rev": 0, "updated_at": now, "log": []}
    case = step.save(case, "opened")
    step.put(contact_index_key(route), case_id)
    step.put(rkey, {"case_id": case_id, "version": entry["version"]})
    step.notify(case, "opened", case["owner"])


def _join(step: _Step, case: dict, entry: dict, rkey: str) -> None:
    case = step.save({**case, "answers": [*case["answers"], entry]}, "answer_added")
    step.put(rkey, {"case_id": case["case_id"], "version": entry["version"]})
    step.notify(case, "answer_added", case["owner"], entry)


def _edit(step: _Step, case: dict, entry: dict, settings: OrgCases) -> None:
    """A newer version of an answer of an open case; a promoter with no other qualifying answer resolves it."""
    rid = entry["response_id"]
    case = {**case, "answers": [entry if a["response_id"] == rid else a for a in case["answers"]]}
    if rid == case["response_id"]:
        case.update({name: entry[name] for name in ("score", "category", "comment", "segment")})
    others = [a for a in case["answers"] if a["response_id"] != rid]
    if entry["category"] != "promoter" or any(settings.qualifies(a["score"]) for a in others):
        step.save(case, "answer_edited")
        return
    case = step.save({**case, "status": CLOSED, "close_reason": RESOLVED_BY_EDIT, "closed_at": step.now},
                     RESOLVED_BY_EDIT)
    _release(step, case)
    step.notify(case, RESOLVED_BY_EDIT, case["owner"], entry)


def _release(step: _Step, case: dict) -> None:
    """A closed case is no longer its contact's open case."""
    key = contact_index_key(case["route"])
    if step.get(key) == case["case_id"]:
        step.put(key, None)


# ---------------------------------------------------------------------------------------------------------
# Erasure


def erase_event(route: str, case_ids: Iterable[str], response_ids: Iterable[str]) -> dict:
    """The event ``npsflow forget`` sends for one route of the contact (keyed by ``route``): the case ids and
    response ids ClickHouse knows of it (the state may hold more: the route's open case)."""
    return {"kind": "erase", "route": route, "cases": sorted(set(case_ids)), "responses": sorted(set(response_ids))}


def _erase(step: _Step, event: Mapping[str, Any]) -> None:
    """Forget the route's cases (``C|``), its open-case index (``K|``) and its answers' index keys (``R|``), and
    emit a ``tombstone`` per case id (the compacted cases topic drops the case records): the case ids named by
    the event (found in ClickHouse; a case the agent expired already still has its record on the topic) and those
    the state holds for the route. Cases of other routes are never touched. Idempotent: again, it finds no state
    and emits the same tombstones (harmless on a compacted topic)."""
    route = str(event["route"])
    org = route.split("|", 1)[0]
    open_id = step.get(contact_index_key(route))
    ids = list(dict.fromkeys([*(str(c) for c in event.get("cases") or ()), *([open_id] if open_id else [])]))
    responses = {str(r) for r in event.get("responses") or ()}
    erased = []
    for case_id in ids:
        case = step.get(case_key(case_id))
        if case is not None and case["route"] != route:
            continue  # not this contact's: never erased through another route
        if case is not None:
            responses.update(a["response_id"] for a in case["answers"])
            step.put(case_key(case_id), None)
        erased.append(case_id)
        step.outputs.append({"type": "tombstone", "key": case_id})
    for response_id in sorted(responses):
        link = step.get(answer_index_key(org, response_id))
        if link is not None and (link.get("case_id") in erased or response_id in (event.get("responses") or ())):
            step.put(answer_index_key(org, response_id), None)
    if step.get(contact_index_key(route)) is not None:
        step.put(contact_index_key(route), None)
    step.outputs.append({"type": "erased", "cases": len(erased)})


# ---------------------------------------------------------------------------------------------------------
# Commands and ticks


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _command(step: _Step, event: Mapping[str, Any]) -> None:
    case = step.get(case_key(str(event["case_id"]))) if event.get("case_id") else None
    try:
        if case is None:
            raise _Refusal("unknown_case", f"no case {str(event.get('case_id'))[:80]!r} here")
        if event.get("route") != case["route"]:  # a command lives on its case's partition, nowhere else
            raise _Refusal("wrong_route", "the command's route is not its case's")
        command_id = event.get("command_id")
        if command_id is not None and (not isinstance(command_id, str) or len(command_id) > 100):
            raise _Refusal("invalid_command_id", "command_id must be a text of at most 100 characters")
        if command_id and command_id in case["command_ids"]:
            return  # the same command again (a producer's retry): done already
        if case["status"] == CLOSED:
            raise _Refusal("case_closed", f"the case was closed ({case['close_reason']})")
        actor = _clean(event.get("actor"))
        if not actor:
            raise _Refusal("missing_actor", "a command needs an actor")
        case, notify_to = _HANDLERS[event["kind"]](case, event, actor, step.now)
    except _Refusal as refusal:
        step.refuse(event, refusal.reason, refusal.detail)
        return
    if command_id:
        case["command_ids"] = [*case["command_ids"], command_id][-MAX_COMMAND_IDS:]
    case = step.save(case, event["kind"], actor)
    if case["status"] == CLOSED:
        _release(step, case)
    if notify_to:
        step.notify(case, "assigned", notify_to)


def _clean(value: Any) -> str:
    return value.strip()[:200] if isinstance(value, str) else ""


def _noted(case: dict, event: Mapping[str, Any], actor: str, now: int, required: bool = False) -> dict:
    """The case with the command's text appended as a note (if any)."""
    text = event.get("text").strip() if isinstance(event.get("text"), str) else ""
    if not text:
        if required:
            raise _Refusal("missing_text", "a note needs a text")
        return dict(case)
    if len(text) > MAX_TEXT_CHARS:
        raise _Refusal("text_too_long", f"a note has at most {MAX_TEXT_CHARS} characters, got {len(text)}")
    if len(case["notes"]) >= MAX_NOTES:
        raise _Refusal("too_many_notes", f"a case keeps at most {MAX_NOTES} notes")
    return {**case, "notes": [*case["notes"], {"at": now, "actor": actor, "text": text}]}


def _ack(case: dict, event: Mapping[str, Any], actor: str, now: int) -> tuple[dict, None]:
    if case["first_contact_at"] is not None:
        raise _Refusal("already_acknowledged", f"first contact was recorded at {case['first_contact_at']}")
    return {**_noted(case, event, actor, now), "first_contact_at": now}, None


def _note(case: dict, event: Mapping[str, Any], actor: str, now: int) -> tuple[dict, None]:
    return _noted(case, event, actor, now, required=True), None


def _assign(case: dict, event: Mapping[str, Any], actor: str, now: int) -> tuple[dict, str]:
    owner = _clean(event.get("owner"))
    if not owner:
        raise _Refusal("missing_owner", "assign needs an owner")
    if owner == case["owner"]:
        raise _Refusal("already_owner", f"the case is already {owner!r}'s")
    return {**_noted(case, event, actor, now), "owner": owner}, owner


def _close(case: dict, event: Mapping[str, Any], actor: str, now: int) -> tuple[dict, None]:
    reason = event.get("reason") or "closed"
    if not isinstance(reason, str) or not _REASON.match(reason) or reason == RESOLVED_BY_EDIT:
        raise _Refusal("invalid_reason", f"a close reason is a word of a-z 0-9 _ (not {RESOLVED_BY_EDIT}), "
                                         f"got {str(reason)[:40]!r}")
    case = _noted(case, event, actor, now)
    return {**case, "status": CLOSED, "close_reason": reason, "closed_at": now}, None


_HANDLERS = {"ack": _ack, "note": _note, "assign": _assign, "close": _close}


def _tick(step: _Step, event: Mapping[str, Any]) -> None:
    """The overdue check of one case: escalate once, at or after its due time."""
    case = step.get(case_key(str(event.get("case_id"))))
    if case is None or case["route"] != event.get("route") or case["status"] != OPEN \
            or case["escalated_at"] is not None or step.now < case["due_at"]:
        return
    to = step.config.for_org(case["org_id"]).escalation_owner
    case = step.save({**case, "escalated_at": step.now, "escalated_to": to}, "escalated")
    step.outputs.append({"type": "escalated", "idempotency_key": f"{case['case_id']}:escalated:{case['rev']}",
                         "case_id": case["case_id"], "org_id": case["org_id"], "owner": case["owner"],
                         "escalated_to": to, "due_at": case["due_at"], "at": step.now})
    step.notify(case, "escalated", to)


# ---------------------------------------------------------------------------------------------------------
# Reading cases


def status_at(case: Mapping[str, Any], now_ms: int) -> str:
    """``closed``, ``overdue`` (open at or past its due time) or ``open``."""
    if case["status"] == CLOSED:
        return CLOSED
    return OVERDUE if now_ms >= case["due_at"] else OPEN


def to_escalate(cases: Iterable[Mapping[str, Any]], now_ms: int) -> list[str]:
    """The ids of the cases a tick would escalate now (for the agent's timer)."""
    return [c["case_id"] for c in cases if status_at(c, now_ms) == OVERDUE and c["escalated_at"] is None]


def summary(cases: Iterable[Mapping[str, Any]], now_ms: int) -> dict[str, int]:
    """Every case counted once: open (not overdue), overdue, closed within its SLA (closed_at ≤ due_at), late."""
    counts = {"open": 0, "overdue": 0, "closed_within_sla": 0, "closed_late": 0}
    for case in cases:
        status = status_at(case, now_ms)
        if status == CLOSED:
            status = "closed_within_sla" if case["closed_at"] <= case["due_at"] else "closed_late"
        counts[status] += 1
    return counts


# ---------------------------------------------------------------------------------------------------------
# Commands from the CLI and the internal API


class CommandRefused(ValueError):
    """A command the state machine would refuse, found before it is sent (``reason`` as in ``refused``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def command_for(case: Mapping[str, Any] | None, kind: str, actor: str, command_id: str, *, text: str | None = None,
                owner: str | None = None, reason: str | None = None) -> dict:
    """The event of a command on ``case`` (as read back: ``case_id``, ``route``, ``status``, ``owner``,
    ``first_contact_at``), to be produced keyed by its ``route``. The checks the state machine makes on the
    case as it was read are made here first, so a caller hears about them at once; the agent checks again on the
    current state (a race ends as a dead letter keyed by ``command_id``)."""
    if kind not in COMMANDS:
        raise CommandRefused("unknown_event", f"unknown command {kind!r} (one of {', '.join(COMMANDS)})")
    if case is None:
        raise CommandRefused("unknown_case", "no such case")
    event = {"kind": kind, "case_id": case["case_id"], "route": case["route"], "actor": _clean(actor),
             "command_id": command_id}
    if text:
        event["text"] = text
    if kind == "assign":
        event["owner"] = owner
    if kind == "close" and reason:
        event["reason"] = reason
    problem = _precheck(case, event)
    if problem is not None:
        raise CommandRefused(*problem)
    return event


def _precheck(case: Mapping[str, Any], event: Mapping[str, Any]) -> tuple[str, str] | None:
    if case["status"] == CLOSED:
        return "case_closed", f"the case is closed ({case.get('close_reason')})"
    probe = {**case, "status": OPEN, "notes": [], "command_ids": []}
    try:
        if not event["actor"]:
            raise _Refusal("missing_actor", "a command needs an actor")
        _HANDLERS[event["kind"]](probe, event, event["actor"], 0)
    except _Refusal as refusal:
        return refusal.reason, refusal.detail
    return None
