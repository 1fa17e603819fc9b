"""Dispatch decisions and invitations: the pure part of the dispatch agents (no Kafka, no clock of its own).

``DispatchBook`` holds what a worker knows at start-up — the survey programs, the secret, the link settings —
and turns

* a trigger event + the contact's and the org's rule state → ``TriggerOutcome``: the new state, and either a
  ``suppressed`` dispatch record or an ``invite`` command for stage 2 (``streams.dispatch_agent``);
* an invitation (the state stage 2 keeps per invitation) → the ``sinks.channels.Invitation`` a channel sends,
  with localized texts, branding and signed links;
* a delivery outcome → the dispatch record (Avro ``io.npsflow.DispatchedMessage``).

Ids are deterministic: ``invitation_id = dispatch_id = base32(HMAC(secret, org_id, event_id))[:20]``, so a
trigger decided twice (state lost in a crash) gets the same invitation, which stage 2 sends at most once. A
reminder is a dispatch of its own: ``<dispatch_id>:reminder``, kind ``reminder``, same invitation id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from streams import contact_rules as rules
from streams import links
from streams import promoter
from streams.responses import from_ms, to_ms

UTC = timezone.utc

UNKNOWN_ORG = "unknown_org"
NO_PROGRAM = "no_program"
SEND_INTERRUPTED = "send_interrupted"  # the worker died during a send: at most once, so not re-sent
CHANNEL_NOT_CONFIGURED = "channel_not_configured"
PROGRAM_REMOVED = "program_removed"  # the org or program was removed from the programs file meanwhile
RESPONDED = "responded"  # cancelled because the contact answered (a reminder, or a send still scheduled)
DELAY = "delay"  # scheduled: the program's delay after the event
QUIET_HOURS = rules.NOTE_QUIET_HOURS  # scheduled: moved out of the contact's quiet hours
RETRY = "retry"  # scheduled again after a transient channel failure: reason "retry:<the failure>"
FALLBACK = "fallback"  # scheduled on the next channel after a permanent failure: "fallback:<the failure>"
RETRY_BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
                 timedelta(hours=6))  # after a transient failure (the channel's own quick retries exhausted)

INVITATION = "invitation"
REMINDER = "reminder"
LINK_KEY_ID = "k1"


def invitation_id(org_id: str, event_id: str, secret: bytes, *, late: bool = False) -> str:
    """20 lowercase base32 characters (100 bits) from HMAC(secret, org_id, event_id): safe in URLs and SMS.
    ``late``: the id of a decision about a trigger older than the event-id memory (see ``DispatchBook.decide``)."""
    digest = rules._mac(secret, "invitation-late" if late else "invitation", org_id, event_id)
    return base64.b32encode(digest[:15]).decode("ascii")[:20].lower()  # base32 works in 5-byte groups: 15 → 24


def link_key(secret: bytes) -> bytes:
    """The survey-link signing key, derived from the secret (its own purpose: never the pseudonym key)."""
    return hmac.new(secret, b"npsflow/links/" + LINK_KEY_ID.encode(), hashlib.sha256).digest()


@dataclass
class TriggerOutcome:
    status: str  # sent | scheduled | suppressed
    reason: str | None
    dispatch_id: str
    contact_key: str
    contact_state: rules.ContactState | None = None  # new state to store; None: unchanged
    org_state: rules.OrgDayState | None = None
    record: dict | None = None  # the suppressed dispatch record
    invite: dict | None = None  # the stage-2 command for sent/scheduled
    cap: int | None = None  # the program's daily cap (an invite must pass the cap stage), None: no cap
    cap_day: str | None = None  # the org-local day (ISO) the invitation counts for
    zone: str | None = None  # the org's timezone (its calendar)


@dataclass
class DispatchBook:
    programs: Any  # npsflow.programs.Programs | None
    secret: bytes
    survey_url: str  # base URL of the survey page, e.g. https://nps.example.com/s
    link_ttl: timedelta = timedelta(days=30)
    _rules: dict = field(default_factory=dict)
    _opted_out: dict = field(default_factory=dict)
    _wording: dict = field(default_factory=dict)  # (org, program, locale) → texts and branding (``wording``)
    _found: dict = field(default_factory=dict)  # (org id, program id) → (programs, found) (``found``)
    _locales: dict = field(default_factory=dict)  # (org, program, requested locale) → the locale (``locale``)
    _pools: dict = field(default_factory=dict)  # (org id, program id) → (promoter actions, promoter.Pool)

    def opted_out_keys(self, org_id: str) -> frozenset[str]:
        """The contact keys of the org's opt-out list (stage 2 knows contacts only by their key)."""
        if org_id not in self._opted_out:
            org = self.programs.organization(org_id) if self.programs else None
            ids = org.opt_out.ids if org else ()
            self._opted_out[org_id] = frozenset(rules.contact_key(org_id, c, self.secret) for c in ids)
        return self._opted_out[org_id]

    def found(self, org_id: str, program_id: str):
        """(org, program), or None when either is not configured; looked up once per (org, program) while the
        programs object stays the same (the deliver stage asks 3–4 times per mail)."""
        programs = self.programs
        cached = self._found.get((org_id, program_id))
        if cached is not None and cached[0] is programs:
            return cached[1]
        org = programs.organization(org_id) if programs else None
        program = org.program(program_id) if org else None
        result = (org, program) if program is not None else None
        if len(self._found) >= 4096:  # ids come from the invitations' state: keep the memory bounded
            self._found.clear()
        self._found[(org_id, program_id)] = (programs, result)
        return result

    def program_id(self, trigger: Mapping[str, Any]) -> str | None:
        found = self.programs.program_for(trigger["org_id"], trigger["event_type"]) if self.programs else None
        return found[1].id if found else None

    @property
    def link_keys(self) -> dict[str, bytes]:
        return {LINK_KEY_ID: link_key(self.secret)}

    def rule_config(self, org, program) -> rules.RuleConfig:
        key = (org.id, program.id)
        if key not in self._rules:
            from npsflow.programs import rule_config

            self._rules[key] = rule_config(org, program)
        return self._rules[key]

    @cached_property
    def dedup_retention(self) -> timedelta:
        """How long event ids are remembered: the longest ``max_event_age`` of any program plus a day — a
        duplicate arriving later is older than every program accepts anyway (7 d default without programs).
        Computed once: the programs do not change while a worker runs, and every trigger asks."""
        ages = [p.max_event_age or timedelta(days=90) for o in self._orgs() for p in o.programs]
        return max(ages or [timedelta(days=7)]) + timedelta(days=1)

    def quarantine_of(self, org_id: str) -> timedelta:
        org = self.programs.organization(org_id) if self.programs else None
        return max((p.quarantine for p in org.programs), default=timedelta(0)) if org else timedelta(0)

    def _orgs(self):
        return self.programs.organizations if self.programs else ()

    # ------------------------------------------------------------------------------------------- stage 1
    def decide(self, trigger: Mapping[str, Any], contact_state: rules.ContactState | None,
               org_state: rules.OrgDayState | None, now: datetime, key: str | None = None) -> TriggerOutcome:
        org_id, event_id = trigger["org_id"], trigger["event_id"]
        contact = trigger.get("contact") or {}
        key = key or rules.contact_key(org_id, contact["contact_id"], self.secret)
        late = self.beyond_memory(trigger, now)
        # A trigger older than event ids are remembered may be a duplicate of one decided long ago, whose
        # record must not be overwritten: this decision gets an id of its own.
        dispatch_id = invitation_id(org_id, event_id, self.secret, late=late)
        found = self.programs.program_for(org_id, trigger["event_type"]) if self.programs else None
        org = self.programs.organization(org_id) if self.programs else None
        if found is None:
            reason = UNKNOWN_ORG if org is None else NO_PROGRAM
            return TriggerOutcome(rules.SUPPRESSED, reason, dispatch_id, key, record=self.record(
                trigger, dispatch_id, key, status=rules.SUPPRESSED, reason=reason, decided_at=now))
        org, program = found
        config = self.rule_config(org, program)
        decision = rules.decide(trigger, config, contact_state, org_state, now, self.secret,
                                opted_out=org.is_opted_out(contact["contact_id"]), key=key)
        locale = self.locale(org, program, contact.get("locale"))
        if decision.suppressed:
            return TriggerOutcome(rules.SUPPRESSED, decision.reason, dispatch_id, key, record=self.record(
                trigger, dispatch_id, key, status=rules.SUPPRESSED, reason=decision.reason, decided_at=now,
                channel=decision.channel, survey_id=program.survey_id, locale=locale))
        reminder_at = decision.invitation.reminder_due_at if decision.invitation else None
        invite = {
            "op": "invite", "inv": dispatch_id, "org": org_id, "program": program.id,
            "survey_id": program.survey_id, "event_id": event_id, "contact_key": key,
            "channel": decision.channel, "locale": locale,
            "to": {"email": contact.get("email"), "phone": contact.get("phone"), "contact_id": contact["contact_id"]},
            "timezone": decision.timezone, "segment": dict(trigger.get("segment") or {}),
            "send_at": to_ms(decision.send_at), "reminder_at": None if reminder_at is None else to_ms(reminder_at),
            "expires_at": to_ms(decision.send_at + self.link_ttl), "decided_at": to_ms(now),
            "why": QUIET_HOURS if QUIET_HOURS in decision.notes else DELAY,
        }
        return TriggerOutcome(decision.status, None, dispatch_id, key, contact_state=decision.contact_state,
                              org_state=decision.org_day_state, invite=invite, cap=config.daily_cap,
                              cap_day=decision.cap_day.isoformat() if decision.cap_day else None,
                              zone=config.timezone)

    def beyond_memory(self, trigger: Mapping[str, Any], now: datetime) -> bool:
        """True when the trigger is older than event ids are remembered (a duplicate could not be recognized)."""
        return now - rules._aware(trigger["occurred_at"], "occurred_at") > self.dedup_retention

    def send_block(self, inv: Mapping[str, Any], kind: str, now: datetime) -> tuple[str, Any] | None:
        """Why this message must not go out *now*, re-checked at send time (stage 1 decided maybe hours ago):
        ``("fail", reason)`` (program removed), ``("suppress", reason)`` (opted out since, or answered
        already), ``("reschedule", datetime)`` (the contact's quiet hours: delay, don't drop), or None."""
        found = self.found(inv["org"], inv["program"])
        if found is None:
            return ("fail", PROGRAM_REMOVED)
        if inv["contact_key"] in self.opted_out_keys(inv["org"]):
            return ("suppress", rules.OPTED_OUT)
        if kind == INVITATION and inv.get("resp"):
            return ("suppress", RESPONDED)
        if inv.get("kind") == promoter.REWARD and self.reward_code(inv) is None:
            return ("fail", promoter.POOL_CHANGED)  # never send a code other than the one claimed
        config = self.rule_config(*found)
        quiet = config.quiet_hours_for(inv["channel"])
        tz, _, _ = rules.resolve_timezone(inv.get("timezone"), config)
        if rules.in_quiet_hours(now, tz, quiet):
            return ("reschedule", rules.move_out_of_quiet_hours(now, tz, quiet))
        return None

    def reminder_at(self, inv: Mapping[str, Any], sent_at: datetime) -> int | None:
        """When the reminder is due, from the *actual* send time (ms), out of quiet hours; None: no reminder."""
        found = self.found(inv["org"], inv["program"])
        if found is None or promoter.is_action(inv.get("kind")):  # promoter messages have no reminder
            return None
        due = rules.reminder_due(sent_at, self.rule_config(*found), inv["channel"], inv.get("timezone"))
        return None if due is None else to_ms(due)

    def fallback(self, inv: Mapping[str, Any]) -> str | None:
        """The next channel of the program after the one that failed permanently, that can reach the contact."""
        found = self.found(inv["org"], inv["program"])
        if found is None:
            return None
        actions = found[1].promoter_actions if promoter.is_action(inv.get("kind")) else None
        if promoter.is_action(inv.get("kind")) and actions is None:
            return None
        channels = list(actions.channels if actions is not None else found[1].channels)
        to = inv.get("to") or {}
        later = channels[channels.index(inv["channel"]) + 1:] if inv["channel"] in channels else []
        return next((c for c in later if rules.CHANNEL_ADDRESS.get(c) is None or to.get(rules.CHANNEL_ADDRESS[c])),
                    None)

    def locale(self, org, program, requested: str | None) -> str:
        """``resolve_locale(org, requested, program)``, once per (org, program, requested locale) — again only when
        the programs name other org or program objects (see ``wording``)."""
        key = (org.id, program.id, requested)
        cached = self._locales.get(key)
        if cached is None or cached[0] is not org or cached[1] is not program:
            from npsflow.programs import resolve_locale

            if len(self._locales) >= 4096:  # requested locales come from the triggers: keep the memory bounded
                self._locales.clear()
            cached = self._locales[key] = (org, program, resolve_locale(org, requested, program))
        return cached[2]

    @staticmethod
    def record(trigger: Mapping[str, Any], dispatch_id: str, contact_key: str, *, status: str, reason: str | None,
               decided_at: datetime, channel: str | None = None, survey_id: str | None = None,
               locale: str | None = None) -> dict:
        return {
            "dispatch_id": dispatch_id, "invitation_id": None, "event_id": trigger["event_id"],
            "org_id": trigger["org_id"], "survey_id": survey_id, "contact_key": contact_key, "channel": channel,
            "status": status, "reason": reason, "scheduled_for": None, "decided_at": decided_at, "cost": None,
            "currency": None, "locale": locale, "segment": dict(trigger.get("segment") or {}),
            "kind": INVITATION, "attempts": None, "provider_id": None,
        }

    def cap_record(self, invite: Mapping[str, Any], reason: str = rules.CAP, status: str = rules.SUPPRESSED) -> dict:
        """The record of an invite the cap stage refused (decided when stage 1 did): ``suppressed``/``cap``, or a
        reward without a code (``reward_pool_exhausted``, ``failed``/``reward_pool_changed``)."""
        return {
            "dispatch_id": invite["inv"], "invitation_id": None, "event_id": invite["event_id"],
            "org_id": invite["org"], "survey_id": invite["survey_id"], "contact_key": invite["contact_key"],
            "channel": invite["channel"], "status": status, "reason": reason, "scheduled_for": None,
            "decided_at": from_ms(invite["decided_at"]), "cost": None, "currency": None, "locale": invite["locale"],
            "segment": dict(invite.get("segment") or {}), "kind": invite.get("kind") or INVITATION,
            "attempts": None, "provider_id": None,
        }

    # ------------------------------------------------------------------------------------------- promoter actions
    def promoter_actions(self, org_id: str, program_id: str):
        """The program's ``PromoterActions`` (None: none configured, or the program is gone)."""
        found = self.found(org_id, program_id)
        return getattr(found[1], "promoter_actions", None) if found else None

    def pool(self, org_id: str, program_id: str) -> promoter.Pool | None:
        """The program's reward codes (one ``Pool`` per configuration object: prefix hashes computed once)."""
        actions = self.promoter_actions(org_id, program_id)
        if actions is None or not actions.reward_codes:
            return None
        cached = self._pools.get((org_id, program_id))
        if cached is None or cached[0] is not actions:
            cached = self._pools[(org_id, program_id)] = (actions, promoter.Pool(actions.reward_codes, self.secret))
        return cached[1]

    def reward_code(self, inv: Mapping[str, Any]) -> str | None:
        """The code claimed for a reward message (by its index, checked against its fingerprint), or None."""
        pool = self.pool(inv["org"], inv["program"])
        if pool is None or inv.get("code") is None:
            return None
        return pool.code(int(inv["code"]), str(inv.get("codefp")))

    def action_id(self, org_id: str, invitation: str, kind: str) -> str:
        """The message id of one action of an answered invitation (deterministic: replays repeat it)."""
        return invitation_id(org_id, f"{promoter.event_id(invitation)}:{kind}", self.secret)

    def promoter_invite(self, note: Mapping[str, Any], d: promoter.ActionDecision, now: datetime) -> dict:
        """The deliver stage's command of one action that goes out (a reward: after the cap stage's claim)."""
        return {
            "op": "invite", "inv": self.action_id(note["org"], note["inv"], d.kind), "kind": d.kind,
            "org": note["org"], "program": note["program"], "survey_id": note.get("survey_id"),
            "event_id": promoter.event_id(note["inv"]), "contact_key": note["contact_key"], "channel": d.channel,
            "locale": note.get("locale") or "en", "to": dict(note.get("to") or {}), "timezone": note.get("timezone"),
            "segment": dict(note.get("segment") or {}), "send_at": to_ms(d.send_at), "reminder_at": None,
            "expires_at": to_ms(d.send_at + self.link_ttl), "decided_at": to_ms(now),
            "why": QUIET_HOURS if d.quiet else DELAY, "score": note.get("score"),
        }

    def promoter_record(self, note: Mapping[str, Any], d: promoter.ActionDecision, now: datetime) -> dict:
        """The record of an action stage 1 suppressed."""
        return {
            "dispatch_id": self.action_id(note["org"], note["inv"], d.kind), "invitation_id": None,
            "event_id": promoter.event_id(note["inv"]), "org_id": note["org"], "survey_id": note.get("survey_id"),
            "contact_key": note["contact_key"], "channel": d.channel, "status": d.status, "reason": d.reason,
            "scheduled_for": None, "decided_at": now, "cost": None, "currency": None, "locale": note.get("locale"),
            "segment": dict(note.get("segment") or {}), "kind": d.kind, "attempts": None, "provider_id": None,
        }

    # ------------------------------------------------------------------------------------------- stage 2
    def invitation_record(self, inv: Mapping[str, Any], *, kind: str = INVITATION) -> dict:
        """The dispatch record of an invitation (or of its reminder) in its current state."""
        reminder = kind == REMINDER
        status = inv["rst"] if reminder else inv["st"]
        out = inv.get("rout" if reminder else "out") or {}
        scheduled = status == rules.SCHEDULED
        return {
            "dispatch_id": f"{inv['inv']}:reminder" if reminder else inv["inv"],
            "invitation_id": inv["inv"], "event_id": inv["event_id"], "org_id": inv["org"],
            "survey_id": inv["survey_id"], "contact_key": inv["contact_key"], "channel": inv["channel"],
            "status": status, "reason": out.get("reason") or (inv.get("why") if scheduled else None),
            "scheduled_for": from_ms(inv["send_at"]) if scheduled else None,
            "decided_at": from_ms(out.get("at") or inv["decided_at"]),
            "cost": out.get("cost"), "currency": out.get("currency"), "locale": inv["locale"],
            "segment": dict(inv.get("segment") or {}), "kind": kind if reminder else inv.get("kind") or kind,
            "attempts": out.get("attempts"),
            "provider_id": out.get("provider_id"),
        }

    def channel_invitation(self, inv: Mapping[str, Any], *, reminder: bool = False):
        """What the channel needs to deliver this invitation (or its reminder): addresses, texts, links."""
        from sinks.channels.base import Invitation

        found = self.found(inv["org"], inv["program"])
        if found is None:
            raise LookupError(f"organization {inv['org']!r} / program {inv['program']!r} is no longer configured")
        org, program = found
        if promoter.is_action(inv.get("kind")):
            return self.promoter_message(org, inv)
        expires = from_ms(inv["expires_at"])
        if inv["channel"] == "sms":
            url = links.short_survey_url(self.survey_url, inv["inv"], expires, link_key(self.secret), LINK_KEY_ID)
        else:
            url = links.survey_url(self.survey_url, self.signer.sign(inv["inv"], expires))
        words, brand = self.wording(org, program, inv["locale"])
        to = inv.get("to") or {}
        return Invitation(
            invitation_id=inv["inv"], org_id=org.id, org_name=brand["name"], locale=inv["locale"],
            to_email=to.get("email"), to_phone=to.get("phone"), survey_url=url,
            score_urls=self.signer.one_click_urls(self.survey_url, inv["inv"], expires),
            texts=dict(words), branding={**brand, "colors": dict(brand["colors"])},  # copies: the cache's stay
            reminder=reminder, contact_ref=to.get("contact_id"), campaign=(inv.get("segment") or {}).get("campaign"))

    def promoter_message(self, org, inv: Mapping[str, Any]):
        """The channel message of a promoter action: its texts with the review link, and the reward code filled
        in here, at send time (the code exists nowhere else but in the message)."""
        from npsflow.promoter_texts import promoter_texts
        from sinks.channels.base import Invitation

        brand = self.wording_brand(org, inv["locale"])
        words = promoter_texts(inv["locale"], inv["kind"], brand["name"], org.review_url)
        if inv["kind"] == promoter.REWARD:
            code = self.reward_code(inv)
            if code is None:
                raise LookupError("the reward code claimed for this message is no longer in the pool")
            words = {k: v.replace("{code}", code) for k, v in words.items()}
        to = inv.get("to") or {}
        return Invitation(
            invitation_id=inv["inv"], org_id=org.id, org_name=brand["name"], locale=inv["locale"],
            to_email=to.get("email"), to_phone=to.get("phone"), survey_url=org.review_url or "", score_urls=[],
            texts=words, branding={**brand, "colors": dict(brand["colors"])}, contact_ref=to.get("contact_id"),
            kind=inv["kind"])

    def wording_brand(self, org, locale: str) -> dict:
        """The channel branding of (org, locale), as ``wording`` has it (any program of the org: branding is
        the organization's)."""
        return self.wording(org, org.programs[0], locale)[1]

    @cached_property
    def signer(self) -> links.TokenSigner:
        """The survey-link signer (``link_key``): its key prepared once, not per token."""
        return links.TokenSigner(link_key(self.secret), LINK_KEY_ID)

    def wording(self, org, program, locale: str) -> tuple[dict, dict]:
        """The texts and the channel branding of (org, program, locale), computed once per worker — again only
        when the programs object names other org or program objects (the programs never change while a
        worker runs; tests may swap them)."""
        key = (org.id, program.id, locale)
        cached = self._wording.get(key)
        if cached is None or cached[0] is not org or cached[1] is not program:
            from npsflow.programs import branding, texts

            brand = branding(org, locale)
            cached = self._wording[key] = (org, program, texts(org, locale, program), {
                "name": brand["name"], "logo_url": brand.get("logo_url"), "colors": brand.get("colors") or {},
                "sender_name": brand.get("sender_name"), "sender_email": brand.get("sender_email"),
                "sms_sender": brand.get("sms_sender_id")})
        return cached[2], cached[3]

    def cost(self, inv: Mapping[str, Any], result) -> tuple[float | None, str | None]:
        """The program's price for the channel when it names one (per message), else the channel's own."""
        found = self.found(inv["org"], inv["program"])
        program = found[1] if found else None
        price = getattr(program.cost, inv["channel"], None) if program else None
        if price is not None and result.ok:
            return float(price), program.cost.currency
        return result.cost, result.currency
