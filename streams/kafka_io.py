"""Batch-native Kafka output and state for the agents: one record batch per (topic, partition) per input batch.

Faust's own send path (``topic.send`` / table ``__setitem__``) costs ~100 µs per message (FutureMessage,
producer buffer, serializer registry) and produced one tiny request after another. The agents instead collect
everything one input batch produces — output records and changed state keys — in a ``BatchOutput`` and hand
it to Kafka as one ``aiokafka`` record batch per (topic, partition) (``create_batch`` / ``send_batch``): a
few µs per record, one produce request entry per partition. ``flush()`` returns once Kafka acknowledged
every batch (the producer runs with acks=all), so an agent acks its input only after its outputs are durable.

State tables (``StateTable``) are Faust tables with raw bytes keys and values, recovered by Faust from their
compacted changelogs as usual. Keys are the JSON encoding of a string key and values are JSON (orjson), the
same bytes Faust's JSON serializer wrote before, so changelogs written by earlier versions stay readable.
A changed key is written once per batch: the agent updates the in-memory copy and stages ONE changelog
record in the batch's output, on the changelog partition it names (= the input partition: tables are
partitioned like the topics they serve).

Partitions are chosen like the Java client and aiokafka do (murmur2 of the key, positive, modulo the
partition count), so records keyed here meet the records other producers keyed the same way.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, Protocol

import struct
from functools import lru_cache

import orjson

_MASK = 0xFFFFFFFF
_M = 0x5BD1E995


@lru_cache(maxsize=256)
def _words(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}I")


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``) as aiokafka computes it, the
    same numbers (tests/test_kafka_io.py) in ~60 % of the time: the 4-byte words read by ``struct`` at once."""
    length = len(data)
    h = 0x9747B28C ^ length
    for k in _words(length // 4).unpack_from(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        tail = length - extra
        if extra == 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the default (murmur2) partitioner of the Java client, aiokafka and Quix picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def json_key(key: str) -> bytes:
    """A table key as Faust's JSON key serializer wrote it (a JSON string)."""
    return orjson.dumps(key)


class Sender(Protocol):
    """Where a BatchOutput goes: Kafka (``KafkaSender``) or a test capture."""

    async def send(self, topic: str, partition: int, records: list[tuple[bytes | None, bytes | None]]) -> None:
        """Send ``records`` (key, value) to one partition; return when Kafka acknowledged them."""


class KafkaSender:
    """Sends through the aiokafka producer Faust started (``app.producer``), one record batch at a time."""

    def __init__(self, app) -> None:
        self.app = app

    def _producer(self):
        producer = getattr(self.app.producer, "_producer", None)
        if producer is None:
            raise ConnectionError("the Kafka producer is not started yet")
        return producer

    async def send(self, topic: str, partition: int, records: list[tuple[bytes | None, bytes | None]]) -> None:
        producer = self._producer()
        futures = []
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: ship it, start another
                if not batch._relative_offset:
                    raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch for {topic}")
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch for {topic}")
        if batch._relative_offset:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        if futures:
            await asyncio.gather(*futures)


class BatchOutput:
    """Everything one input batch produces, grouped by (topic, partition), in the order it was added: output
    records, and the changed state keys (``state=True``: changelog records), which go to Kafka second."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.records: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
        self.state: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = defaultdict(list)

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None, state: bool = False) -> None:
        (self.state if state else self.records)[(topic, partition)].append((key, value))

    def add_keyed(self, topic: str, partitions: int, key: bytes, value: bytes | None) -> None:
        self.add(topic, partition_for(key, partitions), key, value)

    async def flush(self) -> None:
        """Send the outputs, and once Kafka acknowledged all of them, the state changes; raise if a send failed.

        Outputs first: a crash in between leaves outputs without the state that produced them, and the batch is
        recomputed from the old state into the same outputs (consumers drop the repeats: versions, source
        offsets). State first could leave a memo saying "v2 is counted" whose window delta never left, and the
        replay would then retract the wrong version. Each phase is kept until it succeeded: a retry sends exactly
        the same records again (the caller retries before it prepares the next batch)."""
        for phase in ("records", "state"):
            groups = getattr(self, phase)
            if groups:
                await asyncio.gather(*(self.sender.send(topic, partition, records)
                                       for (topic, partition), records in groups.items()))
                setattr(self, phase, defaultdict(list))


class StateTable:
    """A Faust table used as a bytes → bytes store with JSON values, written once per batch via BatchOutput.

    ``get`` returns the decoded value (a fresh object: callers may change it and ``put`` it back)."""

    def __init__(self, table) -> None:
        self.table = table

    @property
    def changelog(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    @property
    def data(self):
        return self.table.data

    def _dict(self):
        """The store's own dict (Faust's memory store keeps one as ``.data``): a miss is a plain dict miss, not
        a KeyError raised and caught by ``Mapping.get`` for every new key."""
        store = self.table.data
        inner = getattr(store, "data", None)
        return inner if isinstance(inner, dict) else store

    def get(self, key: bytes) -> Any:
        raw = self._dict().get(key)
        return None if raw is None else orjson.loads(raw)

    def get_raw(self, key: bytes) -> bytes | None:
        return self._dict().get(key)

    def put(self, out: BatchOutput, key: bytes, value: Any, partition: int) -> None:
        """Set ``key`` in memory and stage its changelog record on ``partition``."""
        self.put_raw(out, key, orjson.dumps(value), partition)

    def put_raw(self, out: BatchOutput, key: bytes, raw: bytes, partition: int) -> None:
        """``put`` of a value that is already bytes (not JSON: e.g. streams.forgotten's chunks)."""
        self.table.data[key] = raw
        self._owner(key, partition)
        out.add(self.changelog, partition, key, raw, state=True)

    def delete(self, out: BatchOutput, key: bytes, partition: int) -> None:
        """Drop ``key`` in memory and stage a tombstone on ``partition``."""
        self.table.data.pop(key, None)
        getattr(self.table.data, "_key_partition", {}).pop(key, None)
        out.add(self.changelog, partition, key, None, state=True)

    def _owner(self, key: bytes, partition: int) -> None:
        key_partition = getattr(self.table.data, "_key_partition", None)
        if key_partition is not None:  # the memory store drops the key when this partition is revoked
            key_partition[key] = partition


def state_table(app, name: str, partitions: int):
    """A Faust table with raw keys and values (see StateTable)."""
    return app.Table(name, default=None, partitions=partitions, key_type=bytes, value_type=bytes)
