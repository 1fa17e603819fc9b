"""`npsflow cases ack|note|assign|close`: a command on a follow-up case, sent to the cases agent and awaited.

The case is read (ClickHouse, through the worker when it holds the embedded store), the command is checked
against it (streams.cases.command_for: the agent's own rules), produced to ``<ns>.cases.events`` keyed by the
case's route, and the command is awaited until the case shows its id (the sink wrote the new revision). A race
the agent refuses (e.g. someone closed the case meanwhile) is a dead letter keyed by the command id.
"""

from __future__ import annotations

import time
import uuid

import orjson

from npsflow import reader
from npsflow.config import Settings
from streams.cases import CommandRefused, command_for

WAIT_SECONDS = 30.0


class CommandError(Exception):
    pass


def run_command(settings: Settings, bootstrap: str, kind: str, case_id: str, actor: str, *,
                text: str | None = None, owner: str | None = None, reason: str | None = None,
                wait: float = WAIT_SECONDS) -> dict:
    """Send one command and return the case after it (or, with ``wait`` 0, the command sent)."""
    from npsflow.producer import ProduceError, Producer

    case = reader.case(settings, case_id)
    command_id = f"cmd-{uuid.uuid4().hex}"
    try:
        event = command_for(case, kind, actor, command_id, text=text, owner=owner, reason=reason)
    except CommandRefused as exc:
        raise CommandError(f"{kind} {case_id}: {exc.detail} ({exc.reason})") from None
    try:
        with Producer(bootstrap, security=settings.kafka_security) as producer:
            producer.send(settings.topics.case_events, event["route"].encode(), orjson.dumps(event))
    except ProduceError as exc:
        raise CommandError(str(exc)) from None
    if wait <= 0:
        return {"command_id": command_id, "case_id": case_id, "sent": True}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = reader.case(settings, case_id)
        if current is not None and command_id in current.get("command_ids", ()):
            return current
    raise CommandError(f"{kind} {case_id}: sent as {command_id}, not applied within {wait:.0f} s (is a worker "
                       f"running? a refusal is in `npsflow deadletters`)")
