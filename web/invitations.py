"""Where the survey page finds an invitation: the ``InvitationSource`` interface and its two implementations.

    LocalInvitations   the Faust table ``invitations`` of this worker (key ``I|<id>``): only the partitions this
                       worker actively owns, with the table recovered
    RoutedInvitations  the local table when it holds the invitation's partition, else the owner's internal
                       listener (``GET /api/v1/invitation/{id}``, web.internal) found in the owner directory
                       (web.routing, streams.owners)

``fetch(inv_id)`` answers ``(invitation, None)``, ``(None, "invalid")`` (no such invitation: its holder says so) or
``(None, "unavailable")`` (nobody can tell now: a rebalance, a recovery, an unreachable owner).
"""

from __future__ import annotations

from typing import Protocol

from streams.kafka_io import StateTable, json_key
from streams.owners import invitation_partition

HERE, RECOVERING, ELSEWHERE = "here", "recovering", "elsewhere"


class InvitationSource(Protocol):
    async def fetch(self, inv_id: str) -> tuple[dict | None, str | None]: ...


class LocalInvitations:
    """The invitations this worker's table holds."""

    def __init__(self, pipeline, partitions: int) -> None:
        self.app, self.partitions = pipeline.app, partitions
        table = pipeline.tables.get("invitations")  # none in the sink role (streams.app.create_app)
        self.table = StateTable(table) if table is not None else None
        self.topic = pipeline.topics["invitations"]

    def get(self, inv_id: str) -> dict | None:
        return self.table.get(json_key(f"I|{inv_id}")) if self.table is not None else None

    def partition(self, inv_id: str) -> int:
        return invitation_partition(inv_id, self.partitions)

    def where(self, inv_id: str) -> str:
        """HERE: this worker actively owns the invitation's partition, its table recovered; RECOVERING: a
        rebalance or a table recovery is in progress; ELSEWHERE: another worker owns it (or none: role web)."""
        if self.table is None:
            return ELSEWHERE
        if getattr(self.app, "rebalancing", False) or getattr(self.app, "in_recovery", False):
            return RECOVERING
        try:
            name, changelog = self.topic.get_topic_name(), self.table.changelog
            actives = {(tp.topic, tp.partition) for tp in self.app.assignor.assigned_actives()}
        except Exception:
            return ELSEWHERE
        partition = self.partition(inv_id)
        if (name, partition) not in actives:
            return ELSEWHERE
        # the table's changelog partition comes with the topic's (every member of the group subscribes to both:
        # streams.app keeps the tables off sink workers); were it ever elsewhere, the table here is not the truth
        return HERE if (changelog, partition) in actives else RECOVERING

    def held_here(self, inv_id: str) -> bool:
        return self.where(inv_id) == HERE

    async def fetch(self, inv_id: str) -> tuple[dict | None, str | None]:
        inv = self.get(inv_id)
        if inv is not None:
            return inv, None
        return None, "invalid" if self.held_here(inv_id) else "unavailable"


class RoutedInvitations:
    """Local when held here, else asked of the partition's owner (``remote``: web.routing.OwnerClient)."""

    def __init__(self, local: LocalInvitations, remote) -> None:
        self.local, self.remote = local, remote

    async def fetch(self, inv_id: str) -> tuple[dict | None, str | None]:
        if self.local.held_here(inv_id):
            return await self.local.fetch(inv_id)
        return await self.remote.fetch(inv_id, self.local.partition(inv_id))
