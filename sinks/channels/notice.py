"""E-mails to case owners and alert receivers (streams.notify_agent): the message and its transport.

The transport is NPSFLOW_CHANNELS' e-mail transport: over SMTP (the invitations' ``EmailChannel``, its sessions and
failure rules) or into the outbox (``$NPSFLOW_HOME/outbox/notifications/<id>.eml``, written atomically; a re-send
overwrites it). The message has a stable ``Message-ID`` per (notification, address), so a repeat is recognisable.
It carries only what the owner needs: case id, score, masked comment, segment, due time — or an alert's figures.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from sinks.channels.email import EmailChannel, WireMessage, message_bytes
from sinks.channels.outbox import outbox_dir, write_atomically
from sinks.channels.retry import PERMANENT, Outcome, RetryPolicy, call_with_retry

DEFAULT_SENDER = "npsflow@localhost"
_TITLES = {
    "case.opened": "New follow-up case", "case.answer_added": "Another answer on case",
    "case.assigned": "Case assigned to you", "case.resolved_by_edit": "Case resolved by the respondent's edit",
    "case.escalated": "Overdue case escalated", "alert.opened": "NPS alert", "alert.closed": "NPS alert recovered",
}


def _segment(segment: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((segment or {}).items())) or "-"


def _side(side: Mapping[str, Any] | None) -> str:
    if not side:
        return "-"
    lo, hi = side.get("ci95") or (None, None)
    return f"NPS {side.get('nps')} (n={side.get('responses')}, 95 % CI {lo}…{hi})"


def notice_text(note: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, plain-text body) of a notification."""
    data, event = note["data"], note["event"]
    title = _TITLES.get(event, event)
    if event.startswith("alert."):
        segment = _segment(data.get("segment"))
        subject = f"[npsflow] {title}: {data.get('kind')} in {segment}"
        lines = [f"{title} ({data.get('kind')}, {data.get('status')}) in {segment}",
                 f"Last period: {_side(data.get('current'))}", f"Baseline:    {_side(data.get('baseline'))}",
                 f"z = {data.get('z')}, p = {data.get('p_value')}", f"Opened at {data.get('opened_at')}"]
        if data.get("closed_at"):
            lines.append(f"Closed at {data.get('closed_at')}")
    else:
        subject = f"[npsflow] {title} {data.get('case_id')} (score {data.get('score')})"
        lines = [f"{title}: {data.get('case_id')}", f"Owner: {data.get('owner')}",
                 f"Score: {data.get('score')} ({data.get('category')})", f"Segment: {_segment(data.get('segment'))}",
                 f"Comment: {data.get('comment') or '-'}", f"Opened: {data.get('opened_at')}  Due: {data.get('due_at')}",
                 f"Status: {data.get('status')}" + (f" ({data['close_reason']})" if data.get("close_reason") else ""),
                 "", "Acknowledge with: npsflow cases ack " + str(data.get("case_id"))]
    return subject, "\n".join(lines) + "\n"


def notice_message(note: Mapping[str, Any], to: str, sender: str | None) -> EmailMessage:
    subject, body = notice_text(note)
    msg = EmailMessage()
    msg["From"] = sender or DEFAULT_SENDER
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    digest = hashlib.sha256(f"{note['id']}|{to}".encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<{digest}@npsflow.notifications>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body)
    return msg


class Mailer:
    """Sends notification e-mails over SMTP (``channel``) or writes them to the outbox (``home``)."""

    def __init__(self, *, channel: EmailChannel | None = None, home: Path | None = None,
                 retry: RetryPolicy | None = None) -> None:
        if (channel is None) == (home is None):
            raise ValueError("a Mailer sends over SMTP or into the outbox: give exactly one")
        self.channel, self.home = channel, home
        self.retry = retry or RetryPolicy(max_attempts=2, base_delay=0.5, max_delay=2.0)  # then parked

    async def send(self, msg: EmailMessage) -> Outcome:
        data = message_bytes(msg)
        message_id = msg["Message-ID"]
        if self.channel is None:
            path = outbox_dir(self.home) / "notifications" / f"{message_id.strip('<>').split('@')[0]}.eml"
            try:
                write_atomically(path, data)
            except OSError as exc:
                return Outcome(None, 1, "outbox_write_failed", exc.strerror, PERMANENT)
            return Outcome(str(path), 1)
        wire = WireMessage(data, message_id, msg["From"], (msg["To"],))
        return await call_with_retry(lambda: self.channel._attempt(wire), self.retry, what="notification e-mail")


def mailer_from_channels(config: Mapping[str, Any] | None, home: Path) -> Mailer | None:
    """The Mailer of NPSFLOW_CHANNELS' ``email`` section (None when e-mail is turned off)."""
    from sinks.channels.factory import build_channels

    channels = build_channels({"email": (config or {}).get("email", {"transport": "outbox"}),
                               "sms": False, "newsletter": False}, home)
    channel = channels.get("email")
    if channel is None:
        return None
    return Mailer(channel=channel) if isinstance(channel, EmailChannel) else Mailer(home=home)
