"""The Faust application: topics, tables, agents and the worker's HTTP API.

    npsflow.responses.raw ──classify──► npsflow.responses.classified ──sink──► ClickHouse responses
          (Avro, key=response_id)  │                                          
                                   ├──► npsflow.windows.deltas (JSON, key=segment) ──windows──► npsflow.windows
                                   └──► npsflow.deadletters ──sink──► ClickHouse dead_letters      │
                                                                                 ClickHouse window_updates ◄┘

Agents are thin: the rules live in streams.responses (validation, dedup) and streams.windows (rolling
windows); this module only moves records between Kafka, Faust tables and ClickHouse.

At-least-once, made exact by idempotency:
* every agent reads batches with ``noack_take`` and acks a batch only after its outputs were handed to the
  producer (classify, windows) or the ClickHouse insert returned (sink). Faust flushes the producer before
  it commits offsets, so a committed offset never runs ahead of the outputs;
* classify keeps the latest version per response_id in a table: replays count once, edits replace;
* the sink inserts one block per (topic, partition, batch) with an insert_deduplication_token, and its
  tables are ReplacingMergeTrees keyed by natural ids, read with argMax.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import faust
from faust.streams import _current_event

from npsflow.config import Settings
from schemas import codec as avro
from streams.nps import Category
from streams.responses import Decision, Rejected, decide, from_ms, remembered, validate
from streams.windows import ApplyStats, Delta, SegmentKey, WindowEngine, segment_keys

log = logging.getLogger("npsflow.streams")

CATEGORY_BY_NAME = {c.value: c for c in Category}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def within_event(event) -> None:
    """Make ``event`` Faust's current event. Batched agents (noack_take) process events outside Faust's own
    per-event iteration, but table writes need the current event to pick the changelog partition."""
    _current_event.set(weakref.ref(event))


@dataclass
class Stats:
    """Counters shown by /api/v1/stats and the demo. In memory, per worker process."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def inc(self, name: str, by: int = 1) -> None:
        self.counts[name] += by

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


@dataclass
class Pipeline:
    app: faust.App
    settings: Settings
    codec: avro.AvroCodec
    engine: WindowEngine
    stats: Stats
    topics: dict[str, Any]
    tables: dict[str, Any]
    agents: dict[str, Any]
    timers: dict[str, Any] = field(default_factory=dict)
    store_holder: dict = field(default_factory=dict)


def dead_letter(stage: str, reason: str, detail: str, *, topic: str | None = None, partition: int | None = None,
                offset: int | None = None, key: Any = None, payload: Any = None) -> dict:
    """A DeadLetter record (Avro io.npsflow.DeadLetter) for bad input that must never vanish."""
    if isinstance(payload, (bytes, bytearray)):
        payload_json = "base64:" + base64.b64encode(bytes(payload)).decode()
    elif payload is None:
        payload_json = None
    else:
        payload_json = json.dumps(payload, default=str, ensure_ascii=False)
    if isinstance(key, (bytes, bytearray)):
        key = bytes(key).decode("utf-8", "replace")
    ident = f"{stage}:{topic}:{partition}:{offset}" if offset is not None else f"{stage}:{time.time_ns()}"
    return {
        "dead_letter_id": ident,
        "stage": stage,
        "reason": reason,
        "detail": detail[:500],
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "key": None if key is None else str(key),
        "payload_json": payload_json,
        "failed_at": utcnow(),
    }


def create_app(settings: Settings, *, broker: str | None = None, clock: Callable[[], datetime] = utcnow,
               store_factory: Callable[[], Any] | None = None, web_enabled: bool = True) -> Pipeline:
    """Build the Faust app and its agents. ``clock`` is the wall clock used for validation (injectable)."""
    app = faust.App(
        settings.topics.namespace,
        broker=f"kafka://{broker or 'localhost:9092'}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=web_enabled,
        web_bind="127.0.0.1",
        web_port=settings.web_port or 6066,
        web_in_thread=False,
        autodiscover=False,
        datadir=str(settings.home / "faust"),
        producer_acks=-1,
        stream_wait_empty=False,
    )
    codec = avro.AvroCodec()
    engine = WindowEngine(windows=settings.windows or WindowEngine().windows,
                          lateness_seconds=settings.lateness_seconds)
    stats = Stats()
    names = settings.topics
    raw_bytes = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    topics = {
        "raw": app.topic(names.raw_responses, partitions=settings.partitions, internal=False, **raw_bytes),
        "classified": app.topic(names.classified, partitions=settings.partitions, **raw_bytes),
        "deltas": app.topic(names.window_deltas, partitions=settings.partitions, key_type=str,
                            value_type=bytes, key_serializer="raw", value_serializer="raw"),
        "windows": app.topic(names.windows, partitions=settings.partitions, **raw_bytes),
        "dead_letters": app.topic(names.dead_letters, partitions=settings.partitions, **raw_bytes),
    }
    seen = app.Table("responses-seen", default=None, partitions=settings.partitions)
    window_state = app.Table("window-state", default=None, partitions=settings.partitions)
    contributions = app.Table("window-contributions", default=None, partitions=settings.partitions)
    pipeline = Pipeline(app, settings, codec, engine, stats, topics,
                        {"seen": seen, "window_state": window_state, "contributions": contributions}, {}, {})
    dimensions = list(settings.dimensions)
    watermark = {"ms": 0}

    async def send_dead_letter(record: dict) -> None:
        stats.inc(f"dead_letter.{record['stage']}.{record['reason']}")
        await topics["dead_letters"].send(key=(record["key"] or "").encode(),
                                          value=codec.encode(avro.DEAD_LETTER, record))

    # ------------------------------------------------------------------------------------- classify
    @app.agent(topics["raw"], name="classify")
    async def classify(stream):
        async for events in stream.noack_take(500, within=0.2):
            per_segment: dict[str, list] = defaultdict(list)
            for event in events:
                within_event(event)
                await _classify_one(event, per_segment)
            for segment, items in per_segment.items():
                await topics["deltas"].send(key=segment, value=json.dumps(items).encode())
            for event in events:
                await stream.ack(event)

    async def _classify_one(event, per_segment: dict[str, list]) -> None:
        msg = event.message
        where = dict(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key)
        try:
            raw = codec.decode(event.value, expected=avro.RAW_RESPONSE)
        except avro.CodecError as exc:
            await send_dead_letter(dead_letter("classify", exc.reason, exc.detail, payload=event.value, **where))
            return
        try:
            response = validate(raw, clock())
        except Rejected as exc:
            await send_dead_letter(dead_letter("classify", exc.reason, exc.detail, payload=raw, **where))
            return
        previous = seen.get(response.response_id)
        decision = decide(previous, response)
        source = [msg.partition, msg.offset]
        if decision is Decision.DUPLICATE and previous.get("src") == source:
            # Kafka redelivered the very record we processed before a crash: its outputs may not have been
            # flushed, so emit them again. Consumers are idempotent by (response_id, version).
            stats.inc("classify.redelivered")
            memo = previous
        elif decision in (Decision.DUPLICATE, Decision.STALE):
            stats.inc(f"classify.{decision.value}")
            return
        else:
            stats.inc(f"classify.{decision.value}")
            memo = {**remembered(response), "src": source, "e": decision is Decision.EDIT,
                    "ps": previous["s"] if previous else None, "pseg": previous["seg"] if previous else None,
                    "pt": previous["t"] if previous else None}
            seen[response.response_id] = memo
        record = {
            "response_id": response.response_id,
            "survey_id": response.survey_id,
            "invitation_id": response.invitation_id,
            "score": response.score,
            "category": response.category.value,
            "comment": response.comment,
            "locale": response.locale,
            "responded_at": response.responded_at,
            "received_at": response.received_at,
            "processed_at": clock(),
            "segment": response.segment,
            "version": response.version,
            "is_edit": bool(memo["e"]),
            "previous_score": memo["ps"],
            "source": response.source,
        }
        await topics["classified"].send(key=response.response_id.encode(),
                                        value=codec.encode(avro.CLASSIFIED_RESPONSE, record))
        # Window deltas carry (response_id, version): the windows agent replaces an older version of the
        # same response in each segment and ignores replays, so deltas are idempotent and order-free.
        rid, version = response.response_id, response.version
        new_keys = segment_keys(response.segment, dimensions)
        for key in new_keys:
            per_segment[str(key)].append([rid, version, response.responded_ms, response.category.value])
        if memo["pseg"] is not None:
            for key in segment_keys(memo["pseg"], dimensions):
                if key not in new_keys:  # the edit moved the response out of this segment: remove it there
                    per_segment[str(key)].append([rid, version, memo["pt"], None])

    # -------------------------------------------------------------------------------------- windows
    @app.agent(topics["deltas"], name="windows")
    async def windows(stream):
        async for events in stream.noack_take(1000, within=0.2):
            parsed: list[tuple[SegmentKey, list, Any]] = []
            for event in events:
                msg = event.message
                try:
                    segment = SegmentKey.parse(event.key if isinstance(event.key, str) else event.key.decode())
                    items = [(str(r), int(v), int(t), None if c is None else CATEGORY_BY_NAME[c])
                             for r, v, t, c in json.loads(event.value)]
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    await send_dead_letter(dead_letter("windows", "bad_window_delta", repr(exc)[:300],
                                                       topic=msg.topic, partition=msg.partition,
                                                       offset=msg.offset, key=event.key, payload=event.value))
                    continue
                parsed.append((segment, items, event))
                for _, _, t, c in items:
                    if c is not None:
                        watermark["ms"] = max(watermark["ms"], t)
            touched: dict[str, SegmentKey] = {}
            apply_stats = ApplyStats()
            states: dict[str, dict] = {}
            owner: dict[str, Any] = {}  # segment -> an event of its partition, for the table write
            for segment, items, event in parsed:
                within_event(event)
                key = str(segment)
                owner[key] = event
                state = states.get(key) or window_state.get(key) or engine.new_state()
                watermark["ms"] = max(watermark["ms"], int(state.get("wm", 0)))
                states[key] = state
                for rid, version, t, cat in items:
                    ckey = f"{key}|{rid}"
                    prev = contributions.get(ckey)  # [version, event_ms, category|None, counted, partition]
                    if prev is not None and prev[0] >= version:
                        stats.inc("windows.replayed")
                        continue
                    changed = False
                    if prev is not None and prev[3] and prev[2] is not None:
                        changed |= engine.apply(state, Delta(segment, prev[1], CATEGORY_BY_NAME[prev[2]], -1),
                                                watermark["ms"], apply_stats)
                    counted = False
                    if cat is not None:
                        counted = engine.apply(state, Delta(segment, t, cat, +1), watermark["ms"], apply_stats)
                        changed |= counted
                    contributions[ckey] = [version, t, None if cat is None else cat.value, counted,
                                           event.message.partition]
                    if changed:
                        touched[key] = segment
            stats.inc("windows.applied", apply_stats.applied)
            stats.inc("windows.too_late", apply_stats.too_late)
            stats.inc("windows.outside", apply_stats.outside)
            now = clock()
            for key, segment in touched.items():
                state = states[key]
                for result in engine.results(segment, state, watermark["ms"]):
                    summary = result.summary
                    lo, hi = summary.ci95
                    update = {
                        "dimension": segment.dimension,
                        "segment_value": segment.value,
                        "window": result.window.name,
                        "window_seconds": result.window.seconds,
                        "window_start": from_ms(result.start_ms),
                        "window_end": from_ms(result.end_ms),
                        "promoters": summary.promoters,
                        "passives": summary.passives,
                        "detractors": summary.detractors,
                        "responses": summary.responses,
                        "nps": summary.nps,
                        "ci_low": lo,
                        "ci_high": hi,
                        "band": summary.band.value if summary.band else None,
                        "seq": result.seq,
                        "updated_at": now,
                    }
                    await topics["windows"].send(key=key.encode(), value=codec.encode(avro.WINDOW_UPDATE, update))
                within_event(owner[key])
                window_state[key] = state
            for event in events:
                await stream.ack(event)

    async def expire_seen():
        """Forget response ids older than the dedup retention. Safe: a later replay of such an old record is
        re-emitted with the same version (ClickHouse keeps one row per version) and falls outside every
        window, so it still counts once."""
        oldest = int(clock().timestamp() * 1000) - settings.dedup_retention_seconds * 1000
        stale = [(k, v["src"][0]) for k, v in list(seen.data.items()) if v and v["t"] < oldest]
        for key, partition in stale:
            seen.data.pop(key, None)
            seen.send_changelog(partition, key, None)
        stats.inc("classify.forgotten", len(stale))

    async def expire_contributions():
        """Forget per-response window contributions that no window can use any more (bounded state)."""
        if not watermark["ms"]:
            return
        oldest = (engine.window_end(watermark["ms"]) - engine.max_window) * 1000 - engine.lateness_seconds * 1000
        stale = [(k, v[4]) for k, v in list(contributions.data.items()) if v and v[1] < oldest]
        for key, partition in stale:
            # outside stream iteration there is no current event: delete and write the tombstone ourselves
            contributions.data.pop(key, None)
            contributions.send_changelog(partition, key, None)
        stats.inc("windows.contributions_expired", len(stale))

    app.timer(interval=300.0)(expire_seen)
    app.timer(interval=60.0)(expire_contributions)
    pipeline.timers.update(expire_seen=expire_seen, expire_contributions=expire_contributions)

    pipeline.agents.update(classify=classify, windows=windows)
    if store_factory is not None:
        from streams.sink_agents import install_sinks

        install_sinks(pipeline, store_factory)
    return pipeline
