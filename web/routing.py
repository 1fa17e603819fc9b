"""Routing of the survey page to the worker holding the invitation (issue 13: any web process answers any
invitation).

``DirectoryReader`` keeps a streams.owners.Directory up to date: a group-less aiokafka consumer reading
``<ns>.owners`` from the beginning, for as long as the worker runs (it joins no consumer group: the role web stays
out of the rebalances). ``OwnerClient`` asks the owner of a partition for one invitation over HTTP (aiohttp, short
timeout, the internal listener's bearer token); when the owner is unknown, unreachable or no longer holds the
partition (a rebalance just moved it) it waits until the directory has read everything published so far, then
asks once more — after that the page says "unavailable" (503).

Logs name partitions and worker names, never URLs, tokens or invitation contents.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import aiohttp

from streams.owners import Directory

log = logging.getLogger("npsflow.routing")

ASK_TIMEOUT = 2.0  # seconds for one owner's answer
CATCH_UP_TIMEOUT = 2.0  # seconds a retry waits for the directory to read what was published so far
RESTART_DELAY = 2.0  # seconds before the directory consumer is started again after a failure


class DirectoryReader:
    """The owner directory, read continuously from the owners topic."""

    def __init__(self, settings, bootstrap: str) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.topic = settings.topics.owners
        self.directory = Directory(settings.secret)
        self.consumer = None
        self.task: asyncio.Task | None = None
        self.changed = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="owner-directory")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("owner directory: reading %s failed (%s); again in %.0fs", self.topic,
                            type(exc).__name__, RESTART_DELAY)
            await asyncio.sleep(RESTART_DELAY)

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **self.settings.kafka_security.aiokafka_kwargs())
        await consumer.start()
        self.consumer = consumer
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        self.directory.apply(record.value)
                self.changed.set()
                self.changed = asyncio.Event()
        finally:
            self.consumer = None
            await consumer.stop()

    async def caught_up(self, timeout: float = CATCH_UP_TIMEOUT) -> bool:
        """Wait until the directory has applied every record published before this call (or ``timeout``)."""
        from aiokafka import TopicPartition

        consumer = self.consumer
        if consumer is None:
            return False
        tp = TopicPartition(self.topic, 0)
        try:
            end = (await asyncio.wait_for(consumer.end_offsets([tp]), timeout))[tp]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while await consumer.position(tp) < end:
                left = deadline - loop.time()
                if left <= 0:
                    return False
                await asyncio.wait_for(self.changed.wait(), left)
        except (asyncio.TimeoutError, Exception):
            return False
        return True


class OwnerClient:
    """One invitation from the internal listener of the worker that owns its partition."""

    def __init__(self, reader: DirectoryReader, headers: dict[str, str], stats) -> None:
        self.reader, self.headers, self.stats = reader, headers, stats
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT),
                                             headers=self.headers)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def fetch(self, inv_id: str, partition: int) -> tuple[dict | None, str | None]:
        """(invitation, None), (None, "invalid") or (None, "unavailable")."""
        for attempt in (1, 2):
            found = await self._ask(inv_id, partition)
            if found is not None:
                self.stats.inc("survey.routed" if attempt == 1 else "survey.routed_retry")
                return found
            if attempt == 1:
                await self.reader.caught_up()
        self.stats.inc("survey.routed_unavailable")
        return None, "unavailable"

    async def _ask(self, inv_id: str, partition: int) -> tuple[dict | None, str | None] | None:
        """The owner's answer, or None when there is no answer to go by (no owner, not held, unreachable)."""
        owner = self.reader.directory.owner(partition)
        if owner is None or self.session is None:
            log.warning("routing: no owner known for partition %d of the invitations table", partition)
            return None
        try:
            async with self.session.get(f"{owner.url}/api/v1/invitation/{quote(inv_id, safe='')}") as reply:
                if reply.status == 200:
                    return (await reply.json())["invitation"], None
                if reply.status == 404 and (await reply.json(content_type=None)).get("reason") == "unknown":
                    return None, "invalid"  # the holder of the partition has no such invitation
                log.info("routing: worker %s answered %d for partition %d", owner.worker, reply.status, partition)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("routing: worker %s (partition %d) did not answer: %s", owner.worker, partition,
                        type(exc).__name__)
        return None


class Router:
    """The directory reader and the owner client of a worker's public listener, started and stopped with it."""

    def __init__(self, settings, bootstrap: str, stats) -> None:
        from npsflow.reader import internal_headers

        self.reader = DirectoryReader(settings, bootstrap)
        self.client = OwnerClient(self.reader, internal_headers(settings), stats)

    async def start(self) -> None:
        await self.client.start()
        await self.reader.start()

    async def stop(self) -> None:
        await self.reader.stop()
        await self.client.stop()
