"""E-mail invitations over SMTP (aiosmtplib), and the MIME builder the outbox reuses.

The message is multipart/alternative: plain text + HTML rendered from templates/invitation.*.j2, both
UTF-8 and quoted-printable (7-bit safe on any relay, so å/ä/ö/æ/ø survive). Message-ID carries the
invitation id and is the provider id; it is built once per send, so retries resend the same message.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.headerregistry import Address
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Callable

import aiosmtplib

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
    """Sends invitations through an SMTP server (submission with optional STARTTLS/TLS and AUTH)."""

    name = "email"
    transport = "smtp"

    def __init__(self, *, host: str = "localhost", port: int = 25, username: str | None = None,
                 password: str | None = None, starttls: bool | None = None, use_tls: bool = False,
                 validate_certs: bool = True, timeout: float = 30.0, sender_email: str | None = None,
                 sender_name: str | None = None, list_unsubscribe: str | None = None,
                 costs: ChannelCosts | None = None, retry: RetryPolicy | None = None,
                 clock: Callable[[], datetime] | None = None):
        self.host, self.port = host, int(port)
        self.username, self.password = username, password
        self.starttls, self.use_tls, self.validate_certs = starttls, use_tls, validate_certs
        self.timeout = float(timeout)
        self.sender_email, self.sender_name, self.list_unsubscribe = sender_email, sender_name, list_unsubscribe
        self.costs = costs or ChannelCosts()
        self.retry = retry or RetryPolicy()
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def build(self, inv: Invitation) -> EmailMessage:
        return build_message(inv, sender_email=self.sender_email, sender_name=self.sender_name,
                             list_unsubscribe=self.list_unsubscribe, now=self.clock())

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
        return SendResult.sent(attempts=outcome.attempts, provider_id=msg["Message-ID"],
                               cost=money(self.costs.email), currency=self.costs.currency)

    async def _attempt(self, msg: EmailMessage) -> None:
        """One delivery: connect (+ STARTTLS/TLS, AUTH), MAIL, RCPT, DATA. A failure up to RCPT is safe to retry
        (nothing was handed over); a timeout or dropped connection during DATA is not — the server may have
        accepted the message — and ends as ``delivery_uncertain`` without another attempt."""
        sender = msg["From"].addresses[0].addr_spec
        recipients = [a.addr_spec for a in msg["To"].addresses]
        utf8 = not all(a.isascii() for a in (sender, *recipients))
        smtp = aiosmtplib.SMTP(hostname=self.host, port=self.port, username=self.username, password=self.password,
                               start_tls=self.starttls if not self.use_tls else False, use_tls=self.use_tls,
                               validate_certs=self.validate_certs, timeout=self.timeout)
        in_data = False
        try:
            await smtp.connect()
            await smtp.mail(sender, options=["SMTPUTF8"] if utf8 else None, encoding="utf-8" if utf8 else "ascii")
            for recipient in recipients:
                await smtp.rcpt(recipient, encoding="utf-8" if utf8 else "ascii")
            in_data = True
            await smtp.data(message_bytes(msg))
        except aiosmtplib.SMTPRecipientRefused as e:
            raise _response_failure(e.code, e.message, "smtp_rejected_recipient") from None
        except aiosmtplib.SMTPSenderRefused as e:
            raise _response_failure(e.code, e.message, "smtp_rejected_sender") from None
        except aiosmtplib.SMTPAuthenticationError as e:
            raise _response_failure(e.code, e.message, "smtp_auth_failed") from None
        except aiosmtplib.SMTPDataError as e:
            raise _response_failure(e.code, e.message, "smtp_rejected_message") from None
        except aiosmtplib.SMTPConnectResponseError as e:  # e.g. 421 busy (retry) or 554 no service
            raise _response_failure(e.code, e.message, "smtp_refused_connection") from None
        except aiosmtplib.SMTPConnectError as e:  # refused, unresolvable, connect timeout
            raise TransientFailure("smtp_unreachable", detail=type(e).__name__) from None
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected) as e:
            if in_data:
                raise UncertainFailure(f"smtp {type(e).__name__} during DATA") from None
            raise TransientFailure("smtp_timeout" if isinstance(e, aiosmtplib.SMTPTimeoutError)
                                   else "smtp_disconnected") from None
        except aiosmtplib.SMTPNotSupported as e:  # e.g. STARTTLS/AUTH demanded but not offered
            raise PermanentFailure("smtp_not_supported", detail=str(e)[:120]) from None
        except aiosmtplib.SMTPResponseException as e:  # HELO/EHLO and other replies
            raise _response_failure(e.code, e.message, "smtp_rejected") from None
        except aiosmtplib.SMTPException as e:
            if in_data:
                raise UncertainFailure(f"smtp {type(e).__name__} during DATA") from None
            raise TransientFailure("smtp_error", detail=type(e).__name__) from None
        except OSError as e:  # TLS handshake and socket errors not wrapped by aiosmtplib
            if in_data:
                raise UncertainFailure(f"smtp {type(e).__name__} during DATA") from None
            raise TransientFailure("smtp_unreachable", detail=type(e).__name__) from None
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()
