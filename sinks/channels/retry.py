"""Retries with exponential backoff and jitter, shared by the channels.

A channel's single attempt raises `TransientFailure` (worth retrying: SMTP 4xx, connection errors, HTTP
5xx/429/timeouts) or `PermanentFailure` (retrying cannot help: SMTP 5xx, HTTP 4xx). `call_with_retry`
turns that into an `Outcome`; it never raises for a delivery problem, and an unexpected exception from
an attempt becomes a permanent ``channel_error`` (logged) instead of escaping into the agent.
The sleep function and the random source are injectable, so tests never wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Generic, Mapping, TypeVar

log = logging.getLogger("npsflow.channels")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[Any]]

TRANSIENT = "transient"
PERMANENT = "permanent"
UNCERTAIN = "uncertain"
DELIVERY_UNCERTAIN = "delivery_uncertain"


class TransientFailure(Exception):
    """This attempt failed; another one may succeed (optionally not before `retry_after` seconds)."""

    def __init__(self, reason: str, *, retry_after: float | None = None, detail: str | None = None):
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.retry_after = retry_after
        self.detail = detail


class UncertainFailure(Exception):
    """The attempt broke off after the message may already have been accepted (a timeout or a dropped
    connection while the server had it): another attempt could deliver it twice, so there is none."""

    def __init__(self, detail: str):
        super().__init__(f"{DELIVERY_UNCERTAIN}: {detail}")
        self.reason = DELIVERY_UNCERTAIN
        self.detail = detail


class PermanentFailure(Exception):
    """This delivery cannot succeed by retrying."""

    def __init__(self, reason: str, *, detail: str | None = None):
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` attempts; after failed attempt n wait base·2^(n-1) (≤ max_delay), of
    which the `jitter` fraction is random. A server's Retry-After replaces the backoff when it is at
    most `max_retry_after` seconds; a longer one ends the retries (the caller may reschedule)."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 300.0
    sleep: Sleep = asyncio.sleep
    random: Callable[[], float] = random.random

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within 0..1")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, **overrides: Any) -> "RetryPolicy":
        config = dict(config or {})
        kwargs: dict[str, Any] = {}
        if config.get("max_attempts") is not None:
            kwargs["max_attempts"] = int(config["max_attempts"])
        for key in ("base_delay", "max_delay", "jitter", "max_retry_after"):
            if config.get(key) is not None:
                kwargs[key] = float(config[key])
        kwargs.update(overrides)
        return cls(**kwargs)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        full = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return full * (1.0 - self.jitter) + full * self.jitter * self.random()

    def delay_after(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None when no further attempt should be made."""
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            return max(0.0, retry_after)
        return self.backoff(attempt)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    value: T | None
    attempts: int
    reason: str | None = None  # set when it failed
    detail: str | None = None
    kind: str | None = None  # TRANSIENT (retries exhausted) or PERMANENT, when it failed

    @property
    def ok(self) -> bool:
        return self.reason is None


async def call_with_retry(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, *,
                          what: str = "send") -> Outcome[T]:
    """Run `attempt` until it returns, fails permanently, or the policy gives up."""
    n = 0
    while True:
        n += 1
        try:
            return Outcome(await attempt(), n)
        except PermanentFailure as e:
            log.info("%s failed permanently on attempt %d: %s", what, n, e)
            return Outcome(None, n, e.reason, e.detail, PERMANENT)
        except UncertainFailure as e:
            log.warning("%s broke off on attempt %d after the server may have accepted it: %s", what, n, e)
            return Outcome(None, n, e.reason, e.detail, UNCERTAIN)
        except TransientFailure as e:
            delay = policy.delay_after(n, e.retry_after)
            if delay is None:
                log.info("%s failed on attempt %d, giving up: %s", what, n, e)
                return Outcome(None, n, e.reason, e.detail, TRANSIENT)
            log.info("%s failed on attempt %d, retrying in %.2f s: %s", what, n, delay, e)
            await policy.sleep(delay)
        except Exception as e:  # a bug or an unforeseen library error: report, never raise into the agent
            log.exception("%s raised unexpectedly on attempt %d", what, n)
            return Outcome(None, n, "channel_error", type(e).__name__, PERMANENT)


def classify_smtp_code(code: int) -> str:
    """SMTP reply codes: 5xx is permanent, everything else that is not success is worth a retry."""
    return PERMANENT if 500 <= code <= 599 else TRANSIENT


def classify_http_status(status: int) -> str | None:
    """None for success; 5xx, 429 and 408 are transient; other 4xx (and odd statuses) permanent."""
    if 200 <= status <= 299:
        return None
    if status >= 500 or status in (408, 429):
        return TRANSIENT
    return PERMANENT


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date; None when absent or unparseable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())
