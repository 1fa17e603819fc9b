"""Issue 13, point 1: every invitation answerable through any web process. `stack up --workers 2` on one real
broker: the sink worker, two process workers (the invitations table split between them) and one web worker (no
consumer group, no tables). Every invitation's page is opened and answered through the web worker, then opened
again and its answer changed through each process worker's own public listener — half of them held by the other
process worker. The final report must equal what was sent (an oracle from the input: one response per invitation,
categories of the last score sent). The internal listeners want a token: the routed reads carry it."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import requests

from npsflow import stack
from npsflow.reader import internal_headers
from schemas import codec as avro
from streams import links
from streams.dispatch import link_key
from tests.e2e_helpers import Env, read_topic, wait_for, write_jsonl
from tests.test_e2e_survey import PROGRAMS, SECRET, csrf_of

pytestmark = pytest.mark.kafka

INVITATIONS = 16
TEXTS = {"sv-FI": "Hur troligt är det att du skulle rekommendera Acme",  # sv-FI → the sv texts
         "fi": "Kuinka todennäköisesti suosittelisit yritystä Acme"}


@pytest.fixture
def split_env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    programs = tmp_path / "programs.yaml"
    programs.write_text(PROGRAMS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPSFLOW_") or k == "NPSFLOW_CACHE"}
    env.update(NPSFLOW_HOME=str(home), NPSFLOW_NAMESPACE="t" + uuid.uuid4().hex[:10], NPSFLOW_SINK_MAX_AGE="0.3",
               NPSFLOW_SECRET=SECRET, NPSFLOW_PROGRAMS=str(programs), NPSFLOW_PAGE_RATE="100",
               NPSFLOW_INTERNAL_TOKEN="routing-e2e-internal-token-0123")
    e = Env(home, env)
    try:
        yield e
    finally:
        stack.down(e.settings)  # every worker and the broker, also when the test failed


def stats(env, info: dict) -> dict:
    return requests.get(f"{info['internal_url']}/api/v1/stats", headers=internal_headers(env.settings),
                        timeout=30).json()


def invite(env, tmp_path, workers: list[dict], bootstrap: str) -> dict[str, str]:
    """INVITATIONS trigger events → invitations (outbox); {invitation id: the contact's locale}."""
    now = datetime.now(timezone.utc).isoformat()
    locales = {f"ev-{i:02d}": "sv-FI" if i % 2 else "fi" for i in range(INVITATIONS)}
    lines = [{"event_id": ev, "org_id": "acme", "event_type": "job.completed", "occurred_at": now,
              "contact": {"contact_id": f"c-{ev}", "email": f"{ev}@kunde.fi", "locale": locale},
              "location": "Espoo", "employee": ev} for ev, locale in locales.items()]
    env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "t.jsonl", lines)))
    wait_for(lambda: sum(stats(env, w).get("deliver.invitation.sent", 0) for w in workers) >= INVITATIONS,
             what="the invitations sent")
    codec = avro.AvroCodec()
    records = [codec.decode(m.value) for m in
               read_topic(bootstrap, env.settings.topics.dispatches, INVITATIONS, until_idle=True)]
    by_event = {r["event_id"]: r["invitation_id"] for r in records if r.get("invitation_id")}
    assert sorted(by_event) == sorted(locales)
    return {by_event[ev]: locale for ev, locale in locales.items()}


def holder(env, workers: list[dict], inv: str) -> str:
    """The one process worker whose internal listener has the invitation (asked directly, no routing)."""
    answers = {w["name"]: requests.get(f"{w['internal_url']}/api/v1/invitation/{inv}", timeout=30,
                                       headers=internal_headers(env.settings)).status_code for w in workers}
    held = [name for name, status in answers.items() if status == 200]
    assert len(held) == 1 and set(answers.values()) == {200, 409}, answers
    return held[0]


def url_of(base: str, inv: str) -> str:
    token = links.sign_token(inv, datetime.now(timezone.utc) + timedelta(days=1), link_key(SECRET.encode()), "k1")
    return f"{base}/s/{token}"


def answer(base: str, inv: str, locale: str, score: int) -> float:
    """Open the invitation's page through ``base`` and answer it; the page's time in seconds."""
    url = url_of(base, inv)
    started = time.perf_counter()
    page = requests.get(url, timeout=30)
    took = time.perf_counter() - started
    assert page.status_code == 200 and TEXTS[locale] in page.text, (base, inv, page.status_code)
    thanks = requests.post(url, data={"csrf": csrf_of(page.text), "score": str(score)}, timeout=30)
    assert thanks.status_code == 200, (base, inv, thanks.status_code)
    return took


def category(score: int) -> str:
    return "promoters" if score >= 9 else "passives" if score >= 7 else "detractors"


def test_every_invitation_is_answerable_through_the_web_worker_and_any_process_worker(split_env, tmp_path):
    env = split_env
    state = stack.up(env.settings, brokers=1, workers=2)
    workers, (web,) = state["workers"], state["web"]
    assert [w["name"] for w in workers] == ["process-1", "process-2"] and web["role"] == "web"
    assert [w["name"] for w in stack.status(env.settings)["web"]] == ["web-1"]
    invitations = invite(env, tmp_path, workers, state["kafka"]["bootstrap"])
    holders = {inv: holder(env, workers, inv) for inv in invitations}
    assert set(holders.values()) == {"process-1", "process-2"}  # both halves of the table are asked

    first = {inv: i % 11 for i, inv in enumerate(invitations)}
    routed = [answer(web["public_url"], inv, locale, first[inv]) for inv, locale in invitations.items()]
    last, local, remote = {}, [], []
    for i, (inv, locale) in enumerate(invitations.items()):  # each invitation changed through a process worker
        via = workers[i % 2]
        last[inv] = 10 - first[inv]
        took = answer(via["public_url"], inv, locale, last[inv])
        (local if holders[inv] == via["name"] else remote).append(took)
    assert local and remote  # each process worker answered invitations it holds and ones the other holds

    expected = {c: sum(category(s) == c for s in last.values()) for c in ("promoters", "passives", "detractors")}

    def report():
        r = env.cli_json("report")["total"]
        return r if r["responses"] == INVITATIONS and all(r[c] == n for c, n in expected.items()) else None

    wait_for(report, what="one response per invitation, with the last score sent", timeout=120, interval=1)
    web_stats = stats(env, web)
    assert web_stats.get("survey.routed", 0) + web_stats.get("survey.routed_retry", 0) >= 2 * INVITATIONS
    assert web_stats.get("survey.answer.score") == INVITATIONS
    assert sum(stats(env, w).get("survey.routed", 0) for w in workers) >= 2 * len(remote)
    log = (env.home / "workers" / "web-1.log").read_text()
    assert "Error handling request" not in log and "/s/" not in log and "Bearer" not in log
    ms = lambda xs: round(statistics.median(xs) * 1000, 1)  # noqa: E731
    print(f"\nsurvey page GET median: web worker (routed) {ms(routed)} ms, process worker holding it {ms(local)} ms, "
          f"process worker routing to the other {ms(remote)} ms")

    # process-2 stops: its partitions move to process-1, which publishes them; meanwhile the web worker's pages
    # say "unavailable" (503, never an error), then every one answers again
    assert stack.stop_worker(replace(env.settings, worker_name="process-2"))
    direct = {}

    def taken_over():  # process-1 holds every partition and finds every invitation in its table (a 404: lost)
        direct.update({inv: requests.get(f"{workers[0]['internal_url']}/api/v1/invitation/{inv}", timeout=30,
                                         headers=internal_headers(env.settings)).status_code for inv in invitations})
        assert 404 not in direct.values(), f"invitations lost in the takeover: {direct}"
        return set(direct.values()) == {200}

    wait_for(taken_over, what="process-1 to take over process-2's partitions", timeout=120)
    seen: set[int] = set()

    def pages_answer():
        statuses = {inv: requests.get(url_of(web["public_url"], inv), timeout=30).status_code for inv in invitations}
        seen.update(statuses.values())
        return set(statuses.values()) == {200}

    wait_for(pages_answer, what="the web worker to route every page to the new owner", timeout=60, interval=0.5)
    assert seen <= {200, 503}, seen  # "unavailable" while the directory catches up; never invalid, never an error
