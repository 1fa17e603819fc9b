"""Per-partition batching with idempotent inserts and ack-after-write (Faust-independent).

Like quixstreams' ``BatchingSink``: rows are grouped PER KAFKA PARTITION; a partition's batch is flushed
when it holds ``max_rows`` entries or its oldest entry is ``max_age`` seconds old. Each batch is inserted
with ``insert_deduplication_token = "{table}:{topic}:{partition}:{first_offset}-{last_offset}"``, and only
after that insert returned are the batch's ack handles handed back — the caller acks/commits those Kafka
offsets, never earlier. If the insert raises, the batch stays queued unchanged (same rows, same token:
if the failed insert actually landed, ClickHouse drops the retry), the partition backs off exponentially,
and the error is logged. Once a batch has been attempted it is sealed: later rows go to a new batch, so
a retried token always names exactly the same rows.

An entry may carry ``row=None``: nothing to insert (e.g. a record routed to the dead-letter topic) but its
ack still waits for the rows before it in the partition.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

log = logging.getLogger("npsflow.sink")

Writer = Callable[[list[dict], str], Awaitable[Any]]


@dataclass
class Batch:
    partition: int
    created_at: float
    entries: list[tuple[int, dict | None, Any]] = field(default_factory=list)  # (offset, row, ack)

    @property
    def first_offset(self) -> int:
        return self.entries[0][0]

    @property
    def last_offset(self) -> int:
        return self.entries[-1][0]

    @property
    def rows(self) -> list[dict]:
        return [row for _, row, _ in self.entries if row is not None]

    @property
    def acks(self) -> list[Any]:
        return [ack for _, _, ack in self.entries]

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class PartitionState:
    open: Batch | None = None
    sealed: deque = field(default_factory=deque)  # Batch, oldest first; retried in order
    failures: int = 0
    retry_at: float = 0.0
    last_error: BaseException | None = None


class BatchingSink:
    def __init__(self, *, table: str, topic: str, writer: Writer, max_rows: int = 1000, max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, backoff_initial: float = 0.2,
                 backoff_max: float = 30.0):
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        if max_age < 0:
            raise ValueError("max_age must be >= 0")
        self.table, self.topic, self.writer = table, topic, writer
        self.max_rows, self.max_age, self.clock = max_rows, max_age, clock
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.partitions: dict[int, PartitionState] = {}
        self.inserted_rows = 0
        self.inserted_batches = 0
        self.failed_attempts = 0

    # ------------------------------------------------------------------------------------------ intake
    def add(self, partition: int, offset: int, row: dict | None, ack: object) -> None:
        """Queue one Kafka record's row (or None) with its ack handle. Seals the batch at ``max_rows``."""
        state = self.partitions.setdefault(partition, PartitionState())
        if state.open is None:
            state.open = Batch(partition, self.clock())
        state.open.entries.append((int(offset), row, ack))
        if len(state.open) >= self.max_rows:
            self._seal(state)

    @staticmethod
    def _seal(state: PartitionState) -> None:
        if state.open is not None and len(state.open):
            state.sealed.append(state.open)
        state.open = None

    def token(self, batch: Batch) -> str:
        return f"{self.table}:{self.topic}:{batch.partition}:{batch.first_offset}-{batch.last_offset}"

    # ------------------------------------------------------------------------------------------ inspection
    def pending(self) -> int:
        """Entries (rows and ack-only) not yet written/acked."""
        total = 0
        for state in self.partitions.values():
            total += sum(len(b) for b in state.sealed) + (len(state.open) if state.open else 0)
        return total

    def is_due(self, partition: int, now: float | None = None) -> bool:
        state = self.partitions.get(partition)
        if state is None:
            return False
        now = self.clock() if now is None else now
        if state.sealed:
            return now >= state.retry_at
        batch = state.open
        return batch is not None and (len(batch) >= self.max_rows or now - batch.created_at >= self.max_age)

    def next_due_in(self) -> float | None:
        """Seconds until some batch becomes due (0 if one is due now); None when nothing is pending."""
        now, best = self.clock(), None
        for state in self.partitions.values():
            if state.sealed:
                wait = max(0.0, state.retry_at - now)
            elif state.open is not None:
                wait = max(0.0, state.open.created_at + self.max_age - now)
            else:
                continue
            best = wait if best is None else min(best, wait)
        return best

    def last_errors(self) -> dict[int, BaseException]:
        return {p: s.last_error for p, s in self.partitions.items() if s.last_error is not None}

    # ------------------------------------------------------------------------------------------ flushing
    async def flush_due(self, force: bool = False) -> list:
        """Insert every due batch (all batches when ``force``, ignoring backoff too); return acks of written ones.

        Batches of one partition are written in offset order; a failure stops that partition (later
        batches wait behind it) but not the others. Failures are logged and leave the batch queued.
        """
        now = self.clock()
        acks: list = []
        for partition in sorted(self.partitions):
            state = self.partitions[partition]
            batch = state.open
            if batch is not None and (force or len(batch) >= self.max_rows or now - batch.created_at >= self.max_age):
                self._seal(state)
            if not state.sealed or (not force and now < state.retry_at):
                continue
            while state.sealed:
                batch = state.sealed[0]
                rows, token = batch.rows, self.token(batch)
                if rows:
                    try:
                        await self.writer(rows, token)
                    except Exception as exc:
                        state.failures += 1
                        self.failed_attempts += 1
                        delay = min(self.backoff_max, self.backoff_initial * 2 ** (state.failures - 1))
                        state.retry_at = self.clock() + delay
                        state.last_error = exc
                        log.warning("insert of %d rows into %s failed (token %s, attempt %d); batch kept, "
                                    "retry in %.1fs: %s", len(rows), self.table, token, state.failures, delay,
                                    exc, exc_info=exc)
                        break
                    self.inserted_rows += len(rows)
                    self.inserted_batches += 1
                state.sealed.popleft()
                state.failures, state.retry_at, state.last_error = 0, 0.0, None
                acks.extend(batch.acks)
        return acks

    def drop_partitions(self, partitions) -> int:
        """Forget queued entries of revoked partitions (their offsets were not committed; Kafka redelivers)."""
        dropped = 0
        for p in list(partitions):
            state = self.partitions.pop(p, None)
            if state is not None:
                dropped += sum(len(b) for b in state.sealed) + (len(state.open) if state.open else 0)
        return dropped
