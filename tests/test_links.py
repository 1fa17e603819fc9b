"""Signed survey links, long and short (SMS) form: round trip, tampering, expiry, key rotation, no personal
data, junk tokens, canonical spelling, length."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npsflow.programs import TYPICAL_LINK_LENGTH
from sinks.channels.sms import GSM7_BASIC
from streams.links import (
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    MAX_SHORT_TOKEN_CHARS,
    REASONS,
    UNKNOWN_KEY,
    InvalidToken,
    TokenClaims,
    TokenSigner,
    one_click_urls,
    short_survey_url,
    sign_short_token,
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


# ---------------------------------------------------------------------------------------------------------
# Short form (SMS). The helpers below implement the documented layout independently of streams.links:
# base64url digits, most significant first, of 1 | id (5 bits a character) | key number (7) | expiry (32) | MAC (64).

SHORT_ID = "q7m2xk4ta5zr3pwe6nbh"  # the shape of the project's invitation ids: [a-z2-7]{20}
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
ALL_KEY_IDS_KEY1 = {f"k{n}": KEY1 for n in range(128)}  # every key id known: tampering can't hide behind unknown_key


def short_mac(key: bytes, invitation_id: str, expiry: int, key_id: str) -> bytes:
    return hmac.new(key, f"npsflow-short-v1~{invitation_id}~{expiry}~{key_id}".encode(), hashlib.sha256).digest()[:8]


def pack_short(invitation_id: str, key_number: int, expiry: int, mac: bytes) -> str:
    value = 1
    for char in invitation_id:
        value = value << 5 | BASE32.index(char)
    value = ((value << 7 | key_number) << 32 | expiry) << 64 | int.from_bytes(mac, "big")
    digits = ""
    while value:
        digits = _ALPHABET[value % 64] + digits
        value //= 64
    return digits


def unpack_short(token: str) -> tuple[str, int, int, bytes]:
    value = 0
    for char in token:
        value = value * 64 + _ALPHABET.index(char)
    id_chars = (value.bit_length() - 1 - 103) // 5
    mac, expiry, key_number = (value % 2 ** 64).to_bytes(8, "big"), (value >> 64) % 2 ** 32, (value >> 96) % 128
    invitation_id = "".join(BASE32[(value >> (103 + 5 * i)) % 32] for i in reversed(range(id_chars)))
    assert value >> (103 + 5 * id_chars) == 1  # the marker bit
    return invitation_id, key_number, expiry, mac


def forge_short(invitation_id: str, expiry: int, key_id: str = "k1", key: bytes = KEY1) -> str:
    """A correctly signed short token built by the test's own packing."""
    return pack_short(invitation_id, int(key_id[1:]), expiry, short_mac(key, invitation_id, expiry, key_id))


def short_reason(token, keys=None, now=NOW) -> str:
    return reason(token, keys=ALL_KEY_IDS_KEY1 if keys is None else keys, now=now)


@pytest.mark.parametrize(
    "invitation_id, key_id, expires_at",
    [
        (SHORT_ID, "k1", EXPIRES),
        (SHORT_ID, "k2", NOW + timedelta(days=3650)),
        ("a", "k0", EXPIRES),  # shortest id, and all zero bits
        ("aaaaaaaaaaaaaaaaaaaa", "k1", EXPIRES),  # leading zero bits in the id survive (the marker bit)
        ("7" * 32, "k127", datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)),  # longest id, top key, last expiry
        ("abcdefghijklmnopqrstuvwxyz234567", "k99", NOW + timedelta(seconds=1)),  # whole alphabet
    ],
)
def test_short_round_trip(invitation_id, key_id, expires_at):
    token = sign_short_token(invitation_id, expires_at, KEY2, key_id=key_id)
    assert "." not in token  # the long form always has exactly one
    claims = verify_token(token, {key_id: KEY2}, NOW)
    assert claims == TokenClaims(invitation_id=invitation_id, expires_at=expires_at, key_id=key_id, score=None)
    assert claims.expires_at.tzinfo is not None
    assert sign_short_token(invitation_id, expires_at, KEY2, key_id=key_id) == token  # deterministic


def test_short_token_layout_is_as_documented():
    token = sign_short_token(SHORT_ID, EXPIRES, KEY1)
    expiry = int(EXPIRES.timestamp())
    assert unpack_short(token) == (SHORT_ID, 1, expiry, short_mac(KEY1, SHORT_ID, expiry, "k1"))
    assert token == forge_short(SHORT_ID, expiry)
    assert set(token) <= set(_ALPHABET) and token[0] != "A"


def test_short_expiry_in_another_zone_and_subsecond_is_rounded_down():
    expires = datetime(2026, 12, 1, 12, 0, 0, 900_000, tzinfo=timezone(timedelta(hours=2)))
    claims = verify_token(sign_short_token(SHORT_ID, expires, KEY1), {"k1": KEY1}, NOW)
    assert claims.expires_at == datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("ahead", [timedelta(days=30), timedelta(days=3650)], ids=["30-days", "10-years"])
def test_short_token_and_url_fit_an_sms(ahead):
    token = sign_short_token(SHORT_ID, NOW + ahead, KEY1, key_id="k1")
    assert len(token) <= 34
    url = short_survey_url("https://nps.example.se/s", SHORT_ID, NOW + ahead, KEY1, key_id="k1")
    assert url == f"https://nps.example.se/s/{token}"
    assert len(url) <= TYPICAL_LINK_LENGTH
    assert set(url) <= GSM7_BASIC  # one septet a character: nothing from the GSM-7 extension table (like ~)
    long_url = survey_url("https://nps.example.se/s", sign_token(SHORT_ID, NOW + ahead, KEY1))
    assert len(long_url) > 2 * len(url)  # what the short form is for


def test_short_token_length_depends_on_the_id_length_only():
    lengths = {len(sign_short_token(SHORT_ID, datetime.fromtimestamp(e, UTC), KEY1, key_id=k))
               for e in (0, 1, 86400, int(NOW.timestamp()), 2 ** 32 - 1) for k in ("k0", "k1", "k127")}
    assert lengths == {34}
    assert len(sign_short_token("7" * 32, EXPIRES, KEY1)) == MAX_SHORT_TOKEN_CHARS == 44


def test_short_expired_boundary():
    token = sign_short_token(SHORT_ID, EXPIRES, KEY1)
    assert verify_token(token, {"k1": KEY1}, EXPIRES - timedelta(seconds=1)).invitation_id == SHORT_ID
    assert short_reason(token, now=EXPIRES) == EXPIRED  # exactly at the expiry: expired
    assert short_reason(token, now=EXPIRES + timedelta(microseconds=1)) == EXPIRED
    assert short_reason(token, now=EXPIRES + timedelta(days=365)) == EXPIRED
    assert short_reason(forge_short(SHORT_ID, 0)) == EXPIRED  # epoch 0


def test_short_token_any_single_character_changed_is_rejected():
    token = sign_short_token(SHORT_ID, EXPIRES, KEY1)
    seen = set()
    for i in range(len(token)):
        variants = [token[:i] + token[i + 1:]]  # deleted
        variants += [token[:i] + c + token[i + 1:] for c in _ALPHABET + ".~=+/ %" if c != token[i]]  # replaced
        variants += [token[:i] + c + token[i:] for c in _ALPHABET + ".~"]  # inserted
        for variant in variants:
            seen.add(outcome := short_reason(variant))  # every key id k0 … k127 is known, all with the right key
            assert outcome in (BAD_SIGNATURE, MALFORMED), (variant, outcome)
            with pytest.raises(InvalidToken):  # and with the real key set
                verify_token(variant, {"k1": KEY1}, NOW)
    assert seen == {BAD_SIGNATURE, MALFORMED}
    for variant in (token.upper(), token.lower(), token.swapcase()):  # case is part of base64url: other bits
        assert short_reason(variant) in (BAD_SIGNATURE, MALFORMED)


@pytest.mark.parametrize(
    "field", ["id", "key", "expiry"],
)
def test_short_mac_covers_every_field(field):
    expiry = int(EXPIRES.timestamp())
    _, _, _, mac = unpack_short(sign_short_token(SHORT_ID, EXPIRES, KEY1, key_id="k1"))
    changed = {"id": ("q7m2xk4ta5zr3pwe6nbi", 1, expiry), "key": (SHORT_ID, 2, expiry),
               "expiry": (SHORT_ID, 1, expiry + 86400)}[field]
    assert short_reason(pack_short(*changed, mac)) == BAD_SIGNATURE


def test_short_other_key_same_key_id():
    assert short_reason(sign_short_token(SHORT_ID, EXPIRES, KEY2, key_id="k1")) == BAD_SIGNATURE


def test_forged_short_token_verifies():  # the test's own packing agrees with the module: the cases below are fair
    claims = verify_token(forge_short("abc", 1900000000, "k7"), {"k7": KEY1}, NOW)
    assert claims == TokenClaims("abc", datetime.fromtimestamp(1900000000, UTC), "k7", None)


def test_macs_cannot_be_transplanted_between_the_forms():
    expiry = int(EXPIRES.timestamp())
    long_token = sign_token(SHORT_ID, EXPIRES, KEY1)
    encoded, signature = long_token.split(".")
    long_mac = unb64(signature)
    # the long form's MAC (its first 8 bytes, or over the short form's bits) in a short token
    assert short_reason(pack_short(SHORT_ID, 1, expiry, long_mac[:8])) == BAD_SIGNATURE
    short_token = sign_short_token(SHORT_ID, EXPIRES, KEY1)
    over_short_text = hmac.new(KEY1, short_token.encode(), hashlib.sha256).digest()[:8]
    assert short_reason(pack_short(SHORT_ID, 1, expiry, over_short_text)) == BAD_SIGNATURE
    # the short form's MAC, and the full HMAC of the short form's message, in a long token
    _, _, _, mac = unpack_short(short_token)
    full = hmac.new(KEY1, f"npsflow-short-v1~{SHORT_ID}~{expiry}~k1".encode(), hashlib.sha256).digest()
    assert full[:8] == mac
    assert reason(f"{encoded}.{b64(mac)}") == BAD_SIGNATURE
    assert reason(f"{encoded}.{b64(full)}") == BAD_SIGNATURE
    assert verify_token(long_token, {"k1": KEY1}, NOW).invitation_id == SHORT_ID  # the donor itself is valid


def test_short_unknown_key_id_and_rotation():
    old = sign_short_token(SHORT_ID, EXPIRES, KEY1, key_id="k1")
    new = sign_short_token(SHORT_ID, EXPIRES, KEY2, key_id="k2")
    assert short_reason(new, keys={"k1": KEY1}) == UNKNOWN_KEY
    assert short_reason(new, keys={}) == UNKNOWN_KEY
    both = {"k2": KEY2, "k1": KEY1}
    assert verify_token(old, both, NOW).key_id == "k1" and verify_token(new, both, NOW).key_id == "k2"
    assert short_reason(old, keys={"k2": KEY2}) == UNKNOWN_KEY  # dropped: revoked
    assert short_reason(old, keys={"k01": KEY1, "K1": KEY1}) == UNKNOWN_KEY  # only the canonical key id


def test_short_order_of_checks():
    expiry = int(EXPIRES.timestamp())
    garbage_mac = pack_short(SHORT_ID, 2, expiry, bytes(8))
    assert short_reason(garbage_mac, keys={"k1": KEY1}) == UNKNOWN_KEY  # key before MAC
    past = pack_short(SHORT_ID, 1, 1000, bytes(8))
    assert short_reason(past) == BAD_SIGNATURE  # MAC before expiry
    assert short_reason(forge_short(SHORT_ID, 1000)) == EXPIRED


_SHORT = sign_short_token(SHORT_ID, EXPIRES, KEY1)

SHORT_JUNK = [
    pytest.param("A" + _SHORT, id="leading-zero-digit"),
    pytest.param("AA" + _SHORT, id="leading-zero-digits"),
    pytest.param("A", id="zero"),
    pytest.param("_", id="too-short"),
    pytest.param(_SHORT + "~", id="trailing-separator"),
    pytest.param("~" + _SHORT, id="leading-separator"),
    pytest.param(_SHORT[:20] + "~" + _SHORT[20:], id="inner-separator"),
    pytest.param(_SHORT[:20] + "~~" + _SHORT[20:], id="double-separator"),
    pytest.param(_SHORT + "==", id="padding"),
    pytest.param(_SHORT + "\n", id="trailing-newline"),
    pytest.param(" " + _SHORT, id="leading-space"),
    pytest.param(_SHORT[:-1] + "+", id="standard-base64-char"),
    pytest.param(_SHORT[:-1] + "/", id="standard-base64-slash"),
    pytest.param(_SHORT[:-1] + "%41", id="percent-escaped"),
    pytest.param(_SHORT[:10] + "\u0663" + _SHORT[11:], id="non-ascii-digit"),
    pytest.param(_SHORT[:-1], id="last-digit-dropped"),  # 6 bits fewer: not a whole number of id characters
    pytest.param(pack_short("", 1, 1900000000, bytes(8)), id="empty-id"),
    pytest.param(pack_short("a" * 33, 1, 1900000000, bytes(8)), id="id-33-characters"),
    pytest.param("_" * (MAX_SHORT_TOKEN_CHARS + 1), id="too-long"),
    pytest.param("_" * 5000, id="much-too-long"),
    pytest.param(_SHORT + "." + _SHORT, id="short-tokens-joined-by-a-dot"),
]


@pytest.mark.parametrize("token", SHORT_JUNK)
def test_short_junk_and_other_spellings_are_malformed(token):
    assert short_reason(token) == MALFORMED


def test_leading_zero_digit_really_is_the_same_number():
    assert unpack_short("A" + _SHORT) == unpack_short(_SHORT) == (SHORT_ID, 1, int(EXPIRES.timestamp()),
                                                                   unpack_short(_SHORT)[3])
    assert unpack_short(forge_short(SHORT_ID, 5)) == (SHORT_ID, 1, 5, short_mac(KEY1, SHORT_ID, 5, "k1"))


@pytest.mark.parametrize(
    "kwargs",
    [{"invitation_id": "inv-7f3c2a91"},  # valid for the long form, not for the short one
     {"invitation_id": "Q7M2XK4TA5ZR3PWE6NBH"},  # upper case
     {"invitation_id": "abc0"}, {"invitation_id": "abc1"}, {"invitation_id": "abc8"}, {"invitation_id": "abc9"},
     {"invitation_id": "a" * 33},
     {"invitation_id": ""},
     {"invitation_id": "abc\n"},
     {"invitation_id": "abc def"},
     {"invitation_id": "äbc"},
     {"invitation_id": "anna@example.se"},
     {"invitation_id": "+46701234567"},
     {"invitation_id": None},
     {"invitation_id": 17},
     {"expires_at": datetime(2026, 12, 1)},  # naive
     {"expires_at": datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)},
     {"expires_at": datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC)},  # 2 ** 32
     {"key": b"short"},
     {"key": "a str, not bytes, 32 characters!"},
     {"key_id": "k01"}, {"key_id": "k128"}, {"key_id": "K1"}, {"key_id": "key1"}, {"key_id": "k-1"},
     {"key_id": "k"}, {"key_id": ""}, {"key_id": "k1\n"}, {"key_id": 1}, {"key_id": None}],
)
def test_sign_short_refuses_bad_arguments(kwargs):
    args = {"invitation_id": SHORT_ID, "expires_at": EXPIRES, "key": KEY1} | kwargs
    with pytest.raises(ValueError):
        sign_short_token(**args)
    with pytest.raises(ValueError):
        short_survey_url("https://nps.example.se/s", **args)


def test_short_tokens_carry_no_score():
    with pytest.raises(TypeError):
        sign_short_token(SHORT_ID, EXPIRES, KEY1, score=9)  # one-click scores are for e-mail only
    assert verify_token(_SHORT, {"k1": KEY1}, NOW).score is None


def test_short_survey_url():
    token = sign_short_token(SHORT_ID, EXPIRES, KEY1, key_id="k3")
    assert short_survey_url("https://nps.example.se/s/", SHORT_ID, EXPIRES, KEY1, key_id="k3") == \
        f"https://nps.example.se/s/{token}"
    url = short_survey_url("https://nps.example.se/a?t={token}&src=sms", SHORT_ID, EXPIRES, KEY1, key_id="k3")
    assert url == f"https://nps.example.se/a?t={token}&src=sms"
    path_url = short_survey_url("https://nps.example.se/s", SHORT_ID, EXPIRES, KEY1, key_id="k3")
    assert verify_token(urlsplit(path_url).path.rsplit("/", 1)[1], {"k3": KEY1}, NOW) == \
        TokenClaims(SHORT_ID, EXPIRES, "k3", None)
    for bad in ("nps.example.se/s", "ftp://nps.example.se/s", "https://x/s?a=1"):
        with pytest.raises(ValueError):
            short_survey_url(bad, SHORT_ID, EXPIRES, KEY1)


def test_verify_short_needs_an_aware_now():
    with pytest.raises(ValueError):
        verify_token(_SHORT, {"k1": KEY1}, datetime(2026, 11, 20))



# --- TokenSigner: the same tokens as sign_token / one_click_urls, the key prepared once ----------------------

@settings(max_examples=300, deadline=None)
@given(invitation_id=st.text(min_size=1, max_size=40).filter(lambda t: t.strip() and "@" not in t),
       seconds=st.integers(min_value=0, max_value=4_000_000_000), fraction=st.integers(0, 999_999),
       key_id=st.from_regex(r"[A-Za-z0-9_.-]{1,32}", fullmatch=True), score=st.none() | st.integers(0, 10))
def test_token_signer_signs_byte_for_byte_what_sign_token_signs(invitation_id, seconds, fraction, key_id, score):
    expires = datetime.fromtimestamp(seconds, UTC).replace(microsecond=fraction)
    signer = TokenSigner(KEY1, key_id)
    assert signer.sign(invitation_id, expires, score) == sign_token(invitation_id, expires, KEY1, key_id, score)
    base = "https://nps.example.se/s" if seconds % 2 else "https://x.example/answer?t={token}"
    assert signer.one_click_urls(base, invitation_id, expires) == one_click_urls(base, invitation_id, expires, KEY1,
                                                                                 key_id)


@pytest.mark.parametrize("args", [("a@b.se", EXPIRES, None), ("+46701234567", EXPIRES, None), ("", EXPIRES, None),
                                  (INVITATION, EXPIRES.replace(tzinfo=None), None), (INVITATION, EXPIRES, 11),
                                  (INVITATION, EXPIRES, True)])
def test_token_signer_refuses_what_sign_token_refuses(args):
    with pytest.raises(ValueError) as expected:
        sign_token(args[0], args[1], KEY1, "k1", args[2])
    with pytest.raises(ValueError) as got:
        TokenSigner(KEY1, "k1").sign(*args)
    assert str(got.value) == str(expected.value)
    if args[2] is None:
        with pytest.raises(ValueError, match=re.escape(str(expected.value))):
            TokenSigner(KEY1, "k1").one_click_urls("https://nps.example.se/s", args[0], args[1])
    with pytest.raises(ValueError):
        TokenSigner(b"short", "k1")
    with pytest.raises(ValueError):
        TokenSigner(KEY1, "k 1")
