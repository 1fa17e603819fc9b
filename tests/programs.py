"""Programs configurations for the tests, built as plain dicts and written as the YAML npsflow reads
(``npsflow.programs.parse_programs``): one organization or program a call, the settings a test cares about as
arguments, the rest the same in every test.

    programs_yaml(acme(service(daily_cap=4)), bolt(shop(quiet_hours=DEFAULT)))
"""

from __future__ import annotations

from typing import Any, Iterable

import yaml


class _Default:
    """A setting given as ``DEFAULT`` is left out of the YAML: npsflow's own default applies (e.g. the default
    quiet hours, where ``quiet_hours=None`` means none)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


def _given(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if v is not DEFAULT}


def program(id: str, survey_id: str, event_types: Iterable[str], *, delay: str = "0m",
            channels: Iterable[str] = ("email",), quiet_hours: Any = None, **extras: Any) -> dict:
    """One program; ``extras``: any other program setting (daily_cap, reminder_after, cost, promoter_actions …)."""
    return _given({"id": id, "survey_id": survey_id, "event_types": list(event_types), "delay": delay,
                   "channels": list(channels), "quiet_hours": quiet_hours, **extras})


def service(**settings: Any) -> dict:
    """Acme's survey after a completed job."""
    return program("service", "nps-service", ["job.completed"], **settings)


def shop(**settings: Any) -> dict:
    """Bolt's survey after a delivered order."""
    return program("shop", "nps-shop", ["order.delivered"], **settings)


def organization(id: str, name: str, timezone: str, locale: str, brand: dict, programs: Iterable[dict],
                 **extras: Any) -> dict:
    """One organization, branded in its default ``locale`` only; ``extras``: any other organization setting
    (api_keys, review_url, opt_out …)."""
    doc = {"id": id, "name": name, "timezone": timezone, "default_locale": locale, "branding": {locale: brand},
           "programs": list(programs)}
    doc.update(extras)
    return _given(doc)


def acme(*programs: dict, name: str = "Acme Oy", locale: str = "fi", brand: dict | None = None,
         **extras: Any) -> dict:
    """The Finnish organization Acme Oy; ``brand``: more of its branding (sms_sender_id, colors …)."""
    return organization("acme", name, "Europe/Helsinki", locale,
                        {"name": "Acme", "sender_email": "nps@acme.fi", **(brand or {})}, programs, **extras)


def bolt(*programs: dict, brand: dict | None = None, **extras: Any) -> dict:
    """The Swedish organization Bolt AB; ``brand``: more of its branding."""
    return organization("bolt", "Bolt AB", "Europe/Stockholm", "sv",
                        {"name": "Bolt", "sender_email": "nps@bolt.se", **(brand or {})}, programs, **extras)


def programs_yaml(*organizations: dict) -> str:
    """The programs file of these organizations."""
    return yaml.safe_dump({"version": 1, "organizations": list(organizations)}, sort_keys=False,
                          allow_unicode=True)
