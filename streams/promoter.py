"""Promoter actions: what a promoter's answer sets off (thank-you, review request, reward code). Pure.

The path (every stage is an existing one; see streams.dispatch_steps and streams.deliver)::

    classify ── responded ──► deliver (the answered invitation's partition)
                                │ first answer, score 9/10, program with promoter_actions:
                                │ a promoter note, once per invitation (mark ``pa`` in the invitation)
                                ▼
    npsflow.dispatch.releases (key <org>|<contact>: the contact's stage-1 partition, internal JSON)
                                │ stage 1: memo ``P|<org>|<invitation>``, per action kind: opt-out, contact,
                                │ quarantine of the kind (``PQ|<org>|<contact key>``), quiet hours
                                ├── thank_you / review_request ─► npsflow.invitations (invite, kind = the action)
                                └── reward ─► npsflow.dispatch.candidates (key <org>|<program>) ─► cap stage:
                                              claims the pool's next code ─► npsflow.invitations
                                              (the code's index and fingerprint, never the code)
    deliver: sends at most once like an invitation, with the action's texts; the code is looked up by its index
    at send time (and checked against its fingerprint); the dispatch record has kind = the action.

Decisions (documented in the report/README):

* **Once per invitation, on its first answer.** The deliver stage decides when the first ``responded`` note of
  an invitation arrives (the one that opens the edit window): a 9 or 10 then → the actions of that score. An
  edit never adds or recalls anything (9 → 10 gets no review request, 6 → 10 nothing, 10 → 6 keeps what was
  sent or scheduled). The note's event id ``promoter:<invitation id>`` and the message ids derived from it
  (``invitation_id(org, "promoter:<invitation>:<kind>")``) make every replay a repetition.
* **Internal topic, not the triggers topic.** The triggers topic is the public intake (any producer may write
  to it); a promoter note there could be forged to draw reward codes. The releases topic is written only by
  the pipeline, is already keyed by contact and read by stage 1 under its lock.
* **Quarantine per action kind and contact** (``promoter_actions.quarantine``, 30 d default): separate from the
  survey quarantine (neither blocks nor resets the other). A reward refused because the pool is exhausted keeps
  its quarantine (not released): the pool is empty for the next one too.
* **Reward codes: each issued once.** A program's pool is claimed on one partition (the cap stage's
  ``<org>|<program>``), in offset order, by a cursor: the claim (cursor + the memo ``A|<message id>`` naming the
  index) is one state write with the decision (one record batch on one changelog partition, before the ack):
  a replay of the same message finds its memo (the same code), a different message always gets the cursor's
  next index. The pool is an ordered list: new codes are appended; the state keeps a keyed hash of the claimed
  prefix, and a pool whose claimed prefix changed (codes removed, reordered, inserted before the cursor) stops
  with ``reward_pool_changed`` instead of risking a code twice. Exhausted: ``reward_pool_exhausted``.
* **Where the code is**: only in the message sent (and the outbox file, which is that message). Topics, state
  and the dispatches table hold its index and a keyed fingerprint (HMAC under the secret: short codes cannot be
  guessed from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from streams import contact_rules as rules
from streams.responses import to_ms

THANK_YOU = "thank_you"
REVIEW_REQUEST = "review_request"
REWARD = "reward"
KINDS = (THANK_YOU, REVIEW_REQUEST, REWARD)
POOL_EXHAUSTED = "reward_pool_exhausted"
POOL_CHANGED = "reward_pool_changed"
PROMOTER_SCORES = (9, 10)


def event_id(invitation_id: str) -> str:
    """The event id of the promoter actions of an answered invitation (the records' ``event_id``)."""
    return f"promoter:{invitation_id}"


def is_action(kind: str | None) -> bool:
    return kind in KINDS


# ---------------------------------------------------------------------------------------------------------
# The deliver stage: the note


def note_for(inv: Mapping[str, Any], score: Any, actions: Any, at_ms: int) -> dict | None:
    """The promoter note of an invitation's first answer, or None: not a promoter, no actions for the score, no
    contact to reach, or the invitation is itself a promoter message. ``actions``: the program's
    ``PromoterActions`` (None: none configured)."""
    if actions is None or is_action(inv.get("kind")) or not isinstance(score, int) or score not in PROMOTER_SCORES:
        return None
    kinds = actions.actions_for(score)
    to = inv.get("to") or {}
    if not kinds or not to.get("contact_id"):
        return None
    return {"op": "promoter", "inv": inv["inv"], "org": inv["org"], "program": inv["program"], "score": score,
            "kinds": list(kinds), "at": at_ms, "contact_key": inv["contact_key"], "survey_id": inv.get("survey_id"),
            "to": dict(to), "locale": inv.get("locale"), "timezone": inv.get("timezone"),
            "segment": dict(inv.get("segment") or {})}


# ---------------------------------------------------------------------------------------------------------
# Stage 1: the decision of each action kind


@dataclass(frozen=True)
class ActionDecision:
    kind: str
    status: str  # sent | scheduled | suppressed
    reason: str | None
    channel: str | None
    send_at: datetime | None = None
    quiet: bool = False  # moved out of the contact's quiet hours


@dataclass(frozen=True)
class Quarantines:
    """Per (org, contact key): the last time each action kind went (or will go) out (ms)."""

    last: Mapping[str, int]

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any] | None) -> Quarantines:
        return cls(dict((obj or {}).get("k") or {}))

    def blocks(self, kind: str, now_ms: int, quarantine: timedelta) -> bool:
        last = self.last.get(kind)
        return last is not None and now_ms < last + int(quarantine.total_seconds() * 1000)

    def with_action(self, kind: str, at_ms: int) -> Quarantines:
        return Quarantines({**self.last, kind: at_ms})

    def to_dict(self, quarantine: timedelta, partition: int) -> dict:
        """``u``: until when any of it matters (the state is forgotten after that)."""
        until = max(self.last.values(), default=0) + int(quarantine.total_seconds() * 1000)
        return {"k": dict(self.last), "u": until, "p": partition}


def decide(note: Mapping[str, Any], kinds: tuple[str, ...], actions: Any, config: rules.RuleConfig,
           opted_out: bool, quarantines: Quarantines, now: datetime) -> tuple[list[ActionDecision], Quarantines]:
    """Each action kind of the note → sent / scheduled / suppressed, under the contact rules that apply to a
    message the contact did not ask for: opt-out, an address on one of the actions' channels, the kind's
    quarantine, the channel's quiet hours (in the contact's timezone). No sampling, no daily cap, no age limit
    (the note follows the answer). The new quarantine state names every kind that goes out."""
    to = note.get("to") or {}
    channel = next((c for c in actions.channels if to.get(rules.CHANNEL_ADDRESS[c])), None)
    tz, _, _ = rules.resolve_timezone(note.get("timezone"), config)
    now_ms = to_ms(now)
    out = []
    for kind in kinds:
        if opted_out:
            out.append(ActionDecision(kind, rules.SUPPRESSED, rules.OPTED_OUT, channel))
        elif channel is None:
            out.append(ActionDecision(kind, rules.SUPPRESSED, rules.NO_CONTACT, None))
        elif quarantines.blocks(kind, now_ms, actions.quarantine):
            out.append(ActionDecision(kind, rules.SUPPRESSED, rules.QUARANTINE, channel))
        else:
            send_at = rules.move_out_of_quiet_hours(now, tz, config.quiet_hours_for(channel))
            status = rules.SENT if send_at <= now else rules.SCHEDULED
            out.append(ActionDecision(kind, status, None, channel, send_at, send_at != now))
            quarantines = quarantines.with_action(kind, to_ms(send_at))
    return out, quarantines


# ---------------------------------------------------------------------------------------------------------
# The cap stage: the pool of reward codes


class Pool:
    """A program's reward codes in their configured order, with keyed fingerprints (``rules._mac`` under the
    secret, 16 hex) and the chained hash of every prefix (computed once, on first use)."""

    def __init__(self, codes: tuple[str, ...], secret: bytes) -> None:
        self.codes, self.secret = tuple(codes), secret
        self._prefix: list[str] | None = None

    def __len__(self) -> int:
        return len(self.codes)

    def fingerprint(self, index: int) -> str:
        return rules._mac(self.secret, "reward-code", self.codes[index]).hex()[:16]

    def prefix(self, n: int) -> str:
        """The chained hash of the first ``n`` codes ("" for none): changes when any of them changes or moves."""
        if self._prefix is None:
            chain, value = [""], ""
            for i in range(len(self.codes)):
                value = rules._mac(self.secret, "reward-prefix", value, self.fingerprint(i)).hex()[:32]
                chain.append(value)
            self._prefix = chain
        return self._prefix[n] if 0 <= n < len(self._prefix) else "?"

    def code(self, index: int, fingerprint: str) -> str | None:
        """The code at ``index`` if it is still the one claimed (same fingerprint), else None."""
        if not 0 <= index < len(self.codes) or self.fingerprint(index) != fingerprint:
            return None
        return self.codes[index]


@dataclass(frozen=True)
class Claim:
    index: int | None  # None: refused (``reason``)
    fingerprint: str | None
    reason: str | None
    state: dict | None  # the pool's new state (None: unchanged)


def claim(pool: Pool, state: Mapping[str, Any] | None) -> Claim:
    """The next code of the pool for a new message: the cursor's index, the cursor one further. Refused when the
    pool is exhausted or its claimed prefix is not the one claimed (the configuration changed it)."""
    cursor = int((state or {}).get("n") or 0)
    if pool.prefix(cursor) != (state or {}).get("h", ""):
        return Claim(None, None, POOL_CHANGED, None)
    if cursor >= len(pool):
        return Claim(None, None, POOL_EXHAUSTED, None)
    return Claim(cursor, pool.fingerprint(cursor), None, {"n": cursor + 1, "h": pool.prefix(cursor + 1)})


def pool_key(org_id: str, program_id: str) -> str:
    return f"W|{org_id}|{program_id}"
