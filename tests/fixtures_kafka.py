"""Real Apache Kafka for the test-suite (plugged in from tests/conftest.py).

Fixtures:
  local_kafka      session: the LocalKafka instance (state in a pytest tmp dir)
  kafka_bootstrap  session: "127.0.0.1:PORT" of that broker; stopped at session end, even on failure
  kafka_topics     function: ``kafka_topics(partitions=6, prefix="t", configs=None) -> str`` creates
                   a uniquely named topic (test name + random suffix) and waits until it is usable

The jar cache is the normal one ($NPSFLOW_CACHE or ~/.cache/npsflow), so jars download only once.
"""

from __future__ import annotations

import atexit
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from deploy.local.kafka import LocalKafka, create_topics


@pytest.fixture(scope="session")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    kafka = LocalKafka(tmp_path_factory.mktemp("kafka"))
    atexit.register(kafka.stop)  # belt and braces if the session dies before the finalizer
    try:
        kafka.start(timeout=120)
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_kafka: LocalKafka) -> str:
    bootstrap = local_kafka.status()["bootstrap"]
    assert bootstrap, f"local kafka is not running; see {local_kafka.log_path}"
    return bootstrap


@pytest.fixture
def kafka_topics(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:80].strip("-")

    def make(partitions: int = 6, prefix: str = "t", configs: dict | None = None) -> str:
        name = f"{prefix}-{base}-{uuid.uuid4().hex[:8]}"
        create_topics(kafka_bootstrap, {name: partitions}, configs=configs)
        return name

    return make
