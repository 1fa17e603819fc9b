"""Rate limits, CSRF tokens and API keys of the survey page and the response API."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from streams.guards import (RateLimiter, api_key_hash, api_key_matches, csrf_token, csrf_valid, new_api_key)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
SECRET = b"0123456789abcdef0123"


def test_token_bucket_allows_a_burst_then_the_sustained_rate():
    limiter = RateLimiter(rate=2.0, burst=5)
    assert [limiter.allow("ip", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.retry_after("ip", 0.0) == pytest.approx(0.5)
    assert limiter.allow("ip", 0.49) is False and limiter.allow("ip", 0.5 + 0.01) is True
    assert limiter.allow("other", 0.5) is True  # buckets are per key
    assert [limiter.allow("ip", 100.0) for _ in range(6)] == [True] * 5 + [False]  # refilled, never above burst


def test_the_limiter_keeps_a_bounded_number_of_keys():
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=3)
    for i in range(10):
        limiter.allow(f"k{i}", 0.0)
    assert list(limiter._buckets) == ["k7", "k8", "k9"]


def test_csrf_token_is_bound_to_the_invitation_and_expires():
    token = csrf_token(SECRET, "inv-1", NOW)
    assert csrf_valid(SECRET, "inv-1", token, NOW + timedelta(minutes=119))
    assert not csrf_valid(SECRET, "inv-2", token, NOW)
    assert not csrf_valid(b"another-secret-0000", "inv-1", token, NOW)
    assert not csrf_valid(SECRET, "inv-1", token, NOW + timedelta(hours=2, seconds=1))
    issued, mac = token.split(".")
    assert not csrf_valid(SECRET, "inv-1", f"{int(issued) + 1}.{mac}", NOW)  # the issue time is signed too
    for bad in (None, "", "x", "1.2.3", "abc.def", token + "x", 5):
        assert not csrf_valid(SECRET, "inv-1", bad, NOW)


def test_api_keys_are_configured_by_hash_only():
    key, line = new_api_key()
    assert line == api_key_hash(key) and line.startswith("sha256:") and key not in line
    assert api_key_matches(key, ["sha256:" + "0" * 64, line])
    assert not api_key_matches(key + "x", [line]) and not api_key_matches(key, [])
    assert new_api_key()[0] != key


def test_a_receipt_names_its_score_time_and_invitation_and_cannot_be_forged():
    from streams.guards import Receipt, read_receipt, receipt_token

    receipt = Receipt(score=3, at_ms=1_763_640_000_123, done=False)
    token = receipt_token(SECRET, "inv-1", receipt)
    assert token.startswith("3.1763640000123.0.")  # readable parts, then the MAC
    assert read_receipt(SECRET, "inv-1", token) == receipt
    assert read_receipt(SECRET, "inv-1", receipt_token(SECRET, "inv-1", Receipt(10, 5, True))) == Receipt(10, 5, True)
    assert read_receipt(SECRET, "inv-2", token) is None  # bound to its invitation
    assert read_receipt(b"another-secret-0000", "inv-1", token) is None
    mac = token.rsplit(".", 1)[1]
    for forged in (f"9.1763640000123.0.{mac}", f"3.1763640000124.0.{mac}", f"3.1763640000123.1.{mac}"):
        assert read_receipt(SECRET, "inv-1", forged) is None  # every part is signed
    # the CSRF token's MAC is another label: a CSRF token is never a receipt, nor the other way round
    assert not csrf_valid(SECRET, "inv-1", token, NOW)
    for bad in (None, "", "3.1.0", "3.1.0.x.y", "\u00b2.1.0.x", "3.1.2." + mac, token + "x", 7, "a" * 81):
        assert read_receipt(SECRET, "inv-1", bad) is None
    eleven = receipt_token(SECRET, "inv-1", Receipt(11, 1))  # signed, but no score of the scale
    assert read_receipt(SECRET, "inv-1", eleven) is None
