"""The follow-up configuration (NPSFLOW_CASES): who follows up detractor cases, when alerts fire, who is told.

One YAML file, every section optional (an absent file: cases for detractors owned by ``unassigned`` with a 48 h
SLA, drop alerts with the issue's defaults, no notifications)::

    version: 1
    organizations:            # streams.cases.CasesConfig: open_on, owners, fallback/escalation owner, sla,
      - id: nordvik-ror       # business_hours, timezone (default: the organization's in NPSFLOW_PROGRAMS, else UTC)
        ...
    alerts:                   # streams.alerting.AlertRules.from_config: current, baseline, min_responses,
      confidence: 0.99        # confidence, kinds [drop, rise, shift], recover_z, shift_points, cusum_h
    notify:
      webhook:                # signed POSTs (sinks.channels.webhook) of every notification
        url: https://hooks.example.com/npsflow
        secret_env: NPSFLOW_WEBHOOK_SECRET      # or secret_file: /run/secrets/npsflow-webhook (never inline)
        events: [case.opened, case.escalated, alert.opened]   # default: every event
      email:                  # through NPSFLOW_CHANNELS' e-mail transport (SMTP or the outbox)
        owners: {stockholm-manager: anna@nordvikror.se}      # only these addresses are ever mailed
        alerts: [ops@nordvikror.se]
        sender: npsflow@nordvikror.se

``load_follow_up`` validates everything at worker start and raises ``FollowUpError`` with one line per mistake.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from streams.alerting import AlertRules
from streams.cases import CasesConfig, CasesConfigError

EVENTS = ("case.opened", "case.answer_added", "case.assigned", "case.resolved_by_edit", "case.escalated",
          "alert.opened", "alert.closed")
ADDRESS = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[^@\s]{2,63}$")
MIN_SECRET_BYTES = 16


class FollowUpError(ValueError):
    """An invalid NPSFLOW_CASES file: ``errors`` holds one line per mistake."""

    def __init__(self, errors: list[str]):
        self.errors = list(dict.fromkeys(errors))
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: bytes = field(repr=False)
    events: frozenset[str] = frozenset(EVENTS)


@dataclass(frozen=True)
class EmailTargets:
    owners: Mapping[str, str] = field(default_factory=dict)
    alerts: tuple[str, ...] = ()
    sender: str | None = None

    def address_of(self, owner: str | None) -> str | None:
        """The owner's configured address. Only configured addresses are mailed: an owner named by an address
        (``assign`` takes any name) gets nothing, so nobody can send a case's details to an address of their
        choosing — the respondent's own included."""
        return self.owners.get(owner) if owner else None


@dataclass(frozen=True)
class Notify:
    webhook: WebhookTarget | None = None
    email: EmailTargets | None = None

    @property
    def any(self) -> bool:
        return self.webhook is not None or self.email is not None


@dataclass(frozen=True)
class FollowUp:
    cases: CasesConfig = field(default_factory=CasesConfig)
    alerts: AlertRules = field(default_factory=AlertRules)
    notify: Notify = field(default_factory=Notify)


def load_follow_up(path: Path | None, programs: Any = None, env: Mapping[str, str] | None = None) -> FollowUp:
    """The follow-up configuration of ``path`` (None: the defaults); organizations without a timezone get the
    one NPSFLOW_PROGRAMS gives them. ``env``: where ``secret_env`` is looked up (default os.environ)."""
    doc: Any = {}
    if path is not None:
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise FollowUpError([f"{path}: cannot read: {str(exc).splitlines()[0]}"]) from None
        if not isinstance(doc, dict):
            raise FollowUpError([f"{path}: must be a mapping with organizations, alerts, notify"])
    return parse_follow_up(dict(doc), programs, os.environ if env is None else env)


def parse_follow_up(doc: dict, programs: Any, env: Mapping[str, str]) -> FollowUp:
    errors: list[str] = []
    unknown = sorted(set(doc) - {"version", "organizations", "alerts", "notify"})
    if unknown:
        errors.append(f"unknown key(s) {', '.join(unknown)} (allowed: version, organizations, alerts, notify)")
    if doc.get("version", 1) != 1:
        errors.append(f"version: must be 1, got {doc.get('version')!r}")
    cases = _cases(doc.get("organizations") or [], programs, errors)
    alerts = _alerts(doc.get("alerts"), errors)
    notify = _notify(doc.get("notify"), env, errors)
    if errors:
        raise FollowUpError(errors)
    return FollowUp(cases, alerts, notify)


def _cases(orgs: Any, programs: Any, errors: list[str]) -> CasesConfig:
    if not isinstance(orgs, list):
        errors.append("organizations: must be a list of organizations")
        return CasesConfig()
    zones = {org.id: org.timezone for org in getattr(programs, "organizations", ())}
    given = {o.get("id") for o in orgs if isinstance(o, dict)}
    orgs = [{**o, "timezone": zones[o.get("id")]} if isinstance(o, dict) and "timezone" not in o
            and o.get("id") in zones else o for o in orgs]
    orgs += [{"id": org_id, "timezone": zone} for org_id, zone in zones.items() if org_id not in given]
    try:
        return CasesConfig.from_yaml_dict({"organizations": orgs})
    except CasesConfigError as exc:
        errors.extend(exc.errors)
        return CasesConfig()


def _alerts(section: Any, errors: list[str]) -> AlertRules:
    try:
        if section is not None and not isinstance(section, dict):
            raise ValueError("must be a mapping")
        return AlertRules.from_config(section)
    except (TypeError, ValueError) as exc:
        errors.append(f"alerts: {exc}")
        return AlertRules()


def _notify(section: Any, env: Mapping[str, str], errors: list[str]) -> Notify:
    if section is None:
        return Notify()
    if not isinstance(section, dict) or set(section) - {"webhook", "email"}:
        errors.append("notify: must be a mapping with webhook and/or email")
        return Notify()
    return Notify(_webhook(section.get("webhook"), env, errors), _email(section.get("email"), errors))


def _webhook(section: Any, env: Mapping[str, str], errors: list[str]) -> WebhookTarget | None:
    if section is None:
        return None
    where = "notify.webhook"
    if not isinstance(section, dict) or set(section) - {"url", "secret_env", "secret_file", "events"}:
        errors.append(f"{where}: must be a mapping of url, secret_env or secret_file, events")
        return None
    if "secret" in section:
        errors.append(f"{where}: no inline secret: use secret_env or secret_file")
    url = section.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        errors.append(f"{where}.url: must be an http(s):// URL")
    secret = _secret(section, env, where, errors)
    events = section.get("events", list(EVENTS))
    if not isinstance(events, list) or not set(events) <= set(EVENTS) or not events:
        errors.append(f"{where}.events: must be a non-empty list of {', '.join(EVENTS)}")
        events = list(EVENTS)
    if secret is None or not isinstance(url, str):
        return None
    return WebhookTarget(url, secret, frozenset(events))


def _secret(section: dict, env: Mapping[str, str], where: str, errors: list[str]) -> bytes | None:
    """The shared secret from an environment variable or a file (never from the YAML itself)."""
    if ("secret_env" in section) == ("secret_file" in section):
        errors.append(f"{where}: give exactly one of secret_env and secret_file")
        return None
    if "secret_env" in section:
        value = env.get(str(section["secret_env"]))
        if not value:
            errors.append(f"{where}.secret_env: the environment variable {section['secret_env']} is not set")
            return None
        secret = value.encode()
    else:
        try:
            secret = Path(str(section["secret_file"])).read_bytes().strip()
        except OSError as exc:
            errors.append(f"{where}.secret_file: cannot read: {exc.strerror or exc}")
            return None
    if len(secret) < MIN_SECRET_BYTES:
        errors.append(f"{where}: the secret must be at least {MIN_SECRET_BYTES} bytes")
        return None
    return secret


def _email(section: Any, errors: list[str]) -> EmailTargets | None:
    if section is None:
        return None
    where = "notify.email"
    if not isinstance(section, dict) or set(section) - {"owners", "alerts", "sender"}:
        errors.append(f"{where}: must be a mapping of owners, alerts, sender")
        return None
    owners = section.get("owners") or {}
    alerts = section.get("alerts") or []
    sender = section.get("sender")
    if not isinstance(owners, dict) or not all(isinstance(a, str) and ADDRESS.match(a) for a in owners.values()):
        errors.append(f"{where}.owners: must map owner names to e-mail addresses")
        owners = {}
    if not isinstance(alerts, list) or not all(isinstance(a, str) and ADDRESS.match(a) for a in alerts):
        errors.append(f"{where}.alerts: must be a list of e-mail addresses")
        alerts = []
    if sender is not None and not (isinstance(sender, str) and ADDRESS.match(sender)):
        errors.append(f"{where}.sender: must be an e-mail address")
        sender = None
    return EmailTargets({str(k): v for k, v in owners.items()}, tuple(alerts), sender)
