"""windows: window deltas (key = segment) → rolling NPS per segment → window updates, one batch at a time.

One table, ``window-state``, one key per segment (``S|<segment>``, JSON): the hourly buckets (streams.windows),
``wm`` the segment's own event-time watermark, ``hw`` the highest applied source offset per raw partition,
``p`` its changelog partition (= its delta partition), ``end`` the window end last emitted, ``seq``.

Per batch: parse every delta message (a bad one → dead letter), apply each segment's items in order with the
pure ``streams.windows.apply_items`` (exact under replays: ``hw``), then per changed segment emit one window
update per window and stage the state ONCE; produce all of it and wait for Kafka before the input is acked.
Lateness is not decided here: classify decided, deterministically, which versions count (``add`` items).
Idle segments keep rolling: a timer re-emits the segments whose window end moved with the largest watermark
this worker has seen (display only: it never drops buckets).

Significant-change alerts (streams.alerting) live here because the hourly buckets do: a timer
(``evaluate_alerts``, every 5 s) notices when this worker's event-time watermark (the largest segment watermark
it has seen — the clock ``roll_idle_segments`` uses; after a start or a rebalance, the largest in its recovered
states) entered a new hour, and then evaluates every segment it holds once, in chunks under the agent's lock:
quiet segments too, active ones no more often. Nothing per batch. A segment's alert state is the key
``A|<segment>`` on the segment's own changelog partition, written once per evaluation that moved it, staged
after the events it produced (outputs first: a crash in between re-evaluates the same hours into the same
events — deterministic ids — and ClickHouse / the notify agent drop the repeat). Per event: one Avro
``io.npsflow.Alert`` v2 on ``<ns>.alerts`` (key = segment) and one JSON notification on ``<ns>.notifications``
(key = ``<alert_id>:<opened|closed>``). A segment with no open alert and fewer answers in all its buckets than
``min_responses`` is skipped (no detector can fire; a later evaluation catches its hours up, with the same
result). Event time, not the wall clock: replays and imported history give the same alerts, and a totally
silent stream (no answer anywhere) evaluates nothing — its alerts neither open nor close until answers come.
An hour is evaluated once, with the buckets as they are then: answers of it applied later (a lagging partition,
allowed lateness, edits) count from the next hour end on.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import orjson

from schemas import codec as avro
import re

from streams.alert_events import alert_record, notification
from streams.alerting import DEFAULT_RULES, HOUR_MS, buckets_from_window_state, evaluate
from streams.app import Pipeline, add_timer, dead_letter, install_batch_agent, run_batch, settled, sweep_keys
from streams.kafka_io import BatchOutput, StateTable, json_key
from streams.responses import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, from_ms
from streams.windows import SegmentKey, StepStats, apply_items

BATCH = 5000
EMIT_INTERVAL = 0.2  # seconds between two window updates of one segment
CATEGORIES = {"promoter", "passive", "detractor", None}
ALERT_INTERVAL = 5.0  # seconds between two looks at whether event time entered a new hour
ALERT_CHUNK = 200  # segments per lock hold: ~0.75 ms each for a new hour (measured), the agent waits ≤ ~0.15 s
_WM = re.compile(rb'"wm":(\d+)')


def state_key(segment: str) -> bytes:
    return json_key("S|" + segment)


def alert_key(segment: str) -> bytes:
    return json_key("A|" + segment)


def parse_items(value: bytes) -> list[list]:
    """The items of one delta message ``{"i": [[partition, offset, add_ms, add_cat, retract_ms, retract_cat]…]}``,
    checked (an internal topic, but a bad producer must not stop the agent)."""
    body = orjson.loads(value)
    items = body["i"] if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ValueError("not a window delta message {\"i\": [...]}")
    for item in items:
        p, o, add_ms, add_cat, ret_ms, ret_cat = item
        if not (isinstance(p, int) and isinstance(o, int) and p >= 0 and o >= 0):
            raise ValueError(f"bad source position {p!r}/{o!r}")
        if add_cat not in CATEGORIES or ret_cat not in CATEGORIES:
            raise ValueError(f"bad category {add_cat!r}/{ret_cat!r}")
        for t, c in ((add_ms, add_cat), (ret_ms, ret_cat)):
            if c is not None and not (isinstance(t, int) and MIN_TIMESTAMP_MS <= t <= MAX_TIMESTAMP_MS):
                raise ValueError(f"event time out of range: {t!r}")
    return items


class WindowsAgent:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.engine = pipeline.engine
        self.table = StateTable(pipeline.tables["window_state"])
        self.updates_topic = pipeline.topics["windows"].get_topic_name()
        self.partitions = pipeline.settings.partitions
        self.watermark_ms = 0  # the largest segment watermark seen by this worker: only for rolling idle segments
        self.lock = asyncio.Lock()  # the agent and the timers write the same keys: never interleave their writes
        self.emit_interval = EMIT_INTERVAL
        self.now = time.monotonic
        self.due: dict[str, int] = {}  # segments changed since their last window update → their partition
        self.last_emit: dict[str, float] = {}
        # the states keep a "due" mark until their update is sent: after a restart or a rebalance the marked
        # ones are found again (a held update must not be lost with the process: a replay changes nothing)
        self.rescan = True
        self.alerts_end: int | None = None  # the hour end up to which every segment held here was evaluated

    def install(self) -> None:
        pipeline = self.pipeline
        install_batch_agent(pipeline, self, "deltas", "windows", BATCH)
        add_timer(pipeline, "roll_idle_segments", 30.0, self.roll_idle_segments)
        add_timer(pipeline, "emit_held_window_updates", EMIT_INTERVAL / 2, self.emit_held)
        add_timer(pipeline, "expire_contributions", 60.0, self.drop_legacy_keys)
        add_timer(pipeline, "evaluate_alerts", ALERT_INTERVAL, self.evaluate_alerts)
        app = pipeline.app
        if hasattr(app, "on_partitions_assigned"):
            app.on_partitions_assigned.connect(self.on_assigned, weak=False)
        pipeline.timers.update(roll_idle_segments=self.roll_idle_segments, emit_held_window_updates=self.emit_held,
                               expire_contributions=self.drop_legacy_keys, evaluate_alerts=self.evaluate_alerts)

    def prepare(self, records: list) -> BatchOutput:
        """One batch: apply every segment's items, stage the due updates and each changed state once."""
        out = self.pipeline.output()
        by_segment: dict[str, list] = defaultdict(list)
        partition_of: dict[str, int] = {}
        for record in records:
            try:
                segment = str(SegmentKey.parse(record.key.decode()))
                items = parse_items(record.value)
            except Exception as exc:
                self.pipeline.stage_dead_letter(out, dead_letter(
                    "windows", "bad_window_delta", f"{type(exc).__name__}: {exc}"[:300], topic=record.topic,
                    partition=record.partition, offset=record.offset, key=record.key, payload=record.value))
                continue
            by_segment[segment].extend(items)
            partition_of[segment] = record.partition
        stats = StepStats()
        states = {}
        for segment, items in by_segment.items():
            state = self.apply_segment(segment, items, partition_of[segment], stats)
            if state is not None:
                states[segment] = state
        self.emit_due(out, states)
        self.stage_states(out, states)
        self.pipeline.stats.inc("windows.applied", stats.applied)
        self.pipeline.stats.inc("windows.replayed", stats.replayed)
        self.pipeline.stats.inc("windows.outside", stats.outside)
        return out

    def apply_segment(self, segment: str, items: list, partition: int, stats: StepStats) -> dict | None:
        """Apply a segment's items; its state when it changed (buckets or source offsets), else None."""
        state = self.table.get(state_key(segment)) or self.engine.new_state()
        replayed = stats.replayed
        changed = apply_items(self.engine, state, items, stats)
        self.watermark_ms = max(self.watermark_ms, int(state.get("wm", 0)))
        if changed:
            self.due[segment] = partition
            state["due"] = 1  # until its window update is sent (``emit`` clears it)
        if changed or stats.replayed - replayed < len(items):  # hw moved: the state changed
            state["p"] = partition
            return state
        return None

    def emit_due(self, out: BatchOutput, states: dict) -> None:
        """Window updates of the changed segments, at most one per segment every ``emit_interval`` seconds (the
        latest counts win downstream; a busy segment would otherwise send three updates per batch). A segment
        held back is emitted by a later batch or the ``emit_held`` timer. ``states`` gains the emitted ones."""
        now = self.now()
        for segment, partition in list(self.due.items()):
            if now - self.last_emit.get(segment, float("-inf")) < self.emit_interval:
                continue
            state = states.get(segment) or self.table.get(state_key(segment))
            if state is None:
                del self.due[segment]
                continue
            state.setdefault("p", partition)
            self.emit(out, SegmentKey.parse(segment), state, int(state["wm"]), trim=True)
            states[segment] = state
            self.last_emit[segment] = now
            del self.due[segment]

    async def on_assigned(self, sender=None, *args, **kwargs) -> None:
        self.rescan = True
        self.alerts_end = None  # segments of newly assigned partitions: evaluate them all again

    def settled(self) -> bool:
        return settled(self.pipeline.app)

    def find_due(self) -> None:
        """After a start or a rebalance, once the table is recovered: the segments whose update was held back
        when the previous owner stopped (their state still carries the "due" mark)."""
        if not self.rescan or not self.settled():
            return
        self.rescan = False
        for key, raw in list(self.table.data.items()):
            if key.startswith(b'"S|') and b'"due":1' in raw:
                state = orjson.loads(raw)
                if "p" in state:
                    self.due.setdefault(orjson.loads(key)[2:], state["p"])

    async def emit_held(self) -> None:
        """Timer: the updates held back by the interval, when no new batch comes to send them (and those a
        stopped worker held: ``find_due``)."""
        self.find_due()
        if not self.due:
            return
        async with self.lock:
            out = self.pipeline.output()
            states: dict = {}
            self.emit_due(out, states)
            self.stage_states(out, states)
            await run_batch("emit_held_window_updates", self.pipeline.stats, out.flush)

    def stage_states(self, out: BatchOutput, states: dict) -> None:
        """Each changed segment state once, on its partition's changelog."""
        for segment, state in states.items():
            self.table.put(out, state_key(segment), state, state["p"])

    def emit(self, out: BatchOutput, segment: SegmentKey, state: dict, watermark_ms: int, trim: bool) -> None:
        codec, key = self.pipeline.codec, str(segment).encode()
        for result in self.engine.results(segment, state, watermark_ms, trim=trim):
            out.add_keyed(self.updates_topic, self.partitions, key,
                          codec.encode(avro.WINDOW_UPDATE, self.update_record(segment, result)))
        state["end"] = self.engine.window_end(watermark_ms)
        state.pop("due", None)  # the state is staged with this update (same flush: outputs first)

    def update_record(self, segment: SegmentKey, result) -> dict:
        summary = result.summary
        lo, hi = summary.ci95
        return {
            "dimension": segment.dimension, "segment_value": segment.value,
            "window": result.window.name, "window_seconds": result.window.seconds,
            "window_start": from_ms(result.start_ms), "window_end": from_ms(result.end_ms),
            "promoters": summary.promoters, "passives": summary.passives, "detractors": summary.detractors,
            "responses": summary.responses, "nps": summary.nps, "ci_low": lo, "ci_high": hi,
            "band": summary.band.value if summary.band else None,
            "seq": result.seq, "updated_at": self.pipeline.clock(),
        }

    async def roll_idle_segments(self) -> None:
        """When event time enters a new hour, re-emit the segments that got no response since, so their
        24 h / 7 d / 30 d windows keep rolling (and empty out) instead of freezing."""
        if not self.watermark_ms:
            return
        end = self.engine.window_end(self.watermark_ms)

        def roll(out: BatchOutput, key: bytes, raw: bytes) -> int:
            state = orjson.loads(raw)
            if state.get("end", end) >= end or "p" not in state:
                return 0
            self.emit(out, SegmentKey.parse(orjson.loads(key)[2:]), state, self.watermark_ms, trim=False)
            self.table.put(out, key, state, state["p"])
            return 1

        keys = [key for key in self.table.data.keys() if key.startswith(b'"S|')]
        rolled = await sweep_keys(self.pipeline, "roll_idle_segments", self.table, keys, self.lock, roll)
        self.pipeline.stats.inc("windows.rolled", rolled)

    async def evaluate_alerts(self) -> None:
        """Timer: once event time entered a new hour, evaluate the alerts of every segment held here (see the
        module docstring). A no-op within an hour, during a rebalance or recovery, and before any answer."""
        if not self.settled():
            return
        if self.alerts_end is None:  # after a start or a rebalance: the watermark of the recovered states
            self.watermark_ms = max([self.watermark_ms] + [int(m[1]) for raw in list(self.table.data.values())
                                                            if (m := _WM.search(raw)) is not None])
        now = self.watermark_ms
        end = now - now % HOUR_MS
        if not now or (self.alerts_end is not None and end <= self.alerts_end):
            return
        rules = self.pipeline.alert_rules or DEFAULT_RULES
        keys = [key for key in self.table.data.keys() if key.startswith(b'"S|')]
        moved = await sweep_keys(self.pipeline, "evaluate_alerts", self.table, keys, self.lock,
                                 lambda out, key, raw: self.evaluate_segment(out, key, raw, now, rules),
                                 chunk=ALERT_CHUNK)
        self.alerts_end = end
        self.pipeline.stats.inc("alerts.evaluations", moved)
        self.pipeline.stats.set("alerts.hour", end // HOUR_MS)  # hours since the epoch: how far alerts are

    def evaluate_segment(self, out: BatchOutput, key: bytes, raw: bytes, now_ms: int, rules) -> int:
        """One segment's alerts up to ``now_ms``: stage its events and (after them) its new alert state."""
        window_state = orjson.loads(raw)
        if "p" not in window_state:
            return 0
        segment = orjson.loads(key)[2:]
        akey = alert_key(segment)
        old = self.table.get(akey)
        buckets = buckets_from_window_state(window_state)
        if not (old and old.get("open")) and sum(sum(c) for c in buckets.values()) < rules.min_responses:
            return 0  # nothing can fire or be open: its hours are caught up later, with the same result
        state, events = evaluate(segment, buckets, old, now_ms, rules)
        if old is not None and state.get("end") == old.get("end"):
            return 0
        self.stage_events(out, segment, events)
        self.table.put(out, akey, state, window_state["p"])
        return 1

    def stage_events(self, out: BatchOutput, segment: str, events: list[dict]) -> None:
        codec, alerts, notifications = self.pipeline.codec, self.pipeline.topics["alerts"], \
            self.pipeline.topics["notifications"]
        for event in events:
            out.add_keyed(alerts.get_topic_name(), self.partitions, segment.encode(),
                          codec.encode(avro.ALERT, alert_record(event)))
            key, value = notification(event)
            out.add_keyed(notifications.get_topic_name(), self.partitions, key, value)
            self.pipeline.stats.inc(f"alerts.{event['event']}")

    async def drop_legacy_keys(self) -> None:
        """Delete the per-(segment, response) contribution keys ``C|…`` an earlier version kept (no longer read)."""
        dropped = 0
        async with self.lock:
            out = self.pipeline.output()
            for key in [key for key in self.table.data.keys() if key.startswith(b'"C|')]:
                state = self.table.get(state_key(orjson.loads(orjson.loads(key)[2:])[0]))
                if state and "p" in state:
                    self.table.delete(out, key, state["p"])
                    dropped += 1
            await out.flush()
        self.pipeline.stats.inc("windows.contributions_expired", dropped)


def install_windows(pipeline: Pipeline) -> None:
    WindowsAgent(pipeline).install()
