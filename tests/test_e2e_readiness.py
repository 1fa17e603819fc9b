"""GET /readyz (web.health): a worker's readiness in its role, against the real broker and real ClickHouse.

* a running worker (role all) is ready on both listeners, names its role, needs no token, shows no secret;
* the ClickHouse check fails with a clickhouse reason on a store that is really closed (chDB, not mocked);
* a worker on its own broker becomes unhealthy with a kafka reason once that broker is stopped.
"""

from __future__ import annotations

import asyncio

import pytest
import requests

from deploy.local.kafka import LocalKafka
from sinks import clickhouse as ch
from tests.e2e_helpers import make_env, wait_for
from web.health import CachedProbe, Readiness

pytestmark = pytest.mark.timeout(300)

TOKEN = "readiness-test-token-0123456789"


def readyz(url: str) -> tuple[int, dict]:
    reply = requests.get(f"{url}/readyz", timeout=30)
    return reply.status_code, reply.json()


@pytest.fixture
def env(tmp_path, kafka_bootstrap):
    env = make_env(tmp_path, kafka_bootstrap, NPSFLOW_INTERNAL_TOKEN=TOKEN)
    yield env
    env.stop_worker()


def test_a_running_worker_is_ready_in_its_role_on_both_listeners(env):
    env.start_worker()
    for url in (env.public_url, env.internal_url):  # the internal listener's token is not needed for /readyz
        status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(readyz(url)), timeout=60,
                                what="ready")
        assert body["status"] == "ready" and body["role"] == "all"
        assert body["checks"]["kafka"] == "ok" and body["checks"]["clickhouse"] == "ok"
        assert body["checks"]["lag"]["ok"] is True and body["checks"]["lag"]["partitions"] > 0
        text = repr(body)
        assert TOKEN not in text and str(env.home) not in text  # no token, no DSN/path


def test_a_closed_clickhouse_store_makes_the_sink_role_unhealthy(ch_dsn):
    store = ch.ClickHouseStore(ch_dsn)
    readiness = Readiness(app=None, role="web", store=store)  # role web: no consumer, only the store matters
    readiness.kafka_probe = CachedProbe(_fine)  # (the Kafka side is proven in the tests with a worker)

    async def check():
        readiness.started = True
        first = await readiness.report()
        store.close()
        readiness.clickhouse_probe._at = None  # the cached answer is old by now
        return first, await readiness.report()

    (ok_status, ok), (bad_status, bad) = asyncio.run(check())
    assert ok_status == 200 and ok["checks"]["clickhouse"] == "ok"
    assert bad_status == 503 and bad["status"] == "unhealthy"
    assert [r.split(":")[0] for r in bad["reasons"]] == ["clickhouse"]
    assert "closed" in bad["reasons"][0]


async def _fine():
    return None


def test_a_worker_whose_broker_stops_becomes_unhealthy_with_a_kafka_reason(tmp_path):
    kafka = LocalKafka(tmp_path / "own-kafka")
    try:
        bootstrap = kafka.start(timeout=120)
        env = make_env(tmp_path, bootstrap)
        env.start_worker()
        try:
            url = env.public_url
            wait_for(lambda: readyz(url)[0] == 200, timeout=60, what="ready")
            kafka.stop()
            status, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(readyz(url)), timeout=60,
                                    what="unhealthy")
            assert body["status"] == "unhealthy" and body["role"] == "all"
            assert any(r.startswith("kafka: ") for r in body["reasons"]), body
        finally:
            env.kill_worker()  # its broker is gone: a graceful stop would wait for Kafka
    finally:
        kafka.stop()


def classified(env) -> int:
    return sum(v for k, v in env.stats().items() if k.startswith("classify.") and isinstance(v, int))


def web_worker(env, tmp_path):
    from tests.e2e_helpers import Env

    home = tmp_path / "web"
    home.mkdir()
    return Env(home, {**env.vars, "NPSFLOW_HOME": str(home), "NPSFLOW_ROLE": "web"})


def test_a_web_role_worker_serves_the_responses_api_and_reports_ready_without_consuming(tmp_path, kafka_bootstrap):
    """Role web next to a role-all worker (which owns embedded chDB): the web worker joins no consumer group, opens
    no chDB, is ready on Kafka alone; a response posted to it is counted by the other worker; an invitation id it
    does not hold is asked of the worker holding its partition (routing, issue 13: "unknown", not "unavailable");
    its reads answer 503 (embedded chDB is the other's)."""
    from datetime import datetime, timezone

    from tests.test_e2e_survey import API_KEY, survey_env

    env = survey_env(tmp_path, kafka_bootstrap)
    web = web_worker(env, tmp_path)
    try:
        env.start_worker()
        web.start_worker()
        assert web.settings.worker_info()["role"] == "web"
        status, body = readyz(web.public_url)
        assert status == 200, body
        assert body["role"] == "web" and body["checks"] == {"kafka": "ok", "clickhouse": "not used",
                                                             "lag": "not used"}
        now = datetime.now(timezone.utc).isoformat()
        reply = requests.post(f"{web.public_url}/api/v1/responses", timeout=30,
                              headers={"Authorization": f"Bearer {API_KEY}"},
                              json=[{"response_id": "web-1", "score": 10, "responded_at": now},
                                    {"response_id": "x", "invitation_id": "inv-nowhere", "score": 3,
                                     "responded_at": now}])
        assert [(r["status"], r.get("reason")) for r in reply.json()["results"]] == [
            ("accepted", None), ("rejected", "invitation_unknown")]
        wait_for(lambda: classified(env) >= 1 or None, timeout=60, what="the answer classified by the other worker")
        assert requests.get(f"{web.internal_url}/api/v1/report", timeout=30).status_code == 503
        assert requests.get(f"{web.public_url}/s/not-a-token", timeout=30).status_code == 404
    finally:
        web.stop_worker()
        env.stop_worker()
