"""windows: window deltas (key = segment) → rolling NPS per segment → window updates.

State lives in ONE table, ``window-state``, so that it shares one changelog partition per segment:
* ``S|<segment>``: the segment's hourly buckets (streams.windows), plus ``off`` = the offset of the last delta
  message applied to the buckets, ``p`` = its partition and ``end`` = the window end last emitted;
* ``C|["<segment>", "<response_id>"]``: that response's contribution to the segment
  ``[version, event_ms, category | None, counted]``.

Idempotency: a delta item whose version is not newer than the remembered contribution is a replay and is
skipped; a newer one first retracts the old contribution (if it was counted), then adds the new one. Crash
safety: per segment the state is written before its contributions, into the same changelog partition, so
after a crash either nothing landed (the batch is redone), or the state landed (then ``off`` says the
messages up to it are already in the buckets, and only their contributions are written again).
Idle segments keep rolling: a timer re-emits every segment whose window end moved with the watermark.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from schemas import codec as avro
from streams.app import (Deliveries, Pipeline, add_timer, consume_batches, dead_letter, delete_key, within_event,
                         write_key)
from streams.nps import Category
from streams.responses import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, from_ms
from streams.windows import ApplyStats, Delta, SegmentKey

CATEGORY_BY_NAME = {c.value: c for c in Category}


def state_key(segment: str) -> str:
    return "S|" + segment


def contribution_key(segment: str, response_id: str) -> str:
    return "C|" + json.dumps([segment, response_id], ensure_ascii=False)


def parse_delta(key: bytes | str, value: bytes) -> tuple[SegmentKey, list]:
    segment = SegmentKey.parse(key if isinstance(key, str) else key.decode())
    items = []
    for rid, version, event_ms, cat in json.loads(value):
        event_ms, version = int(event_ms), int(version)
        if not MIN_TIMESTAMP_MS <= event_ms <= MAX_TIMESTAMP_MS or version < 0:
            raise ValueError(f"event time or version out of range: {event_ms}, {version}")
        items.append((str(rid), version, event_ms, None if cat is None else CATEGORY_BY_NAME[cat]))
    return segment, items


def install_windows(pipeline: Pipeline) -> None:
    app, codec, stats, topics, engine = (pipeline.app, pipeline.codec, pipeline.stats, pipeline.topics,
                                         pipeline.engine)
    table = pipeline.tables["window_state"]
    clock = pipeline.clock
    watermark = {"ms": 0}

    def update_record(segment: SegmentKey, result) -> dict:
        summary = result.summary
        lo, hi = summary.ci95
        return {
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
            "updated_at": clock(),
        }

    async def emit(segment: SegmentKey, state: dict, deliveries: Deliveries) -> None:
        for result in engine.results(segment, state, watermark["ms"]):
            await deliveries.send(topics["windows"], str(segment).encode(),
                                  codec.encode(avro.WINDOW_UPDATE, update_record(segment, result)))
        state["end"] = engine.window_end(watermark["ms"])

    async def process_batch(events: list) -> None:
        deliveries = Deliveries()
        parsed: list[tuple[SegmentKey, list, Any]] = []
        for event in events:
            msg = event.message
            try:
                segment, items = parse_delta(msg.key, event.value)
            except Exception as exc:  # internal topic, but a bad producer must not stop the agent
                await pipeline.send_dead_letter(
                    dead_letter("windows", "bad_window_delta", f"{type(exc).__name__}: {exc}"[:300],
                                topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key,
                                payload=event.value), deliveries)
                continue
            parsed.append((segment, items, event))
            for _, _, t, c in items:
                if c is not None:
                    watermark["ms"] = max(watermark["ms"], t)

        apply_stats = ApplyStats()
        states: dict[str, dict] = {}
        segments: dict[str, SegmentKey] = {}
        owner: dict[str, Any] = {}
        touched: set[str] = set()
        contributions: dict[str, dict[str, list]] = {}
        for segment, items, event in parsed:
            seg = str(segment)
            skey = state_key(seg)
            if skey not in states:
                states[skey] = table.get(skey) or engine.new_state()
            state = states[skey]
            watermark["ms"] = max(watermark["ms"], int(state.get("wm", 0)))
            segments[skey], owner[skey] = segment, event
            pending = contributions.setdefault(skey, {})
            redelivered = event.message.offset <= state.get("off", -1)
            for rid, version, t, cat in items:
                ckey = contribution_key(seg, rid)
                prev = pending.get(ckey) or table.get(ckey)
                if prev is not None and prev[0] >= version:
                    stats.inc("windows.replayed")
                    continue
                if redelivered:
                    # the buckets already hold this message (state landed before a crash); only its
                    # contribution may be missing
                    counted = cat is not None and t >= watermark["ms"] - engine.lateness_seconds * 1000
                    pending[ckey] = [version, t, None if cat is None else cat.value, counted]
                    stats.inc("windows.redelivered")
                    continue
                changed = False
                if prev is not None and prev[3] and prev[2] is not None:
                    changed |= engine.apply(state, Delta(segment, prev[1], CATEGORY_BY_NAME[prev[2]], -1),
                                            watermark["ms"], apply_stats)
                counted = False
                if cat is not None:
                    counted = engine.apply(state, Delta(segment, t, cat, +1), watermark["ms"], apply_stats)
                    changed |= counted
                pending[ckey] = [version, t, None if cat is None else cat.value, counted]
                if changed:
                    touched.add(skey)
            if not redelivered:
                state["off"], state["p"] = event.message.offset, event.message.partition

        stats.inc("windows.applied", apply_stats.applied)
        stats.inc("windows.too_late", apply_stats.too_late)
        stats.inc("windows.outside", apply_stats.outside)
        for skey, state in states.items():
            if skey in touched:
                await emit(segments[skey], state, deliveries)
            if skey in touched or contributions.get(skey):
                within_event(owner[skey])
                table[skey] = state  # state first …
                for ckey, value in contributions.get(skey, {}).items():
                    table[ckey] = value  # … then contributions, same changelog partition
        await deliveries.wait()

    @app.agent(topics["deltas"], name="windows")
    async def windows(stream):
        await consume_batches(pipeline, stream, "windows", 5000, process_batch)

    async def roll_idle_segments() -> None:
        """When event time enters a new hour, re-emit the segments that got no response since, so their
        24 h / 7 d / 30 d windows keep rolling (and empty out) instead of freezing."""
        if not watermark["ms"]:
            return
        end = engine.window_end(watermark["ms"])
        deliveries = Deliveries()
        rolled = 0
        for i, (key, state) in enumerate(list(table.data.items())):
            if key.startswith("S|") and state and state.get("end", end) < end and "p" in state:
                await emit(SegmentKey.parse(key[2:]), state, deliveries)
                write_key(table, key, state, state["p"])
                rolled += 1
            if i % 5000 == 4999:
                await asyncio.sleep(0)
        await deliveries.wait()
        stats.inc("windows.rolled", rolled)

    async def expire_contributions() -> None:
        """Forget contributions no window can use any more (bounded state)."""
        if not watermark["ms"]:
            return
        oldest = (engine.window_end(watermark["ms"]) - engine.max_window - engine.lateness_seconds) * 1000
        expired = 0
        for i, (key, value) in enumerate(list(table.data.items())):
            if key.startswith("C|") and value and value[1] < oldest:
                # a contribution lives on its segment's changelog partition, which the state remembers
                state = table.data.get(state_key(json.loads(key[2:])[0]))
                if state and "p" in state:
                    delete_key(table, key, state["p"])
                    expired += 1
            if i % 5000 == 4999:
                await asyncio.sleep(0)
        stats.inc("windows.contributions_expired", expired)

    add_timer(pipeline, "roll_idle_segments", 30.0, roll_idle_segments)
    add_timer(pipeline, "expire_contributions", 60.0, expire_contributions)
    pipeline.agents["windows"] = windows
    pipeline.timers.update(roll_idle_segments=roll_idle_segments, expire_contributions=expire_contributions)
