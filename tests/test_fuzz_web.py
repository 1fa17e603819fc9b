"""Fuzzing the public listener (issue 15, point 2): the response API and the survey form, over HTTP, against the
real aiohttp application in process (tests/public_harness.py: what would go to Kafka is captured at the raw
topic's send).

Properties: never a 5xx, and never the "unavailable" page a handler failure turns into (``guarded``); the API
answers every record of a batch and sends every valid one (what it sends is what was posted); the form writes
exactly the answers it should; no input ever appears unescaped in a page (inputs are wrapped in markers, so the
raw text can only be in the page if it was inserted as is), and a re-rendered comment is there, escaped.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import string
from datetime import timedelta
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import example, given, strategies as st
from markupsafe import escape
from yarl import URL

from streams.guards import csrf_token
from tests.fuzzing import budget, hostile, markup_text, no_surrogates, web_text
from tests.public_harness import API_KEY, BRAND, NOW, OTHER_KEY, PublicHarness, invitation

pytestmark = pytest.mark.fuzz

API = "/api/v1/responses"
MAX_API_BYTES = 1024 * 1024
PAGE_STATUSES = {200, 400, 404, 409, 410, 413}
SPECIAL = set("<>&\"'")


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    harness = PublicHarness(tmp_path_factory.mktemp("public"))
    invs = harness.invitations.by_id
    invs["inv-open"] = invitation("inv-open")
    invs["inv-sv"] = invitation("inv-sv", org="bolt", program="shop", locale="sv")
    invs["inv-closed"] = invitation("inv-closed", resp=True, answered_at=0, answer={"score": 3, "comment": "x"})
    yield harness
    harness.close()


REPLY_WITHIN = 20  # seconds: every request is answered in milliseconds; longer is a hang
DISCONNECTED = 0  # the "status" of a request whose connection the server closed before the client read a reply


def request(h: PublicHarness, method: str, path: str | URL, **kw) -> tuple[int, str, bytes]:
    async def go():
        try:
            async with asyncio.timeout(REPLY_WITHIN):
                response = await h.client.request(method, path, **kw)
                body = await response.read()
        except aiohttp.ServerDisconnectedError:
            return DISCONNECTED, "", b""
        except TimeoutError:
            raise AssertionError(f"no reply within {REPLY_WITHIN} s: {method} {path} {kw.get('headers')}") from None
        return response.status, response.headers.get("Content-Type", ""), body
    return h.run(go())


def raw_http(h: PublicHarness, data: bytes) -> bytes:
    """Bytes written on a plain TCP connection to the listener; the status line of its reply."""
    async def go():
        reader, writer = await asyncio.open_connection(h.client.server.host, h.client.server.port)
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        return line
    return h.run(go())


def marked(text: str) -> str:
    return f"ZQX{text}XQZ"


# ------------------------------------------------------------------------------------------------ the API
ids = st.text(no_surrogates, min_size=1, max_size=60).filter(str.strip)
segment_keys = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
valid_records = st.fixed_dictionaries(
    {"response_id": ids, "score": st.one_of(st.integers(0, 10), st.integers(0, 10).map(str)),
     "responded_at": st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-20T12:00:00+02:00"])},
    optional={"comment": st.one_of(web_text, markup_text, hostile),
              "follow_up": web_text, "survey_id": ids, "locale": st.sampled_from(["fi", "sv-FI", None]),
              "segment": st.dictionaries(segment_keys, st.text(no_surrogates, max_size=40), max_size=3)})
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | web_text | hostile,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(web_text, inner, max_size=3),
                           max_leaves=8)
other_records = st.one_of(
    json_values,
    valid_records.flatmap(lambda r: st.sampled_from(list(r)).map(lambda k: {**r, k: None})),  # a field emptied
    valid_records.map(lambda r: {**r, "score": 11}), valid_records.map(lambda r: {**r, "score": "7.5"}),
    valid_records.map(lambda r: {**r, "invitation_id": "inv-sv"}),  # another organization's invitation
    valid_records.map(lambda r: {**r, "comment": "\ud800"}),  # a lone surrogate (JSON can say it, UTF-8 cannot)
    st.just({"response_id": "deep", "score": 1, "x": json.loads("[" * 40 + "]" * 40)}),
)


def api_headers(key: str = API_KEY) -> dict:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


@budget(150)
@given(st.lists(st.one_of(valid_records.map(lambda r: ("valid", r)), other_records.map(lambda r: ("other", r)),
                          st.just(("answer", {"invitation_id": "inv-open", "score": 8,
                                              "responded_at": "2026-11-20T10:00:00Z"}))),
                min_size=1, max_size=20),
       st.booleans())
def test_every_record_of_a_batch_is_answered_and_every_valid_one_sent(h, batch, wrapped):
    records = [record for _, record in batch]
    body = json.dumps({"responses": records} if wrapped else records)  # (ASCII: a lone surrogate travels as \ud800)
    before = len(h.topic.sent)
    status, kind, reply = request(h, "POST", API, data=body.encode(), headers=api_headers())
    assert status == 200 and kind.startswith("application/json"), reply[:300]
    out = json.loads(reply)
    assert [r["index"] for r in out["results"]] == list(range(len(records)))
    assert out["accepted"] + out["rejected"] == len(records)
    for (kind_, record), result in zip(batch, out["results"]):
        if kind_ in ("valid", "answer"):
            assert result["status"] == "accepted", (record, result)
        if result["status"] == "rejected":
            assert result["reason"]
    sent = h.sent()[before:]
    accepted = [(record, result) for record, result in zip(records, out["results"]) if result["status"] == "accepted"]
    assert len(sent) == len(accepted) == out["accepted"]  # nothing valid dropped, nothing refused sent
    for (record, result), raw in zip(accepted, sent):
        assert raw["response_id"] == result["stored_as"] and raw["source"] == "api:acme"
        if "invitation_id" not in record:
            assert raw["response_id"] == f"acme:{record['response_id'].strip()}"
        if isinstance(record.get("comment"), str):
            assert raw["comment"] == record["comment"]  # as posted (classify strips, cuts, masks)
    assert h.failures() == 0


def chunks(data: bytes, size: int):
    async def gen():
        for i in range(0, len(data), size):
            yield data[i:i + size]
    return gen()


BOMS = {"utf-8": codecs.BOM_UTF8, "utf-16": b"", "utf-16-le": b"", "utf-32": b""}
bodies = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.lists(valid_records, min_size=1, max_size=3), st.sampled_from(sorted(BOMS)), st.booleans()).map(
        lambda t: (BOMS[t[1]] if t[2] else b"") + json.dumps(t[0], ensure_ascii=False).encode(t[1])),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"[]", b"{}", b"null", b'{"responses": {}}', b"[" * 100_000, b'[{"score": ' + b"9" * 5000
                     + b"}]", b"\xff\xfe\x00", b'[{"response_id": "r", "score": 1e999, "responded_at": "x"}]']),
)
authorizations = st.one_of(st.sampled_from([f"Bearer {API_KEY}", f"bearer   {API_KEY}  ", f"Bearer {OTHER_KEY}",
                                            "Bearer", "Bearer ", "Basic YWxhZGRpbjpvcGVu", "", f"Token {API_KEY}"]),
                           st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_categories=("Cc",)),
                                   max_size=40))  # (control characters: aiohttp's client refuses to send them)
content_types = st.sampled_from([None, "application/json", "application/json; charset=utf-16", "text/plain",
                                 "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "\u00ff/x"])


@budget(300)
@given(bodies, authorizations, content_types, st.sampled_from([None, "identity", "gzip", "deflate", "br", "x-nope"]),
       st.sampled_from([None, 1, 7, 4096]))
@example(b"[" * 100_000, f"Bearer {API_KEY}", "application/json", None, None)  # was the unavailable page
@example(b"{}", "Bearer \u00ff\u00fe", None, None, None)
@example(b"[]", f"Bearer {API_KEY}", None, "gzip", None)  # not gzip: was the unavailable page (an HTML 503)
@example(b'[{"score": 1}]', "I", None, "deflate", None)  # refused, then aiohttp failed on the rest: at times no reply
def test_any_body_and_headers_get_a_json_answer_never_a_failure(h, body, auth, content_type, encoding, chunk):
    headers = {"Authorization": auth} if auth is not None else {}
    if content_type:
        headers["Content-Type"] = content_type
    if encoding:
        headers["Content-Encoding"] = encoding
    before = len(h.topic.sent)
    status, kind, reply = request(h, "POST", API, data=chunks(body, chunk) if chunk else body, headers=headers)
    if status == DISCONNECTED:  # refused before its streamed body was read (401): the client may see a closed
        assert chunk and len(h.topic.sent) == before and h.failures() == 0  # connection instead of the reply
        return
    assert status in {200, 400, 401, 413}, (status, reply[:300])
    if status != 400 or kind.startswith("application/json"):  # (aiohttp itself answers a body it cannot inflate)
        assert kind.startswith("application/json") and isinstance(json.loads(reply), dict)
    if status != 200:
        assert len(h.topic.sent) == before  # a refused request writes nothing
    assert h.failures() == 0 and h.server_errors() == 0


UNDECODABLE = b'[{"response_id": "r", "score": 1, "responded_at": "2026-11-20T10:00:00Z"}]'  # not compressed


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("key", [API_KEY, "not-a-key"])
def test_an_undecodable_body_gets_its_reply_and_no_server_error(h, key, encoding):
    """Found with NPSFLOW_FUZZ_SEED=2: a body whose Content-Encoding does not decode made aiohttp's read of the rest
    (after our reply) fail — an "Unhandled exception" logged per request, and at times the connection closed before
    the client had the reply. Each request on a fresh connection, several times (it was a race)."""
    before, errors = len(h.topic.sent), h.server_errors()
    for _ in range(10):
        status, kind, reply = request(h, "POST", API, data=UNDECODABLE,
                                      headers={**api_headers(key), "Content-Encoding": encoding, "Connection": "close"})
        assert (status, kind.split(";")[0]) == (401 if key != API_KEY else 400, "application/json"), reply[:200]
    assert h.server_errors() == errors and len(h.topic.sent) == before and h.failures() == 0


def test_a_malformed_request_is_logged_in_one_line_without_the_client_address(h, caplog):
    """aiohttp answers a request it cannot parse itself (400) and logged it at ERROR with a traceback and the client's
    address: noise any client can cause, and personal data. It is one INFO line now, naming the error only."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    bad_chunks = (b"POST /api/v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"zz\r\nxx\r\n0\r\n\r\n")
    unknown_encoding = (b"POST /api/v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: br\r\n"
                        b"Content-Length: 2\r\n\r\n[]")
    for data in (bad_chunks, unknown_encoding):
        assert raw_http(h, data).split()[1] == b"400"
    records = [r for r in caplog.records if r.name == "aiohttp.server"]  # (the harness has an access log; workers not)
    assert len(records) == 2 and all(r.levelno == logging.INFO and not r.exc_info for r in records), records
    assert all(r.getMessage().startswith("refused a malformed request: ") for r in records)
    assert not any("127.0.0.1" in r.getMessage() for r in records)


def test_an_undecodable_form_gets_the_invalid_page_and_no_server_error(h):
    before, errors = len(h.topic.sent), h.server_errors()
    for _ in range(5):
        status, kind, reply = request(h, "POST", f"/s/{h.token('inv-open')}", data=b"score=9&csrf=x",
                                      headers={"Content-Type": "application/x-www-form-urlencoded",
                                               "Content-Encoding": "gzip", "Connection": "close"})
        assert status == 404 and kind.startswith("text/html") and b"<h1>" in reply
    assert h.server_errors() == errors and len(h.topic.sent) == before and h.failures() == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_413_and_writes_nothing(h, chunked):
    record = {"response_id": "big", "score": 9, "responded_at": "2026-11-20T10:00:00Z"}
    body = json.dumps([{**record, "comment": "x" * (MAX_API_BYTES - 80)}]).encode()
    assert len(body) > MAX_API_BYTES
    before = len(h.topic.sent)
    status, _, reply = request(h, "POST", API, data=chunks(body, 65536) if chunked else body, headers=api_headers())
    assert status == 413 and json.loads(reply)["error"].startswith("body larger than")
    assert len(h.topic.sent) == before
    fits = json.dumps([{**record, "comment": "x" * (MAX_API_BYTES - 200)}]).encode()
    status, _, reply = request(h, "POST", API, data=chunks(fits, 65536) if chunked else fits, headers=api_headers())
    assert status == 200 and json.loads(reply)["results"][0]["truncated"] == ["comment"]  # sent whole, cut later


@pytest.mark.parametrize("head", [
    b"Authorization: Bearer \xff\xfe\x80\r\n",  # not UTF-8: read as lone surrogates
    b"Authorization: Bearer " + API_KEY.encode() + b"\x00\r\n",
    b"Host: evil.example\r\n",
    b"Content-Type: application/json; charset=\xff\r\n",
    b"X-Forwarded-For: \xff, 1.2.3.4\r\n",
])
def test_raw_header_bytes_never_fail_the_handler(h, head):
    body = b'[{"response_id": "raw", "score": 5, "responded_at": "2026-11-20T10:00:00Z"}]'
    host = b"" if head.startswith(b"Host") else b"Host: 127.0.0.1\r\n"
    line = raw_http(h, b"POST " + API.encode() + b" HTTP/1.1\r\n" + host + head +
                    b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    status = int(line.split()[1])
    assert status in {200, 400, 401, 421}, line
    assert h.failures() == 0


# ----------------------------------------------------------------------------------------- the survey page
def page(h: PublicHarness, method: str, token: str, **kw) -> tuple[int, str]:
    status, kind, body = request(h, method, URL("/s/" + quote(token, safe=""), encoded=True), **kw)
    assert status not in (500, 502, 503), body[:300]
    if status in PAGE_STATUSES and kind.startswith("text/html"):
        return status, body.decode("utf-8")
    return status, body.decode("utf-8", "replace")


def assert_no_raw(html: str, *inputs: str) -> None:
    """No input with a character HTML escapes is in the page as it was sent. Checked for the inputs that cannot be
    there by chance: wrapped in markers, or 8 characters or more (a short one like '">' is in every page)."""
    for text in inputs:
        if text and SPECIAL & set(text) and (text.startswith("ZQX") or len(text) >= 8):
            assert text not in html, f"unescaped input {text!r} in the page"


tokens = st.sampled_from(["valid", "unknown", "expired", "truncated", "tampered", "other_key", "sv", "closed",
                          "one_click", "random"])


def make_token(h: PublicHarness, kind: str, data) -> str:
    valid = h.token("inv-open")
    if kind == "valid":
        return valid
    if kind == "one_click":
        return h.token("inv-open", score=data.draw(st.integers(0, 10)))
    if kind == "unknown":
        return h.token(data.draw(st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=30)))
    if kind == "expired":
        return h.token("inv-open", expires=h.now - timedelta(seconds=data.draw(st.integers(0, 10**6))))
    if kind == "truncated":
        return valid[:data.draw(st.integers(0, len(valid) - 1))]
    if kind == "tampered":
        at = data.draw(st.integers(0, len(valid) - 1))
        return valid[:at] + data.draw(st.sampled_from("Aa0_-.=%<\"")) + valid[at + 1:]
    if kind == "other_key":
        from streams import links
        return links.sign_token("inv-open", h.now + timedelta(days=1), b"k" * 32, "k1")
    if kind == "sv":
        return h.token("inv-sv")
    if kind == "closed":
        return h.token("inv-closed")
    return data.draw(st.one_of(web_text.filter(bool), hostile, st.text(string.printable, min_size=1)))


@budget(200)
@given(tokens, st.data())
def test_any_token_gets_a_page_and_no_input_is_unescaped(h, kind, data):
    token = make_token(h, kind, data)
    stored = marked(data.draw(markup_text))
    h.invitations.by_id["inv-open"] = invitation("inv-open", resp=True, answered_at=int(h.now.timestamp() * 1000),
                                                 answer={"score": 4, "comment": stored})
    try:
        status, html = page(h, "GET", token)
    finally:
        h.invitations.by_id["inv-open"] = invitation("inv-open")
    assert status in {200, 404, 409, 410}
    assert_no_raw(html, token, stored, 'Acme <Oy> & "Sons"', BRAND)
    if kind in ("valid", "one_click") and status == 200:
        assert str(escape(stored)) in html  # the saved answer, prefilled and escaped
        assert str(escape(BRAND)) in html
    expected = {"valid": 200, "one_click": 200, "sv": 200, "unknown": 404, "truncated": 404, "other_key": 404,
                "expired": 410, "closed": 409}
    if kind in expected:
        assert status == expected[kind], (kind, token)
    assert h.failures() == 0


csrf_specs = st.one_of(
    st.sampled_from(["valid", "recent", "other_invitation", "old", "future"]),
    st.tuples(st.just("tampered"), st.integers(0, 60), st.sampled_from("A_\u00e9\u00b2<\"\x00")),
    st.tuples(st.just("truncated"), st.integers(0, 60)),
    st.tuples(st.just("garbage"), st.one_of(web_text, hostile)),
)
fields = st.fixed_dictionaries({}, optional={
    "csrf": csrf_specs,
    "score": st.one_of(st.integers(-2, 12).map(str), st.sampled_from(["10", " 7 ", "07", "\u00b2", "\u0663", "7.0", "",
                                                                      "1e1", "9" * 5000]), web_text, hostile,
                       markup_text.map(marked)),
    "comment": markup_text, "follow_up": markup_text,
    "step": st.sampled_from(["score", "follow_up", "", "other", "<step>"]),
    "skip": st.sampled_from(["1", "", "0"]),
    "a": st.one_of(st.sampled_from(["valid", "unsaved", "other_invitation", "forged"]), web_text, hostile),
})
SAVED_MS = int(NOW.timestamp() * 1000) - 60_000  # when the answer a "valid" receipt names was written (in the state)
SAVED = {"v": SAVED_MS * 1_000_000 + 17, "score": 6, "comment": "saved comment", "follow_up": None}


def receipt_value(h: PublicHarness, spec: str) -> str:
    from streams.guards import Receipt, receipt_token

    if spec == "valid":
        return receipt_token(h.book.secret, "inv-open", Receipt(6, SAVED_MS))
    if spec == "unsaved":  # an answer newer than the state knows (still on its way through Kafka)
        return receipt_token(h.book.secret, "inv-open", Receipt(6, SAVED_MS + 5000))
    if spec == "other_invitation":
        return receipt_token(h.book.secret, "inv-sv", Receipt(6, SAVED_MS))
    if spec == "forged":
        return receipt_token(b"not the secret", "inv-open", Receipt(6, SAVED_MS))
    return spec


def csrf_value(h: PublicHarness, spec) -> str:
    from streams.guards import CSRF_TTL

    token = csrf_token(h.book.secret, "inv-open", h.now)
    kind = spec if isinstance(spec, str) else spec[0]
    if kind == "valid":
        return token
    if kind == "recent":
        return csrf_token(h.book.secret, "inv-open", h.now - CSRF_TTL + timedelta(minutes=1))
    if kind == "old":
        return csrf_token(h.book.secret, "inv-open", h.now - CSRF_TTL - timedelta(minutes=1))
    if kind == "future":
        return csrf_token(h.book.secret, "inv-open", h.now + timedelta(hours=1))
    if kind == "other_invitation":
        return csrf_token(h.book.secret, "inv-sv", h.now)
    if kind == "tampered":
        at = spec[1] % len(token)
        return token[:at] + spec[2] + token[at + 1:]
    if kind == "truncated":
        return token[:spec[1] % len(token)]
    return spec[1]


@budget(300)
@given(fields)
@example({"csrf": "valid", "score": "\u00b2"})  # str.isdigit() took it, int() refused it: the unavailable page
@example({"csrf": ("tampered", 3, "\u00e9"), "score": "7", "step": "score"})  # hmac.compare_digest raised on it
@example({"csrf": "valid", "score": "9" * 5000})
def test_the_form_writes_exactly_the_valid_answers_and_escapes_everything(h, form):
    from streams.guards import CSRF_TTL

    post = {}
    for name, value in form.items():
        if name == "csrf":
            post[name] = csrf_value(h, value)
        elif name in ("comment", "follow_up"):
            post[name] = marked(value)
        elif name == "a":
            post[name] = receipt_value(h, value)
        else:
            post[name] = value
    before = len(h.topic.sent)
    h.invitations.by_id["inv-open"] = invitation("inv-open", resp=True, answered_at=SAVED_MS, answer=SAVED)
    try:  # (a success is 303 to the thank-you page, which the client follows: 200)
        status, html = page(h, "POST", h.token("inv-open"), data=urlencode(post).encode(),
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    finally:
        h.invitations.by_id["inv-open"] = invitation("inv-open")
    assert status in {200, 400, 404, 409}, (status, post)
    assert h.failures() == 0, post
    assert_no_raw(html, *post.values())

    # the oracle: the answer is written when the step is known, the CSRF token genuine and fresh, the score 0–10
    step = post.get("step") or "score"
    genuine = {csrf_token(h.book.secret, "inv-open", h.now),
               csrf_token(h.book.secret, "inv-open", h.now - CSRF_TTL + timedelta(minutes=1))}
    csrf_ok = post.get("csrf") in genuine
    score_text = post.get("score", "").strip()
    score_ok = score_text in {str(n) for n in range(11)} | {f"0{n}" for n in range(10)}
    # a follow-up completes the answer its receipt names, as the invitation's state holds it (score, comment)
    receipt_ok = form.get("a") == "valid"
    if step == "score":
        writes = csrf_ok and score_ok
    else:
        writes = step == "follow_up" and csrf_ok and receipt_ok and not post.get("skip")
    sent = h.sent()[before:]
    assert len(sent) == (1 if writes else 0), (post, status)
    comment = (post.get("comment") or "").strip()[:2000] or None
    if writes:
        (raw,) = sent
        expected = (int(score_text), comment) if step == "score" else (SAVED["score"], SAVED["comment"])
        assert (raw["response_id"], raw["score"], raw["comment"], raw["source"]) == ("inv-open", *expected, "web")
        if step == "follow_up":
            assert raw["follow_up"] == ((post.get("follow_up") or "").strip()[:2000] or None)
        assert status == 200 and f"Vastasit {expected[0]}." in html  # the thank-you page says what was recorded
    if step == "follow_up" and csrf_ok and form.get("a") == "unsaved" and not post.get("skip"):
        assert status == 409 and str(escape((post.get("follow_up") or "").strip()[:2000])) in html  # kept, escaped
    if comment and (status == 400 and step == "score"):
        assert str(escape(comment)) in html  # re-rendered, escaped


receipts = st.one_of(st.sampled_from(["valid", "unsaved", "other_invitation", "forged"]), web_text, hostile,
                     markup_text.map(marked))


@budget(150)
@given(tokens, receipts, st.data())
def test_the_thank_you_page_of_any_link_and_receipt_is_a_page_and_escapes_everything(h, kind, receipt, data):
    token = make_token(h, kind, data)
    a = receipt_value(h, receipt)
    h.invitations.by_id["inv-open"] = invitation("inv-open", resp=True, answered_at=SAVED_MS, answer=SAVED)
    try:
        status, kind_, body = request(h, "GET", URL("/s/" + quote(token, safe="") + "/thanks", encoded=True)
                                      .with_query(a=a), allow_redirects=False)
    finally:
        h.invitations.by_id["inv-open"] = invitation("inv-open")
    assert status in {200, 303, 404, 409, 410}, (status, body[:300])
    html = body.decode("utf-8", "replace")
    assert_no_raw(html, token, a)
    genuine = kind in ("valid", "one_click")
    if genuine and receipt in ("valid", "unsaved"):
        assert status == 200 and "Vastasit 6." in html and 'id="change"' in html  # what was recorded, changeable
    elif genuine:  # no genuine receipt for this invitation: to the survey page, which says where it stands
        assert status == 303
    assert h.failures() == 0
