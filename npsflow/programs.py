"""Survey programs per organization: a versioned YAML file, validated with pydantic v2.

A program says which trigger events (``job.completed`` …) lead to which survey, when (delay, quiet hours,
reminders), how often (sampling, quarantine, daily cap) and through which channels (a fallback order); an
organization carries its timezone, branding and texts per locale, its review page and its opt-out list.
``deploy/programs.example.yaml`` shows every setting.

    programs = load_programs("programs.yaml")          # ProgramsError: one line per mistake, all of them
    found = programs.program_for("nordvik", "job.completed")
    if found:
        org, program = found
        strings = texts(org, "sv-SE", program)           # every text key, {org} filled in, {link} left for SMS
        brand = branding(org, "sv")

Decisions worth knowing:

* **Every mistake, one line each**, as ``<YAML path>: <message>``, e.g.
  ``organizations[0].programs[1].sampling_rate: must be between 0 and 1, got 1.5``. Field errors come from
  pydantic (unknown keys are refused, with a "did you mean"); cross-field rules (unique ids and event types,
  default-locale branding, complete texts for extra locales, SMS length) are checked on the raw document, so
  they are reported together with the field errors instead of only after those are fixed.
* **YAML is read with YAML 1.2 scalars**: ``no``/``yes``/``on``/``off`` stay strings (Norwegian is not
  false), ``21:00`` stays a string (not the base-60 integer 1260), dates stay strings; a duplicated key is an
  error (PyYAML would keep the last one silently).
* **Version**: the document must start with ``version: 1``; any other version is refused before anything
  else is looked at (its fields may mean something else).
* **Texts**: sv, da, fi, nb and en ship with npsflow (``DEFAULT_TEXTS``). ``texts`` of an organization
  override single keys for all its programs, ``texts`` of a program override them for that program. A locale
  that is not shipped must be complete (organization level on its own; program level together with the
  organization's). Placeholders: ``{org}`` anywhere, ``{link}`` only (and necessarily) in ``sms_text``;
  ``subject`` and ``question`` must name ``{org}``; anything else in braces is refused.
* **SMS length**: the SMS text, with ``{org}`` filled in and a 60-character link, must fit one segment
  (160 GSM-7 septets, extension characters counting two, or 70 UCS-2 code units).
* **Locale resolution** (texts and branding): the exact locale, then its language (``sv-FI`` → ``sv``;
  ``no`` → ``nb``), then the organization's ``default_locale``, then English (texts) — branding falls back to
  the default locale's entry, field by field, and its name to the organization's name.
* **Branding** of the default locale must exist; ``sender_email`` (and a sender name) is required there when
  a program uses e-mail or the newsletter, ``sms_sender_id`` when one uses SMS. Logo and review URLs must
  be https; colors are ``#RRGGBB``.
* **Opt-out**: an inline list of contact ids and/or ``file:`` (one id per line, ``#`` comments; relative to
  the YAML file), read once when the file is loaded.
* **Costs** per channel are optional: a price named here is per message (an SMS of two segments costs it
  once) and wins; without one, the channel configuration's price applies (NPSFLOW_CHANNELS ``costs``, SMS
  per segment). Only messages actually sent cost anything.
* **Daily cap** is per program (its own invitations per day of the org's calendar).
* **Promoter actions** (``promoter_actions``, per program, streams.promoter): what a 9 or a 10 sets off —
  ``thank_you``, ``review_request`` (needs the org's ``review_url``), ``reward`` (a code of the program's pool,
  each issued once; a code may be in one pool only); channels e-mail/SMS, a quarantine per action kind. Their
  texts are ``npsflow.promoter_texts`` (shipped locales; others get English; not overridable yet).
"""

from __future__ import annotations

import difflib
import re
import types
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Iterable, Mapping, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from streams.triggers import EMAIL, EVENT_TYPE
from sinks.channels.sms import GSM7_BASIC, GSM7_EXTENDED, GSM7_SINGLE, UCS2_SINGLE, _units, sms_encoding
from sinks.channels.sms import sms_segments as _channel_segments

__all__ = [
    "CHANNELS", "DEFAULT_TEXTS", "SHIPPED_LOCALES", "TEXT_KEYS", "TYPICAL_LINK_LENGTH", "SUPPORTED_VERSION",
    "Branding", "Colors", "Cost", "LocaleTexts", "OptOut", "Organization", "Program", "Programs",
    "ProgramsError", "QuietHours", "branding", "load_programs", "parse_programs", "render_text",
    "resolve_locale", "sms_encoding", "sms_length", "sms_segments", "texts",
]

SUPPORTED_VERSION = 1
CHANNELS = ("sms", "email", "newsletter")
SHIPPED_LOCALES = ("sv", "da", "fi", "nb", "en")
LOCALE_ALIASES = {"no": "nb"}  # Norwegian without a written standard: bokmål
TYPICAL_LINK_LENGTH = 60

# ---------------------------------------------------------------------------------------------------------
# Texts

TEXT_KEYS = (
    "subject",              # invitation e-mail subject
    "intro",                # invitation e-mail intro paragraph
    "sms_text",             # the whole SMS, with {link}
    "question",             # the NPS question, with {org}
    "low_label",            # scale end label at 0
    "high_label",           # scale end label at 10
    "comment_prompt",       # free-text question after the score
    "thank_you",            # shown after answering
    "detractor_follow_up",  # follow-up question for scores 0–6
    "promoter_follow_up",   # follow-up question for scores 9–10
    "review_invitation",    # promoters: invitation to leave a public review (org review_url)
    "reminder_prefix",      # put before the subject of a reminder
)
REQUIRED_PLACEHOLDERS: dict[str, tuple[str, ...]] = {"subject": ("org",), "question": ("org",), "sms_text": ("link",)}
ALLOWED_PLACEHOLDERS: dict[str, frozenset[str]] = {
    key: frozenset({"org", "link"}) if key == "sms_text" else frozenset({"org"}) for key in TEXT_KEYS
}

DEFAULT_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "subject": "A quick question from {org}",
        "intro": "Thank you for choosing {org}. We would love to hear how it went – it only takes a few seconds.",
        "sms_text": "Hi! How likely is it that you would recommend us to a friend or colleague? Reply here: {link}",
        "question": "How likely is it that you would recommend {org} to a friend or colleague?",
        "low_label": "Not at all likely",
        "high_label": "Extremely likely",
        "comment_prompt": "What is the main reason for your score?",
        "thank_you": "Thank you for your feedback!",
        "detractor_follow_up": "What should we improve?",
        "promoter_follow_up": "What did you like most?",
        "review_invitation": "Glad to hear it! Would you like to share your experience with {org} in a public review?",
        "reminder_prefix": "Reminder:",
    },
    "sv": {
        "subject": "En snabb fråga från {org}",
        "intro": "Tack för att du valde {org}. Vi vill gärna höra hur det gick – det tar bara några sekunder.",
        "sms_text": "Hej! Hur troligt är det att du skulle rekommendera oss till en vän eller kollega? Svara här: {link}",
        "question": "Hur troligt är det att du skulle rekommendera {org} till en vän eller kollega?",
        "low_label": "Inte alls troligt",
        "high_label": "Extremt troligt",
        "comment_prompt": "Vad är den främsta anledningen till ditt betyg?",
        "thank_you": "Tack för din återkoppling!",
        "detractor_follow_up": "Vad borde vi förbättra?",
        "promoter_follow_up": "Vad uppskattade du mest?",
        "review_invitation": "Vad roligt att höra! Vill du dela med dig av din upplevelse av {org} i ett omdöme?",
        "reminder_prefix": "Påminnelse:",
    },
    "da": {
        "subject": "Et hurtigt spørgsmål fra {org}",
        "intro": "Tak, fordi du valgte {org}. Vi vil meget gerne høre om din oplevelse – det tager kun et par sekunder.",
        "sms_text": "Hej! Hvor sandsynligt er det, at du vil anbefale os til en ven eller kollega? Svar her: {link}",
        "question": "Hvor sandsynligt er det, at du vil anbefale {org} til en ven eller kollega?",
        "low_label": "Slet ikke sandsynligt",
        "high_label": "Yderst sandsynligt",
        "comment_prompt": "Hvad er den vigtigste grund til din vurdering?",
        "thank_you": "Tak for din feedback!",
        "detractor_follow_up": "Hvad bør vi forbedre?",
        "promoter_follow_up": "Hvad var du mest glad for?",
        "review_invitation": "Hvor dejligt! Vil du dele din oplevelse med {org} i en offentlig anmeldelse?",
        "reminder_prefix": "Påmindelse:",
    },
    "nb": {
        "subject": "Et raskt spørsmål fra {org}",
        "intro": "Takk for at du valgte {org}. Vi vil gjerne høre om opplevelsen din – det tar bare noen sekunder.",
        "sms_text": "Hei! Hvor sannsynlig er det at du vil anbefale oss til en venn eller kollega? Svar her: {link}",
        "question": "Hvor sannsynlig er det at du vil anbefale {org} til en venn eller kollega?",
        "low_label": "Svært lite sannsynlig",
        "high_label": "Svært sannsynlig",
        "comment_prompt": "Hva er hovedgrunnen til vurderingen din?",
        "thank_you": "Takk for tilbakemeldingen!",
        "detractor_follow_up": "Hva bør vi forbedre?",
        "promoter_follow_up": "Hva likte du best?",
        "review_invitation": "Så hyggelig! Vil du dele opplevelsen din med {org} i en offentlig anmeldelse?",
        "reminder_prefix": "Påminnelse:",
    },
    # Finnish inflects names ("{org}n", "{org}lta" …), which a placeholder cannot do: the texts either avoid
    # the name or use it in the base form after a noun ("yritystä {org}") or before a colon.
    "fi": {
        "subject": "{org}: lyhyt kysymys sinulle",
        "intro": "Kiitos, että valitsit meidät. Haluaisimme kuulla kokemuksestasi – vastaaminen vie vain muutaman sekunnin.",
        "sms_text": "Hei! Kuinka todennäköisesti suosittelisit meitä ystävälle tai kollegalle? Vastaa tästä: {link}",
        "question": "Kuinka todennäköisesti suosittelisit yritystä {org} ystävälle tai kollegalle?",
        "low_label": "Erittäin epätodennäköisesti",
        "high_label": "Erittäin todennäköisesti",
        "comment_prompt": "Mikä on tärkein syy antamaasi arvosanaan?",
        "thank_you": "Kiitos palautteestasi!",
        "detractor_follow_up": "Mitä meidän pitäisi parantaa?",
        "promoter_follow_up": "Mistä pidit eniten?",
        "review_invitation": "Hienoa kuulla! Haluaisitko kertoa kokemuksestasi myös julkisessa arvostelussa?",
        "reminder_prefix": "Muistutus:",
    },
}

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def render_text(template: str, org: str | None = None, link: str | None = None) -> str:
    """Fill ``{org}`` / ``{link}`` (those given; other braces are left alone, no str.format surprises)."""
    if org is not None:
        template = template.replace("{org}", org)
    if link is not None:
        template = template.replace("{link}", link)
    return template


# ---------------------------------------------------------------------------------------------------------
# SMS segments

# One implementation of the GSM-7 / UCS-2 rules (sinks.channels.sms), shared with the channel that sends.


def sms_length(text: str) -> tuple[str, int]:
    """(encoding, length in septets for GSM-7 / UTF-16 code units for UCS-2)."""
    encoding = sms_encoding(text)
    return encoding, sum(_units(text, encoding))


def sms_segments(text: str) -> int:
    """Number of SMS segments ``text`` takes (0 for an empty text); see sinks.channels.sms.sms_segments."""
    return _channel_segments(text) if text else 0


# ---------------------------------------------------------------------------------------------------------
# Field checks (messages are the second half of an error line)


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("npsflow", "{message}", {"message": message})


def iana_timezone(value: Any, example: str = "Europe/Stockholm") -> str:
    """``value`` if it names an IANA timezone (not "localtime", no stray spaces), else a validation error."""
    try:
        if not isinstance(value, str) or not value or value != value.strip() or value.lower() == "localtime":
            raise ValueError
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise _fail(f"must be an IANA timezone like {example}, got {_show(value)}") from None
    return value


def _distinct_choices(value: Any, known: tuple[str, ...], what: str, *, empty_ok: bool, unknown_hint: str = "",
                      known_hint: str = "") -> list:
    """A text or a list of texts from ``known``, each once (``empty_ok``: the list may be empty)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not (value or empty_ok):
        size = "" if empty_ok else "non-empty "
        raise _fail(f"must be a {size}list of {what}s ({', '.join(known)}), got {_show(value)}")
    for v in value:
        if v not in known:
            raise _fail(f"unknown {what} {_show(v)}{unknown_hint} (known: {', '.join(known)}{known_hint})")
    if len(set(value)) != len(value):
        raise _fail(f"lists a{'n' if what[0] in 'aeiou' else ''} {what} twice: {', '.join(value)}")
    return list(value)


def _show(value: Any) -> str:
    """A value as the YAML author wrote it (roughly): 1.5, 'abc', null, true, a list, a mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else repr(value[:77] + "...")
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


_DURATION = re.compile(r"^(\d{1,6})(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_HEX_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", re.ASCII)
_LOCALE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$", re.ASCII)
_SENDER_ID = re.compile(r"^[A-Za-z0-9]{1,11}$", re.ASCII)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def parse_duration(value: Any, *, positive: bool = False) -> timedelta:
    if isinstance(value, timedelta):
        result = value
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if not match:
            raise _fail(f"must be a duration like 30m, 2h or 1d, got {_show(value)}")
        result = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if positive and result <= timedelta(0):
        raise _fail(f"must be longer than 0, got {_show(value)}")
    return result


def parse_clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    match = _TIME.match(value) if isinstance(value, str) else None
    if not match:
        raise _fail(f"must be a time of day HH:MM (00:00–23:59, in quotes), got {_show(value)}")
    return time(int(match.group(1)), int(match.group(2)))


def _number(value: Any, low: float | None = None, high: float | None = None, what: str = "a number") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _fail(f"must be {what}, got {_show(value)}")
    if low is not None and high is not None and not low <= value <= high:
        raise _fail(f"must be between {low:g} and {high:g}, got {_show(value)}")
    if low is not None and value < low:
        raise _fail(f"must be at least {low:g}, got {_show(value)}")
    return float(value)


def _check_id(value: Any, what: str = "an id") -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise _fail(f"must be {what} of 1–64 letters, digits or _ . : - (starting with a letter or digit), "
                    f"got {_show(value)}")
    return value


def _check_text(value: Any, what: str = "a non-empty text") -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"must be {what}, got {_show(value)}")
    return value


def _check_https(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^https://[^\s/?#]+\.[^\s/?#]+(?:[/?#]\S*)?$", value):
        if isinstance(value, str) and value.lower().startswith("http://"):
            raise _fail(f"must be an https:// URL (plain http is refused), got {_show(value)}")
        raise _fail(f"must be an https:// URL, got {_show(value)}")
    return value


def _check_locale(value: Any) -> str:
    if not isinstance(value, str) or not _LOCALE.match(value):
        raise _fail(f"must be a locale code like sv, en or pt-BR, got {_show(value)}")
    return value


LocaleCode = Annotated[str, AfterValidator(_check_locale)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)


# ---------------------------------------------------------------------------------------------------------
# Models


class LocaleTexts(_Model):
    """Texts of one locale (every key optional here: shipped locales fill the gaps)."""

    subject: str | None = None
    intro: str | None = None
    sms_text: str | None = None
    question: str | None = None
    low_label: str | None = None
    high_label: str | None = None
    comment_prompt: str | None = None
    thank_you: str | None = None
    detractor_follow_up: str | None = None
    promoter_follow_up: str | None = None
    review_invitation: str | None = None
    reminder_prefix: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _text(cls, value: Any, info: ValidationInfo) -> str:
        key = info.field_name
        _check_text(value)
        used = _PLACEHOLDER.findall(value)
        allowed = ALLOWED_PLACEHOLDERS[key]
        for name in used:
            if name not in allowed:
                shown = ", ".join("{" + a + "}" for a in sorted(allowed))
                raise _fail(f"unknown placeholder {{{name}}} (allowed here: {shown})")
        for name in REQUIRED_PLACEHOLDERS.get(key, ()):
            if name not in used:
                raise _fail(f"must contain the placeholder {{{name}}}")
        return value

    def given(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


TextsByLocale = dict[LocaleCode, LocaleTexts]


class Colors(_Model):
    primary: str | None = None
    background: str | None = None
    text: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _hex(cls, value: Any) -> str:
        if not isinstance(value, str) or not _HEX_COLOR.match(value):
            raise _fail(f"must be a color #RRGGBB, got {_show(value)}")
        return value.upper()


DEFAULT_COLORS = {"primary": "#1A73E8", "background": "#FFFFFF", "text": "#222222"}


class Branding(_Model):
    """Branding of one locale; other locales fall back field by field to the default locale's."""

    name: str | None = None
    logo_url: str | None = None
    colors: Colors | None = None
    sender_name: str | None = None
    sender_email: str | None = None
    sms_sender_id: str | None = None

    @field_validator("name", "sender_name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        return _check_text(value, "a non-empty text").strip()

    @field_validator("logo_url", mode="before")
    @classmethod
    def _logo(cls, value: Any) -> str | None:
        return _check_https(value)

    @field_validator("sender_email", mode="before")
    @classmethod
    def _email(cls, value: Any) -> str:
        if not isinstance(value, str) or not EMAIL.match(value):
            raise _fail(f"must be an e-mail address, got {_show(value)}")
        return value

    @field_validator("sms_sender_id", mode="before")
    @classmethod
    def _sender_id(cls, value: Any) -> str:
        if not isinstance(value, str) or not _SENDER_ID.match(value):
            raise _fail(f"must be 1–11 letters or digits (an alphanumeric SMS sender id), got {_show(value)}")
        return value


class QuietHours(_Model):
    """Local wall-clock interval [start, end); start > end wraps midnight; start == end means none."""

    start: time
    end: time

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> time:
        return parse_clock(value)


DEFAULT_QUIET_HOURS = QuietHours(start=time(21, 0), end=time(8, 0))


class Cost(_Model):
    sms: float | None = None
    email: float | None = None
    newsletter: float | None = None
    currency: str = "EUR"

    @field_validator("sms", "email", "newsletter", mode="before")
    @classmethod
    def _price(cls, value: Any) -> float:
        return _number(value, 0, None, "a price (a number ≥ 0)")

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: Any) -> str:
        if not isinstance(value, str) or not _CURRENCY.match(value):
            raise _fail(f"must be an ISO 4217 currency code like EUR or SEK, got {_show(value)}")
        return value


class OptOut(_Model):
    """``opt_out: [c-1, c-2]`` or ``opt_out: {file: opt-out.txt, contacts: [...]}``."""

    contacts: tuple[str, ...] = ()
    file: str | None = None
    _ids: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="before")
    @classmethod
    def _inline(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return {"contacts": value}
        if not isinstance(value, Mapping):
            raise _fail(f"must be a list of contact ids or {{file: <path>, contacts: [...]}}, got {_show(value)}")
        return value

    @field_validator("contacts", mode="before")
    @classmethod
    def _contacts(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _fail(f"must be a list of contact ids, got {_show(value)}")
        return value

    @field_validator("file", mode="before")
    @classmethod
    def _file(cls, value: Any, info: ValidationInfo) -> str:
        _check_text(value, "a file path")
        base = Path((info.context or {}).get("base_dir") or ".")
        path = base / value
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(f"cannot read opt-out file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
        ids = [line.split("#", 1)[0].strip() for line in lines]
        (info.context or {}).setdefault("_opt_out_files", {})[value] = frozenset(i for i in ids if i)
        return value

    @model_validator(mode="after")
    def _collect(self, info: ValidationInfo) -> OptOut:
        from_file = ((info.context or {}).get("_opt_out_files") or {}).get(self.file, frozenset()) if self.file else frozenset()
        self._ids = frozenset(c.strip() for c in self.contacts if c.strip()) | from_file
        return self

    @property
    def ids(self) -> frozenset[str]:
        return self._ids


PROMOTER_KINDS = ("thank_you", "review_request", "reward")
PROMOTER_CHANNELS = ("email", "sms")
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", re.ASCII)


def _read_codes(value: Any, info: ValidationInfo) -> tuple[str, ...]:
    """``[C1, C2, …]`` or ``{file: codes.txt}`` (one code per line, ``#`` comments; relative to the YAML file)."""
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k != "file")
        if unknown or not isinstance(value.get("file"), str) or not value["file"].strip():
            raise _fail("must be a list of codes or {file: <path>} (one code per line)")
        path = Path((info.context or {}).get("base_dir") or ".") / value["file"]
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(f"cannot read reward code file {str(path)!r}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None
        value = [line.split("#", 1)[0].strip() for line in lines]
        value = [v for v in value if v]
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(f"must be a non-empty list of codes or {{file: <path>}}, got {_show(value)}")
    seen: dict[str, int] = {}
    for i, code in enumerate(value):  # never echo a code: they are vouchers
        if not isinstance(code, str) or not _CODE.match(code):
            raise _fail(f"code [{i}] must be 1–64 letters, digits or _ . : - (starting with a letter or digit)")
        if code in seen:
            raise _fail(f"code [{i}] is the same as code [{seen[code]}]: each code may be issued once")
        seen[code] = i
    return tuple(value)


class PromoterActions(_Model):
    """What a promoter's answer to one of the program's invitations sets off (streams.promoter).

    ``10: [review_request, reward]`` and ``9: [thank_you]`` (keys 9 and 10, or score_9/score_10), the channels
    in fallback order (e-mail, SMS: the program's quiet hours and costs apply), a quarantine per action kind
    and contact, and the program's pool of reward codes (an ordered list: append new codes at the end, never
    reorder or remove — a changed prefix stops the pool, see streams.promoter)."""

    score_10: tuple[str, ...] = ()
    score_9: tuple[str, ...] = ()
    channels: tuple[str, ...] = PROMOTER_CHANNELS
    quarantine: timedelta = timedelta(days=30)
    reward_codes: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _scores(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _fail(f"must be a mapping like {{10: [review_request, reward], 9: [thank_you]}}, got {_show(value)}")
        out = {}
        for key, item in value.items():
            # other scores are unknown keys (passives and detractors get no promoter actions)
            out[{9: "score_9", 10: "score_10", "9": "score_9", "10": "score_10"}.get(key, str(key))] = item
        return out

    @field_validator("score_10", "score_9", mode="before")
    @classmethod
    def _kinds(cls, value: Any) -> Any:
        return _distinct_choices(value, PROMOTER_KINDS, "action", empty_ok=True)

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> Any:
        return _distinct_choices(value, PROMOTER_CHANNELS, "channel", empty_ok=False,
                                 unknown_hint=" for promoter actions", known_hint="; they need the contact's address")

    @field_validator("quarantine", mode="before")
    @classmethod
    def _quarantine(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("reward_codes", mode="before")
    @classmethod
    def _codes(cls, value: Any, info: ValidationInfo) -> tuple[str, ...]:
        return _read_codes(value, info)

    @model_validator(mode="after")
    def _consistent(self) -> PromoterActions:
        rewards = "reward" in self.score_10 or "reward" in self.score_9
        if rewards and not self.reward_codes:
            raise _fail("reward_codes: required when an action is reward (a list of codes or {file: <path>})")
        if self.reward_codes and not rewards:
            raise _fail("reward_codes: given but no score has the action reward")
        if not self.score_10 and not self.score_9:
            raise _fail("names no action: give 10: [...] and/or 9: [...]")
        return self

    def actions_for(self, score: int) -> tuple[str, ...]:
        return self.score_10 if score == 10 else self.score_9 if score == 9 else ()


class Program(_Model):
    id: str
    survey_id: str
    event_types: tuple[str, ...]
    delay: timedelta
    channels: tuple[str, ...]
    sampling_rate: float = 1.0
    quarantine: timedelta = timedelta(days=90)
    quiet_hours: QuietHours | None = DEFAULT_QUIET_HOURS
    daily_cap: int | None = None
    reminder_after: timedelta | None = None
    max_event_age: timedelta | None = timedelta(days=7)
    cost: Cost = Cost()
    texts: TextsByLocale = Field(default_factory=dict)
    promoter_actions: PromoterActions | None = None

    @field_validator("id", "survey_id", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> str:
        return _check_id(value)

    @field_validator("event_types", mode="before")
    @classmethod
    def _event_types(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not value:
            raise _fail(f"must be a non-empty list of event types like job.completed, got {_show(value)}")
        bad = [(i, v) for i, v in enumerate(value) if not isinstance(v, str) or not EVENT_TYPE.match(v)]
        if bad:
            i, v = bad[0]
            raise _fail(f"entry [{i}] must be an event type like job.completed (lowercase letters, digits, "
                        f"_ . -), got {_show(v)}")
        return value

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not value:
            raise _fail(f"must be a non-empty list of channels in fallback order ({', '.join(CHANNELS)}), "
                        f"got {_show(value)}")
        for v in value:
            if v not in CHANNELS:
                raise _fail(f"unknown channel {_show(v)} (known: {', '.join(CHANNELS)})")
        if len(set(value)) != len(value):
            raise _fail(f"lists a channel twice: {', '.join(value)}")
        return value

    @field_validator("delay", "quarantine", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("reminder_after", "max_event_age", mode="before")
    @classmethod
    def _positive_duration(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value, positive=True)

    @field_validator("sampling_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> float:
        return _number(value, 0, 1)

    @field_validator("daily_cap", mode="before")
    @classmethod
    def _cap(cls, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail(f"must be an integer ≥ 1 or null (no cap), got {_show(value)}")
        return value

    def cost_of(self, channel: str) -> float:
        """Price of one message on ``channel`` (0 when the program names none), in ``cost.currency``."""
        return getattr(self.cost, channel, None) or 0.0


class Organization(_Model):
    id: str
    name: str
    timezone: str
    default_locale: LocaleCode
    branding: dict[LocaleCode, Branding]
    review_url: str | None = None
    opt_out: OptOut = OptOut()
    texts: TextsByLocale = Field(default_factory=dict)
    programs: tuple[Program, ...]
    api_keys: tuple[str, ...] = ()  # "sha256:<hex>" of the keys of POST /api/v1/responses (npsflow api-key new)

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return _check_id(value)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        return _check_text(value).strip()

    @field_validator("timezone", mode="before")
    @classmethod
    def _tz(cls, value: Any) -> str:
        return iana_timezone(value)

    @field_validator("review_url", mode="before")
    @classmethod
    def _review(cls, value: Any) -> str | None:
        return _check_https(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            shown = "a string" if isinstance(value, str) else _show(value)  # never echo what may be a key
            raise _fail(f"must be a list of key hashes like sha256:<64 hex digits>, got {shown}")
        for i, entry in enumerate(value):
            if not isinstance(entry, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", entry):
                raise _fail(f"entry [{i}] must be a key hash like sha256:<64 hex digits> (`npsflow api-key new` "
                            f"prints one), not the key itself")
        return value

    @field_validator("programs", mode="before")
    @classmethod
    def _programs(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not value:
            raise _fail(f"must be a non-empty list of programs, got {_show(value)}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_opted_out(self, contact_id: str) -> bool:
        return contact_id in self.opt_out.ids

    def program(self, program_id: str) -> Program | None:
        return next((p for p in self.programs if p.id == program_id), None)


class Programs(_Model):
    version: int
    organizations: tuple[Organization, ...]
    _index: dict[tuple[str, str], tuple[Organization, Program]] = PrivateAttr(default_factory=dict)
    _orgs: dict[str, Organization] = PrivateAttr(default_factory=dict)

    @field_validator("organizations", mode="before")
    @classmethod
    def _orgs_list(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not value:
            raise _fail(f"must be a non-empty list of organizations, got {_show(value)}")
        return value

    def model_post_init(self, __context: Any) -> None:
        for org in self.organizations:
            self._orgs.setdefault(org.id, org)
            for program in org.programs:
                for event_type in program.event_types:
                    self._index.setdefault((org.id, event_type), (org, program))

    def organization(self, org_id: str) -> Organization | None:
        return self._orgs.get(org_id)

    def program_for(self, org_id: str, event_type: str) -> tuple[Organization, Program] | None:
        """The organization and the program that an ``event_type`` of ``org_id`` triggers (None: neither)."""
        return self._index.get((org_id, event_type))


# ---------------------------------------------------------------------------------------------------------
# Locales, texts, branding


def _candidates(locale: str | None) -> list[str]:
    if not locale or not isinstance(locale, str):
        return []
    norm = locale.strip().replace("_", "-")
    lang = norm.split("-", 1)[0].lower()
    out = [norm, norm.lower(), lang, LOCALE_ALIASES.get(lang, lang)]
    return list(dict.fromkeys(c for c in out if c))


def resolve_locale(org: Organization, locale: str | None, program: Program | None = None) -> str:
    """The locale whose texts are used for ``locale``: itself, its language, the org default, then en."""
    available = set(SHIPPED_LOCALES) | set(org.texts) | set(program.texts if program else ())
    for candidate in (*_candidates(locale), org.default_locale, "en"):
        if candidate in available:
            return candidate
    return "en"


def texts(org: Organization, locale: str | None, program: Program | None = None, *,
          fill_org: bool = True) -> dict[str, str]:
    """Every text key for ``locale`` (see ``resolve_locale``): shipped defaults < org texts < program texts.

    ``{org}`` is replaced by the branding name of that locale unless ``fill_org=False``; ``{link}`` stays in
    ``sms_text`` for the channel to fill.
    """
    chosen = resolve_locale(org, locale, program)
    merged = dict(DEFAULT_TEXTS.get(chosen, {}))
    for layer in (org.texts.get(chosen), program.texts.get(chosen) if program else None):
        if layer is not None:
            merged.update(layer.given())
    missing = [k for k in TEXT_KEYS if k not in merged]
    if missing:  # only possible for models built in code around validation: complete from English
        for k in missing:
            merged[k] = DEFAULT_TEXTS["en"][k]
    if fill_org:
        name = branding(org, chosen)["name"]
        merged = {k: render_text(v, org=name) for k, v in merged.items()}
    return {k: merged[k] for k in TEXT_KEYS}


def branding(org: Organization, locale: str | None) -> dict[str, Any]:
    """Branding for ``locale``: that locale's (or its language's) entry over the default locale's, field by
    field; name defaults to the org name, colors to ``DEFAULT_COLORS``."""
    default = org.branding.get(org.default_locale) or Branding()
    specific = next((org.branding[c] for c in _candidates(locale) if c in org.branding), None) or default
    out: dict[str, Any] = {}
    for field in ("name", "logo_url", "sender_name", "sender_email", "sms_sender_id"):
        value = getattr(specific, field)
        out[field] = value if value is not None else getattr(default, field)
    out["name"] = out["name"] or org.name
    out["sender_name"] = out["sender_name"] or out["name"]
    colors = dict(DEFAULT_COLORS)
    for source in (default.colors, specific.colors):
        if source is not None:
            colors.update({k: v for k, v in source.model_dump().items() if v is not None})
    out["colors"] = colors
    out["review_url"] = org.review_url
    return out


# ---------------------------------------------------------------------------------------------------------
# Loading


class ProgramsError(ValueError):
    """Invalid programs file: ``errors`` holds one line per mistake; the message is all of them."""

    def __init__(self, errors: Iterable[str]):
        self.errors = list(dict.fromkeys(errors))
        super().__init__("\n".join(self.errors))


_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars and duplicate-key detection."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str):
        super().__init__(stream)
        self.problems: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                self.problems.append(f"line {line}: duplicate key {key!r} (first at line {seen[key]})")
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = self.construct_scalar(node)
        sign = -1 if value.startswith("-") else 1
        digits = value.lstrip("+-")
        return sign * (int(digits[2:], 16) if digits.startswith("0x") else int(digits, 10))


_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)
_Loader.add_constructor(_INT, _Loader.construct_yaml_int)


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for item in loc:
        if item == "[key]":
            continue
        if isinstance(item, int) and not isinstance(item, bool):
            out += f"[{item}]"
        else:
            out += ("." if out else "") + str(item)
    return out or "(document)"


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(loc: Iterable[Any]) -> type[BaseModel] | None:
    tp: Any = Programs
    for item in loc:
        if item == "[key]":
            continue
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(item) if isinstance(item, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif origin in (list, tuple) and isinstance(item, int):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_TYPE_WORDS = {
    "string_type": "a string", "str_type": "a string",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "bool_type": "true or false", "bool_parsing": "true or false",
}


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "npsflow":
        return error["msg"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        model = _model_at(error["loc"][:-1])
        if model is None:
            return "unknown key"
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown key ({hint}allowed: {', '.join(allowed)})"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, got {_show(value)}"
    msg = str(error.get("msg") or kind)
    return f"{msg[:1].lower()}{msg[1:]}, got {_show(value)}"


def _cross_checks(doc: Mapping[str, Any]) -> list[str]:
    """Rules across fields, on the raw document (so they are reported along with field errors)."""
    errors: list[str] = []
    orgs = doc.get("organizations")
    if not isinstance(orgs, list):
        return errors
    org_ids: dict[str, int] = {}
    for oi, org in enumerate(orgs):
        if not isinstance(org, Mapping):
            continue
        at = f"organizations[{oi}]"
        oid = org.get("id")
        if isinstance(oid, str):
            if oid in org_ids:
                errors.append(f"{at}.id: duplicate organization id {oid!r} (already used by "
                              f"organizations[{org_ids[oid]}])")
            else:
                org_ids[oid] = oi
        programs = org.get("programs") if isinstance(org.get("programs"), list) else []
        program_ids: dict[str, int] = {}
        event_owner: dict[str, str] = {}
        channels_used: dict[str, int] = {}
        for pi, program in enumerate(programs):
            if not isinstance(program, Mapping):
                continue
            pat = f"{at}.programs[{pi}]"
            pid = program.get("id")
            if isinstance(pid, str):
                if pid in program_ids:
                    errors.append(f"{pat}.id: duplicate program id {pid!r} (already used by "
                                  f"programs[{program_ids[pid]}])")
                else:
                    program_ids[pid] = pi
            event_types = program.get("event_types")
            for ei, event_type in enumerate(event_types if isinstance(event_types, list) else []):
                if not isinstance(event_type, str):
                    continue
                here = f"{pat}.event_types[{ei}]"
                if event_type in event_owner:
                    errors.append(f"{here}: duplicate event type {event_type!r} (already in "
                                  f"{event_owner[event_type]}; an event type may trigger one program only)")
                else:
                    event_owner[event_type] = f"programs[{pi}]"
            channels = program.get("channels")
            for channel in channels if isinstance(channels, list) else []:
                if isinstance(channel, str):
                    channels_used.setdefault(channel, pi)
            errors += _promoter_checks(org, program, pat, pi, channels_used)

        default_locale = org.get("default_locale")
        brand = org.get("branding")
        org_texts = org.get("texts") if isinstance(org.get("texts"), Mapping) else {}
        if isinstance(default_locale, str) and isinstance(brand, Mapping):
            entry = brand.get(default_locale)
            if entry is None:
                errors.append(f"{at}.branding.{default_locale}: required (the default_locale is "
                              f"{default_locale!r})")
            elif isinstance(entry, Mapping):
                needs = []
                if "sms" in channels_used:
                    needs.append(("sms_sender_id", "sms", channels_used["sms"]))
                for channel in ("email", "newsletter"):
                    if channel in channels_used:
                        needs.append(("sender_email", channel, channels_used[channel]))
                        break
                for field, channel, pi in needs:
                    if entry.get(field) is None:
                        errors.append(f"{at}.branding.{default_locale}.{field}: required for the {channel} "
                                      f"channel (used by programs[{pi}])")
            if default_locale not in SHIPPED_LOCALES and default_locale not in org_texts:
                errors.append(f"{at}.default_locale: no texts for {default_locale!r} (shipped: "
                              f"{', '.join(SHIPPED_LOCALES)}; add them under {at}.texts.{default_locale})")

        def brand_name(locale: str) -> str:
            for candidate in (*_candidates(locale), default_locale):
                entry = brand.get(candidate) if isinstance(brand, Mapping) else None
                if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                    return entry["name"]
            return org.get("name") if isinstance(org.get("name"), str) else "Organization"

        def check_layer(layer_at: str, layer: Any, base: Mapping[str, Any] | None) -> None:
            if not isinstance(layer, Mapping):
                return
            for locale, given in layer.items():
                if not isinstance(locale, str) or not isinstance(given, Mapping):
                    continue
                if locale not in SHIPPED_LOCALES:
                    have = set(given) | set(base.get(locale) or {} if isinstance(base, Mapping) and
                                            isinstance(base.get(locale), Mapping) else set())
                    missing = [k for k in TEXT_KEYS if k not in have]
                    if missing:
                        errors.append(f"{layer_at}.{locale}: locale {locale!r} is not shipped with npsflow, so "
                                      f"every text is needed; missing: {', '.join(missing)}")
                sms = given.get("sms_text")
                if isinstance(sms, str) and "{link}" in sms:
                    rendered = render_text(sms, org=brand_name(locale), link="x" * TYPICAL_LINK_LENGTH)
                    if sms_segments(rendered) > 1:
                        encoding, length = sms_length(rendered)
                        if encoding == "gsm7":
                            detail = f"{length} GSM-7 characters (limit {GSM7_SINGLE})"
                        else:
                            odd = next(c for c in rendered if c not in GSM7_BASIC and c not in GSM7_EXTENDED)
                            detail = (f"{length} UCS-2 characters (limit {UCS2_SINGLE}, because {odd!r} is not "
                                      f"in the GSM-7 alphabet)")
                        errors.append(f"{layer_at}.{locale}.sms_text: must fit one SMS with a "
                                      f"{TYPICAL_LINK_LENGTH}-character link, got {detail}")

        check_layer(f"{at}.texts", org_texts, None)
        for pi, program in enumerate(programs):
            if isinstance(program, Mapping):
                check_layer(f"{at}.programs[{pi}].texts", program.get("texts"), org_texts)
    return errors


def _promoter_checks(org: Mapping[str, Any], program: Mapping[str, Any], pat: str, pi: int,
                     channels_used: dict[str, int]) -> list[str]:
    """A program's promoter actions against its organization: the review link, the senders of their channels."""
    actions = program.get("promoter_actions")
    if not isinstance(actions, Mapping):
        return []
    channels = actions.get("channels", list(PROMOTER_CHANNELS))
    for channel in [channels] if isinstance(channels, str) else channels if isinstance(channels, list) else []:
        if channel in PROMOTER_CHANNELS:
            channels_used.setdefault(channel, pi)
    named = [v for key in (9, 10, "9", "10", "score_9", "score_10") for v in
             ([actions[key]] if isinstance(actions.get(key), str) else actions.get(key) or [])]
    if "review_request" in named and not org.get("review_url"):
        return [f"{pat}.promoter_actions: review_request needs the organization's review_url"]
    return []


def parse_programs(text: str, base_dir: str | Path = ".", source: str = "<programs>") -> Programs:
    """Validate a programs document given as YAML text (``base_dir``: where relative opt-out files are)."""
    loader = _Loader(text)
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ProgramsError([f"{source}: {where}invalid YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ProgramsError([f"{source}: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    errors = list(loader.problems)
    if not isinstance(doc, Mapping):
        raise ProgramsError(errors + [f"(document): must be a mapping starting with 'version: "
                                      f"{SUPPORTED_VERSION}', got {_show(doc)}"])
    version = doc.get("version")
    if "version" not in doc:
        raise ProgramsError(errors + [f"version: required (the file must start with 'version: {SUPPORTED_VERSION}')"])
    if isinstance(version, bool) or version != SUPPORTED_VERSION:
        raise ProgramsError(errors + [f"version: unsupported version {_show(version)} (this npsflow reads "
                                      f"version {SUPPORTED_VERSION})"])
    result: Programs | None = None
    try:
        result = Programs.model_validate(doc, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        errors += [f"{_path(e['loc'])}: {_message(e)}" for e in exc.errors()]
    errors += _cross_checks(doc)
    if result is not None:
        errors += _shared_codes(result)
    if errors or result is None:
        raise ProgramsError(errors)
    return result


def _shared_codes(programs: Programs) -> list[str]:
    """A reward code in two pools could be issued twice (each pool is claimed on its own): refused."""
    owner: dict[str, str] = {}
    errors = []
    for oi, org in enumerate(programs.organizations):
        for pi, program in enumerate(org.programs):
            actions = program.promoter_actions
            at = f"organizations[{oi}].programs[{pi}]"
            for ci, code in enumerate(actions.reward_codes if actions else ()):
                if code in owner:  # never echo the code itself
                    errors.append(f"{at}.promoter_actions.reward_codes: code [{ci}] is also in the pool of "
                                  f"{owner[code]}: each code may be issued once")
                else:
                    owner[code] = at
    return errors


def load_programs(path: str | Path) -> Programs:
    """Read and validate a programs YAML file; ``ProgramsError`` lists every mistake, one per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramsError([f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from None
    return parse_programs(text, base_dir=path.parent, source=str(path))


# ---------------------------------------------------------------------------------------------------------
# Programs → contact rules


def rule_config(org: Organization, program: Program):
    """The contact rules (streams.contact_rules.RuleConfig) of one program of one organization.

    Channels keep the program's fallback order. The newsletter channel needs no address (the organization
    sends the embed with its own mailing tool), so it catches every contact the channels before it cannot
    reach, and quiet hours never apply to it (only to SMS)."""
    from streams.contact_rules import RuleConfig

    quiet = program.quiet_hours
    return RuleConfig(
        sampling_rate=program.sampling_rate,
        quarantine=program.quarantine,
        quiet_hours=None if quiet is None or quiet.start == quiet.end else (quiet.start, quiet.end),
        delay_after_event=program.delay,
        daily_cap=program.daily_cap,
        channels=tuple(program.channels),
        reminder_after=program.reminder_after,
        max_event_age=program.max_event_age,
        timezone=org.timezone,
        event_types=frozenset(program.event_types),
    )
