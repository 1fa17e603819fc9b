"""Newsletter embeds: nothing is sent; the customer pastes the snippet into their own mailing tool.

`render_embed` gives an HTML fragment with inline CSS only (no <style>, no scripts, no external assets
except the organisation's logo), autoescaped texts and the eleven one-click score links.
`NewsletterChannel.send` writes it to ``<home>/outbox/newsletter/<invitation_id>.html``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sinks.channels import render
from sinks.channels.base import ChannelCosts, Invitation, SendResult, file_stem, invitation_problem, money
from sinks.channels.outbox import outbox_dir, write_atomically


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

    def path(self, invitation_id: str) -> Path:
        return outbox_dir(self.home) / "newsletter" / f"{file_stem(invitation_id)}.html"

    def render_embed(self, invitation: Invitation) -> str:
        return render_embed(invitation)

    async def send(self, invitation: Invitation) -> SendResult:
        problem = invitation_problem(invitation)
        if problem:
            return SendResult.failed("invalid_invitation", attempts=0, detail=problem)
        snippet = render.render_embed(invitation)
        try:
            await asyncio.to_thread(write_atomically, self.path(invitation.delivery_id), snippet.encode("utf-8"))
        except OSError as e:
            return SendResult.failed("outbox_write_failed", attempts=1, detail=type(e).__name__)
        return SendResult.sent(attempts=1, provider_id=None, cost=money(self.costs.newsletter),
                               currency=self.costs.currency)
