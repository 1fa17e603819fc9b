"""The survey page and the response API end to end: a real worker (real broker, embedded ClickHouse), HTTP
from this process. Every refusal is checked to write nothing."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from html import unescape
from urllib.parse import urlsplit

import pytest
import requests

from schemas import codec as avro
from streams import links
from streams.dispatch import link_key
from streams.guards import api_key_hash
from tests.e2e_helpers import make_env, read_topic, wait_for, write_jsonl
from tests.programs import DEFAULT, acme, bolt, programs_yaml, service, shop

pytestmark = pytest.mark.kafka

SECRET = "survey-e2e-secret-0123456789"
API_KEY = "npk_test-key-for-the-e2e-only"
OTHER_KEY = "npk_the-other-organizations-key"


def programs_text(by_sms: bool = False) -> str:
    """Acme's service (by e-mail, or by SMS first) and Bolt's shop, each organization with an API key."""
    sms = {"sms_sender_id": "Acme"} if by_sms else {}
    return programs_yaml(
        acme(service(channels=["sms", "email"] if by_sms else ["email"]),
             brand={"colors": {"primary": "#0B5FFF"}, **sms}, review_url="https://reviews.example.com/acme",
             api_keys=[api_key_hash(API_KEY)]),
        bolt(shop(quiet_hours=DEFAULT), api_keys=[api_key_hash(OTHER_KEY)]))


PROGRAMS = programs_text()


def survey_env(tmp_path, kafka_bootstrap):
    programs = tmp_path / "programs.yaml"
    programs.write_text(PROGRAMS)
    return make_env(tmp_path, kafka_bootstrap, NPSFLOW_PROGRAMS=str(programs), NPSFLOW_SECRET=SECRET,
                    NPSFLOW_EDIT_WINDOW="4s")


@pytest.fixture
def env(tmp_path, kafka_bootstrap):
    e = survey_env(tmp_path, kafka_bootstrap)
    yield e
    e.stop_worker()


def invite(env, tmp_path, n: int = 1) -> list[str]:
    """n trigger events → n invitations sent (outbox); their invitation ids."""
    now = datetime.now(timezone.utc).isoformat()
    lines = [{"event_id": f"ev-{i}", "org_id": "acme", "event_type": "job.completed", "occurred_at": now,
              "contact": {"contact_id": f"c-{i}", "email": f"c{i}@kunde.fi", "locale": "sv-FI"},
              "location": "Espoo", "employee": f"e-{i}"} for i in range(n)]
    env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "t.jsonl", lines)))
    wait_for(lambda: env.stats().get("deliver.invitation.sent", 0) >= n, what="the invitations")
    codec = avro.AvroCodec()
    records = [codec.decode(m.value)
               for m in read_topic(env.vars["NPSFLOW_KAFKA"], env.settings.topics.dispatches, n, until_idle=True)]
    by_event = {r["event_id"]: r["invitation_id"] for r in records}  # a record may be there twice (at least once)
    return [by_event[e] for e in sorted(by_event)]


def link(env, inv: str, score: int | None = None, expires: datetime | None = None) -> str:
    token = links.sign_token(inv, expires or datetime.now(timezone.utc) + timedelta(days=1),
                             link_key(SECRET.encode()), "k1", score=score)
    return f"{env.public_url}/s/{token}"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf"', html).group(1) or ""


def field(html: str, name: str) -> str | None:
    """A hidden input's value as a browser would submit it (attribute entities decoded)."""
    m = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html)
    return unescape(m.group(1)) if m else None


def state_has_answer(env, inv: str) -> bool:
    """Whether the invitation's state holds an answer (a follow-up completes that answer), read from the worker's
    internal invitation API (the survey page itself is rate limited per invitation)."""
    from npsflow.reader import internal_headers

    reply = requests.get(f"{env.internal_url}/api/v1/invitation/{inv}", headers=internal_headers(env.settings),
                         timeout=30)
    return reply.status_code == 200 and bool((reply.json().get("invitation") or {}).get("answer"))


def answers(env) -> int:
    return env.stats().get("survey.answer.score", 0) + env.stats().get("survey.answer.follow_up", 0)


def test_answer_through_the_page_lands_in_clickhouse_with_the_invitations_segments(env, tmp_path):
    env.start_worker()
    inv, other = invite(env, tmp_path, 2)
    url, other_url = link(env, inv), link(env, other)
    page = requests.get(url, timeout=30)
    assert page.status_code == 200
    assert "Hur troligt är det att du skulle rekommendera Acme" in page.text  # sv-FI → sv texts, org's branding
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp and page.headers["Cache-Control"] == "no-store"
    assert page.headers["Cross-Origin-Opener-Policy"] == "same-origin" and page.headers["Content-Encoding"] == "gzip"
    assert "Strict-Transport-Security" not in page.headers  # plain http here (HSTS: tests/test_transport_policy.py)
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?://', page.text)  # no external assets
    token = csrf_of(page.text)
    posted = requests.post(url, data={"csrf": token, "score": "3", "comment": "Kom <script>alert(1)</script> sent"},
                           timeout=30, allow_redirects=False)
    # POST → redirect → GET: the thank-you page has a URL of its own (bound to the link), so reload and Back never post
    assert posted.status_code == 303 and posted.headers["Location"].startswith(urlsplit(url).path + "/thanks?a=")
    thanks = requests.get(requests.compat.urljoin(url, posted.headers["Location"]), timeout=30)
    assert thanks.status_code == 200 and "Vad borde vi förbättra?" in thanks.text  # detractor follow-up (sv)
    assert "Du svarade 3." in thanks.text and 'id="change"' in thanks.text  # what was recorded, and "change"
    assert requests.get(thanks.url, timeout=30).text.count("Du svarade 3.") == 1 and answers(env) == 1  # a reload
    wait_for(lambda: state_has_answer(env, inv) or None, what="the answer to reach the invitation")  # (a person
    # takes longer to write the follow-up)
    follow = requests.post(url, data={"csrf": csrf_of(thanks.text), "step": "follow_up", "a": field(thanks.text, "a"),
                                      "follow_up": "Ring innan ni kommer"}, timeout=30)
    assert follow.status_code == 200 and "/thanks?a=" in follow.url and "Du svarade 3." in follow.text
    assert 'name="follow_up"' not in follow.text  # done: no follow-up question any more
    report = wait_for(lambda: (lambda r: r if r["total"]["responses"] == 1 else None)(
        env.cli_json("report", "--by", "location,employee")), what="the response in ClickHouse")
    assert [(r["location"], r["employee"], r["detractors"]) for r in report["rows"]] == [("Espoo", "e-0", 1)]
    classified = [avro.AvroCodec().decode(m.value) for m in
                  read_topic(env.vars["NPSFLOW_KAFKA"], env.settings.topics.classified, 2)]
    latest = max(classified, key=lambda r: r["version"])
    assert (latest["response_id"], latest["invitation_id"], latest["score"], latest["comment"], latest["follow_up"]) == (
        inv, inv, 3, "Kom <script>alert(1)</script> sent", "Ring innan ni kommer")
    assert latest["segment"] == {"location": "Espoo", "employee": "e-0"} and latest["source"] == "web"
    assert (latest["org_id"], latest["earlier_days"]) == ("acme", [])  # the invitation's organization

    # skipping the follow-up records nothing; the one-click link opened again shows the answer, submits nothing
    before = answers(env)
    skip = requests.post(url, data={"csrf": csrf_of(thanks.text), "step": "follow_up", "a": field(thanks.text, "a"),
                                    "skip": "1"}, timeout=30)
    assert skip.status_code == 200 and "/thanks?a=" in skip.url and answers(env) == before
    wait_for(lambda: "Kom &lt;script&gt;" in requests.get(url, timeout=30).text or None, interval=2,
             what="the page to know the answer")
    again = requests.get(link(env, inv, score=10), timeout=30)
    assert again.status_code == 200 and "<script" not in again.text  # no second automatic submit
    assert re.search(r'<input[^>]*value="3"[^>]*checked|<input[^>]*checked[^>]*value="3"', again.text)
    assert "Kom &lt;script&gt;alert(1)&lt;/script&gt; sent" in again.text  # the comment, prefilled and inert

    # a form body that arrives chunked (no Content-Length) is held to the same limit (another invitation: this one
    # has had its 10 requests at once — page, answer, thank-you pages, reload, follow-up — and is rate limited now)
    big = requests.post(other_url, data=(b"comment=" + b"x" * 30_000 for _ in range(3)), timeout=30,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413 and answers(env) == before


def test_refused_requests_write_nothing(env, tmp_path):
    env.start_worker()
    first, second = invite(env, tmp_path, 2)
    url, other = link(env, first), link(env, second)
    token = csrf_of(requests.get(url, timeout=30).text)
    other_token = csrf_of(requests.get(other, timeout=30).text)
    forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    expired = link(env, first, expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    cases = [
        (requests.get(forged, timeout=30), 404),
        (requests.post(forged, data={"csrf": token, "score": "9"}, timeout=30), 404),
        (requests.get(expired, timeout=30), 410),
        (requests.post(expired, data={"csrf": token, "score": "9"}, timeout=30), 410),
        (requests.get(link(env, "nosuchinvitation2345"), timeout=30), 404),
        (requests.post(other, data={"score": "9"}, timeout=30), 404),  # no CSRF token
        # another invitation's token: the form again with a fresh one (as for a page left open too long)
        (requests.post(other, data={"csrf": token, "score": "9"}, timeout=30), 400),
        (requests.post(other, data={"csrf": other_token, "score": "9", "comment": "x" * 60_000}, timeout=30), 413),
        (requests.post(other, data={"csrf": other_token, "score": "11"}, timeout=30), 400),
    ]
    assert [r.status_code for r, _ in cases] == [status for _, status in cases]
    for response, _ in cases:
        assert "Content-Security-Policy" in response.headers and "<html" in response.text.lower()
    assert answers(env) == 0 and env.stats().get("survey.csrf_refused") == 2
    # a link that cannot be read names no invitation: the page speaks the browser's language (Accept-Language)
    for accept, title in (("sv-SE,sv;q=0.9,en;q=0.8", "Länken är inte giltig"), ("de-DE,fi;q=0.5", "Linkki on "
                          "virheellinen"), ("", "This link is not valid")):
        invalid = requests.get(forged, headers={"Accept-Language": accept}, timeout=30)
        assert invalid.status_code == 404 and f"<h1>{title}</h1>" in invalid.text

    # one invitation hammered: its own limit answers 429 (the client's is far from used up)
    hammered = [requests.post(other, data={"score": "9"}, timeout=30).status_code for _ in range(8)]
    assert 429 in hammered and set(hammered) <= {404, 429} and answers(env) == 0

    # one answer and a change within the edit window (4 s); after it, "already answered" and nothing written
    started = time.monotonic()
    assert requests.post(url, data={"csrf": token, "score": "10"}, timeout=30).status_code == 200  # (redirected)
    assert requests.post(url, data={"csrf": token, "score": "9"}, timeout=30).status_code == 200  # an edit
    wait_for(lambda: env.stats().get("classify.joined", 0) >= 2 and time.monotonic() - started > 4.5, interval=0.5,
             what="the answers to reach classify and the edit window to pass")
    (closed,) = wait_for(lambda: (lambda r: (r,) if r.status_code == 409 else None)(requests.get(url, timeout=30)),
                         interval=3, what="the link to say it was answered")  # (a 4xx Response is falsy)
    assert "<html" in closed.text.lower()
    late = requests.post(url, data={"csrf": token, "score": "0"}, timeout=30)
    assert late.status_code == 409 and answers(env) == 2
    report = wait_for(lambda: (lambda r: r if r["total"]["responses"] == 1 and r["total"]["promoters"] == 1 else None)(
        env.cli_json("report")), what="one response, the edit")
    assert report["total"]["detractors"] == 0

    # many requests from one client, each for another (forged) link: the client's limit, with Retry-After
    statuses = [requests.get(forged[:-2] + f"{i:02d}", timeout=30) for i in range(45)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    assert answers(env) == 2

    # the worker's log holds no client address, no answer text, no link token
    log = (env.home / "worker.log").read_text()
    assert "Error handling request" not in log and token not in log and url.rsplit("/", 1)[1] not in log


def test_one_click_link_preselects_and_submits_only_in_a_browser(env, tmp_path):
    env.start_worker()
    (inv,) = invite(env, tmp_path)
    page = requests.get(link(env, inv, score=9), timeout=30)
    assert page.status_code == 200
    assert re.search(r'<input[^>]*value="9"[^>]*checked|<input[^>]*checked[^>]*value="9"', page.text)
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["Content-Security-Policy"]).group(1)
    assert f'<script nonce="{nonce}"' in page.text  # submitted by the page's own script: a prefetch records nothing
    assert answers(env) == 0


def test_response_api_validates_each_record_and_needs_the_orgs_key(env, tmp_path):
    env.start_worker()
    (inv,) = invite(env, tmp_path)
    api = f"{env.public_url}/api/v1/responses"
    now = datetime.now(timezone.utc).isoformat()
    batch = [{"response_id": "api-1", "score": 10, "responded_at": now, "segment": {"location": "Turku"}},
             {"response_id": "api-2", "score": 11, "responded_at": now},
             {"response_id": "whatever", "invitation_id": inv, "score": 6, "responded_at": now},
             "not an object",
             {"response_id": "api-3", "score": 7, "responded_at": now, "comment": "\ud800"}]  # not encodable
    assert requests.post(api, json=batch, timeout=30).status_code == 401
    assert requests.post(api, json=batch, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    reply = requests.post(api, json=batch, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert reply.status_code == 200
    body = reply.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    assert [(r["index"], r["status"], r.get("reason"), r["response_id"], r.get("stored_as"))
            for r in body["results"]] == [
        (0, "accepted", None, "api-1", "acme:api-1"), (1, "rejected", "score_out_of_range", "api-2", None),
        (2, "accepted", None, "whatever", inv),  # one response per invitation: stored under the invitation's id
        (3, "rejected", "not_a_json_object", None, None), (4, "rejected", "avro_encode_error", "api-3", None)]

    # another organization can neither answer nor even probe acme's invitation, nor collide with its ids
    other = requests.post(api, headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=30, json=[
        {"response_id": "x", "invitation_id": inv, "score": 0, "responded_at": now},
        {"response_id": "api-1", "score": 0, "responded_at": now}]).json()
    assert [(r["status"], r.get("reason"), r.get("stored_as")) for r in other["results"]] == [
        ("rejected", "invitation_unknown", None), ("accepted", None, "bolt:api-1")]

    # a request under another host name (DNS rebinding of a page elsewhere) is not served
    foreign = requests.post(api, json=batch, headers={"Authorization": f"Bearer {API_KEY}", "Host": "evil.example"},
                            timeout=30)
    assert foreign.status_code == 421
    assert requests.get(f"{env.internal_url}/dashboard", headers={"Host": "evil.example:80"},
                        timeout=30).status_code == 421
    port = env.public_url.rsplit(":", 1)[1]
    assert requests.get(f"{env.public_url}/healthz", headers={"Host": f"localhost:{port}"},
                        timeout=30).status_code == 200

    big = requests.post(api, data=b"[" + b"0," * 600_000 + b"0]", timeout=30,
                        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert big.status_code == 413
    chunked = requests.post(api, data=(b"[" + b"0," * 100_000 + b"0]" for _ in range(8)), timeout=30,
                            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert chunked.status_code == 413  # no Content-Length: the limit still holds
    split = requests.post(api, data=iter([b'[{"response_id": "api-4", "score": 9, "responded_at": "', now.encode(),
                                          b'"}]']), timeout=30,
                          headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert split.status_code == 200 and split.json()["accepted"] == 1  # a body in pieces is read whole

    report = wait_for(lambda: (lambda r: r if r["total"]["responses"] == 4 else None)(
        env.cli_json("report", "--by", "location")), what="the API's responses in ClickHouse")
    assert sorted((r["location"], r["responses"]) for r in report["rows"]) == [
        ("(none)", 2), ("Espoo", 1), ("Turku", 1)]


def test_the_links_actually_sent_open_the_page(env, tmp_path):
    """The outbox's SMS (compact token) and e-mail (full token) links, as the respondent gets them."""
    import email
    from email import policy

    programs = tmp_path / "programs.yaml"
    programs.write_text(programs_text(by_sms=True))
    env.start_worker()
    now = datetime.now(timezone.utc).isoformat()
    lines = [{"event_id": "by-sms", "org_id": "acme", "event_type": "job.completed", "occurred_at": now,
              "contact": {"contact_id": "c-sms", "phone": "+358401112222"}, "location": "Oulu"},
             {"event_id": "by-mail", "org_id": "acme", "event_type": "job.completed", "occurred_at": now,
              "contact": {"contact_id": "c-mail", "email": "m@kunde.fi"}, "location": "Vaasa"}]
    env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "t.jsonl", lines)))
    wait_for(lambda: env.stats().get("deliver.invitation.sent", 0) >= 2, what="the invitations")
    outbox = env.home / "outbox"
    sms = json.loads((outbox / "sms.jsonl").read_text().splitlines()[0])
    (sms_url,) = re.findall(r"http://\S+", sms["body"])
    mail = email.message_from_bytes(next((outbox / "email").glob("*.eml")).read_bytes(), policy=policy.default)
    mail_url = re.findall(r"http://\S+/s/[A-Za-z0-9_.-]+", mail.get_body(("plain",)).get_content())[0]
    for url, score in ((sms_url, "2"), (mail_url, "10")):
        page = requests.get(url, timeout=30)
        assert page.status_code == 200 and "Kuinka todennäköisesti suosittelisit yritystä Acme" in page.text
        assert requests.post(url, data={"csrf": csrf_of(page.text), "score": score}, timeout=30).status_code == 200
    report = wait_for(lambda: (lambda r: r if r["total"]["responses"] == 2 else None)(
        env.cli_json("report", "--by", "location")), what="both answers")
    assert sorted((r["location"], r["promoters"], r["detractors"]) for r in report["rows"]) == [
        ("Oulu", 0, 1), ("Vaasa", 1, 0)]
    # the same through the worker's API, next to the (empty) previous hour
    since = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    compared = env.cli_json("report", "--by", "location", "--since", since, "--compare-previous")
    assert (compared["total"]["responses"], compared["total"]["previous"]["responses"]) == (2, 0)
    assert [(r["location"], r["change"]) for r in sorted(compared["rows"], key=lambda r: r["location"])] == [
        ("Oulu", None), ("Vaasa", None)]
