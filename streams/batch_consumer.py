"""Batch delivery: the fetched record lists of the hot topics go to their agents whole, not message by message.

Faust delivers every record through its per-message path: ``Consumer._drain_messages`` wraps each one in a
``ConsumerMessage``, awaits ``wait_first(callback(message), suspend_flow.wait())`` (two tasks per record), the
conductor puts an ``Event`` on the agent's channel queue and the stream takes it out again — measured at ~40 %
of the worker's main thread at 2 000 records/s (py-spy, NOTES.md). For the topics of the batch-native agents
(classify, windows, the ClickHouse sinks) ``BatchRouter`` takes the records of a fetch before Faust's loop sees
them and hands each partition's list to the agent's bounded queue (``BatchInbox``); every other topic goes
through Faust's path unchanged.

What stays Faust's: the group membership and its assignor (tables co-assigned with the topics they serve),
table recovery, flow control (nothing is fetched while a rebalance is in progress: ``_wait_next_records``
returns nothing while the flow is suspended) and the commits: an agent acks the offsets it
finished with ``ack_offsets`` (Faust's own bookkeeping of acked offsets, so its commit timer commits them).
The Faust agent of each such topic stays declared (its subscription and the assignor need it) but never
receives a message.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger("npsflow.streams")

REVOKE_WAIT = 20.0  # seconds a revocation waits for a batch in progress (well below the session timeout)
INBOX_BATCHES = 8  # fetched lists waiting per agent before the fetcher waits (backpressure)


@dataclass(slots=True)
class Record:
    """One Kafka record, as the batch agents see it (also built by tests)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def message(self) -> "Record":
        """Itself: code written for Faust events (``event.message.partition``, ``event.value``) reads a Record."""
        return self


class BatchInbox:
    """The queue of one batch agent: lists of records of one partition each, in fetch order."""

    def __init__(self, maxsize: int = INBOX_BATCHES) -> None:
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
        self.taken = 0  # lists handed out by take() and not yet reported finished()

    def drop(self, predicate) -> int:
        """Remove the queued lists for which ``predicate(list)`` holds; returns how many."""
        kept, dropped = [], 0
        while True:
            try:
                records = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if predicate(records):
                dropped += 1
            else:
                kept.append(records)
            self.queue.task_done()
        for records in kept:
            self.queue.put_nowait(records)
        return dropped

    def finished(self) -> None:
        """The lists of the last take() are handled (processed and acked, or queued for a retry)."""
        for _ in range(self.taken):
            self.queue.task_done()
        self.taken = 0

    async def join(self) -> None:
        """Wait until every list put so far is handled (tests; a graceful stop)."""
        await self.queue.join()

    async def put(self, records: list) -> None:
        await self.queue.put(records)

    async def take(self, max_records: int, within: float, idle: float | None = None) -> list:
        """At least one list, then whatever arrives within ``within`` seconds up to ``max_records`` records; an
        empty list when nothing arrived for ``idle`` seconds (None: wait as long as it takes)."""
        try:
            batch = list(await asyncio.wait_for(self.queue.get(), idle))
        except asyncio.TimeoutError:
            return []
        self.taken += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(batch) < max_records:
            try:
                batch.extend(self.queue.get_nowait())
                self.taken += 1
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.extend(await asyncio.wait_for(self.queue.get(), left))
                self.taken += 1
            except asyncio.TimeoutError:
                break
        return batch


class BatchRouter:
    """Installed on the app's consumer: routes the records of registered topics to their inboxes.

    On a revocation (``on_revoked``) the lists of revoked partitions still queued are dropped (they were not
    acked; their new owner reads them from the committed offset) and the revocation waits for the batches in
    progress (the agents' locks): Faust then drops the revoked partitions' table keys, and no batch of ours
    writes to those partitions' changelogs any more — the new owner's recovery would otherwise read a state
    computed here against keys that were no longer ours."""

    def __init__(self, app) -> None:
        self.app = app
        self.inboxes: dict[str, BatchInbox] = {}
        self.installed = False
        self.locks: list[asyncio.Lock] = []
        if hasattr(app, "on_partitions_revoked"):
            app.on_partitions_revoked.connect(self.on_revoked, weak=False)

    def guard_lock(self, lock: asyncio.Lock) -> None:
        """A lock an agent holds while it prepares and writes a batch (see on_revoked)."""
        if all(lock is not known for known in self.locks):
            self.locks.append(lock)

    async def on_revoked(self, sender=None, revoked=None, **kwargs) -> None:
        revoked = set(revoked or ())
        for inbox in self.inboxes.values():
            inbox.drop(lambda records: records and (records[0].topic, records[0].partition) in revoked)
        for lock in self.locks:  # the batch in progress finishes (its writes are for partitions still ours then)
            try:
                await asyncio.wait_for(lock.acquire(), REVOKE_WAIT)
            except asyncio.TimeoutError:  # e.g. Kafka down and a flush retrying: do not hold the rebalance
                log.warning("a batch was still in progress %.0f s into a revocation; going on", REVOKE_WAIT)
                continue
            lock.release()

    def inbox(self, topic: str) -> BatchInbox:
        if topic not in self.inboxes:
            self.inboxes[topic] = BatchInbox()
        return self.inboxes[topic]

    def install(self) -> None:
        """Replace the consumer's ``getmany`` (read by Faust's fetch loop) by the routing one. Idempotent."""
        if self.installed:
            return
        consumer = self.app.consumer
        consumer.getmany = self._getmany(consumer)
        self.installed = True

    def _getmany(self, consumer):
        router = self

        async def getmany(timeout: float) -> AsyncIterator[tuple[Any, Any]]:
            records, active = await consumer._wait_next_records(timeout)
            if records is None or consumer.should_stop:
                return
            if not consumer.flow_active:
                await consumer.perform_seek()  # Faust's own behaviour when the flow stopped meanwhile
                return
            rest = {}
            generation = consumer.app.consumer_generation_id
            for tp, batch in records.items():
                if consumer.app.consumer_generation_id != generation or not consumer.flow_active:
                    return  # a rebalance began while we waited for an inbox: the rest is read again later
                if active is not None and tp not in active and tp not in consumer._buffered_partitions:
                    continue
                inbox = router.inboxes.get(tp.topic)
                if inbox is None:
                    rest[tp] = batch
                    continue
                if batch:
                    await inbox.put(router._records(consumer, tp, batch))
            to_message = consumer._to_message
            for tp, batch in rest.items():
                for record in batch:
                    yield tp, to_message(tp, record)

        return getmany

    @staticmethod
    def _records(consumer, tp, batch: list) -> list[Record]:
        """The fetched records as Records, every one of them; Faust's read offset follows (its monitor reads it).

        Not Faust's read-offset rule (drop what is before the read offset): the agents' GapGuard is the one
        judge of order — it takes re-reads, holds what follows a gap and seeks back. With the rule here too, a
        list fetched before a guard's seek that reached this point after it moved the read offset past the
        seek target, and the whole re-read was dropped: the partition waited for it for good (CI, 2026-12-06:
        raw partition 9 of the cluster test never processed, its records held, its offsets never committed).
        Reading a record twice is safe: every agent is idempotent per source offset."""
        out = [Record(r.topic, r.partition, r.offset, r.key, r.value) for r in batch]
        consumer._read_offset[tp] = out[-1].offset
        return out


def ack_offsets(app, records: list) -> int:
    """Tell Faust the offsets of ``records`` are done (their outputs are durable): its commit timer commits the
    contiguous acked prefix of each partition. The same bookkeeping as ``Consumer.ack`` for one message."""
    consumer = app.consumer
    acked_now = 0
    with ack_lock:
        for record in records:
            tp = TP(record.topic, record.partition)
            committed = consumer._committed_offset[tp]
            if committed is not None and record.offset < committed:
                continue
            index = consumer._acked_index[tp]
            if record.offset in index:
                continue
            index.add(record.offset)
            acked = consumer._acked[tp]
            if acked and record.offset < acked[-1]:  # a re-read after a seek: Faust expects the list sorted
                bisect.insort(acked, record.offset)
            else:
                acked.append(record.offset)
            acked_now += 1
        consumer._n_acked += acked_now
    notify(consumer._waiting_for_ack)
    return acked_now
