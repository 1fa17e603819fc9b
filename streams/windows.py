"""Rolling NPS windows per segment, event-time based. Pure: no I/O, no wall clock.

Model
-----
* Each segment (``dimension=value``, e.g. ``location=Espoo`` or ``overall=all``) keeps hourly buckets of
  promoter / passive / detractor counts, keyed by the bucket's start (epoch seconds).
* A rolling window of size W (24 h, 7 d, 30 d by default) ending at the *watermark* is the sum of the
  buckets whose start lies in ``[end - W, end)`` where ``end`` is the end of the watermark's bucket.
* The watermark is event time: the largest ``responded_at`` seen so far. It is passed in by the caller
  (the agent), never read from a clock, so tests are deterministic.
* Allowed lateness L: an addition whose event time is older than ``watermark - L`` is refused
  (``too_late``); the response still lands in ClickHouse, only the live window ignores it.
* Edits arrive as a retraction (sign -1) of the previous version plus an addition of the new one.
  Retractions are applied regardless of lateness (they undo something counted earlier) and never drive a
  counter below zero (the original may itself have been refused as too late).
* Buckets that can no longer fall into any window (nor into ``keep_seconds``, the alerts' horizon) are
  trimmed, so state stays bounded (max window / bucket size + lateness buckets per segment).

The state of one segment is a small JSON-able dict so it can live in a Faust table as is:
``{"b": {"<bucket start>": [P, Pa, D]}, "wm": <ms>, "seq": <int>}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from streams.nps import Category, NpsSummary

BUCKET_SECONDS = 3600
_INDEX = {Category.PROMOTER: 0, Category.PASSIVE: 1, Category.DETRACTOR: 2}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """'24h' -> 86400, '7d' -> 604800, '90m' -> 5400. Raises ValueError with the offending text."""
    match = _DURATION.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"not a duration (use e.g. 30m, 24h, 7d): {text!r}")
    return int(match.group(1)) * _UNIT[match.group(2)]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    seconds: int

    @classmethod
    def parse(cls, text: str) -> "WindowSpec":
        return cls(text.strip(), parse_duration(text))


DEFAULT_WINDOWS: tuple[WindowSpec, ...] = tuple(WindowSpec.parse(w) for w in ("24h", "7d", "30d"))


# ---------------------------------------------------------------- aggregator: initialize / add / result
class NpsAggregator:
    """The tiny aggregator interface used for buckets and windows: counts in, NpsSummary out."""

    @staticmethod
    def initialize() -> list[int]:
        return [0, 0, 0]

    @staticmethod
    def add(acc: list[int], category: Category, sign: int = 1) -> list[int]:
        i = _INDEX[category]
        acc[i] = max(0, acc[i] + sign)
        return acc

    @staticmethod
    def merge(acc: list[int], other: Iterable[int]) -> list[int]:
        for i, v in enumerate(other):
            acc[i] += v
        return acc

    @staticmethod
    def result(acc: list[int]) -> NpsSummary:
        return NpsSummary(acc[0], acc[1], acc[2])


@dataclass(frozen=True, slots=True)
class SegmentKey:
    dimension: str
    value: str

    def __str__(self) -> str:
        return f"{self.dimension}={self.value}"

    @classmethod
    def parse(cls, text: str) -> "SegmentKey":
        dimension, sep, value = text.partition("=")
        if not sep or not dimension:
            raise ValueError(f"segment must look like DIM=VALUE: {text!r}")
        return cls(dimension, value)


OVERALL = "overall"
MISSING = "(none)"


def segment_keys(segment: dict[str, str], dimensions: Iterable[str]) -> list[SegmentKey]:
    """The segments one response counts in: ``overall=all`` plus one per configured dimension."""
    keys = []
    for dim in dimensions:
        if dim == OVERALL:
            keys.append(SegmentKey(OVERALL, "all"))
        else:
            keys.append(SegmentKey(dim, segment.get(dim) or MISSING))
    return keys


@dataclass(frozen=True, slots=True)
class Delta:
    """One change to one segment: +1 / -1 of a category at an event time (epoch ms)."""

    segment: SegmentKey
    event_ms: int
    category: Category
    sign: int  # +1 add, -1 retract


@dataclass(frozen=True, slots=True)
class WindowResult:
    segment: SegmentKey
    window: WindowSpec
    start_ms: int
    end_ms: int
    summary: NpsSummary
    seq: int


@dataclass(slots=True)
class ApplyStats:
    applied: int = 0
    too_late: int = 0
    outside: int = 0


@dataclass
class WindowEngine:
    windows: tuple[WindowSpec, ...] = DEFAULT_WINDOWS
    lateness_seconds: int = 6 * 3600
    bucket_seconds: int = BUCKET_SECONDS
    agg: NpsAggregator = field(default_factory=NpsAggregator)
    keep_seconds: int = 0  # keep buckets at least this long (the alerts need 24 h + 28 d) even if every window is shorter

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("at least one window is required")
        for w in self.windows:
            if w.seconds % self.bucket_seconds:
                raise ValueError(f"window {w.name} is not a multiple of the {self.bucket_seconds}s bucket")
        self.max_window = max(max(w.seconds for w in self.windows), self.keep_seconds)

    # ------------------------------------------------------------------ state
    @staticmethod
    def new_state() -> dict:
        return {"b": {}, "wm": 0, "seq": 0}

    def bucket_of(self, event_ms: int) -> int:
        seconds = event_ms // 1000
        return seconds - seconds % self.bucket_seconds

    def window_end(self, watermark_ms: int) -> int:
        """End (exclusive, epoch seconds) of the bucket holding the watermark."""
        return self.bucket_of(watermark_ms) + self.bucket_seconds

    def apply(self, state: dict, delta: Delta, watermark_ms: int, stats: ApplyStats | None = None) -> bool:
        """Apply one delta to a segment's state. Returns True when the state changed."""
        stats = stats if stats is not None else ApplyStats()
        watermark_ms = max(watermark_ms, delta.event_ms if delta.sign > 0 else 0)
        bucket = self.bucket_of(delta.event_ms)
        oldest_kept = self.window_end(watermark_ms) - self.max_window
        if bucket < oldest_kept:
            stats.outside += 1
            return False
        buckets = state["b"]
        key = str(bucket)
        if delta.sign > 0:
            if delta.event_ms < watermark_ms - self.lateness_seconds * 1000:
                stats.too_late += 1
                return False
            acc = buckets.get(key) or self.agg.initialize()
            buckets[key] = self.agg.add(acc, delta.category, +1)
        else:
            acc = buckets.get(key)
            if acc is None or acc[_INDEX[delta.category]] == 0:
                stats.outside += 1
                return False
            self.agg.add(acc, delta.category, -1)
            if not any(acc):
                del buckets[key]
        state["wm"] = max(int(state.get("wm", 0)), int(watermark_ms))
        stats.applied += 1
        return True

    def trim(self, state: dict, watermark_ms: int) -> None:
        oldest_kept = self.window_end(watermark_ms) - self.max_window
        for key in [k for k in state["b"] if int(k) < oldest_kept]:
            del state["b"][key]

    def results(self, segment: SegmentKey, state: dict, watermark_ms: int, trim: bool = True) -> list[WindowResult]:
        """One result per configured window, ending at the watermark's bucket. Bumps the state's seq. Pass
        ``trim=False`` for a watermark other than the segment's own (rolling idle segments): buckets are only
        ever dropped by the segment's own watermark, the one its additions and retractions are checked against."""
        end = self.window_end(watermark_ms)
        if trim:
            self.trim(state, watermark_ms)
        out = []
        for spec in self.windows:
            start = end - spec.seconds
            acc = self.agg.initialize()
            for key, counts in state["b"].items():
                if start <= int(key) < end:
                    self.agg.merge(acc, counts)
            state["seq"] = int(state.get("seq", 0)) + 1
            out.append(WindowResult(segment, spec, start * 1000, end * 1000, self.agg.result(acc), state["seq"]))
        return out


def deltas_for(
    segment: dict[str, str],
    event_ms: int,
    category: Category,
    dimensions: Iterable[str],
    sign: int = 1,
) -> list[Delta]:
    return [Delta(key, event_ms, category, sign) for key in segment_keys(segment, dimensions)]


# ------------------------------------------------------------------ batch step of the windows agent
_BY_NAME = {c.value: c for c in Category}


@dataclass(slots=True)
class StepStats:
    applied: int = 0
    replayed: int = 0
    outside: int = 0


def add_counted(engine: WindowEngine, state: dict, event_ms: int, category: Category, stats: StepStats) -> bool:
    """Add a version classify counted in the live windows (lateness was decided there, deterministically).
    Refused only when its hour is older than every window of this segment's own watermark."""
    watermark = max(int(state.get("wm", 0)), event_ms)
    bucket = engine.bucket_of(event_ms)
    if bucket < engine.window_end(watermark) - engine.max_window:
        stats.outside += 1
        return False
    key = str(bucket)
    state["b"][key] = NpsAggregator.add(state["b"].get(key) or NpsAggregator.initialize(), category, +1)
    state["wm"] = watermark
    stats.applied += 1
    return True


def retract_counted(engine: WindowEngine, state: dict, event_ms: int, category: Category, stats: StepStats) -> bool:
    """Take back an earlier counted version. An hour outside every window is left alone: the addition was
    refused there too (the segment's watermark only grows), or it no longer matters."""
    bucket = engine.bucket_of(event_ms)
    acc = state["b"].get(str(bucket))
    if bucket < engine.window_end(int(state.get("wm", 0))) - engine.max_window or not acc or not acc[_INDEX[category]]:
        stats.outside += 1
        return False
    NpsAggregator.add(acc, category, -1)
    if not any(acc):
        del state["b"][str(bucket)]
    stats.applied += 1
    return True


def apply_items(engine: WindowEngine, state: dict, items: Iterable[list], stats: StepStats) -> bool:
    """Apply one segment's delta items ``[partition, offset, add_ms, add_cat, retract_ms, retract_cat]`` (from
    streams.classify) to its state; returns True when the buckets changed. Exact under replays: the state keeps
    the highest applied source offset per raw partition (``hw``), and each source record is applied once —
    the classify agent processes a partition in offset order and re-emits the same items on a redelivery."""
    hw = state.setdefault("hw", {})
    changed = False
    for partition, offset, add_ms, add_cat, retract_ms, retract_cat in items:
        key = str(partition)
        if offset <= hw.get(key, -1):
            stats.replayed += 1
            continue
        hw[key] = offset
        if retract_cat is not None:
            changed |= retract_counted(engine, state, retract_ms, _BY_NAME[retract_cat], stats)
        if add_cat is not None:
            changed |= add_counted(engine, state, add_ms, _BY_NAME[add_cat], stats)
    if changed:
        engine.trim(state, int(state.get("wm", 0)))
    return changed
