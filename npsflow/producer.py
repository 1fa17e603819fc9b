"""A small synchronous Kafka producer for the CLI (ingest, simulate): acks=all, keyed, batched; SASL/TLS from
npsflow.kafka_security. A connection failure is one line naming its cause (authentication, TLS, refused)."""

from __future__ import annotations

from typing import Iterable

from kafka import KafkaProducer
from kafka.errors import KafkaError

from npsflow.kafka_security import ConnectionDiagnosis, KafkaSecurity


class ProduceError(Exception):
    pass


class Producer:
    def __init__(self, bootstrap: str, linger_ms: int = 20, security: KafkaSecurity | None = None):
        security = security or KafkaSecurity()
        # kafka-python logs each failed connection attempt; the diagnosis keeps them off stderr and names the cause
        self._diagnosis = ConnectionDiagnosis(security).__enter__()
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                bootstrap_timeout_ms=15000,
                **security.kafka_python_kwargs(),
                acks="all",
                linger_ms=linger_ms,
                batch_size=256 * 1024,
                max_request_size=4 * 1024 * 1024,
                retries=5,
                request_timeout_ms=15000,
                client_id="npsflow-cli",
            )
        except KafkaError as exc:
            self._diagnosis.__exit__()
            raise ProduceError(f"cannot connect to Kafka at {bootstrap}: {self._diagnosis.explain(exc)}") from None
        self._futures = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            self._futures.append(self._producer.send(topic, key=key, value=value))
        except KafkaError as exc:
            raise ProduceError(f"cannot send to topic {topic}: {exc} (does the topic exist? "
                               f"`npsflow stack up` creates them)") from None
        if len(self._futures) >= 10_000:
            self.flush()

    def send_many(self, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> int:
        n = 0
        for key, value in items:
            self.send(topic, key, value)
            n += 1
        return n

    def flush(self, timeout: float = 60) -> None:
        self._producer.flush(timeout=timeout)
        futures, self._futures = self._futures, []
        for fut in futures:
            try:
                fut.get(timeout=timeout)
            except KafkaError as exc:
                raise ProduceError(f"Kafka did not accept a record: {self._diagnosis.explain(exc)}") from None

    def close(self) -> None:
        try:
            self.flush()
        finally:
            try:
                self._producer.close(timeout=10)
            finally:
                self._diagnosis.__exit__()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
