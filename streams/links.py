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

**Short form** (``sign_short_token``, ``short_survey_url``), for SMS: a whole SMS is one 160-character segment
and the shipped SMS texts leave about 60 characters for the link (``programs.TYPICAL_LINK_LENGTH``), so
``https://nps.example.se/s/<token>`` needs a token of at most 34 characters. A readable
``<id>~<expiry>~<key id>~<MAC>`` cannot fit: a 20-character id plus a 64-bit MAC (11 base64url characters)
already take 31. So a short token packs its fields as bits. It is the base64url digits (alphabet
``A–Z a–z 0–9 - _``, 6 bits each, most significant first, no leading ``A`` = no leading zero digit) of the bits ::

    1 | id (5 bits per character, 1–32 characters) | key number (7) | expiry (32) | MAC (64)

* The leading ``1`` bit marks where the id begins, so the id length needs no field: the bits after it number
  103 + 5 × (id length). With the project's ids (``[a-z2-7]{20}``) that is 204 bits = **34 characters** exactly,
  whatever the expiry; ``https://nps.example.se/s/`` + token = 59 characters.
* **Id**: 1–32 characters of the lowercase RFC 4648 base32 alphabet ``a–z 2–7`` (the alphabet of the project's
  invitation ids), 5 bits each (``a`` = 0 … ``7`` = 31); anything else is refused when signing (ValueError).
  The alphabet has no ``@`` or ``+``: a short token can't carry an e-mail address or a phone number either,
  and like the long form it carries no personal data, only the random invitation id.
* **Key id** ``k0`` … ``k127`` (the key number; ``k01`` is refused), **expiry** unsigned epoch seconds
  (1970 … 2106-02-07), rounded down as for the long form; **no score** (one-click scores are for e-mail only).
* **MAC**: the first 8 bytes (64 bits) of HMAC-SHA256(key, ``"npsflow-short-v1~<id>~<expiry decimal>~<key id>"``).
  It covers id, expiry and key id. Domain separation: the long-form MAC input is base64url text, which never
  contains ``~``; the short-form input always does, so no message is MACed in both forms, and a MAC (or its
  first 8 bytes) taken from one form never verifies in the other.
* **Canonical**: every bit string has exactly one spelling (no padding, no leading ``A``, case is significant as
  in all base64url; the bit length must fit a whole id). Any other text is ``malformed``, and so is a short
  token longer than ``MAX_SHORT_TOKEN_CHARS`` (44), without being decoded.
* **Telling the forms apart**: a long token has exactly one ``.``, a short one has none (``.`` is not a base64url
  character); ``verify_token`` accepts both, with the same reasons and the same order of checks, and gives
  ``score=None`` for short tokens. The short form uses no separator at all: ``~`` would also cost two GSM-7
  septets in an SMS.
* **Why 64 bits are enough**: the key is secret, so a MAC can only be guessed online, one request per guess,
  and each guess succeeds with probability 2^-64 (a forger also has to know a real invitation id, itself
  100 random bits). The survey server must rate-limit token checks per IP and per invitation id (not per token
  string: every guess is a different string); even at an impossible billion guesses a second, 2^64 guesses take
  about 585 years. A forged link would only let someone answer one survey.
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

import orjson

from streams.triggers import E164

__all__ = [
    "BAD_SIGNATURE", "EXPIRED", "MALFORMED", "UNKNOWN_KEY", "REASONS", "MAX_TOKEN_CHARS",
    "MAX_SHORT_TOKEN_CHARS", "SHORT_ID_ALPHABET", "SHORT_KEY_NUMBERS",
    "InvalidToken", "TokenClaims", "TokenSigner", "one_click_urls", "short_survey_url", "sign_short_token", "sign_token",
    "survey_url", "verify_token",
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

# Short form: see the module docstring.
SHORT_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lowercase: 5 bits a character
SHORT_KEY_NUMBERS = range(0, 128)  # key ids k0 … k127
_SHORT_ID = re.compile(r"[a-z2-7]{1,32}", re.ASCII)
_SHORT_KEY_ID = re.compile(r"k(0|[1-9][0-9]{0,2})", re.ASCII)
_SHORT_DOMAIN = "npsflow-short-v1"
_ID_CHAR_BITS, _KEY_BITS, _EXPIRY_BITS, _SHORT_MAC_BYTES = 5, 7, 32, 8
_FIXED_BITS = _KEY_BITS + _EXPIRY_BITS + 8 * _SHORT_MAC_BYTES  # 103
_MAX_SHORT_ID_CHARS = 32
MAX_SHORT_TOKEN_CHARS = -(-(1 + _ID_CHAR_BITS * _MAX_SHORT_ID_CHARS + _FIXED_BITS) // 6)  # 44
_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # base64url, digit value = index
_DIGIT_VALUE = {c: i for i, c in enumerate(_DIGITS)}


class InvalidToken(Exception):
    """The token cannot be used; ``reason`` is one of ``REASONS``. An ``expired`` token's signature was valid, so
    its ``invitation_id`` is known (e.g. to show the "expired" page in the invitation's language); else None."""

    def __init__(self, reason: str, invitation_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.invitation_id = invitation_id


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


def _check_key(key: object) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes (32 random bytes recommended)")
    return bytes(key)


def sign_token(invitation_id: str, expires_at: datetime, key: bytes, key_id: str = "k1",
               score: int | None = None) -> str:
    """A compact URL-safe token for ``invitation_id`` that expires at ``expires_at`` (aware datetime)."""
    _check_invitation_id(invitation_id)
    _aware(expires_at, "expires_at")
    _check_key(key)
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ValueError(f"key_id must be 1–32 letters, digits or _ . -, got {key_id!r}")
    if score is not None and not _valid_score(score):
        raise ValueError(f"score must be an integer 0–10 or None, got {score!r}")
    payload: dict[str, object] = {"i": invitation_id, "e": math.floor(expires_at.timestamp()), "k": key_id}
    if score is not None:
        payload["s"] = score
    encoded = _b64encode(orjson.dumps(payload))  # the same bytes as json.dumps(…, separators=(",", ":"),
    # ensure_ascii=False) for these fields, 10× faster
    return f"{encoded}.{_b64encode(_mac(bytes(key), encoded))}"


class TokenSigner:
    """``sign_token`` and ``one_click_urls`` for one key, byte for byte the same tokens: the key and key id are
    checked and the key's HMAC state prepared once (``hmac.new(key).copy()`` per token), and the 11 one-click
    tokens of an invitation share one check of the id and expiry and one payload prefix (a worker signs 12
    tokens per e-mail invitation)."""

    def __init__(self, key: bytes, key_id: str = "k1") -> None:
        key = _check_key(key)
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise ValueError(f"key_id must be 1–32 letters, digits or _ . -, got {key_id!r}")
        self.key_id = key_id
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def _payload(self, invitation_id: str, expires_at: datetime) -> bytes:
        _check_invitation_id(invitation_id)
        _aware(expires_at, "expires_at")
        return orjson.dumps({"i": invitation_id, "e": math.floor(expires_at.timestamp()), "k": self.key_id})

    def _token(self, payload: bytes) -> str:
        encoded = _b64encode(payload)
        mac = self._keyed.copy()
        mac.update(encoded.encode("ascii"))
        return f"{encoded}.{_b64encode(mac.digest())}"

    def sign(self, invitation_id: str, expires_at: datetime, score: int | None = None) -> str:
        """``sign_token(invitation_id, expires_at, key, key_id, score)``."""
        payload = self._payload(invitation_id, expires_at)
        if score is None:
            return self._token(payload)
        if not _valid_score(score):
            raise ValueError(f"score must be an integer 0–10 or None, got {score!r}")
        return self._token(payload[:-1] + b',"s":%d}' % score)  # orjson's bytes with "s" last

    def one_click_urls(self, base_url: str, invitation_id: str, expires_at: datetime) -> list[str]:
        """``one_click_urls(base_url, invitation_id, expires_at, key, key_id)``. The 11 payloads differ only after
        their common head: its whole 3-byte groups are base64-encoded once (base64 encodes 3 bytes at a time) and
        fed to a copy of the keyed HMAC once; each token encodes and MACs only its own rest."""
        head = self._payload(invitation_id, expires_at)[:-1]
        cut = len(head) - len(head) % 3
        prefix = _b64encode(head[:cut])
        keyed = self._keyed.copy()
        keyed.update(prefix.encode("ascii"))
        tokens = []
        for score in SCORES:
            rest = _b64encode(head[cut:] + b',"s":%d}' % score)
            mac = keyed.copy()
            mac.update(rest.encode("ascii"))
            tokens.append(f"{prefix}{rest}.{_b64encode(mac.digest())}")
        return _score_urls(base_url, tokens)


def _short_mac(key: bytes, invitation_id: str, expiry: int, key_id: str) -> bytes:
    """The first 8 bytes of HMAC-SHA256 over the short form's own message (it always contains ``~``)."""
    return _mac(key, "~".join((_SHORT_DOMAIN, invitation_id, str(expiry), key_id)))[:_SHORT_MAC_BYTES]


def sign_short_token(invitation_id: str, expires_at: datetime, key: bytes, key_id: str = "k1") -> str:
    """A short token (34 characters for a 20-character id) for SMS links; no score. ``invitation_id`` must be
    1–32 characters ``a–z 2–7``, ``key_id`` one of ``k0`` … ``k127``, ``expires_at`` an aware datetime
    between 1970 and 2106-02-07 (rounded down to whole seconds); ValueError otherwise."""
    if not isinstance(invitation_id, str) or not _SHORT_ID.fullmatch(invitation_id):
        raise ValueError(f"a short token's invitation_id must be 1–{_MAX_SHORT_ID_CHARS} characters a–z 2–7, "
                         f"got {invitation_id!r}")
    expiry = math.floor(_aware(expires_at, "expires_at").timestamp())
    if not 0 <= expiry < 1 << _EXPIRY_BITS:
        raise ValueError(f"a short token's expires_at must lie between 1970 and 2106-02-07, got {expires_at!r}")
    key = _check_key(key)
    match = _SHORT_KEY_ID.fullmatch(key_id) if isinstance(key_id, str) else None
    if match is None or int(match[1]) not in SHORT_KEY_NUMBERS:
        raise ValueError(f"a short token's key_id must be k0 … k{SHORT_KEY_NUMBERS[-1]}, got {key_id!r}")
    value = 1  # the marker bit in front of the id
    for char in invitation_id:
        value = value << _ID_CHAR_BITS | SHORT_ID_ALPHABET.index(char)
    value = value << _KEY_BITS | int(match[1])
    value = value << _EXPIRY_BITS | expiry
    value = value << 8 * _SHORT_MAC_BYTES | int.from_bytes(_short_mac(key, invitation_id, expiry, key_id), "big")
    digits = []
    while value:
        value, digit = divmod(value, 64)
        digits.append(_DIGITS[digit])
    return "".join(reversed(digits))


def _verify_short_token(token: str, keys: dict[str, bytes], now: datetime) -> TokenClaims:
    if len(token) > MAX_SHORT_TOKEN_CHARS or token[0] == "A" or any(c not in _DIGIT_VALUE for c in token):
        raise InvalidToken(MALFORMED)  # too long, a leading zero digit (another spelling), not base64url
    value = 0
    for char in token:
        value = value << 6 | _DIGIT_VALUE[char]
    id_bits = value.bit_length() - 1 - _FIXED_BITS
    if id_bits <= 0 or id_bits % _ID_CHAR_BITS:
        raise InvalidToken(MALFORMED)  # the bits after the marker don't hold a whole id (≤ 32: length check)
    mac = (value & ((1 << 8 * _SHORT_MAC_BYTES) - 1)).to_bytes(_SHORT_MAC_BYTES, "big")
    value >>= 8 * _SHORT_MAC_BYTES
    expiry = value & ((1 << _EXPIRY_BITS) - 1)
    value >>= _EXPIRY_BITS
    key_id = f"k{value & ((1 << _KEY_BITS) - 1)}"
    value >>= _KEY_BITS
    chars = []
    for _ in range(id_bits // _ID_CHAR_BITS):
        value, index = divmod(value, 1 << _ID_CHAR_BITS)
        chars.append(SHORT_ID_ALPHABET[index])
    invitation_id = "".join(reversed(chars))
    key = keys.get(key_id) if isinstance(keys, dict) else None
    if key is None:
        raise InvalidToken(UNKNOWN_KEY)
    if not hmac.compare_digest(mac, _short_mac(bytes(key), invitation_id, expiry, key_id)):
        raise InvalidToken(BAD_SIGNATURE)
    if now.timestamp() >= expiry:  # every field decoded has a valid type and range: no claims check needed
        raise InvalidToken(EXPIRED, invitation_id)
    return TokenClaims(invitation_id=invitation_id, expires_at=datetime.fromtimestamp(expiry, UTC),
                       key_id=key_id, score=None)


def verify_token(token: str, keys: dict[str, bytes], now: datetime) -> TokenClaims:
    """The claims of a valid, unexpired token, long or short form, signed with one of ``keys`` (key id → key);
    else ``InvalidToken`` with reason ``malformed``, ``unknown_key``, ``bad_signature`` or ``expired``."""
    _aware(now, "now")
    if isinstance(token, str) and token and "." not in token:
        return _verify_short_token(token, keys, now)
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
        raise InvalidToken(EXPIRED, invitation_id)
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
    return _score_urls(base_url, [sign_token(invitation_id, expires_at, key, key_id, score=s) for s in SCORES])


def _score_urls(base_url: str, tokens: list[str]) -> list[str]:
    first = survey_url(base_url, tokens[0])  # the base URL checked once; the others differ only by their token
    at = first.index(tokens[0])
    return [first] + [first[:at] + token + first[at + len(tokens[0]):] for token in tokens[1:]]


def short_survey_url(base_url: str, invitation_id: str, expires_at: datetime, key: bytes,
                     key_id: str = "k1") -> str:
    """The SMS survey URL: ``survey_url(base_url, sign_short_token(...))``."""
    return survey_url(base_url, sign_short_token(invitation_id, expires_at, key, key_id))
