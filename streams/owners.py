"""The owner directory: which worker holds each partition of the invitations table, for routing survey pages.

Every consuming worker (roles ``all`` and ``process``) publishes, once a rebalance is over and its tables are
recovered (``streams.app.settled``), one record per partition of the invitations topic it actively owns to the
compacted one-partition topic ``<ns>.owners``: key = the partition number, value JSON
``{"partition", "url", "worker", "generation", "at"}`` — ``url`` is the worker's internal listener as other hosts
reach it (NPSFLOW_INTERNAL_ADVERTISED_URL, else the bound address), ``generation`` the consumer group generation
of the assignment. Any worker's public listener reads the topic (web.routing) and asks the owner for the
invitation (``GET /api/v1/invitation/{id}`` on its internal listener).

Records are signed (``sig``: HMAC-SHA256 with NPSFLOW_SECRET, which every worker of a deployment shares): the
reader sends the internal token to the URL a record names, so a record anyone with write access to the topic
could produce must not redirect it — an unsigned or wrongly signed record is skipped.

``Directory`` is the reader's view: the latest record per partition, except that a record of an older generation
that is not newer in time either (a send of the previous owner that landed late) never replaces a newer owner.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

from kafka.partitioner.default import murmur2

log = logging.getLogger("npsflow.owners")

PUBLISH_EVERY = 0.5  # seconds between checks of the assignment (a publication only when it changed)


def _signature(secret: bytes, fields: dict) -> str:
    message = b"npsflow/owners\x00" + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hmac.new(secret, message, hashlib.sha256).digest()).decode().rstrip("=")


def invitation_partition(inv_id: str, partitions: int) -> int:
    """The partition of the invitations topic (and table) an invitation id is keyed to (Kafka's murmur2)."""
    return (murmur2(inv_id.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Owner:
    """One partition's owner as published: its internal URL, worker name, group generation, time (ms)."""

    partition: int
    url: str
    worker: str
    generation: int
    at: int

    def fields(self) -> dict:
        return {"partition": self.partition, "url": self.url, "worker": self.worker, "generation": self.generation,
                "at": self.at}

    def encode(self, secret: bytes) -> tuple[bytes, bytes]:
        """(key, value) of the owners topic, the value signed with ``secret``."""
        value = {**self.fields(), "sig": _signature(secret, self.fields())}
        return str(self.partition).encode(), json.dumps(value, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes | None, secret: bytes) -> "Owner | None":
        """The record's owner, or None for a tombstone, anything malformed or a record not signed with
        ``secret`` (skipped, never fatal)."""
        if not value:
            return None
        try:
            obj = json.loads(value)
            owner = cls(int(obj["partition"]), str(obj["url"]), str(obj.get("worker") or ""),
                        int(obj["generation"]), int(obj["at"]))
            signed = hmac.compare_digest(str(obj["sig"]), _signature(secret, owner.fields()))
        except (ValueError, TypeError, KeyError):
            return None
        if not signed:
            log.warning("owners: a record for partition %d is not signed with this deployment's NPSFLOW_SECRET; "
                        "skipped", owner.partition)
            return None
        return owner if owner.url.startswith(("http://", "https://")) and owner.partition >= 0 else None

    def supersedes(self, current: "Owner | None") -> bool:
        """Whether this record replaces ``current``: a newer generation does; an older one only when it is
        also later in time (the group was deleted and started counting again), never a late send of an old
        owner."""
        if current is None or self.generation >= current.generation:
            return True
        return self.at > current.at


class Directory:
    """Partition → Owner, fed record by record (``apply``) from the owners topic."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.owners: dict[int, Owner] = {}
        self.applied = 0  # records applied, a change counter for waiters

    def apply(self, value: bytes | None) -> bool:
        owner = Owner.decode(value, self.secret)
        self.applied += 1
        if owner is None or not owner.supersedes(self.owners.get(owner.partition)):
            return False
        self.owners[owner.partition] = owner
        return True

    def owner(self, partition: int) -> Owner | None:
        return self.owners.get(partition)


class OwnerPublisher:
    """The consuming worker's side: publishes its invitations partitions after every settled rebalance."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.url = pipeline.settings.internal_advertised_url
        self.worker = pipeline.settings.worker_name or pipeline.settings.role
        self.published: tuple[int, frozenset[int]] | None = None

    def current(self) -> tuple[int, frozenset[int]] | None:
        """(generation, partitions owned) when settled with an assignment of the invitations topic, else None."""
        from streams.app import owned_partitions, settled

        app = self.pipeline.app
        if not settled(app):
            return None
        owned = owned_partitions(app, self.pipeline.topics["invitations"].get_topic_name())
        if not owned:  # None: no assignment yet (or none at all); empty: nothing of the invitations topic
            return None
        return int(getattr(app, "consumer_generation_id", 0) or 0), frozenset(owned)

    async def tick(self) -> None:
        state = self.current()
        if state is None or state == self.published:
            return
        generation, owned = state
        now = int(time.time() * 1000)
        topic = self.pipeline.topics["owners"]
        for partition in sorted(owned):
            key, value = Owner(partition, self.url, self.worker, generation, now).encode(self.pipeline.settings.secret)
            await (await topic.send(key=key, value=value, partition=0))
        self.published = state
        self.pipeline.stats.inc("owners.published", len(owned))
        log.info("owners: published partitions %s of the invitations table (generation %d)", sorted(owned),
                 generation)


def install_owner_publisher(pipeline) -> OwnerPublisher:
    """The publisher as a timer of the pipeline's app (roles all and process)."""
    from streams.app import add_timer

    publisher = OwnerPublisher(pipeline)
    add_timer(pipeline, "owners_publish", PUBLISH_EVERY, publisher.tick)
    return publisher
