from datetime import datetime, timezone

import pytest

from streams.nps import Category
from streams.windows import (ApplyStats, Delta, SegmentKey, WindowEngine, WindowSpec, deltas_for,
                             parse_duration, segment_keys)

H = 3600 * 1000
T0 = int(datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc).timestamp() * 1000)
ESPOO = SegmentKey("location", "Espoo")


class Clock:
    """Injectable event-time clock: the watermark the agent would pass in."""

    def __init__(self, ms: int):
        self.ms = ms

    def advance(self, hours: float) -> int:
        self.ms += int(hours * H)
        return self.ms


def engine(**kw):
    return WindowEngine(windows=(WindowSpec.parse("24h"), WindowSpec.parse("7d")), lateness_seconds=2 * 3600, **kw)


def by_window(results):
    return {r.window.name: r for r in results}


def test_parse_duration():
    assert parse_duration("24h") == 86400 and parse_duration("7d") == 604800 and parse_duration("90m") == 5400
    for bad in ("", "h", "0h", "5x", "-1d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_windows_must_align_to_buckets():
    with pytest.raises(ValueError):
        WindowEngine(windows=(WindowSpec.parse("90m"),))


def test_segment_keys_include_overall_and_missing():
    keys = segment_keys({"location": "Espoo"}, ["overall", "location", "employee"])
    assert [str(k) for k in keys] == ["overall=all", "location=Espoo", "employee=(none)"]
    assert SegmentKey.parse("location=Espoo") == ESPOO
    with pytest.raises(ValueError):
        SegmentKey.parse("location")


def test_rolling_24h_drops_old_buckets_7d_keeps_them():
    e, state, clock = engine(), WindowEngine.new_state(), Clock(T0)
    e.apply(state, Delta(ESPOO, clock.ms, Category.PROMOTER, 1), clock.ms)
    clock.advance(10)
    e.apply(state, Delta(ESPOO, clock.ms, Category.DETRACTOR, 1), clock.ms)
    w = by_window(e.results(ESPOO, state, clock.ms))
    assert (w["24h"].summary.promoters, w["24h"].summary.detractors) == (1, 1)
    assert w["24h"].summary.nps == 0.0
    clock.advance(20)  # 30 h after the first response
    e.apply(state, Delta(ESPOO, clock.ms, Category.PASSIVE, 1), clock.ms)
    w = by_window(e.results(ESPOO, state, clock.ms))
    assert (w["24h"].summary.promoters, w["24h"].summary.passives, w["24h"].summary.detractors) == (0, 1, 1)
    assert (w["7d"].summary.promoters, w["7d"].summary.passives, w["7d"].summary.detractors) == (1, 1, 1)
    assert w["24h"].end_ms - w["24h"].start_ms == 24 * H
    assert w["24h"].end_ms == (clock.ms // H + 1) * H


def test_window_boundary_is_exact_at_bucket_edges():
    e, state = engine(), WindowEngine.new_state()
    e.apply(state, Delta(ESPOO, T0, Category.PROMOTER, 1), T0)  # bucket [T0, T0+1h)
    wm = T0 + 24 * H - 1  # still in bucket ending T0+24h -> window [T0, T0+24h)
    assert by_window(e.results(ESPOO, state, wm))["24h"].summary.promoters == 1
    wm = T0 + 24 * H  # next bucket -> window [T0+1h, T0+25h)
    assert by_window(e.results(ESPOO, state, wm))["24h"].summary.promoters == 0
    assert by_window(e.results(ESPOO, state, wm))["7d"].summary.promoters == 1


def test_lateness_accepts_within_and_refuses_beyond():
    e, state, stats = engine(), WindowEngine.new_state(), ApplyStats()
    wm = T0 + 10 * H
    assert e.apply(state, Delta(ESPOO, wm - 2 * H + 1, Category.PROMOTER, 1), wm, stats)
    assert not e.apply(state, Delta(ESPOO, wm - 2 * H - 1, Category.PROMOTER, 1), wm, stats)
    assert (stats.applied, stats.too_late) == (1, 1)


def test_edit_retracts_previous_version():
    e, state = engine(), WindowEngine.new_state()
    e.apply(state, Delta(ESPOO, T0, Category.DETRACTOR, 1), T0)
    e.apply(state, Delta(ESPOO, T0, Category.DETRACTOR, -1), T0 + H)
    e.apply(state, Delta(ESPOO, T0 + H, Category.PROMOTER, 1), T0 + H)
    s = by_window(e.results(ESPOO, state, T0 + H))["24h"].summary
    assert (s.promoters, s.passives, s.detractors) == (1, 0, 0)


def test_retraction_never_goes_negative():
    e, state, stats = engine(), WindowEngine.new_state(), ApplyStats()
    assert not e.apply(state, Delta(ESPOO, T0, Category.DETRACTOR, -1), T0, stats)
    s = by_window(e.results(ESPOO, state, T0))["24h"].summary
    assert s.responses == 0


def test_state_is_trimmed_and_seq_increases():
    e, state = engine(), WindowEngine.new_state()
    for h in range(0, 24 * 10):
        e.apply(state, Delta(ESPOO, T0 + h * H, Category.PROMOTER, 1), T0 + h * H)
    first = e.results(ESPOO, state, T0 + 239 * H)
    assert len(state["b"]) == 7 * 24  # only what the largest window can still use
    assert by_window(first)["7d"].summary.promoters == 7 * 24
    second = e.results(ESPOO, state, T0 + 239 * H)
    assert [r.seq for r in first] == [1, 2] and [r.seq for r in second] == [3, 4]


def test_deltas_for_fans_out_per_dimension():
    ds = deltas_for({"location": "Espoo", "channel": "sms"}, T0, Category.PASSIVE, ["overall", "location", "channel"])
    assert [str(d.segment) for d in ds] == ["overall=all", "location=Espoo", "channel=sms"]
    assert all(d.sign == 1 and d.category is Category.PASSIVE for d in ds)
