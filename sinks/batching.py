"""Per-partition batching with idempotent inserts and ack-after-write (Faust-independent).

Like quixstreams' ``BatchingSink``: rows are grouped PER KAFKA PARTITION; a partition's batch is flushed
when it holds ``max_rows`` entries or its oldest entry is ``max_age`` seconds old. Each batch is inserted
with ``insert_deduplication_token = "{table}:{topic}:{partition}:{first_offset}-{last_offset}:{digest}"``
(``digest``: blake2b over a stable JSON serialization of the batch's rows, so the same offsets with other
content — e.g. after a Kafka topic reset while ClickHouse was kept — are not dropped as duplicates, while a
retry of the identical batch still is), and only after that insert returned are the batch's ack handles
handed back — the caller acks/commits those Kafka offsets, never earlier.

Failures are split in two kinds (``is_permanent``):

* transient (connection refused, server down, timeouts: clickhouse_connect ``OperationalError``, OSError,
  anything not known to be permanent): the batch stays queued unchanged (same rows, same token: if the
  failed insert actually landed, ClickHouse drops the retry), the partition backs off exponentially (other
  partitions are unaffected), the error is logged, nothing is acked;
* permanent (clickhouse_connect ``DataError`` / ``ProgrammingError``, ClickHouse server errors about types
  or parsing, Python ``TypeError``/``ValueError``/``OverflowError`` while serializing), and only when an
  ``on_rejected`` handler is given: the batch is bisected; every sub-batch is inserted with its own token
  ``"{batch_token}/{first}-{last}"`` (deterministic, so a retried split deduplicates too), and the rows that
  fail on their own are handed to ``on_rejected(partition, offset, row, ack, exc)`` (e.g. dead-lettered)
  after the good rows landed. Then the whole batch is acked. If ``on_rejected`` raises, or a transient error
  interrupts the split, the batch is kept and retried like a transient failure. Without ``on_rejected``
  every error is treated as transient (the old, stalling behaviour: nothing is ever dropped).

Once a batch has been attempted it is sealed: later rows go to a new batch, so a retried token always
names exactly the same rows. ``drop_partitions`` forgets the queue of revoked partitions; a flush that
was in progress for such a partition hands back no acks.

An entry may carry ``row=None``: nothing to insert (e.g. a record routed to the dead-letter topic) but its
ack still waits for the rows before it in the partition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson

log = logging.getLogger("npsflow.sink")

Writer = Callable[[list[dict], str], Awaitable[Any]]
#: on_rejected(partition, offset, row, ack, exc): a row ClickHouse refused for good (after bisection)
RejectedHandler = Callable[[int, int, dict, Any, BaseException], Awaitable[Any]]

# ClickHouse error names (server text "... (CANNOT_PARSE_TEXT)") that are about the data of a row
_ROW_ERROR = re.compile(
    r"\b(CANNOT_PARSE_\w+|TYPE_MISMATCH|CANNOT_CONVERT_TYPE|ILLEGAL_TYPE_OF_ARGUMENT|VALUE_IS_OUT_OF_RANGE\w*|"
    r"ARGUMENT_OUT_OF_BOUND|INCORRECT_DATA|CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN|TOO_LARGE_STRING_SIZE|"
    r"DECIMAL_OVERFLOW|UNKNOWN_ELEMENT_OF_ENUM|BAD_ARGUMENTS|CANNOT_READ_\w+|INCORRECT_NUMBER_OF_COLUMNS|"
    r"SIZES_OF_\w+_DOESNT_MATCH|NUMBER_OF_COLUMNS_DOESNT_MATCH)\b")
# errors about the installation, not the rows: never dead-letter rows for these, keep retrying
_INFRA_ERROR = re.compile(
    r"\b(UNKNOWN_TABLE|UNKNOWN_DATABASE|TABLE_IS_READ_ONLY|READONLY|NOT_ENOUGH_SPACE|TOO_MANY_PARTS|"
    r"MEMORY_LIMIT_EXCEEDED|TIMEOUT_EXCEEDED|SOCKET_TIMEOUT|NETWORK_ERROR|AUTHENTICATION_FAILED|ACCESS_DENIED|"
    r"REQUIRED_PASSWORD|TABLE_IS_DROPPED|ABORTED|QUERY_WAS_CANCELLED|UNKNOWN_USER|"
    # the disk (full, a file size limit, I/O errors): the server's or embedded chDB's, never the rows'
    r"CANNOT_WRITE_\w+|CANNOT_FSYNC|CANNOT_TRUNCATE_FILE|CANNOT_CLOSE_FILE|CANNOT_ALLOCATE_MEMORY|"
    # the table's schema is not what the rows need (a migration not applied yet): the same for every row
    r"NO_SUCH_COLUMN_IN_TABLE|THERE_IS_NO_COLUMN|UNKNOWN_IDENTIFIER)\b|Unrecognized column|"
    r"No space left on device|File too large|Disk quota exceeded")


def is_permanent(exc: BaseException) -> bool:
    """True for an insert error that retrying the same rows can never fix (bad data), False otherwise."""
    text = str(exc)
    if _INFRA_ERROR.search(text):
        return False
    try:
        from clickhouse_connect.driver import exceptions as cce
    except ImportError:  # pragma: no cover - clickhouse_connect is a dependency
        cce = None
    if cce is not None:
        if isinstance(exc, (cce.OperationalError, cce.InterfaceError, cce.InternalError, cce.StreamFailureError)):
            return False
        if isinstance(exc, (cce.DataError, cce.ProgrammingError)):
            return True
        if isinstance(exc, cce.Error):
            return bool(_ROW_ERROR.search(text))
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return False
    if isinstance(exc, (TypeError, ValueError, OverflowError)):  # e.g. a row that does not serialize
        return True
    return bool(_ROW_ERROR.search(text))


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


def rows_digest(rows: list[dict]) -> str:
    """Content digest of rows: stable across processes (sorted keys; datetimes in ISO form, other types by their
    str()). orjson: the stdlib encoder cost a quarter of a busy sink's loop (py-spy, NOTES.md session 4); text
    orjson refuses (lone surrogates) goes the stdlib way."""
    try:
        data = orjson.dumps(rows, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:
        data = json.dumps(rows, sort_keys=True, default=str, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass
class Batch:
    partition: int
    created_at: float
    entries: list[tuple[int, dict | None, Any]] = field(default_factory=list)  # (offset, row, ack)
    token: str | None = None  # computed once the batch is sealed and first attempted

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


@dataclass
class Group:
    """Sealed batches of several partitions written as ONE insert (``BatchingSink(combine=True)``). Once tried,
    a group is kept as it is until it lands: a retry names exactly the same rows with the same token."""

    batches: list  # Batch, each the oldest sealed batch of its partition at the time (or later ones behind it)
    rows: list[dict]  # the batches' rows, in order (sealed batches do not change)
    token: str
    retry_at: float = 0.0
    failures: int = 0
    last_error: BaseException | None = None
    split: bool = False  # a permanent error was met: written batch by batch from then on, with their own tokens


class BatchingSink:
    def __init__(self, *, table: str, topic: str, writer: Writer, max_rows: int = 1000, max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, backoff_initial: float = 0.2,
                 backoff_max: float = 30.0, on_rejected: RejectedHandler | None = None, combine: bool = False):
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
        self.rejected_rows = 0
        self.split_batches = 0
        self.on_rejected = on_rejected
        self.combine = combine  # one insert for the due batches of every partition (see flush_combined)
        self.group: Group | None = None
        # the current run of failed inserts (readiness, web.health): when the first of them failed (clock), how many,
        # the latest error; cleared by the next insert that lands
        self.failing_since: float | None = None
        self.failing_attempts = 0
        self.failing_error: BaseException | None = None
        # the last run of failed inserts that an insert ended: (when it landed (clock), how long the run had failed)
        self.recovered: tuple[float, float] | None = None

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
        if batch.token is None:
            batch.token = (f"{self.table}:{self.topic}:{batch.partition}:{batch.first_offset}-"
                           f"{batch.last_offset}:{rows_digest(batch.rows)}")
        return batch.token

    def _permanent(self, exc: BaseException) -> bool:
        return self.on_rejected is not None and is_permanent(exc)

    async def _insert_split(self, items: list[tuple[int, dict, Any]], token: str, base: str,
                            rejected: list) -> None:
        """Insert ``items``; on a permanent error bisect them, collecting single rows that still fail in
        ``rejected``. Transient errors propagate (the caller keeps the whole batch)."""
        try:
            await self.writer([row for _, row, _ in items], token)
            self.inserted_rows += len(items)
            return
        except Exception as exc:
            if not self._permanent(exc):
                raise
            if len(items) == 1:
                rejected.append((items[0], exc))
                return
            self.split_batches += 1
        mid = len(items) // 2
        for part in (items[:mid], items[mid:]):
            await self._insert_split(part, f"{base}/{part[0][0]}-{part[-1][0]}", base, rejected)

    async def _write(self, batch: Batch, token: str) -> None:
        items = [(offset, row, ack) for offset, row, ack in batch.entries if row is not None]
        rejected: list = []
        await self._insert_split(items, token, token, rejected)
        for (offset, row, ack), exc in rejected:
            log.error("ClickHouse rejected a row of %s (partition %d, offset %d): %s", self.table,
                      batch.partition, offset, first_line(exc))
            await self.on_rejected(batch.partition, offset, row, ack, exc)
        self.rejected_rows += len(rejected)

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
        return batch is not None and self._ripe(batch, now)

    def next_due_in(self) -> float | None:
        """Seconds until some batch becomes due (0 if one is due now); None when nothing is pending."""
        now, best = self.clock(), None
        if self.group is not None:
            return max(0.0, self.group.retry_at - now)
        for state in self.partitions.values():
            if state.sealed:
                wait = max(0.0, state.retry_at - now)
            elif state.open is not None:
                wait = max(0.0, state.open.created_at + self.max_age - now)
            else:
                continue
            best = wait if best is None else min(best, wait)
        return best

    def _failed(self, exc: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = self.clock()
        self.failing_attempts += 1
        self.failing_error = exc

    def _landed(self) -> None:
        if self.failing_since is not None:
            now = self.clock()
            self.recovered = (now, now - self.failing_since)
        self.failing_since, self.failing_attempts, self.failing_error = None, 0, None

    def since_recovery(self) -> tuple[float, float] | None:
        """(seconds since an insert ended the last run of failures, how long that run failed); None if none did."""
        if self.recovered is None:
            return None
        return self.clock() - self.recovered[0], self.recovered[1]

    def failing(self) -> tuple[float, int, BaseException] | None:
        """(seconds since the first failed insert of the current run, failed attempts, the latest error) while
        inserts fail and none has landed since; None when the last insert landed (or none failed)."""
        if self.failing_since is None or self.failing_error is None:
            return None
        return self.clock() - self.failing_since, self.failing_attempts, self.failing_error

    def last_errors(self) -> dict[int, BaseException]:
        return {p: s.last_error for p, s in self.partitions.items() if s.last_error is not None}

    # ------------------------------------------------------------------------------------------ flushing
    async def flush_due(self, force: bool = False, seal_all: bool = False) -> list:
        """Insert every due batch; return acks of written (or rejected and handled) ones.

        ``force``: every batch, ignoring backoff too. ``seal_all``: every open batch is due (the caller
        already bounded it, e.g. ``noack_take``), but partitions backing off still wait for their retry time.
        Batches of one partition are written in offset order; a transient failure stops that partition
        (later batches wait behind it) but not the others. Failures are logged and leave the batch queued.
        """
        if self.combine:
            return await self.flush_combined(force=force, seal_all=seal_all)
        now = self.clock()
        acks: list = []
        for partition in sorted(self.partitions):
            state = self.partitions.get(partition)
            if state is None:  # dropped (revoked) while an earlier partition was being written
                continue
            batch = state.open
            if batch is not None and (force or seal_all or self._ripe(batch, now)):
                self._seal(state)
            if not state.sealed or (not force and now < state.retry_at):
                continue
            while state.sealed:
                batch = state.sealed[0]
                rows, token = batch.rows, self.token(batch)
                if rows:
                    try:
                        await self._write(batch, token)
                    except Exception as exc:
                        state.failures += 1
                        self.failed_attempts += 1
                        self._failed(exc)
                        delay = min(self.backoff_max, self.backoff_initial * 2 ** (state.failures - 1))
                        state.retry_at = self.clock() + delay
                        state.last_error = exc
                        log.warning("insert of %d rows into %s failed (token %s, attempt %d); batch kept, "
                                    "retry in %.1fs: %s", len(rows), self.table, token, state.failures, delay,
                                    exc, exc_info=exc)
                        break
                    self.inserted_batches += 1
                    if not any(st.failures for st in self.partitions.values() if st is not state):
                        self._landed()
                if self.partitions.get(partition) is not state:  # revoked meanwhile: its acks are void
                    break
                state.sealed.popleft()
                state.failures, state.retry_at, state.last_error = 0, 0.0, None
                acks.extend(batch.acks)
        return acks

    async def flush_combined(self, force: bool = False, seal_all: bool = False) -> list:
        """``combine=True``: every due batch of every partition in ONE insert (a ClickHouse server wants few,
        large inserts per table — one per partition per second made 12 inserts a second on 6 partitions, ~35 ms
        each on chDB). The token names every (partition, offsets) range and the rows' digest. A transient failure
        keeps the group as it is and backs it off as a whole; a permanent one writes the group's batches one by
        one (bisecting, dead-lettering the rows that fail alone, as without ``combine``)."""
        now = self.clock()
        if self.group is None:
            self._seal_due(now, force or seal_all)
            batches = [b for p in sorted(self.partitions) for b in self.partitions[p].sealed]
            if not batches:
                return []
            rows = [row for batch in batches for row in batch.rows]
            self.group = Group(batches, rows, self._group_token(batches, rows))
        group = self.group
        if not force and now < group.retry_at:
            return []
        try:
            if group.rows:
                await self._write_group(group)
        except Exception as exc:
            group.failures += 1
            self.failed_attempts += 1
            self._failed(exc)
            group.retry_at = self.clock() + min(self.backoff_max, self.backoff_initial * 2 ** (group.failures - 1))
            group.last_error = exc
            log.warning("insert of %d rows into %s failed (token %s, attempt %d); kept, retry at +%.1fs: %s",
                        len(group.rows), self.table, group.token[:120], group.failures, group.retry_at - self.clock(),
                        exc, exc_info=exc)
            return []
        self.group = None
        if group.rows:
            self._landed()
        return self._acks_of(group)

    def _seal_due(self, now: float, every: bool) -> None:
        for state in self.partitions.values():
            batch = state.open
            if batch is not None and (every or self._ripe(batch, now)):
                self._seal(state)

    def _ripe(self, batch: Batch, now: float) -> bool:
        """An open batch is due: full, or its oldest entry is max_age old."""
        return len(batch) >= self.max_rows or now - batch.created_at >= self.max_age

    def _group_token(self, batches: list, rows: list[dict]) -> str:
        ranges = ",".join(f"{b.partition}:{b.first_offset}-{b.last_offset}" for b in batches)
        return f"{self.table}:{self.topic}:{ranges}:{rows_digest(rows)}"

    async def _write_group(self, group: Group) -> None:
        if not group.split:
            try:
                await self.writer(group.rows, group.token)
                self.inserted_rows += len(group.rows)
                self.inserted_batches += 1
                return
            except Exception as exc:
                if not self._permanent(exc):
                    raise
                group.split = True
        for batch in group.batches:  # a bad row somewhere: batch by batch, bisecting; a retry of a batch that
            if batch.rows:           # landed already is dropped by ClickHouse (same token)
                await self._write(batch, self.token(batch))

    def _acks_of(self, group: Group) -> list:
        """Pop the group's batches from their partitions and hand back their acks (none for a partition that
        was dropped meanwhile: its acks are void)."""
        acks: list = []
        for batch in group.batches:
            state = self.partitions.get(batch.partition)
            if state is not None and state.sealed and state.sealed[0] is batch:
                state.sealed.popleft()
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
