"""The one interface every invitation channel implements, and the values passed through it.

A channel gets an `Invitation` (built by the dispatch agent: addresses, signed links, localized texts,
branding) and returns a `SendResult`. `send` never raises for a delivery problem: a permanent failure, or
a transient one that outlived the retries, comes back as ``status="failed"`` with a machine-readable reason.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable
from urllib.parse import urlsplit

SENT = "sent"
FAILED = "failed"
SCORE_COUNT = 11  # one-click links for the scores 0..10


@dataclass(frozen=True)
class Invitation:
    """Everything a channel needs to deliver one survey invitation."""

    invitation_id: str
    org_id: str
    org_name: str
    locale: str
    to_email: str | None
    to_phone: str | None
    survey_url: str  # signed link, no personal data in it
    score_urls: list[str]  # 11 one-click links, scores 0..10
    # subject, intro, question (org already formatted in), low_label, high_label, sms_text (with {link}),
    # footer; optional: reminder_prefix, reminder_intro
    texts: dict[str, str]
    # name, logo_url, colors {primary, background, text, button_text}, sender_name, sender_email,
    # sms_sender; optional: unsubscribe_url
    branding: dict = field(default_factory=dict)
    reminder: bool = False
    contact_ref: str | None = None  # the organization's own id of the contact (newsletter embeds are merged by it)
    campaign: str | None = None  # the trigger's campaign segment, if any
    # "invitation", or a promoter action (thank_you, review_request, reward: streams.promoter) — then ``texts``
    # holds subject, body and sms, fully written out (review link, code), and there are no survey links
    kind: str = "invitation"

    @property
    def survey(self) -> bool:
        return self.kind == "invitation"

    @property
    def delivery_id(self) -> str:
        """Id of this message (idempotency key of a send): the invitation's, ``-reminder`` for its reminder."""
        return f"{self.invitation_id}-reminder" if self.reminder else self.invitation_id


@dataclass(frozen=True)
class SendResult:
    status: str  # "sent" | "failed"
    reason: str | None  # e.g. smtp_rejected_recipient, gateway_4xx, gateway_unreachable, no_address
    attempts: int
    provider_id: str | None  # message id from SMTP / gateway
    cost: float | None
    currency: str | None
    detail: str | None = None  # short technical detail (status codes only, never an address)
    retryable: bool = False  # failed for a passing reason (server down, rate limited): worth another try later

    @property
    def ok(self) -> bool:
        return self.status == SENT

    @classmethod
    def sent(cls, *, attempts: int, provider_id: str | None, cost: float | None,
             currency: str | None) -> "SendResult":
        return cls(SENT, None, attempts, provider_id, cost, currency if cost is not None else None)

    @classmethod
    def failed(cls, reason: str, *, attempts: int, detail: str | None = None,
               retryable: bool = False) -> "SendResult":
        return cls(FAILED, reason, attempts, None, None, None, detail, retryable)


@runtime_checkable
class Channel(Protocol):
    """``idempotent`` (optional attribute, default False): sending the same delivery id twice has the effect of
    sending it once, so the dispatcher may re-send after a crash instead of recording ``send_interrupted``."""

    name: str

    async def send(self, invitation: Invitation) -> SendResult: ...


@dataclass(frozen=True)
class ChannelCosts:
    """Price per e-mail, per SMS segment and per newsletter embed, in one currency."""

    email: float = 0.001
    sms: float = 0.15
    newsletter: float = 0.0
    currency: str = "EUR"

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "ChannelCosts":
        config = dict(config or {})
        known = {k: config[k] for k in ("email", "sms", "newsletter") if config.get(k) is not None}
        costs = cls(**{k: float(v) for k, v in known.items()},
                    currency=str(config.get("currency") or cls.currency).upper())
        for k in ("email", "sms", "newsletter"):
            if getattr(costs, k) < 0:
                raise ValueError(f"channel cost {k} must not be negative")
        return costs


def money(value: float) -> float:
    """Round a cost so 3 × 0.15 is 0.45, not 0.44999999999999996."""
    return round(value, 6)


# An ASCII URL starting http:// or https:// and a host character, without what urlsplit strips or checks (tabs
# and line breaks, IPv6 brackets): urlsplit would find that scheme and a netloc — answered without it (12 links
# per e-mail invitation).
_PLAIN_HTTP_URL = re.compile(r"https?://[^/?#]", re.ASCII)
_UNUSUAL = re.compile(r"[\[\]\t\r\n]")


def _http_url(url: object) -> bool:
    if not isinstance(url, str) or not url:
        return False
    if url.isascii() and _PLAIN_HTTP_URL.match(url) and not _UNUSUAL.search(url):
        return True
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def invitation_problem(inv: Invitation) -> str | None:
    """Why this invitation cannot be rendered by any channel (None when it can)."""
    if not inv.invitation_id or not isinstance(inv.invitation_id, str):
        return "missing invitation_id"
    if not inv.survey:
        return None if (inv.texts or {}).get("body") else "a promoter message without a body"
    if not _http_url(inv.survey_url):
        return "survey_url is not an http(s) URL"
    urls = list(inv.score_urls or [])
    if len(urls) != SCORE_COUNT:
        return f"score_urls has {len(urls)} links, expected {SCORE_COUNT}"
    if not all(_http_url(u) for u in urls):
        return "a score URL is not an http(s) URL"
    return None


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def file_stem(invitation_id: str) -> str:
    """A file name for an invitation id: the id itself when safe, otherwise a hash of it."""
    if _SAFE_NAME.match(invitation_id) and ".." not in invitation_id:
        return invitation_id
    return "id-" + hashlib.sha256(invitation_id.encode("utf-8")).hexdigest()[:32]
