"""Request guards of the survey page and the response API: rate limits, CSRF tokens, API keys. Pure.

* ``RateLimiter``: a token bucket per key (client IP, invitation id, API key) — ``rate`` requests per second
  sustained, ``burst`` at once. The clock is injectable; at most ``max_keys`` buckets are kept (the least
  recently used are dropped: a dropped key starts again with a full bucket, which only ever errs towards
  letting a request through).
* CSRF: ``csrf_token(secret, invitation_id, now)`` → ``<issued epoch s>.<HMAC>``, bound to the invitation and
  valid ``CSRF_TTL``; the survey form carries it, a POST without a valid one writes nothing. (The signed link
  itself is the capability; the CSRF token keeps another site from submitting a form in a respondent's name.)
* API keys: ``new_api_key()`` → ``(key, "sha256:<hex>")``; only the hash is configured (programs file,
  ``api_keys`` per organization) and ``api_key_matches`` compares in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

CSRF_TTL = timedelta(hours=2)


@dataclass
class RateLimiter:
    rate: float  # tokens added per second
    burst: float  # bucket size
    max_keys: int = 100_000
    _buckets: OrderedDict = field(default_factory=OrderedDict)

    def allow(self, key: str, now: float) -> bool:
        """Take one token for ``key`` at time ``now`` (seconds, monotonic); False when the bucket is empty."""
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token again (0 when it has one)."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


def _mac(secret: bytes, *parts: str) -> str:
    message = b"\x00".join(p.encode() for p in ("npsflow/csrf", *parts))
    return base64.urlsafe_b64encode(hmac.new(secret, message, hashlib.sha256).digest()[:18]).decode().rstrip("=")


def csrf_token(secret: bytes, invitation_id: str, now: datetime) -> str:
    issued = str(int(now.timestamp()))
    return f"{issued}.{_mac(secret, invitation_id, issued)}"


def csrf_valid(secret: bytes, invitation_id: str, token: object, now: datetime, ttl: timedelta = CSRF_TTL) -> bool:
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 64:
        return False
    issued, mac = token.split(".")
    # ASCII digits only (str.isdigit() takes "²", which int() refuses), and the MACs compared as bytes
    # (hmac.compare_digest raises TypeError on a str with non-ASCII characters: a posted form may have any)
    if not (issued.isascii() and issued.isdigit()) or not hmac.compare_digest(
            mac.encode("utf-8", "surrogatepass"), _mac(secret, invitation_id, issued).encode()):
        return False
    age = now.timestamp() - int(issued)
    return -60 <= age <= ttl.total_seconds()  # a minute of clock skew between workers


def new_api_key() -> tuple[str, str]:
    """A new API key and the line to configure for it (``sha256:<hex>``): the key is shown once, never stored."""
    key = "npk_" + secrets.token_urlsafe(32)
    return key, api_key_hash(key)


def api_key_hash(key: str) -> str:
    # surrogateescape: aiohttp reads header bytes that are not UTF-8 as lone surrogates; they hash, match nothing
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def api_key_matches(key: str, configured: tuple[str, ...] | list[str]) -> bool:
    candidate = api_key_hash(key)
    found = False
    for entry in configured:  # every entry compared: no early exit that would time the position
        found |= hmac.compare_digest(candidate, entry)
    return found
