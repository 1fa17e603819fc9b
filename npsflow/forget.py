"""``npsflow forget`` and ``npsflow export-contact``: erasure and access for one contact (GDPR articles 17, 15).

The contact is named by the organization's own id (``--org``, ``--contact``); everything npsflow stores about it
is found by the keyed pseudonym ``contact_key(org, contact_id, NPSFLOW_SECRET)`` (sinks.erasure) — the same
secret as the workers', or nothing matches. Order of ``forget`` (each step idempotent, so a failed run is simply
run again):

1. ask ClickHouse what it holds (``sinks.erasure.plan``: rows per table, invitation ids, event ids) — through the
   worker's internal listener while a worker holds embedded chDB, else on the store itself;
2. the outbox (``$NPSFLOW_HOME/outbox``): the contact's e-mail and newsletter files (named by invitation id)
   are deleted, its lines of ``sms.jsonl`` and ``newsletter/index.jsonl`` are blanked in place (same length:
   the channels' append-once index of the file stays valid, a re-send of an erased message appends nothing);
3. erase notes to the stages' state tables (``erase_state``): dispatch (``dispatch-state``, with an ``erased``
   marker against replays of its old triggers), deliver (``invitations``, and the classify memos of the answers
   in ``responses-seen``), cases (``cases``, and tombstones on the compacted cases topic);
4. ClickHouse rows deleted (``sinks.erasure.erase``) and the audit row written, with the counts of step 2.

Invitation ids are read from ClickHouse before the rows go: the outbox is cleaned first, so a run interrupted
after step 3 has nothing left to find, and one interrupted before it finds everything again.
"""

from __future__ import annotations

import getpass
import json
import os
import time
import uuid
from pathlib import Path


from npsflow.config import Settings
from npsflow.reader import _get, _via_worker, ask_worker, open_store
from sinks.channels.base import file_stem
from sinks.channels.outbox import outbox_dir
from streams import contact_rules
from streams.triggers import trigger_key

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


class ForgetError(Exception):
    pass


def identify(settings: Settings, org: str, contact_id: str) -> dict:
    """The contact's pseudonym and trigger route; ForgetError for an org the programs file does not know."""
    org, contact_id = (org or "").strip(), (contact_id or "").strip()
    if not org or "|" in org:
        raise ForgetError(f"invalid organization id {org!r}")
    if not contact_id:
        raise ForgetError("the contact id must not be empty")
    if settings.programs_file is not None:
        from npsflow.programs import load_programs

        try:
            known = {o.id for o in load_programs(settings.programs_file).organizations}
        except Exception as exc:  # a broken programs file: say so, do not guess
            raise ForgetError(f"cannot read the programs file {settings.programs_file}: {exc}") from None
        if org not in known:
            raise ForgetError(f"unknown organization {org!r} (not in {settings.programs_file})")
    return {"org": org, "pseudonym": contact_rules.contact_key(org, contact_id, settings.secret),
            "route": trigger_key(org, contact_id).decode("utf-8", "surrogatepass")}


def _params(who: dict) -> dict:
    return {"org": who["org"], "pseudonym": who["pseudonym"], "route": who["route"]}


def _on_store(settings: Settings, fn, *args, **kwargs):
    store = open_store(settings)
    try:
        return fn(store, *args, **kwargs)
    finally:
        store.close()


def export(settings: Settings, who: dict) -> dict:
    """Everything ClickHouse holds of the contact (sinks.erasure.export)."""
    from sinks import erasure

    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/contact", _params(who))
    return _on_store(settings, erasure.export, who["org"], who["pseudonym"], who["route"])


def plan(settings: Settings, who: dict) -> dict:
    from sinks import erasure

    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/contact/plan", _params(who))
    return _on_store(settings, erasure.plan, who["org"], who["pseudonym"], who["route"])


def _erase_rows(settings: Settings, who: dict, request_id: str, by: str, other: dict[str, int]) -> dict:
    from sinks import erasure

    info = _via_worker(settings)
    if not info:
        return _on_store(settings, erasure.erase, who["org"], who["pseudonym"], request_id=request_id, by=by,
                         trigger_route=who["route"], other=other)
    return ask_worker(settings, info, "POST", "/api/v1/contact/erase", timeout=600, what="erasure",
                      body={**_params(who), "request_id": request_id, "by": by, "other": other})


def _blank_lines(path: Path, invitations: set[str]) -> int:
    """Overwrite, in place and under the channels' file lock, the JSON lines of ``path`` whose invitation_id is
    one of ``invitations`` with spaces (same length: readers skip them as torn lines). Returns lines blanked."""
    if not path.exists():
        return 0
    blanked = 0
    with open(path, "r+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            data = bytearray(f.read())
            start = 0
            while start < len(data):
                end = data.find(b"\n", start)
                end = len(data) if end < 0 else end
                line = bytes(data[start:end])
                try:
                    rec = json.loads(line) if line.strip() else None
                except ValueError:
                    rec = None
                if isinstance(rec, dict) and rec.get("invitation_id") in invitations:
                    data[start:end] = b" " * (end - start)
                    blanked += 1
                start = end + 1
            if blanked:
                f.seek(0)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return blanked


def erase_outbox(home: Path, invitations: list[str]) -> dict[str, int]:
    """The contact's messages in the outbox: files deleted, index lines blanked (see the module docstring)."""
    box = outbox_dir(home)
    files = 0
    for inv in invitations:
        for stem in (file_stem(inv), file_stem(f"{inv}-reminder")):
            for path in (box / "email" / f"{stem}.eml", box / "newsletter" / f"{stem}.html"):
                try:
                    path.unlink()
                    files += 1
                except FileNotFoundError:
                    pass
    wanted = set(invitations)
    lines = _blank_lines(box / "sms.jsonl", wanted) + _blank_lines(box / "newsletter" / "index.jsonl", wanted)
    return {"outbox_files": files, "outbox_lines": lines}


def state_notes(settings: Settings, who: dict, found: dict, at_ms: int) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of every erase note: pure (see ``erase_state``)."""
    import orjson

    from streams.cases import erase_event

    topics = settings.topics
    invitations = list(found.get("invitations") or [])
    notes = [(topics.releases, who["route"].encode("utf-8", "surrogatepass"), orjson.dumps(
        {"op": "erase", "org": who["org"], "key": who["pseudonym"], "events": found.get("events") or [],
         "invs": invitations, "at": at_ms}))]
    notes += [(topics.invitations, inv.encode(), orjson.dumps({"op": "erase", "inv": inv, "at": at_ms}))
              for inv in invitations]
    routes: dict[str, list[str]] = {f"{who['org']}|{who['pseudonym']}": []}  # the contact's route, always
    for case in found.get("cases") or []:
        routes.setdefault(case["route"], []).append(case["case_id"])
    responses = list(found.get("responses") or [])
    notes += [(topics.case_events, route.encode(), orjson.dumps(erase_event(route, ids, responses)))
              for route, ids in routes.items()]
    return notes


def erase_state(settings: Settings, who: dict, found: dict) -> int:
    """Ask the stages that hold the contact in their state tables to tombstone it, each note keyed so that it
    lands on the partition that owns the keys (one partition key per entity):

    * the dispatch stage (``DecideStep.erase``): one note on the releases topic keyed by the trigger route
      (co-partitioned with the triggers) — ``C|``/``PQ|``/``E|``/``P|`` keys and the ``X|`` erased marker;
    * the deliver stage (``DeliverBatch.erase``): one note per invitation id on the invitations topic, keyed by
      it — ``I|<invitation>`` tombstoned, ``Z|<invitation>`` marker; the classify memo of its answer (same
      partition of ``responses-seen``) rewritten without personal data (``streams.classify.erased_memo``);
    * the cases agent (``streams.cases._erase``): one ``erase`` event per route of the contact's cases (its
      ``<org>|<pseudonym>`` always) on the cases events topic — ``C|``/``K|``/``R|`` keys, and tombstones of
      the case records on the compacted cases topic.

    Returns the notes sent."""
    from npsflow.producer import ProduceError, Producer

    notes = state_notes(settings, who, found, int(time.time() * 1000))
    try:
        with Producer(settings.bootstrap(), security=settings.kafka_security) as producer:
            for topic, key, value in notes:
                producer.send(topic, key, value)
    except (ProduceError, Exception) as exc:
        raise ForgetError(f"cannot send the erase request to Kafka: {str(exc).splitlines()[0] if str(exc) else exc}")
    return len(notes)


def forget(settings: Settings, who: dict, by: str | None = None) -> dict:
    """Erase the contact (see the module docstring); the audit record (no contact id, no address)."""
    found = plan(settings, who)
    other = erase_outbox(settings.home, list(found["invitations"]))
    other["state_requests"] = erase_state(settings, who, found)
    request_id = f"erase-{uuid.uuid4().hex}"
    return _erase_rows(settings, who, request_id, by or operator(), other)


def operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return f"uid:{os.getuid()}"
