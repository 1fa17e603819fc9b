"""Invitation channels behind one interface: `await channel.send(invitation) -> SendResult`.

* `EmailChannel` (SMTP), `SmsChannel` (Twilio-style HTTP gateway), `NewsletterChannel` (HTML embed),
  `OutboxChannel` (files under $NPSFLOW_HOME/outbox — the demo's default).
* `build_channels(config, home)` builds the configured ones, keyed by medium.
* Retries with backoff + jitter live in `retry.py`; a failure comes back as ``status="failed"`` with a
  reason, it is never raised into the agent.
"""

from sinks.channels.base import (FAILED, SENT, Channel, ChannelCosts, Invitation, SendResult,
                                 invitation_problem)
from sinks.channels.email import EmailChannel, build_message
from sinks.channels.factory import build_channels
from sinks.channels.newsletter import NewsletterChannel, render_embed
from sinks.channels.outbox import OutboxChannel
from sinks.channels.retry import PermanentFailure, RetryPolicy, TransientFailure, call_with_retry
from sinks.channels.sms import SmsChannel, sms_body, sms_encoding, sms_segments

__all__ = [
    "FAILED", "SENT", "Channel", "ChannelCosts", "EmailChannel", "Invitation", "NewsletterChannel",
    "OutboxChannel", "PermanentFailure", "RetryPolicy", "SendResult", "SmsChannel", "TransientFailure",
    "build_channels", "build_message", "call_with_retry", "invitation_problem", "render_embed",
    "sms_body", "sms_encoding", "sms_segments",
]
