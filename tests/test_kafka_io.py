"""streams.kafka_io.BatchOutput: outputs reach Kafka before the state changes, and a retry re-sends exactly
what did not land yet — the order the exactness of classify and windows relies on (NOTES.md session 4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.kafka_io import BatchOutput, murmur2, partition_for


class Recording:
    def __init__(self, fail_on: set | None = None):
        self.sent: list[tuple[str, int, list]] = []
        self.fail_on = set(fail_on or ())

    async def send(self, topic, partition, records):
        if (topic, partition) in self.fail_on:
            self.fail_on.discard((topic, partition))
            raise ConnectionError("leader not available")
        self.sent.append((topic, partition, list(records)))


async def test_outputs_are_acknowledged_before_any_state_change_is_sent():
    sender = Recording()
    out = BatchOutput(sender)
    out.add("changelog", 0, b"k", b"memo", state=True)
    out.add("deltas", 3, b"segment", b"items")
    out.add("classified", 0, b"r-1", b"row")
    await out.flush()
    assert [topic for topic, _, _ in sender.sent] == ["deltas", "classified", "changelog"]


async def test_a_failed_output_send_sends_no_state_and_the_retry_sends_all_of_it():
    sender = Recording(fail_on={("deltas", 3)})
    out = BatchOutput(sender)
    out.add("deltas", 3, b"segment", b"items")
    out.add("changelog", 0, b"k", b"memo", state=True)
    with pytest.raises(ConnectionError):
        await out.flush()
    assert [topic for topic, _, _ in sender.sent] == []  # the memo stays unsent while its delta is not in Kafka
    await out.flush()
    assert [(topic, records) for topic, _, records in sender.sent] == [
        ("deltas", [(b"segment", b"items")]), ("changelog", [(b"k", b"memo")])]


async def test_a_failed_state_send_is_retried_without_sending_the_outputs_again():
    sender = Recording(fail_on={("changelog", 0)})
    out = BatchOutput(sender)
    out.add("classified", 0, b"r-1", b"row")
    out.add("changelog", 0, b"k", b"memo", state=True)
    with pytest.raises(ConnectionError):
        await out.flush()
    await out.flush()
    assert [topic for topic, _, _ in sender.sent] == ["classified", "changelog"]


def test_partitions_are_the_default_partitioner_of_other_clients():
    """Oracle: kafka-python's murmur2 and its DefaultPartitioner's rule (positive, modulo), a separate
    implementation of the Java client's; ours is aiokafka's."""
    from kafka.partitioner.default import murmur2

    keys = [b"", b"a", b"r-1", b"acme|c-17", "Malmö".encode(), bytes(range(40))]
    for n in (1, 6, 7, 100):
        assert [partition_for(k, n) for k in keys] == [(murmur2(k) & 0x7FFFFFFF) % n for k in keys]


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200))
def test_murmur2_gives_the_numbers_of_aiokafkas_and_kafka_pythons(key):
    """partition_for must pick the partition every other client picks: the local murmur2 is aiokafka's and
    kafka-python's."""
    from aiokafka.partitioner import murmur2 as aiokafka_murmur2
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

    assert murmur2(key) == aiokafka_murmur2(key) == kafka_python_murmur2(key)
    assert partition_for(key, 6) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 6


def test_known_partitions():
    """Values of the Java client's murmur2 (its unit tests: Utils.murmur2 of these strings)."""
    assert murmur2(b"21") == 0xFFFFFFFF & -973932308
    assert murmur2(b"foobar") == 0xFFFFFFFF & -790332482
    assert murmur2(b"a-little-bit-long-string") == 0xFFFFFFFF & -985981536
    assert murmur2(b"a-little-bit-longer-string") == 0xFFFFFFFF & -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == 0xFFFFFFFF & -58897971
    assert murmur2(b"abc") == 0xFFFFFFFF & 479470107


def test_kept_json_is_orjsons_bytes():
    import orjson

    from streams.kafka_io import json_key, kept_json

    for value in ("r-1", "Malmö", {"v": 1, "seg": {"location": "Malmö"}, "ps": None}, [1, 2.5, True], 7):
        assert kept_json(value) == orjson.dumps(value) and type(kept_json(value)) is bytes
    assert json_key("r-ä") == orjson.dumps("r-ä") == '"r-ä"'.encode()
