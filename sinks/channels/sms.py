"""SMS invitations through an HTTP gateway speaking the Twilio Messages API, and SMS segment counting.

``POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`` with form fields To, From, Body and
HTTP basic auth (account_sid, auth_token); the JSON ``sid`` of a 2xx answer is the provider id.
Cost = per-segment price × `sms_segments(body)`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import quote

import aiohttp

from sinks.channels import render
from sinks.channels.base import ChannelCosts, Invitation, SendResult, invitation_problem, money
from sinks.channels.retry import (TRANSIENT, PermanentFailure, RetryPolicy, TransientFailure, UncertainFailure,
                                  call_with_retry, classify_http_status, parse_retry_after)

# GSM 03.38 default alphabet (ESC 0x1B left out) and its extension table (each costs two septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153  # septets
UCS2_SINGLE, UCS2_PART = 70, 67  # UTF-16 code units


def sms_encoding(text: str) -> str:
    """"gsm7" when every character is in the GSM-7 alphabet (basic or extension), else "ucs2"."""
    return "gsm7" if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text) else "ucs2"


def _units(text: str, encoding: str) -> list[int]:
    """Size of every character in the encoding's units (septets, or UTF-16 code units)."""
    if encoding == "gsm7":
        return [2 if c in GSM7_EXTENDED else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]  # astral (emoji) = surrogate pair


def sms_segments(text: str) -> int:
    """Number of SMS segments `text` is sent as (an empty message is still one segment).

    GSM-7: 160 septets in one SMS, 153 per part of a concatenated one; extension characters
    ({ } [ ] ~ \\ | ^ € and form feed) take two septets. Anything outside GSM-7 makes the whole
    message UCS-2: 70 code units alone, 67 per part; an emoji takes two. A part never splits an escape
    sequence or a surrogate pair, as handsets and gateways pack them.
    """
    encoding = sms_encoding(text)
    units = _units(text, encoding)
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == "gsm7" else (UCS2_SINGLE, UCS2_PART)
    if sum(units) <= single:
        return 1
    segments, used = 1, 0
    for u in units:
        if used + u > part:
            segments, used = segments + 1, 0
        used += u
    return segments


def sms_body(inv: Invitation) -> str:
    """texts["sms_text"] with {link} replaced by the survey link (appended if the text has no {link}); a promoter
    message's ``sms`` text as it is (written out already)."""
    if not inv.survey:
        return str((inv.texts or {}).get("sms") or "")
    template = render.text(inv, "sms_text")
    if "{link}" not in template:
        return f"{template.rstrip()} {inv.survey_url}".strip()
    try:
        return template.format(link=inv.survey_url)
    except (KeyError, IndexError, ValueError):  # other braces in a translated text
        return template.replace("{link}", inv.survey_url)


def sms_sender(inv: Invitation, default: str | None) -> str | None:
    return (inv.branding or {}).get("sms_sender") or default


def sms_refusal(inv: Invitation, default_sender: str | None) -> tuple[str | None, SendResult | None]:
    """The checks every SMS path makes before sending: (sender id, None) or (None, the failed result)."""
    if not inv.to_phone:
        return None, SendResult.failed("no_address", attempts=0)
    problem = invitation_problem(inv)
    if problem:
        return None, SendResult.failed("invalid_invitation", attempts=0, detail=problem)
    sender = sms_sender(inv, default_sender)
    if not sender:
        return None, SendResult.failed("invalid_invitation", attempts=0, detail="no SMS sender id")
    return sender, None


class SmsChannel:
    """Sends invitations through a Twilio-compatible SMS gateway over aiohttp."""

    name = "sms"
    transport = "gateway"

    def __init__(self, *, base_url: str, account_sid: str, auth_token: str, sender: str | None = None,
                 timeout: float = 15.0, costs: ChannelCosts | None = None, retry: RetryPolicy | None = None,
                 session: aiohttp.ClientSession | None = None):
        self.base_url = base_url.rstrip("/")
        self.account_sid, self.auth_token = account_sid, auth_token
        self.sender = sender
        self.timeout = float(timeout)
        self.costs = costs or ChannelCosts()
        self.retry = retry or RetryPolicy()
        self._session = session  # when given, owned by the caller; otherwise one session per send

    @property
    def _auth(self) -> str:
        """HTTP basic auth (aiohttp's BasicAuth is deprecated in 3.14)."""
        pair = f"{self.account_sid}:{self.auth_token}".encode("utf-8")
        return "Basic " + base64.b64encode(pair).decode("ascii")

    @property
    def url(self) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}/Messages.json"

    async def send(self, invitation: Invitation) -> SendResult:
        sender, refused = sms_refusal(invitation, self.sender)
        if refused:
            return refused
        body = sms_body(invitation)
        form = {"To": invitation.to_phone.strip(), "From": sender, "Body": body}
        if self._session is not None:
            outcome = await call_with_retry(lambda: self._attempt(self._session, form), self.retry, what="sms")
        else:
            try:
                async with aiohttp.ClientSession() as session:
                    outcome = await call_with_retry(lambda: self._attempt(session, form), self.retry, what="sms")
            except Exception as e:  # session setup/teardown trouble must not escape into the agent
                return SendResult.failed("channel_error", attempts=1, detail=type(e).__name__)
        if not outcome.ok:
            return SendResult.failed(outcome.reason, attempts=outcome.attempts, detail=outcome.detail,
                                     retryable=outcome.kind == TRANSIENT)
        return SendResult.sent(attempts=outcome.attempts, provider_id=outcome.value,
                               cost=money(self.costs.sms * sms_segments(body)), currency=self.costs.currency)

    async def _attempt(self, session: aiohttp.ClientSession, form: dict[str, str]) -> str | None:
        try:
            async with session.post(self.url, data=form, timeout=aiohttp.ClientTimeout(total=self.timeout),
                                    headers={"Accept": "application/json", "Authorization": self._auth}) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as e:  # refused, DNS, TLS connect: nothing was sent
            raise TransientFailure("gateway_unreachable", detail=type(e).__name__) from None
        except asyncio.TimeoutError:  # the gateway may have queued the SMS before the answer timed out
            raise UncertainFailure("gateway_timeout") from None
        except aiohttp.ClientError as e:  # disconnected mid-request, bad response framing: maybe queued
            raise UncertainFailure(f"gateway_error {type(e).__name__}") from None
        payload = _json(raw)
        kind = classify_http_status(status)
        if kind is None:
            sid = payload.get("sid") if isinstance(payload, dict) else None
            return str(sid) if sid else None
        code = payload.get("code") if isinstance(payload, dict) else None
        detail = f"HTTP {status}" + (f" code {code}" if isinstance(code, (int, str)) and str(code).isdigit() else "")
        if kind == TRANSIENT:
            reason = "gateway_rate_limited" if status == 429 else "gateway_5xx" if status >= 500 else "gateway_timeout"
            raise TransientFailure(reason, retry_after=retry_after, detail=detail)
        raise PermanentFailure("gateway_4xx" if 400 <= status < 500 else "gateway_unexpected_status", detail=detail)


def _json(raw: bytes):
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        return None
