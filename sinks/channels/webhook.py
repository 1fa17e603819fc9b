"""Signed webhooks to the people who act on answers (case owners, alert receivers): at least once, never unsigned.

Every call is a ``POST`` of a JSON body (UTF-8, keys sorted, no spaces: the same bytes on every retry) with

* ``X-Npsflow-Signature: sha256=<hex HMAC-SHA256 of the body with the shared secret>`` — the receiver recomputes
  it over the raw body (``verify``) and refuses anything else;
* ``Idempotency-Key: <key>`` — the same for every retry of one notification (e.g. case id + event + version), so
  the receiver can drop repeats: delivery is at least once;
* ``X-Npsflow-Event: <event>`` (``case.opened``, ``alert.opened`` …) and ``User-Agent: npsflow-webhook``.

Retries (sinks.channels.retry: backoff with jitter, Retry-After honoured) on connection errors, timeouts,
HTTP 5xx/429/408 — unlike an SMS or an e-mail a webhook with an idempotency key may be repeated, so a timeout
after the receiver may have taken it is retried too. Other 4xx are permanent (a wrong URL or secret does not
heal by retrying). ``deliver`` never raises for a delivery problem: it returns the retry helper's Outcome.
The secret is bytes from configuration (an environment variable or a file), never a command-line argument.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import aiohttp

from sinks.channels.retry import (TRANSIENT, Outcome, PermanentFailure, RetryPolicy, TransientFailure,
                                  call_with_retry, classify_http_status, parse_retry_after)

SIGNATURE_HEADER = "X-Npsflow-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Npsflow-Event"
MIN_SECRET_BYTES = 16


def body_of(payload: Any) -> bytes:
    """The bytes sent (and signed): canonical JSON, so a retry sends exactly the same body."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def signature(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: bytes) -> bool:
    """For receivers (and the tests): is ``header`` the signature of exactly these ``body`` bytes?"""
    return header is not None and hmac.compare_digest(header.encode("ascii", "replace"),
                                                      signature(body, secret).encode("ascii"))


class WebhookSender:
    """POSTs signed JSON to one URL. ``session``: an aiohttp session owned by the caller (one per call if None)."""

    def __init__(self, url: str, secret: bytes, *, timeout: float = 10.0, retry: RetryPolicy | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError("webhook url must be http(s)://…")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"webhook secret must be at least {MIN_SECRET_BYTES} bytes")
        self.url, self.secret, self.timeout = url, secret, float(timeout)
        self.retry = retry or RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=60.0)
        self._session = session

    def headers(self, body: bytes, event: str, idempotency_key: str) -> dict[str, str]:
        return {"Content-Type": "application/json; charset=utf-8", SIGNATURE_HEADER: signature(body, self.secret),
                IDEMPOTENCY_HEADER: idempotency_key, EVENT_HEADER: event, "User-Agent": "npsflow-webhook"}

    async def deliver(self, event: str, payload: Any, idempotency_key: str) -> Outcome[int]:
        """Send one notification (retried per the policy); the Outcome's value is the receiver's HTTP status."""
        body = body_of(payload)
        headers = self.headers(body, event, idempotency_key)
        if self._session is not None:
            return await call_with_retry(lambda: self._attempt(self._session, body, headers), self.retry,
                                         what="webhook")
        try:
            async with aiohttp.ClientSession() as session:
                return await call_with_retry(lambda: self._attempt(session, body, headers), self.retry,
                                             what="webhook")
        except Exception as exc:  # session setup/teardown trouble must not escape into the agent
            return Outcome(None, 1, "channel_error", type(exc).__name__, TRANSIENT)

    async def _attempt(self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]) -> int:
        try:
            async with session.post(self.url, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                await resp.read()
                status, retry_after = resp.status, parse_retry_after(resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:  # it may have arrived: the idempotency key makes a repeat harmless
            raise TransientFailure("webhook_timeout") from None
        except aiohttp.ClientError as exc:
            raise TransientFailure("webhook_unreachable", detail=type(exc).__name__) from None
        kind = classify_http_status(status)
        if kind is None:
            return status
        if kind == TRANSIENT:
            raise TransientFailure("webhook_retryable_status", retry_after=retry_after, detail=f"HTTP {status}")
        raise PermanentFailure("webhook_refused", detail=f"HTTP {status}")
