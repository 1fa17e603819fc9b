"""Signed survey links: round trip, tampering, expiry, key rotation, no personal data, junk tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

from streams.links import (
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    REASONS,
    UNKNOWN_KEY,
    InvalidToken,
    TokenClaims,
    one_click_urls,
    sign_token,
    survey_url,
    verify_token,
)

UTC = timezone.utc
KEY1 = b"k1-secret-0123456789abcdef-32byt"
KEY2 = b"k2-secret-fedcba9876543210-32byt"
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=14)
INVITATION = "inv-7f3c2a91"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forge(payload: dict | bytes, key: bytes = KEY1) -> str:
    """A token over an arbitrary payload, correctly signed: tests what happens after the MAC check."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    encoded = b64(raw)
    return f"{encoded}.{b64(hmac.new(key, encoded.encode(), hashlib.sha256).digest())}"


def reason(token, keys=None, now=NOW) -> str:
    with pytest.raises(InvalidToken) as info:
        verify_token(token, {"k1": KEY1} if keys is None else keys, now)
    assert info.value.reason in REASONS and str(info.value) == info.value.reason
    return info.value.reason


def test_round_trip():
    token = sign_token(INVITATION, EXPIRES, KEY1)
    claims = verify_token(token, {"k1": KEY1}, NOW)
    assert claims == TokenClaims(invitation_id=INVITATION, expires_at=EXPIRES, key_id="k1", score=None)
    assert claims.expires_at.tzinfo is not None


def test_token_format_is_compact_and_url_safe():
    token = sign_token(INVITATION, EXPIRES, KEY1)
    encoded, signature = token.split(".")
    assert json.loads(unb64(encoded)) == {"i": INVITATION, "e": int(EXPIRES.timestamp()), "k": "k1"}
    assert unb64(signature) == hmac.new(KEY1, encoded.encode(), hashlib.sha256).digest()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert "=" not in token and len(token) < 110


def test_score_is_carried_for_one_click_links():
    token = sign_token(INVITATION, EXPIRES, KEY1, score=0)
    assert verify_token(token, {"k1": KEY1}, NOW).score == 0
    assert json.loads(unb64(token.split(".")[0]))["s"] == 0


def test_expiry_in_another_zone_and_subsecond_is_rounded_down():
    helsinki = timezone(timedelta(hours=2))
    expires = datetime(2026, 12, 1, 12, 0, 0, 900_000, tzinfo=helsinki)
    claims = verify_token(sign_token(INVITATION, expires, KEY1), {"k1": KEY1}, NOW)
    assert claims.expires_at == datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def test_expired_boundary():
    token = sign_token(INVITATION, EXPIRES, KEY1)
    assert verify_token(token, {"k1": KEY1}, EXPIRES - timedelta(seconds=1)).invitation_id == INVITATION
    assert reason(token, now=EXPIRES) == EXPIRED  # exactly at the expiry: expired
    assert reason(token, now=EXPIRES + timedelta(microseconds=1)) == EXPIRED
    assert reason(token, now=EXPIRES + timedelta(days=365)) == EXPIRED


def test_tampered_payload():
    token = sign_token(INVITATION, EXPIRES, KEY1)
    encoded, signature = token.split(".")
    for change in ({"i": "inv-other"}, {"e": int(EXPIRES.timestamp()) + 86400}, {"s": 10}):
        payload = json.loads(unb64(encoded)) | change
        assert reason(f"{b64(json.dumps(payload, separators=(',', ':')).encode())}.{signature}") == BAD_SIGNATURE


def test_one_click_score_cannot_be_changed():
    encoded, signature = sign_token(INVITATION, EXPIRES, KEY1, score=2).split(".")
    other = b64(unb64(encoded).replace(b'"s":2', b'"s":9'))
    assert other != encoded
    assert reason(f"{other}.{signature}") == BAD_SIGNATURE


def test_tampered_signature():
    token = sign_token(INVITATION, EXPIRES, KEY1)
    encoded, signature = token.split(".")
    flipped = bytearray(unb64(signature))
    flipped[0] ^= 1
    assert reason(f"{encoded}.{b64(bytes(flipped))}") == BAD_SIGNATURE
    assert reason(f"{encoded}.{b64(unb64(signature)[:16])}") == BAD_SIGNATURE  # truncated
    assert reason(f"{encoded}.AAAA") == BAD_SIGNATURE  # three zero bytes
    assert reason(sign_token(INVITATION, EXPIRES, KEY2, key_id="k1")) == BAD_SIGNATURE  # other key, same id


def test_unknown_key_id():
    token = sign_token(INVITATION, EXPIRES, KEY2, key_id="k2")
    assert reason(token, keys={"k1": KEY1}) == UNKNOWN_KEY
    assert reason(token, keys={}) == UNKNOWN_KEY


def test_key_rotation():
    old = sign_token(INVITATION, EXPIRES, KEY1, key_id="k1")
    new = sign_token(INVITATION, EXPIRES, KEY2, key_id="k2")
    both = {"k2": KEY2, "k1": KEY1}
    assert verify_token(old, both, NOW).key_id == "k1"  # still listed: still valid
    assert verify_token(new, both, NOW).key_id == "k2"
    assert reason(old, keys={"k2": KEY2}) == UNKNOWN_KEY  # dropped: revoked
    assert verify_token(new, {"k2": KEY2}, NOW).invitation_id == INVITATION


def test_token_contains_an_invitation_id_only():
    token = sign_token(INVITATION, EXPIRES, KEY1, score=7)
    payload = json.loads(unb64(token.split(".")[0]))
    assert set(payload) == {"i", "e", "k", "s"} and payload["i"] == INVITATION
    decoded = unb64(token.split(".")[0]).decode()
    assert "@" not in decoded and "+46" not in decoded


@pytest.mark.parametrize("invitation_id", ["anna@example.se", "+46701234567", "+46 70-123 45 67", "", "   ",
                                           "x" * 201, None, 17])
def test_personal_or_bad_invitation_ids_are_refused(invitation_id):
    with pytest.raises(ValueError):
        sign_token(invitation_id, EXPIRES, KEY1)


@pytest.mark.parametrize(
    "kwargs",
    [{"expires_at": datetime(2026, 12, 1)},  # naive
     {"key": b"short"},
     {"key": "a str, not bytes, 32 characters!"},
     {"key_id": ""},
     {"key_id": "k 1"},
     {"score": 11},
     {"score": -1},
     {"score": True},
     {"score": 5.0}],
)
def test_sign_refuses_bad_arguments(kwargs):
    args = {"invitation_id": INVITATION, "expires_at": EXPIRES, "key": KEY1} | kwargs
    with pytest.raises(ValueError):
        sign_token(**args)


def test_verify_needs_an_aware_now():
    with pytest.raises(ValueError):
        verify_token(sign_token(INVITATION, EXPIRES, KEY1), {"k1": KEY1}, datetime(2026, 11, 20))


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _same_bytes(last: str) -> str:
    """Another last character of a 43-character base64url text that decodes to the same 32 bytes."""
    return _ALPHABET[_ALPHABET.index(last) ^ 1]


_GOOD = sign_token(INVITATION, EXPIRES, KEY1)
_ENC, _SIG = _GOOD.split(".")

JUNK = [
    pytest.param("", id="empty"),
    pytest.param(None, id="none"),
    pytest.param(b"bytes.token", id="bytes"),
    pytest.param(12345, id="int"),
    pytest.param("nodot", id="no-dot"),
    pytest.param(_ENC + _SIG, id="dot-removed"),
    pytest.param(f"{_ENC}.{_SIG}.{_SIG}", id="two-dots"),
    pytest.param(f".{_SIG}", id="empty-payload"),
    pytest.param(f"{_ENC}.", id="empty-signature"),
    pytest.param(".", id="only-dot"),
    pytest.param(f"{_ENC}=.{_SIG}", id="padding"),
    pytest.param(f"{_ENC[:-1]}*.{_SIG}", id="bad-base64-char"),
    pytest.param(f"{_ENC}.{_SIG}+", id="standard-base64-char"),
    pytest.param(f"A.{_SIG}", id="impossible-base64-length"),
    pytest.param(f"{_ENC}.{_SIG[:-1]}{_same_bytes(_SIG[-1])}", id="non-canonical-trailing-bits"),
    pytest.param(f"{b64(b'not json')}.{_SIG}", id="not-json"),
    pytest.param(f"{b64(bytes([0xff, 0xfe]))}.{_SIG}", id="not-utf8"),
    pytest.param(f"{b64(b'[1,2,3]')}.{_SIG}", id="json-list"),
    pytest.param(f"{b64(b'{}')}.{_SIG}", id="no-key-id"),
    pytest.param(f"{b64(json.dumps({'i': 'x', 'e': 1, 'k': 1}).encode())}.{_SIG}", id="key-id-not-string"),
    pytest.param("ä" * 10 + "." + _SIG, id="non-ascii"),
    pytest.param(f"{_ENC}.{_SIG}\n", id="trailing-newline"),
    pytest.param(" " + _GOOD, id="leading-space"),
    pytest.param("a" * 5000 + "." + _SIG, id="too-long"),
    pytest.param(f"{b64(b'[' * 600)}.{_SIG}", id="unterminated-nesting"),
]


@pytest.mark.parametrize("token", JUNK)
def test_junk_is_malformed(token):
    assert reason(token) == MALFORMED


def test_non_canonical_spelling_really_decodes_to_the_same_signature():
    other = _SIG[:-1] + _same_bytes(_SIG[-1])
    assert other != _SIG and unb64(other) == unb64(_SIG)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"i": 17, "e": 1900000000, "k": "k1"}, id="id-not-string"),
        pytest.param({"i": "", "e": 1900000000, "k": "k1"}, id="id-empty"),
        pytest.param({"e": 1900000000, "k": "k1"}, id="id-missing"),
        pytest.param({"i": "x", "e": "1900000000", "k": "k1"}, id="expiry-string"),
        pytest.param({"i": "x", "e": 1900000000.5, "k": "k1"}, id="expiry-float"),
        pytest.param({"i": "x", "e": True, "k": "k1"}, id="expiry-bool"),
        pytest.param({"i": "x", "k": "k1"}, id="expiry-missing"),
        pytest.param({"i": "x", "e": 10 ** 20, "k": "k1"}, id="expiry-beyond-year-9999"),
        pytest.param({"i": "x", "e": 1900000000, "k": "k1", "s": 11}, id="score-out-of-range"),
        pytest.param({"i": "x", "e": 1900000000, "k": "k1", "s": "9"}, id="score-string"),
        pytest.param({"i": "x", "e": 1900000000, "k": "k1", "s": None}, id="score-null"),
        pytest.param({"i": "x", "e": 1900000000, "k": "k1", "email": "a@b.se"}, id="extra-claim"),
    ],
)
def test_signed_but_wrong_types_are_malformed(payload):
    assert reason(forge(payload)) == MALFORMED


def test_forged_valid_payload_verifies():  # the helper itself is right: the cases above fail on types only
    claims = verify_token(forge({"i": "x", "e": 1900000000, "k": "k1", "s": 3}), {"k1": KEY1}, NOW)
    assert (claims.invitation_id, claims.score) == ("x", 3)


def test_survey_url():
    token = sign_token(INVITATION, EXPIRES, KEY1)
    assert survey_url("https://nps.example.com/s", token) == f"https://nps.example.com/s/{token}"
    assert survey_url("https://nps.example.com/s/", token) == f"https://nps.example.com/s/{token}"
    assert survey_url("https://nps.example.com/answer?t={token}&src=mail", token) == \
        f"https://nps.example.com/answer?t={token}&src=mail"
    for bad in ("nps.example.com/s", "ftp://nps.example.com/s", "https:///s", "https://x/s?a=1"):
        with pytest.raises(ValueError):
            survey_url(bad, token)


def test_one_click_urls():
    urls = one_click_urls("https://nps.example.com/s", INVITATION, EXPIRES, KEY2, key_id="k2")
    assert len(urls) == 11 and len(set(urls)) == 11
    for score, url in enumerate(urls):
        assert url.startswith("https://nps.example.com/s/")
        token = urlsplit(url).path.rsplit("/", 1)[1]
        claims = verify_token(token, {"k2": KEY2}, NOW)
        assert claims == TokenClaims(INVITATION, EXPIRES, "k2", score)
