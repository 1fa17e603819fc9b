"""Newsletter embeds: nothing is sent; the customer pastes the snippet into their own mailing tool.

`render_embed` gives an HTML fragment with inline CSS only (no <style>, no scripts, no external assets
except the organisation's logo), autoescaped texts and the eleven one-click score links.
`NewsletterChannel.send` writes it to ``<home>/outbox/newsletter/<delivery_id>.html`` and adds a line to
``<home>/outbox/newsletter/index.jsonl`` — ``{delivery_id, invitation_id, contact_id, campaign, file,
reminder, written_at}`` — by which the organization's mailing tool merges each recipient's embed into the
campaign's newsletter (the contact id is the organization's own; no address is written).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

from sinks.channels import render
from sinks.channels.base import ChannelCosts, Invitation, SendResult, file_stem, invitation_problem, money
from sinks.channels.outbox import AppendOnceLog, outbox_dir, write_atomically


def render_embed(invitation: Invitation) -> str:
    problem = invitation_problem(invitation)
    if problem:
        raise ValueError(problem)
    return render.render_embed(invitation)


class NewsletterChannel:
    name = "newsletter"
    transport = "outbox"
    idempotent = True  # the snippet file of a delivery id is overwritten with the same content

    def __init__(self, home: Path, *, costs: ChannelCosts | None = None):
        self.home = Path(home)
        self.costs = costs or ChannelCosts()
        self.index = AppendOnceLog(outbox_dir(self.home) / "newsletter" / "index.jsonl")  # append-once by delivery id

    def path(self, invitation_id: str) -> Path:
        return outbox_dir(self.home) / "newsletter" / f"{file_stem(invitation_id)}.html"

    def render_embed(self, invitation: Invitation) -> str:
        return render_embed(invitation)

    async def send(self, invitation: Invitation) -> SendResult:
        problem = invitation_problem(invitation)
        if problem:
            return SendResult.failed("invalid_invitation", attempts=0, detail=problem)
        snippet = render.render_embed(invitation)
        path = self.path(invitation.delivery_id)
        entry = {"delivery_id": invitation.delivery_id, "invitation_id": invitation.invitation_id,
                 "contact_id": invitation.contact_ref, "campaign": invitation.campaign, "file": path.name,
                 "reminder": invitation.reminder, "written_at": datetime.now(timezone.utc).isoformat()}
        try:
            await asyncio.to_thread(write_atomically, path, snippet.encode("utf-8"))
            await asyncio.to_thread(self.index.append_once, entry)
        except OSError as e:
            return SendResult.failed("outbox_write_failed", attempts=1, detail=type(e).__name__)
        return SendResult.sent(attempts=1, provider_id=None, cost=money(self.costs.newsletter),
                               currency=self.costs.currency)
