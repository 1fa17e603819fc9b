"""Signed webhooks (sinks.channels.webhook) against a real local HTTP receiver that checks every signature."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sinks.channels.retry import RetryPolicy
from sinks.channels.webhook import (EVENT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, WebhookSender, body_of,
                                    verify)

SECRET = b"webhook-secret-of-the-org-0123456789"
FAST = RetryPolicy(max_attempts=3, base_delay=0.0, jitter=0.0, sleep=lambda s: asyncio.sleep(0))


class Receiver:
    """Answers with the next status of ``script`` (then 200), optionally stalling first; records every call."""

    def __init__(self, script=(), stall: float = 0.0):
        self.script, self.stall, self.calls = list(script), stall, []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append({"body": body, "signature": request.headers.get(SIGNATURE_HEADER),
                           "key": request.headers.get(IDEMPOTENCY_HEADER), "event": request.headers.get(EVENT_HEADER),
                           "valid": verify(body, request.headers.get(SIGNATURE_HEADER), SECRET)})
        if self.stall and len(self.calls) == 1:
            await asyncio.sleep(self.stall)
        status = self.script.pop(0) if self.script else 200
        return web.Response(status=status, headers={"Retry-After": "0"} if status == 503 else {})


async def serve(receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_a_notification_arrives_signed_and_is_retried_with_the_same_bytes_and_key():
    receiver = Receiver(script=[503])
    server = await serve(receiver)
    try:
        sender = WebhookSender(str(server.make_url("/hook")), SECRET, retry=FAST)
        payload = {"case_id": "c-1", "owner": "manager-oulu", "score": 2, "comment": "Lasku oli väärä"}
        outcome = await sender.deliver("case.opened", payload, "c-1:opened:1")
    finally:
        await server.close()
    assert outcome.ok and outcome.value == 200 and outcome.attempts == 2
    first, second = receiver.calls
    assert first["body"] == second["body"] and first["signature"] == second["signature"]
    assert first["key"] == second["key"] == "c-1:opened:1" and first["event"] == "case.opened"
    assert first["valid"] and json.loads(first["body"]) == payload
    # the signature is the HMAC-SHA256 of the raw body, computed here independently
    expected = "sha256=" + hmac.new(SECRET, first["body"], hashlib.sha256).hexdigest()
    assert first["signature"] == expected
    assert not verify(first["body"], first["signature"], b"another-secret-of-sixteen+")  # a wrong secret fails
    assert not verify(first["body"].replace(b"2", b"9"), first["signature"], SECRET)  # so does a changed body
    assert not verify(first["body"], None, SECRET)


async def test_a_refusal_is_permanent_and_a_stalled_receiver_is_tried_again():
    refusing = Receiver(script=[400])
    server = await serve(refusing)
    try:
        outcome = await WebhookSender(str(server.make_url("/hook")), SECRET, retry=FAST).deliver("x", {}, "k")
    finally:
        await server.close()
    assert (outcome.ok, outcome.reason, outcome.attempts, len(refusing.calls)) == (False, "webhook_refused", 1, 1)
    stalled = Receiver(stall=1.0)  # the first call outlives the timeout: it may have arrived — send it again
    server = await serve(stalled)
    try:
        outcome = await WebhookSender(str(server.make_url("/hook")), SECRET, timeout=0.3, retry=FAST).deliver(
            "x", {"a": 1}, "k-2")
    finally:
        await server.close()
    assert outcome.ok and outcome.attempts == 2
    assert [c["key"] for c in stalled.calls] == ["k-2", "k-2"]  # the receiver can drop the repeat by its key


async def test_an_unreachable_receiver_is_a_transient_failure_after_the_retries():
    outcome = await WebhookSender("http://127.0.0.1:9/hook", SECRET, timeout=1.0, retry=FAST).deliver("x", {}, "k")
    assert (outcome.ok, outcome.reason, outcome.attempts, outcome.kind) == (False, "webhook_unreachable", 3,
                                                                            "transient")


def test_the_body_is_canonical_and_the_configuration_checked():
    assert body_of({"b": 1, "a": "ä"}) == '{"a":"ä","b":1}'.encode() == body_of({"a": "ä", "b": 1})
    with pytest.raises(ValueError):
        WebhookSender("ftp://x", SECRET)
    with pytest.raises(ValueError):
        WebhookSender("https://x", b"short")
