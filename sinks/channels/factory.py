"""`build_channels`: the configured channels by delivery medium (outbox by default).

Config (all keys optional)::

    {"email": {"transport": "outbox"}                      # default
              | {"transport": "smtp", "host": "smtp.example.com", "port": 587, "username": "…",
                 "password": "…", "starttls": true, "use_tls": false, "validate_certs": true,
                 "timeout": 30, "sender_email": "nps@example.com", "sender_name": "…",
                 "list_unsubscribe": "https://example.com/u/{invitation_id}",
                 "sessions": 8}                            # SMTP sessions kept open and reused (0: one per mail)
              | false,                                     # disabled
     "sms":   {"transport": "outbox", "sender": "Acme"}    # default
              | {"transport": "gateway", "base_url": "https://api.twilio.com", "account_sid": "AC…",
                 "auth_token": "…", "sender": "Acme", "timeout": 15}
              | false,
     "newsletter": true | {} | false,                      # off unless configured
     "costs": {"email": 0.001, "sms": 0.15, "newsletter": 0.0, "currency": "EUR"},
     "retry": {"max_attempts": 4, "base_delay": 0.5, "max_delay": 30, "jitter": 0.5, "max_retry_after": 300}}

A configuration error raises ValueError here, at startup — never later inside `send`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from sinks.channels.base import Channel, ChannelCosts
from sinks.channels.email import EmailChannel
from sinks.channels.newsletter import NewsletterChannel
from sinks.channels.outbox import OutboxChannel
from sinks.channels.retry import RetryPolicy
from sinks.channels.sms import SmsChannel

_EMAIL_SMTP_KEYS = ("host", "port", "username", "password", "starttls", "use_tls", "validate_certs", "timeout",
                    "sender_email", "sender_name", "list_unsubscribe", "sessions")
_SMS_GATEWAY_KEYS = ("base_url", "account_sid", "auth_token", "sender", "timeout")


def _section(config: Mapping[str, Any], key: str, default: Any) -> dict | None:
    value = config.get(key, default)
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"channels.{key} must be a mapping, true or false")
    return dict(value)


def _only(section: dict, allowed: tuple[str, ...], where: str) -> dict:
    unknown = sorted(set(section) - set(allowed) - {"transport"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return {k: v for k, v in section.items() if k in allowed and v is not None}


def build_channels(config: Mapping[str, Any] | None, home: Path, *,
                   retry: RetryPolicy | None = None) -> dict[str, Channel]:
    """Channels keyed by medium ("email", "sms", "newsletter"); each channel's `name` is that key."""
    config = dict(config or {})
    unknown = sorted(set(config) - {"email", "sms", "newsletter", "costs", "retry"})
    if unknown:
        raise ValueError(f"channels: unknown key(s) {', '.join(unknown)}")
    costs = ChannelCosts.from_config(config.get("costs"))
    retry = retry or RetryPolicy.from_config(config.get("retry"))
    home = Path(home)
    channels: dict[str, Channel] = {}

    email = _section(config, "email", {"transport": "outbox"})
    if email is not None:
        transport = email.get("transport", "outbox")
        if transport == "outbox":
            opts = _only(email, ("sender_email", "sender_name", "list_unsubscribe"), "channels.email (outbox)")
            channels["email"] = OutboxChannel(home, "email", costs=costs, **opts)
        elif transport == "smtp":
            opts = _only(email, _EMAIL_SMTP_KEYS, "channels.email (smtp)")
            channels["email"] = EmailChannel(costs=costs, retry=retry, **opts)
        else:
            raise ValueError(f"channels.email.transport must be outbox or smtp, not {transport!r}")

    sms = _section(config, "sms", {"transport": "outbox"})
    if sms is not None:
        transport = sms.get("transport", "outbox")
        if transport == "outbox":
            opts = _only(sms, ("sender",), "channels.sms (outbox)")
            channels["sms"] = OutboxChannel(home, "sms", costs=costs, sms_sender=opts.get("sender"))
        elif transport == "gateway":
            opts = _only(sms, _SMS_GATEWAY_KEYS, "channels.sms (gateway)")
            missing = [k for k in ("base_url", "account_sid", "auth_token") if not opts.get(k)]
            if missing:
                raise ValueError(f"channels.sms (gateway) needs {', '.join(missing)}")
            channels["sms"] = SmsChannel(costs=costs, retry=retry, **opts)
        else:
            raise ValueError(f"channels.sms.transport must be outbox or gateway, not {transport!r}")

    newsletter = _section(config, "newsletter", False)
    if newsletter is not None:
        _only(newsletter, (), "channels.newsletter")
        channels["newsletter"] = NewsletterChannel(home, costs=costs)
    return channels


