"""Request guards of the survey page and the response API: rate limits, CSRF tokens, API keys. Pure.

* ``RateLimiter``: a token bucket per key (client IP, invitation id, API key) — ``rate`` requests per second
  sustained, ``burst`` at once. The clock is injectable; at most ``max_keys`` buckets are kept (the least
  recently used are dropped: a dropped key starts again with a full bucket, which only ever errs towards
  letting a request through).
* CSRF: ``csrf_token(secret, invitation_id, now)`` → ``<issued epoch s>.<HMAC>``, bound to the invitation and
  valid ``CSRF_TTL``; the survey form carries it, a POST without a valid one writes nothing. (The signed link
  itself is the capability; the CSRF token keeps another site from submitting a form in a respondent's name.)
* Receipts: ``receipt_token(secret, invitation_id, Receipt(score, at_ms, done))`` → ``<score>.<at ms>.<0|1>.<HMAC>``;
  the thank-you page's URL carries one (POST → redirect → GET): which score was recorded and when, bound to the
  invitation, so the page can say it and its follow-up form can name the answer it completes. ``read_receipt``
  gives it back, or None for anything forged or malformed. (A receipt does not expire: the page it opens only
  says what was recorded; the signed link decides whether anything may still be written.)
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


def _mac(secret: bytes, *parts: str, label: str = "npsflow/csrf") -> str:
    message = b"\x00".join(p.encode() for p in (label, *parts))
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


@dataclass(frozen=True)
class Receipt:
    """What the survey page recorded: ``score``, written at ``at_ms`` (the answer's responded_at), and whether the
    respondent is ``done`` (the follow-up answered or skipped)."""

    score: int
    at_ms: int
    done: bool = False


def receipt_token(secret: bytes, invitation_id: str, receipt: Receipt) -> str:
    body = f"{receipt.score}.{receipt.at_ms}.{int(receipt.done)}"
    return f"{body}.{_mac(secret, invitation_id, body, label='npsflow/receipt')}"


def read_receipt(secret: bytes, invitation_id: str, token: object) -> Receipt | None:
    """The receipt ``token`` carries for ``invitation_id``, or None (forged, for another invitation, malformed)."""
    if not isinstance(token, str) or len(token) > 80 or token.count(".") != 3:
        return None
    score, at_ms, done, mac = token.split(".")
    if not all(part.isascii() and part.isdigit() for part in (score, at_ms, done)):
        return None
    expected = _mac(secret, invitation_id, f"{score}.{at_ms}.{done}", label="npsflow/receipt")
    if not hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), expected.encode()):
        return None
    if not (0 <= int(score) <= 10 and done in ("0", "1")):
        return None
    return Receipt(int(score), int(at_ms), done == "1")
