"""Signed, expiring survey links bound to one invitation. Pure (the clock is a parameter).

A token is ``base64url(payload) "." base64url(HMAC-SHA256(key, base64url(payload)))`` (no padding), where the
payload is compact JSON ``{"i": invitation_id, "e": expiry (epoch seconds), "k": key_id}`` plus ``"s": score``
for one-click links (a score button in the e-mail). It carries no personal data: the invitation id is the only
reference, and ids that look like an e-mail address or a phone number are refused when signing.

Decisions worth knowing:

* **What is MACed** is the encoded payload exactly as it stands in the token (as in JWS), so verification
  never re-serializes JSON. Both parts must be canonical unpadded base64url: a token has exactly one spelling.
* **Order of checks** in ``verify_token``: the structure (``malformed``), then the key id, read from the
  still-unverified payload (``unknown_key``), then the MAC, compared with ``hmac.compare_digest``
  (``bad_signature``), then the claims' types (``malformed``), then the expiry (``expired``). Nothing of the
  payload is trusted before the MAC is checked, except the key id used to find the key.
* **Expiry** is ``now >= e``: a token is expired at exactly its expiry second. ``expires_at`` is rounded down
  to whole seconds (never extends a link).
* **Key rotation**: every token names its key id; ``verify_token`` takes all keys still accepted
  (``{"k2": new, "k1": old}``), sign with the newest. Dropping a key id from the dict revokes its tokens.
* **Anything** that is not a well-formed token gives ``InvalidToken`` (never KeyError, ValueError, …).
  Tokens longer than ``MAX_TOKEN_CHARS`` are ``malformed`` without being decoded.
* **One-click links** (``one_click_urls``): the 11 URLs of a 0–10 scale, one token each. Mail scanners fetch
  links, so the survey page must not record a score on GET alone (show it preselected and confirm).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from streams.triggers import E164

__all__ = [
    "BAD_SIGNATURE", "EXPIRED", "MALFORMED", "UNKNOWN_KEY", "REASONS", "MAX_TOKEN_CHARS",
    "InvalidToken", "TokenClaims", "one_click_urls", "sign_token", "survey_url", "verify_token",
]

MALFORMED = "malformed"
BAD_SIGNATURE = "bad_signature"
UNKNOWN_KEY = "unknown_key"
EXPIRED = "expired"
REASONS = frozenset({MALFORMED, BAD_SIGNATURE, UNKNOWN_KEY, EXPIRED})

MAX_TOKEN_CHARS = 1024
MAX_ID_CHARS = 200
MIN_KEY_BYTES = 16
SCORES = range(0, 11)
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$", re.ASCII)
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$", re.ASCII)
_PHONE = re.compile(r"^\+?[\d\s().-]{7,}$")
UTC = timezone.utc


class InvalidToken(Exception):
    """The token cannot be used; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TokenClaims:
    invitation_id: str
    expires_at: datetime  # UTC, whole seconds
    key_id: str
    score: int | None = None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict, canonical, unpadded base64url; ValueError otherwise."""
    if not text or not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:  # unused trailing bits set: another spelling of the same bytes
        raise ValueError("not canonical base64url")
    return data


def _mac(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value


def _valid_score(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in SCORES


def _check_invitation_id(invitation_id: object) -> str:
    if not isinstance(invitation_id, str) or not invitation_id.strip() or len(invitation_id) > MAX_ID_CHARS:
        raise ValueError(f"invitation_id must be a non-empty string of at most {MAX_ID_CHARS} characters")
    if "@" in invitation_id or E164.match(invitation_id) or (
            invitation_id.startswith("+") and _PHONE.match(invitation_id)):
        raise ValueError("invitation_id looks like an e-mail address or a phone number: links must not carry "
                         "personal data")
    return invitation_id


def sign_token(invitation_id: str, expires_at: datetime, key: bytes, key_id: str = "k1",
               score: int | None = None) -> str:
    """A compact URL-safe token for ``invitation_id`` that expires at ``expires_at`` (aware datetime)."""
    _check_invitation_id(invitation_id)
    _aware(expires_at, "expires_at")
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes (32 random bytes recommended)")
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ValueError(f"key_id must be 1–32 letters, digits or _ . -, got {key_id!r}")
    if score is not None and not _valid_score(score):
        raise ValueError(f"score must be an integer 0–10 or None, got {score!r}")
    payload: dict[str, object] = {"i": invitation_id, "e": math.floor(expires_at.timestamp()), "k": key_id}
    if score is not None:
        payload["s"] = score
    encoded = _b64encode(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return f"{encoded}.{_b64encode(_mac(bytes(key), encoded))}"


def verify_token(token: str, keys: dict[str, bytes], now: datetime) -> TokenClaims:
    """The claims of a valid, unexpired token signed with one of ``keys`` (key id → key); else
    ``InvalidToken`` with reason ``malformed``, ``unknown_key``, ``bad_signature`` or ``expired``."""
    _aware(now, "now")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise InvalidToken(MALFORMED)
    encoded, signature_text = token.split(".")
    try:
        payload_bytes = _b64decode(encoded)
        signature = _b64decode(signature_text)
        payload = json.loads(payload_bytes.decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidToken(MALFORMED) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("k"), str):
        raise InvalidToken(MALFORMED)
    key = keys.get(payload["k"]) if isinstance(keys, dict) else None
    if key is None:
        raise InvalidToken(UNKNOWN_KEY)
    if not hmac.compare_digest(signature, _mac(bytes(key), encoded)):
        raise InvalidToken(BAD_SIGNATURE)
    invitation_id, expiry, score = payload.get("i"), payload.get("e"), payload.get("s")
    if set(payload) - {"i", "e", "k", "s"} or not isinstance(invitation_id, str) or not invitation_id \
            or isinstance(expiry, bool) or not isinstance(expiry, int) or ("s" in payload and not _valid_score(score)):
        raise InvalidToken(MALFORMED)
    if now.timestamp() >= expiry:
        raise InvalidToken(EXPIRED)
    try:
        expires_at = datetime.fromtimestamp(expiry, UTC)
    except (OverflowError, OSError, ValueError):  # far beyond year 9999: treat as malformed
        raise InvalidToken(MALFORMED) from None
    return TokenClaims(invitation_id=invitation_id, expires_at=expires_at, key_id=payload["k"], score=score)


def survey_url(base_url: str, token: str) -> str:
    """``https://nps.example.com/s`` + token → ``https://nps.example.com/s/<token>``; a base URL containing
    ``{token}`` (``https://x/answer?t={token}``) gets it substituted instead. Tokens need no escaping."""
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    if "{token}" in base_url:
        return base_url.replace("{token}", token)
    if parts.query or parts.fragment:
        raise ValueError("a base_url with a query or fragment must say where the token goes: {token}")
    return f"{base_url.rstrip('/')}/{token}"


def one_click_urls(base_url: str, invitation_id: str, expires_at: datetime, key: bytes,
                   key_id: str = "k1") -> list[str]:
    """The 11 one-click URLs of the 0–10 scale (index = score), each with its own signed token."""
    return [survey_url(base_url, sign_token(invitation_id, expires_at, key, key_id, score=s)) for s in SCORES]
