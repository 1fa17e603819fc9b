"""classify: raw responses → validate → deduplicate → classify → classified topic + window deltas.

Per raw record, in order:
1. decode (Avro) and validate (streams.responses); bad input → dead letter with a reason, never a crash;
2. re-key: a record whose Kafka key is not its routing key — the invitation_id when it has one, else the
   response_id — is re-produced with the right key (all versions of one response must meet on one partition,
   where the dedup table keeps them) and skipped here;
   join: a response to an invitation takes the invitation's segments (they win over the response's own keys),
   survey and locale from the ``invitations`` table of the deliver agent: keyed by invitation id, on a topic
   co-partitioned with this one, so the entry is on this very partition; a new response tells the deliver agent
   (``responded``, which cancels the reminder);
3. decide against the table ``responses-seen`` (latest version per response_id): new / edit → emit;
   duplicate / stale → count and drop; a Kafka *redelivery* of the offset that produced the remembered
   version (after a crash) re-emits the same outputs, because they may not have reached Kafka;
4. emit the classified record and, per segment, a window delta ``[response_id, version, event_ms, category]``
   (category None = "this response left the segment", for edits that change a segment).
The batch is acked after Kafka confirmed every output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import defaultdict
from datetime import date, timedelta

from schemas import codec as avro
from streams.app import (Deliveries, Pipeline, Transient, add_timer, consume_batches, dead_letter, delete_key,
                         within_event)
from streams.responses import Decision, Rejected, decide, remembered, validate
from streams.windows import segment_keys


EPOCH = date(1970, 1, 1)
MAX_ANSWER_DAYS = 64  # bound on the days one answer's versions are remembered on (edits happen in a window)


def day_of(ms: int) -> int:
    """UTC day number (days since 1970-01-01) of a time in ms."""
    return ms // 86_400_000


def answer_days(previous: dict | None, responded_ms: int) -> list[int]:
    """The distinct UTC days of every version of an answer so far, this one included (memo ``ds``). A memo
    written before ``ds`` existed knows only the previous version's time ``t``."""
    days = set(previous.get("ds") or [day_of(previous["t"])]) if previous else set()
    days.add(day_of(responded_ms))
    return sorted(days)[-MAX_ANSWER_DAYS:]


def install_classify(pipeline: Pipeline) -> None:
    app, codec, stats, topics = pipeline.app, pipeline.codec, pipeline.stats, pipeline.topics
    seen = pipeline.tables["seen"]
    invitations = pipeline.tables["invitations"]
    dimensions = list(pipeline.settings.dimensions)
    clock = pipeline.clock

    @app.agent(topics["raw"], name="classify")
    async def classify(stream):
        await consume_batches(pipeline, stream, "classify", 2000, process)

    async def process(events: list) -> None:
        deliveries = Deliveries()
        per_segment: dict[str, list] = defaultdict(list)
        for event in events:
            within_event(event)
            await classify_one(event, per_segment, deliveries)
        for segment, items in per_segment.items():
            await deliveries.send(topics["deltas"], segment.encode(), json.dumps(items).encode())
        await deliveries.wait()

    async def classify_one(event, per_segment: dict[str, list], deliveries: Deliveries) -> None:
        msg = event.message
        where = dict(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key)
        raw = None
        try:
            try:
                raw = codec.decode(event.value, expected=avro.RAW_RESPONSE)
            except avro.CodecError as exc:
                if exc.reason == avro.SCHEMA_REGISTRY_ERROR:
                    raise Transient(exc.detail) from None
                await pipeline.send_dead_letter(
                    dead_letter("classify", exc.reason, exc.detail, payload=event.value, **where), deliveries)
                return
            try:
                response = validate(raw, clock())
            except Rejected as exc:
                await pipeline.send_dead_letter(
                    dead_letter("classify", exc.reason, exc.detail, payload=raw, **where), deliveries)
                return
            await classify_valid(event, response, per_segment, deliveries)
        except Transient:
            raise
        except Exception as exc:  # a bug or an unforeseen input must not stop the agent, nor vanish
            stats.inc("classify.internal_error")
            await pipeline.send_dead_letter(
                dead_letter("classify", "classify_internal_error", f"{type(exc).__name__}: {exc}",
                            payload=raw if raw is not None else event.value, **where), deliveries)

    async def classify_valid(event, response, per_segment, deliveries: Deliveries) -> None:
        msg = event.message
        rid = response.response_id
        route = response.invitation_id or rid
        if msg.key != route.encode():
            stats.inc("classify.rekeyed")
            await deliveries.send(topics["raw"], route.encode(), event.value)
            return
        invitation = invitations.get(f"I|{response.invitation_id}") if response.invitation_id else None
        if invitation is not None:
            stats.inc("classify.joined")
            response = dataclasses.replace(
                response, segment={**response.segment, **(invitation.get("segment") or {})},
                survey_id=response.survey_id or invitation.get("survey_id") or "",
                locale=response.locale or invitation.get("locale"))
        elif response.invitation_id:
            stats.inc("classify.invitation_unknown")
        previous = seen.get(rid)
        decision = decide(previous, response)
        source = [msg.partition, msg.offset]
        if decision is Decision.DUPLICATE and previous.get("src") == source:
            stats.inc("classify.redelivered")
            memo = previous
        elif decision in (Decision.DUPLICATE, Decision.STALE):
            stats.inc(f"classify.{decision.value}")
            return
        else:
            memo = {**remembered(response), "src": source, "e": decision is Decision.EDIT,
                    "ps": previous["s"] if previous else None, "pseg": previous["seg"] if previous else None,
                    "pt": previous["t"] if previous else None,
                    "ds": answer_days(previous, response.responded_ms),
                    # the organization of the invitation; an edit made after the invitation was forgotten keeps it
                    "o": invitation.get("org") if invitation is not None else (previous or {}).get("o")}
        record = {
            "response_id": rid,
            "survey_id": response.survey_id,
            "invitation_id": response.invitation_id,
            "score": response.score,
            "category": response.category.value,
            "comment": response.comment,
            "follow_up": response.follow_up,
            "locale": response.locale,
            "responded_at": response.responded_at,
            "received_at": response.received_at,
            "processed_at": clock(),
            "segment": response.segment,
            "version": response.version,
            "is_edit": bool(memo["e"]),
            "previous_score": memo["ps"],
            # the other days earlier versions had: ClickHouse's day ledger retracts the answer there
            # (sinks/migrations/0005), whatever order the versions reach it in
            "earlier_days": [EPOCH + timedelta(days=d) for d in memo.get("ds", ())
                             if d != day_of(response.responded_ms)],
            "org_id": memo.get("o"),
            "source": response.source,
        }
        encoded = codec.encode(avro.CLASSIFIED_RESPONSE, record)  # before the table write: may raise
        if memo is not previous:
            stats.inc(f"classify.{decision.value}")
            seen[rid] = memo
        await deliveries.send(topics["classified"], rid.encode(), encoded)
        if invitation is not None:  # the first answer opens the edit window; every version refreshes the page's
            await deliveries.send(topics["invitations"], response.invitation_id.encode(), json.dumps(
                {"op": "responded", "inv": response.invitation_id, "at": response.responded_ms,
                 "v": response.version, "score": response.score, "comment": response.comment,
                 "follow_up": response.follow_up}).encode())
        version = response.version
        new_keys = segment_keys(response.segment, dimensions)
        for key in new_keys:
            per_segment[str(key)].append([rid, version, response.responded_ms, response.category.value])
        if memo["pseg"] is not None:
            for key in segment_keys(memo["pseg"], dimensions):
                if key not in new_keys:
                    per_segment[str(key)].append([rid, version, memo["pt"], None])

    async def expire_seen() -> None:
        """Forget response ids older than the dedup retention. Safe: a later replay of such an old record is
        re-emitted with the same version (ClickHouse keeps one row per version) and falls outside every
        window (retention ≥ largest window + lateness, checked by the config), so it still counts once."""
        oldest = int(clock().timestamp() * 1000) - pipeline.settings.dedup_retention_seconds * 1000
        expired = 0
        for i, (key, value) in enumerate(list(seen.data.items())):
            if value and value["t"] < oldest:
                delete_key(seen, key, value["src"][0])
                expired += 1
            if i % 5000 == 4999:
                await asyncio.sleep(0)  # do not starve heartbeats on a big table
        stats.inc("classify.forgotten", expired)

    add_timer(pipeline, "expire_seen", 300.0, expire_seen)
    pipeline.agents["classify"] = classify
    pipeline.timers["expire_seen"] = expire_seen
