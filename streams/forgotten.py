"""The register of forgotten answers: which response ids the dedup memory has forgotten, per raw partition. Pure.

classify remembers every answer (its memo: latest version, days, segment) for ``NPSFLOW_DEDUP_RETENTION`` after
the memo's last write, then forgets it to bound its memory. Without a register a version arriving after that
(an edit half a year later, a client re-sending an old answer with a new timestamp) would look new and count a
second time: on its own day *and* on the day the forgotten version still holds in the ClickHouse day ledger.
With it, classify refuses such a version (reason ``edit_after_dedup_memory``, a dead letter that keeps it).

What it stores: for every forgotten answer the first 8 bytes of BLAKE2b(response_id) — 8 bytes per answer,
forever (about 80 MB of compacted changelog and 160 MB of memory per 10 million forgotten answers, across all
workers). The register can only answer "forgotten" wrongly for a new id whose 64-bit hash equals a forgotten
one's: with n forgotten answers that chance is n / 2**64 per new answer (5e-13 at ten million), and such an
answer is dead-lettered, never counted twice or dropped silently.

Layout in the state table (``responses-seen``, changelog partition = the raw partition): chunks of at most
``CHUNK`` sorted hashes as raw little-endian uint64 bytes under ``chunk_key(partition, n)``, n = 0, 1, … without
gaps; the last one is the open chunk, rewritten when it grows, the others never change. Memory: the table holds
the chunks' bytes and the register a sorted copy, so ~16 bytes per forgotten answer per process in all.

Safety: only the partition's owner writes its chunks (the expiry sweep runs on actively assigned partitions,
never during a rebalance or table recovery), and a register is checked against the store before each use
(``current``), so it is never extended from a half-recovered or outdated view. Answers forgotten before the
register existed (an upgrade from a version without it) are not in it: their later versions are not refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import numpy as np

CHUNK = 4096  # hashes per chunk: 32 KiB values, well under Kafka's message size limit
REASON = "edit_after_dedup_memory"


def id_hash(response_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(response_id.encode(), digest_size=8).digest(), "little")


def chunk_key(partition: int, number: int) -> bytes:
    """State key of a chunk (starts with a NUL byte: never a JSON-string memo key)."""
    return b"\x00gone|%d|%d" % (partition, number)


def _pack(hashes: Iterable[int]) -> bytes:
    return np.array(sorted(hashes), dtype="<u8").tobytes()


class ForgottenRegister:
    """The forgotten ids of one raw partition, loaded from its chunks (``read(key) → bytes | None``).

    In memory the sealed chunks are kept as a few sorted arrays of doubling sizes (merged like a binary counter:
    a seal costs O(log n) amortized, never a re-sort of everything) and the open chunk as a set."""

    def __init__(self, partition: int, read: Callable[[bytes], bytes | None]) -> None:
        self.partition = partition
        chunks = []
        while (raw := read(chunk_key(partition, len(chunks)))) is not None:
            chunks.append(np.frombuffer(raw, dtype="<u8"))
        self.open: set[int] = set(chunks.pop().tolist()) if chunks and len(chunks[-1]) < CHUNK else set()
        self.sealed_count = len(chunks)
        self.levels: list[np.ndarray] = []
        for chunk in chunks:
            self._push(chunk)

    def current(self, read: Callable[[bytes], bytes | None]) -> bool:
        """Whether the store holds exactly the chunks this register knows (else reload it: e.g. the table
        recovered more of its changelog, or another worker extended the partition while it was away)."""
        last = read(chunk_key(self.partition, self.sealed_count))
        known_open = 8 * len(self.open) if self.open else None
        return (None if last is None else len(last)) == known_open and \
            read(chunk_key(self.partition, self.sealed_count + 1)) is None

    def _push(self, chunk: np.ndarray) -> None:
        self.levels.append(np.sort(chunk))
        while len(self.levels) > 1 and len(self.levels[-1]) >= len(self.levels[-2]):
            top = self.levels.pop()
            self.levels[-1] = np.sort(np.concatenate([self.levels[-1], top]), kind="mergesort")

    def __contains__(self, response_id: str) -> bool:
        return self._has(id_hash(response_id))

    def _has(self, value: int) -> bool:
        if value in self.open:
            return True
        needle = np.uint64(value)
        for level in self.levels:
            at = int(np.searchsorted(level, needle))
            if at < len(level) and level[at] == needle:
                return True
        return False

    def __len__(self) -> int:
        return sum(len(level) for level in self.levels) + len(self.open)

    def add(self, response_ids: Iterable[str]) -> dict[bytes, bytes]:
        """Register ``response_ids``; returns the chunks to write (key → value): the open chunk, and each chunk
        sealed on the way."""
        writes: dict[bytes, bytes] = {}
        for response_id in response_ids:
            value = id_hash(response_id)
            if self._has(value):
                continue
            self.open.add(value)
            if len(self.open) == CHUNK:
                writes[chunk_key(self.partition, self.sealed_count)] = sealed = _pack(self.open)
                self._push(np.frombuffer(sealed, dtype="<u8"))
                self.sealed_count += 1
                self.open = set()
        if self.open:
            writes[chunk_key(self.partition, self.sealed_count)] = _pack(self.open)
        return writes
