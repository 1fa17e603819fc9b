"""E-mail invitations over SMTP (aiosmtplib), and the MIME builder the outbox reuses.

The message is multipart/alternative: plain text + HTML rendered from templates/invitation.*.j2, both
UTF-8 and quoted-printable (7-bit safe on any relay, so å/ä/ö/æ/ø survive). Message-ID carries the
invitation id and is the provider id; it is built once per send, so retries resend the same message.

Two builders make the same message: ``build_message`` (the stdlib's EmailMessage, ~2 ms per mail: the
reference, and the path for unusual addresses) and ``MailTemplates`` (the default): the templates are rendered
once per (organization texts, branding, locale, reminder) with placeholders for the per-message links, and a
message is the pre-encoded headers + the recipient's headers + the two bodies with the links filled in,
quoted-printable by ``binascii`` (tens of µs per mail). tests/test_channels.py checks both parse alike.
"""

from __future__ import annotations

import asyncio
import binascii
import itertools
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from email.headerregistry import Address
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Callable

import aiosmtplib
import orjson
from markupsafe import escape

from sinks.channels import render
from sinks.channels.base import ChannelCosts, Invitation, SendResult, invitation_problem, money
from sinks.channels.retry import (PERMANENT, TRANSIENT, PermanentFailure, RetryPolicy, TransientFailure,
                                  UncertainFailure, call_with_retry, classify_smtp_code)

_ATEXT_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


class InvalidMessage(ValueError):
    """The invitation cannot become an e-mail (no sender, unparseable address, …)."""


def message_id(invitation_id: str, domain: str) -> str:
    local = _ATEXT_UNSAFE.sub("_", invitation_id).strip(".") or "invitation"
    return f"<{local}@{domain}>"


def _address(display_name: str, addr_spec: str) -> Address:
    try:
        return Address(display_name=render.one_line(display_name), addr_spec=addr_spec.strip())
    except Exception as e:  # headerregistry raises several types for malformed addresses
        raise InvalidMessage(f"malformed address ({type(e).__name__})") from None


def build_message(inv: Invitation, *, sender_email: str | None = None, sender_name: str | None = None,
                  list_unsubscribe: str | None = None, now: datetime | None = None) -> EmailMessage:
    """The invitation as a ready-to-send MIME message (raises InvalidMessage when it cannot be one).

    Branding's sender_email / sender_name win over the arguments (the channel's defaults).
    `list_unsubscribe` may contain {invitation_id} and {org_id}; branding's unsubscribe_url wins.
    """
    problem = invitation_problem(inv)
    if problem:
        raise InvalidMessage(problem)
    if not inv.to_email:
        raise InvalidMessage("no recipient address")
    branding = inv.branding or {}
    from_addr = branding.get("sender_email") or sender_email
    if not from_addr:
        raise InvalidMessage("no sender address")
    from_name = branding.get("sender_name") or sender_name or branding.get("name") or inv.org_name
    sender = _address(from_name, from_addr)
    recipient = _address("", inv.to_email)
    if not sender.domain or not recipient.domain:
        raise InvalidMessage("address without a domain")

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = render.subject(inv)
    msg["Date"] = format_datetime(now or datetime.now(timezone.utc))
    msg["Message-ID"] = message_id(inv.delivery_id, sender.domain)
    unsubscribe = render.safe_http_url(branding.get("unsubscribe_url"))
    if unsubscribe is None and list_unsubscribe:
        unsubscribe = list_unsubscribe.replace("{invitation_id}", inv.invitation_id).replace("{org_id}", inv.org_id)
    if unsubscribe:
        msg["List-Unsubscribe"] = f"<{render.one_line(unsubscribe)}>"
        if unsubscribe.startswith("https://"):
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(render.render_text(inv), subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(render.render_html(inv), subtype="html", charset="utf-8", cte="quoted-printable")
    msg["Content-Language"] = render.one_line(inv.locale or "en")  # after the body: set_content clears Content-*
    return msg


def message_bytes(msg: EmailMessage) -> bytes:
    """The message as it goes on the wire (CRLF line ends), e.g. for an .eml file."""
    return msg.as_bytes(policy=policy.SMTP)


@dataclass(frozen=True)
class WireMessage:
    """A message as it goes on the wire, with its envelope."""

    data: bytes
    message_id: str
    sender: str
    recipients: tuple[str, ...]


# an ASCII addr-spec the fast builder takes as it is (anything else goes through the stdlib's parser)
_SIMPLE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                             r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                             r"[A-Za-z0-9])?)+", re.ASCII)
_LINK = "NPSFLOWLINK{:02d}X"  # placeholders of the one-click links in a pre-rendered template
_LINKS = re.compile(r"NPSFLOWLINK(\d\d)X")
_PART_HEAD = b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'


def _pieces(rendered: str) -> list:
    """A rendered template split at its link placeholders: text, link index, text, …"""
    parts = _LINKS.split(rendered)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def _fill(pieces: list, links: list[str]) -> bytes:
    body = "".join(links[p] if isinstance(p, int) else p for p in pieces)
    return binascii.b2a_qp(body.encode("utf-8"), istext=True)


_LITERAL = bytes(c for c in range(0x21, 0x7F) if c != 0x3D)  # printable ASCII but space and "=": copied as is


_MARKS = "~^`|!*$@#%&;:?_{}"  # stand-ins for a link's characters: printable, never part of an encoding (=XX)


class QuotedBody:
    """A body template (a rendered template with link placeholders) as quoted-printable, encoded once per
    combination of link lengths. ``binascii.b2a_qp`` copies a link's characters as they are when they are
    printable ASCII but ``=`` (and the link does not end in ``.``): where it puts soft line breaks and what it
    encodes around them then depends on the links' lengths only, not on their characters. So the body is encoded
    with each link character replaced by a mark character that does not occur in the template (``layout``), and
    a message puts its links' characters in the marks' places. Any other link: the body is encoded with the links
    in it (``_fill``, as before). tests/test_channels.py checks both against ``_fill``."""

    def __init__(self, rendered: str) -> None:
        text = rendered.replace("\r\n", "\n").replace("\n", "\r\n")
        self.pieces = _pieces(text)
        self.order = self.pieces[1::2]  # the link numbers in the order they occur
        self.mark = next((m for m in _MARKS if m not in text), None)
        self.layouts: dict[tuple[int, ...], list] = {}

    def fill(self, links: list[str]) -> bytes:
        used = [links[n] for n in self.order]
        joined, lengths = "".join(used), tuple(map(len, used))
        if self.mark is None or 0 in lengths or not joined.isascii():
            return _fill(self.pieces, links)
        data = joined.encode("ascii")  # the links one after the other
        layout = self.layouts.get(lengths)
        if layout is None:
            layout = self.layouts[lengths] = self.layout(lengths)
        template, cuts, ends = layout
        if data.translate(None, _LITERAL) or b"." in bytes(map(data.__getitem__, ends)):
            return _fill(self.pieces, links)  # a character b2a_qp encodes, or a link ending in "." (see _LITERAL)
        return template % tuple([data[start:end] for start, end in cuts])

    def layout(self, lengths: tuple[int, ...]) -> tuple[bytes, list[tuple[int, int]], tuple[int, ...]]:
        """The body encoded with marks for the links, as a %-template (``%s`` where link characters go), where in
        the links one after the other the characters of each ``%s`` are (start, end), and each link's last one."""
        marks = iter(self.mark * n for n in lengths)
        encoded = _fill([next(marks) if isinstance(p, int) else p for p in self.pieces], [])
        template, cuts, at = [], [], 0
        for text, is_mark in _split_runs(encoded, ord(self.mark)):
            if is_mark:  # the next len(text) link characters (a run may span the end of a link and the next one)
                template.append(b"%s")
                cuts.append((at, at + len(text)))
                at += len(text)
            else:
                template.append(text.replace(b"%", b"%%"))
        ends = tuple(itertools.accumulate(lengths))
        return b"".join(template), cuts, tuple(end - 1 for end in ends)


def _split_runs(data: bytes, mark: int) -> list[tuple[bytes, bool]]:
    """``data`` as runs of the ``mark`` byte and runs of anything else, in order."""
    runs, start = [], 0
    for i in range(1, len(data) + 1):
        if i == len(data) or (data[i] == mark) != (data[start] == mark):
            runs.append((data[start:i], data[start] == mark))
            start = i
    return runs


def _html_escaped(links: list[str]) -> list[str]:
    """``[str(escape(link)) for link in links]``; links without a character HTML escapes are kept as they are."""
    joined = "".join(links)
    if "&" in joined or "<" in joined or ">" in joined or '"' in joined or "'" in joined:
        return [str(escape(link)) for link in links]
    return list(links)


class DateHeader:
    """``format_datetime(now)`` as header bytes, kept for the second it names: the mails of a chunk are built within
    the same second or two. The text depends on the wall-clock fields to the second and the UTC offset only."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value = b""

    def __call__(self, now: datetime) -> bytes:
        key = (now.replace(microsecond=0, tzinfo=None, fold=0), now.utcoffset())
        if key != self.key:
            self.key, self.value = key, format_datetime(now).encode("ascii")
        return self.value


_date_header = DateHeader()


class MailTemplate:
    """One pre-rendered invitation e-mail (an organization's texts and branding in one locale, reminder or not):
    the header block every message shares (From, Subject, …, encoded once) and both bodies split at the links."""

    def __init__(self, inv: Invitation, sender: Address, unsubscribe: str | None) -> None:
        sample = Invitation(**{**inv.__dict__, "score_urls": [_LINK.format(i) for i in range(len(inv.score_urls))],
                               "survey_url": "https://placeholder.invalid/"})
        head = EmailMessage()
        head["From"] = sender
        head["Subject"] = render.subject(inv)
        self.head = head.as_bytes(policy=policy.SMTP).split(b"\r\n\r\n", 1)[0] + b"\r\n"
        self.domain = sender.domain
        self.sender = sender.addr_spec
        self.unsubscribe = unsubscribe  # may hold {invitation_id}
        self.boundary = b"=_npsflow_" + os.urandom(12).hex().encode()  # "=_" never occurs in quoted-printable
        self.tail = (b"Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative;"
                     b' boundary="' + self.boundary + b'"\r\nContent-Language: '
                     + render.one_line(inv.locale or "en").encode("ascii", "replace") + b"\r\n\r\n")
        self.text = QuotedBody(render.render_text(sample))
        self.html = QuotedBody(render.render_html(sample))

    def message(self, inv: Invitation, now: datetime) -> WireMessage:
        to = inv.to_email.strip()
        mid = message_id(inv.delivery_id, self.domain)
        headers = [self.head, b"To: ", to.encode("ascii"), b"\r\nDate: ", _date_header(now),
                   b"\r\nMessage-ID: ", mid.encode("ascii"), b"\r\n"]
        if self.unsubscribe:
            url = render.one_line(self.unsubscribe.replace("{invitation_id}", inv.invitation_id))
            headers += [b"List-Unsubscribe: <", url.encode("ascii"), b">\r\n"]
            if url.startswith("https://"):
                headers.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")  # RFC 8058
        html_links = _html_escaped(inv.score_urls)
        boundary = b"--" + self.boundary
        data = b"".join([*headers, self.tail, boundary, b"\r\n", _PART_HEAD % b"plain",
                         self.text.fill(list(inv.score_urls)), b"\r\n", boundary, b"\r\n", _PART_HEAD % b"html",
                         self.html.fill(html_links), b"\r\n", boundary, b"--\r\n"])
        return WireMessage(data, mid, self.sender, (to,))


class MailTemplates:
    """Builds invitation e-mails from pre-rendered templates (``MailTemplate``), one per distinct organization
    texts + branding + locale + reminder, kept in a small LRU. Falls back to the stdlib builder for addresses
    it does not take as they are (non-ASCII, display names, unusual syntax)."""

    def __init__(self, *, sender_email: str | None = None, sender_name: str | None = None,
                 list_unsubscribe: str | None = None, size: int = 512) -> None:
        self.sender_email, self.sender_name, self.list_unsubscribe = sender_email, sender_name, list_unsubscribe
        self.size = size
        self.cache: OrderedDict = OrderedDict()

    def build(self, inv: Invitation, now: datetime) -> WireMessage:
        """The message (raises InvalidMessage like build_message)."""
        problem = invitation_problem(inv)
        if problem:
            raise InvalidMessage(problem)
        if not inv.to_email:
            raise InvalidMessage("no recipient address")
        to = inv.to_email.strip()
        if not inv.survey or not _SIMPLE_ADDRESS.fullmatch(to) or len(to) > 254:
            return self.slow(inv, now)  # promoter messages: few, each with its own words (a code)
        key = (inv.org_id, inv.org_name, inv.locale, inv.reminder,
               orjson.dumps(inv.texts, option=orjson.OPT_SORT_KEYS),
               orjson.dumps(inv.branding, option=orjson.OPT_SORT_KEYS, default=str))
        template = self.cache.get(key)
        if template is None:
            template = self.cache[key] = self.template(inv)
            if len(self.cache) > self.size:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(key)
        if template is False:
            return self.slow(inv, now)
        return template.message(inv, now)

    def template(self, inv: Invitation):
        branding = inv.branding or {}
        from_addr = branding.get("sender_email") or self.sender_email
        if not from_addr:
            raise InvalidMessage("no sender address")
        from_name = branding.get("sender_name") or self.sender_name or branding.get("name") or inv.org_name
        sender = _address(from_name, from_addr)
        if not sender.domain or not sender.domain.isascii():
            return False  # the stdlib decides (and refuses what it must)
        unsubscribe = render.safe_http_url(branding.get("unsubscribe_url"))
        if unsubscribe is None and self.list_unsubscribe:
            unsubscribe = self.list_unsubscribe.replace("{org_id}", inv.org_id)
        if unsubscribe and not unsubscribe.isascii():
            return False
        return MailTemplate(inv, sender, unsubscribe)

    def slow(self, inv: Invitation, now: datetime) -> WireMessage:
        msg = build_message(inv, sender_email=self.sender_email, sender_name=self.sender_name,
                            list_unsubscribe=self.list_unsubscribe, now=now)
        return WireMessage(message_bytes(msg), msg["Message-ID"], msg["From"].addresses[0].addr_spec,
                           tuple(a.addr_spec for a in msg["To"].addresses))


def _smtp_detail(code: int, message: str) -> str:
    """Reply code and enhanced status code only: the text may quote the recipient's address."""
    enhanced = re.match(r"\s*(\d\.\d{1,3}\.\d{1,3})\b", message or "")
    return f"{code} {enhanced.group(1)}" if enhanced else str(code)


def _response_failure(code: int, message: str, permanent_reason: str) -> Exception:
    detail = _smtp_detail(code, message)
    if classify_smtp_code(code) == PERMANENT:
        return PermanentFailure(permanent_reason, detail=detail)
    return TransientFailure("smtp_temporary_failure", detail=detail)


class EmailChannel:
    """Sends invitations through an SMTP server (submission with optional STARTTLS/TLS and AUTH).

    Up to ``sessions`` SMTP sessions are kept open and reused, one message at a time each (MAIL, RCPT, DATA
    again on the same connection: no connect, greeting, EHLO, STARTTLS and AUTH per mail); concurrent sends
    beyond that wait for a free session. A session that failed in any way is closed, never reused; one the
    server dropped while it was idle is replaced by a fresh one at once. ``sessions=0``: a connection per mail."""

    name = "email"
    transport = "smtp"

    def __init__(self, *, host: str = "localhost", port: int = 25, username: str | None = None,
                 password: str | None = None, starttls: bool | None = None, use_tls: bool = False,
                 validate_certs: bool = True, timeout: float = 30.0, sender_email: str | None = None,
                 sender_name: str | None = None, list_unsubscribe: str | None = None,
                 costs: ChannelCosts | None = None, retry: RetryPolicy | None = None,
                 clock: Callable[[], datetime] | None = None, sessions: int = 8):
        self.host, self.port = host, int(port)
        self.username, self.password = username, password
        self.starttls, self.use_tls, self.validate_certs = starttls, use_tls, validate_certs
        self.timeout = float(timeout)
        self.sender_email, self.sender_name, self.list_unsubscribe = sender_email, sender_name, list_unsubscribe
        self.costs = costs or ChannelCosts()
        self.retry = retry or RetryPolicy()
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.sessions = max(0, int(sessions))
        self._idle: list[tuple[float, aiosmtplib.SMTP]] = []  # (last used, session), newest last
        self._slots: asyncio.Semaphore | None = None
        self.templates = MailTemplates(sender_email=sender_email, sender_name=sender_name,
                                       list_unsubscribe=list_unsubscribe)

    def build(self, inv: Invitation) -> WireMessage:
        return self.templates.build(inv, self.clock())

    async def send(self, invitation: Invitation) -> SendResult:
        if not invitation.to_email:
            return SendResult.failed("no_address", attempts=0)
        try:
            msg = self.build(invitation)
        except InvalidMessage as e:
            return SendResult.failed("invalid_invitation", attempts=0, detail=str(e))
        outcome = await call_with_retry(lambda: self._attempt(msg), self.retry, what="email")
        if not outcome.ok:
            return SendResult.failed(outcome.reason, attempts=outcome.attempts, detail=outcome.detail,
                                     retryable=outcome.kind == TRANSIENT)
        return SendResult.sent(attempts=outcome.attempts, provider_id=msg.message_id,
                               cost=money(self.costs.email), currency=self.costs.currency)

    IDLE_SECONDS = 20.0  # an idle session older than this is closed, not reused (servers drop idle clients)

    def _session(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(hostname=self.host, port=self.port, username=self.username, password=self.password,
                               start_tls=self.starttls if not self.use_tls else False, use_tls=self.use_tls,
                               validate_certs=self.validate_certs, timeout=self.timeout)

    def _reusable(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            used, smtp = self._idle.pop()
            if now - used < self.IDLE_SECONDS and smtp.is_connected:
                return smtp
            smtp.close()
        return None

    async def _attempt(self, msg: WireMessage) -> None:
        """One delivery: MAIL, RCPT, DATA on a kept session, or on a new one (connect + STARTTLS/TLS, AUTH). A
        failure up to RCPT is safe to retry (nothing was handed over); a timeout or dropped connection during
        DATA is not — the server may have accepted the message — and ends as ``delivery_uncertain`` without
        another attempt."""
        if not self.sessions:
            return await self._deliver(self._session(), msg, fresh=True)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.sessions)
        async with self._slots:
            smtp = self._reusable()
            if smtp is not None:
                try:
                    return await self._deliver(smtp, msg, fresh=False)
                except _Stale:
                    pass  # dropped by the server while idle, before MAIL was accepted: a fresh session
            return await self._deliver(self._session(), msg, fresh=True)

    async def _deliver(self, smtp: aiosmtplib.SMTP, msg: WireMessage, fresh: bool) -> None:
        sender, recipients = msg.sender, msg.recipients
        utf8 = not all(a.isascii() for a in (sender, *recipients))
        in_data = kept = False
        mailed = False
        try:
            if fresh:
                await smtp.connect()
            await smtp.mail(sender, options=["SMTPUTF8"] if utf8 else None, encoding="utf-8" if utf8 else "ascii")
            mailed = True
            for recipient in recipients:
                await smtp.rcpt(recipient, encoding="utf-8" if utf8 else "ascii")
            in_data = True
            await smtp.data(msg.data)
            if self.sessions:
                self._idle.append((time.monotonic(), smtp))
                kept = True
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) if not fresh else () as e:
            if not mailed:
                raise _Stale() from e
            raise self._failure(e, in_data) from None
        except aiosmtplib.SMTPException as e:
            raise self._failure(e, in_data) from None
        except OSError as e:  # TLS handshake and socket errors not wrapped by aiosmtplib
            raise self._failure(e, in_data) from None
        finally:
            if not kept and smtp.is_connected:
                try:
                    if fresh and not self.sessions:
                        await smtp.quit()
                    else:
                        smtp.close()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()

    @staticmethod
    def _failure(e: Exception, in_data: bool) -> Exception:
        """What an SMTP error means for the message (retry or not, reason, detail)."""
        if isinstance(e, aiosmtplib.SMTPRecipientRefused):
            return _response_failure(e.code, e.message, "smtp_rejected_recipient")
        if isinstance(e, aiosmtplib.SMTPSenderRefused):
            return _response_failure(e.code, e.message, "smtp_rejected_sender")
        if isinstance(e, aiosmtplib.SMTPAuthenticationError):
            return _response_failure(e.code, e.message, "smtp_auth_failed")
        if isinstance(e, aiosmtplib.SMTPDataError):
            return _response_failure(e.code, e.message, "smtp_rejected_message")
        if isinstance(e, aiosmtplib.SMTPConnectResponseError):  # e.g. 421 busy (retry) or 554 no service
            return _response_failure(e.code, e.message, "smtp_refused_connection")
        if isinstance(e, aiosmtplib.SMTPConnectError):  # refused, unresolvable, connect timeout
            return TransientFailure("smtp_unreachable", detail=type(e).__name__)
        if isinstance(e, (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected)):
            if in_data:
                return UncertainFailure(f"smtp {type(e).__name__} during DATA")
            return TransientFailure("smtp_timeout" if isinstance(e, aiosmtplib.SMTPTimeoutError)
                                    else "smtp_disconnected")
        if isinstance(e, aiosmtplib.SMTPNotSupported):  # e.g. STARTTLS/AUTH demanded but not offered
            return PermanentFailure("smtp_not_supported", detail=str(e)[:120])
        if isinstance(e, aiosmtplib.SMTPResponseException):  # HELO/EHLO and other replies
            return _response_failure(e.code, e.message, "smtp_rejected")
        if in_data:
            return UncertainFailure(f"smtp {type(e).__name__} during DATA")
        if isinstance(e, aiosmtplib.SMTPException):
            return TransientFailure("smtp_error", detail=type(e).__name__)
        return TransientFailure("smtp_unreachable", detail=type(e).__name__)  # OSError before DATA


class _Stale(Exception):
    """A kept session the server closed while it was idle (nothing of the message was accepted)."""
