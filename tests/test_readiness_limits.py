"""/readyz at its limits, on the real broker: consumer lag above NPSFLOW_READY_MAX_LAG, and a web worker whose
ClickHouse server is down when it starts (it starts, says why it is unhealthy, and reads answer 503 — not an
exit, not a 500)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from types import SimpleNamespace

import pytest
import requests
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from npsflow.reader import internal_headers
from tests.e2e_helpers import make_env
from web.health import Readiness

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


class GroupMember:
    """What Readiness.measure_lag asks of Faust's consumer, answered by a real aiokafka group member: its
    assignment, the partitions' end and earliest offsets, and the offsets it committed."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self._committed_offset: dict = {}

    def assignment(self):
        return self.consumer.assignment()

    async def highwaters(self, *tps):
        return await self.consumer.end_offsets(list(tps))

    async def earliest_offsets(self, *tps):
        return await self.consumer.beginning_offsets(list(tps))

    async def commit_all(self) -> None:
        ends = await self.highwaters(*self.assignment())
        await self.consumer.commit(dict(ends))
        self._committed_offset = dict(ends)


def test_lag_above_the_limit_makes_a_consuming_worker_unhealthy_and_ready_again_once_consumed(kafka_bootstrap,
                                                                                            kafka_topics):
    topic, produced, limit = kafka_topics(partitions=1), 57, 20

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(produced):
                await producer.send(topic, f"r{i}".encode(), key=f"k{i % 7}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            while not consumer.assignment():
                await asyncio.sleep(0.1)
            member = GroupMember(consumer)
            app = SimpleNamespace(agents={"a": SimpleNamespace(channel=SimpleNamespace(topics=(topic,)))},
                                  consumer=member, rebalancing=False, in_recovery=False, rebalancing_count=1)
            clock = [0.0]
            readiness = Readiness(app, role="process", max_lag=limit, producer_client=lambda: consumer._client,
                                  clock=lambda: clock[0])
            readiness.started = True
            behind = await readiness.report()
            await member.commit_all()
            clock[0] += 60  # past the probes' cache
            caught_up = await readiness.report()
            return behind, caught_up
        finally:
            await consumer.stop()

    (status, body), (status_after, body_after) = asyncio.run(run())
    assert status == 503 and body["status"] == "unhealthy"
    assert body["checks"]["lag"] == {"records": produced, "partitions": 1, "max": limit, "ok": False}
    assert body["reasons"] == [f"lag: {produced} records behind on 1 partitions (most on {topic}: {produced}), "
                               f"more than NPSFLOW_READY_MAX_LAG={limit}"]
    assert status_after == 200 and body_after["checks"]["lag"]["records"] == 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_web_worker_starts_while_its_clickhouse_server_is_down_and_reports_why(tmp_path, kafka_bootstrap):
    password = "pw-" + uuid.uuid4().hex
    env = make_env(tmp_path, kafka_bootstrap, NPSFLOW_ROLE="web",
                   NPSFLOW_CLICKHOUSE_DSN=f"http://reader:{password}@127.0.0.1:{closed_port()}/npsflow")
    try:
        env.start_worker()
        reply = requests.get(f"{env.public_url}/readyz", timeout=30)
        body = reply.json()
        assert reply.status_code == 503 and body["checks"] == {"kafka": "ok", "clickhouse": "failed",
                                                                "lag": "not used"}
        (reason,) = body["reasons"]
        assert reason.startswith("clickhouse: SELECT 1 failed: ClickHouseError: cannot open ClickHouse: ")
        read = requests.get(f"{env.internal_url}/api/v1/report", headers=internal_headers(env.settings), timeout=30)
        assert read.status_code == 503 and read.json()["error"].startswith("cannot open ClickHouse: ")
        shown = reply.text + read.text + env.settings.worker_file.read_text() + env.settings.worker_log.read_text()
        assert password not in shown
    finally:
        env.stop_worker()
