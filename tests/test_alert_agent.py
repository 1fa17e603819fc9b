"""Significant-change alerts wired into the windows agent (no broker: tests/test_agents.py's harness).

The data are deterministic: every hour each of 16 locations gets 2 promoters, 1 passive and 1 detractor (NPS
25), except the planted drop — Oulu's last 25 hours get 1 / 1 / 2 (NPS -25). The oracle for the figures is
computed here from the generated answers (adjusted-Wald z written out, not streams.nps)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime, timezone

import orjson
import pytest

from schemas import codec as avro
from tests.test_agents import Harness

HOUR = 3_600_000
T = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp() * 1000)  # data runs up to T
LOCATIONS = [f"L{i:02d}" for i in range(15)] + ["Oulu"]
NORMAL, DROP = ("promoter", "promoter", "passive", "detractor"), ("promoter", "passive", "detractor", "detractor")


def answers(hours_back: int = 96, drop_hours: int = 25, until: int = T) -> list[tuple[str, int, str]]:
    """(location, event ms, category) of every answer, in time order."""
    out = []
    for h in range(hours_back, 0, -1):
        start = until - h * HOUR
        for loc in LOCATIONS:
            pattern = DROP if loc == "Oulu" and h <= drop_hours else NORMAL
            out += [(loc, start + 60_000 * (i + 1) + 7 * h, cat) for i, cat in enumerate(pattern)]
    return out


def delta_messages(rows, first_offset: int = 0) -> list[tuple[str, bytes]]:
    """Window-delta messages as classify sends them: one per segment per 'batch' of 64 answers."""
    messages = []
    for start in range(0, len(rows), 64):
        by_segment = defaultdict(list)
        for i, (loc, at, cat) in enumerate(rows[start:start + 64], start + first_offset):
            for segment in (f"location={loc}", "overall=all"):
                by_segment[segment].append([0, i, at, cat, None, None])
        messages += [(seg, orjson.dumps({"i": items})) for seg, items in by_segment.items()]
    return messages


async def run(harness, messages) -> None:
    async with harness.feed("windows") as agent:
        for key, value in messages:
            await agent.put(value, key=key, partition=0)


def alerts(harness) -> list[dict]:
    return harness.decoded("alerts", avro.ALERT)


def notifications(harness) -> list[tuple[bytes, dict]]:
    return [(k, json.loads(v)) for k, v in harness.sent["notifications"]]


def counts(rows, loc, start, end) -> tuple[int, int, int]:
    cats = [c for (lo, at, c) in rows if lo == loc and start <= at < end]
    return cats.count("promoter"), cats.count("passive"), cats.count("detractor")


def oracle_ci(p, pa, d) -> list[float]:
    """The adjusted-Wald 95 % interval of an NPS, written out (n' = n + 3, p' = (P + 0.75)/n', d' likewise)."""
    n = p + pa + d + 3
    pp, dd = (p + 0.75) / n, (d + 0.75) / n
    se = math.sqrt((pp + dd - (pp - dd) ** 2) / n)
    return [max(-100.0, 100 * (pp - dd - 1.959963984540054 * se)), min(100.0, 100 * (pp - dd + 1.959963984540054 * se))]


def oracle_z(cur, base) -> float:
    def adj(p, pa, d):
        n = p + pa + d + 3
        pp, dd = (p + 0.75) / n, (d + 0.75) / n
        return pp - dd, (pp + dd - (pp - dd) ** 2) / n
    (m1, v1), (m2, v2) = adj(*cur), adj(*base)
    return (m1 - m2) / math.sqrt(v1 + v2)


@pytest.fixture
def harness(tmp_path):
    return Harness(tmp_path)  # windows 24h,7d: the state must still keep the alerts' 29 days


async def test_a_planted_drop_opens_exactly_one_alert_there_and_nothing_elsewhere(harness):
    rows = answers()
    await run(harness, delta_messages(rows))
    await harness.pipeline.timers["evaluate_alerts"]()
    (alert,) = alerts(harness)
    end = T - HOUR  # the watermark is in the last hour: the last complete hour ends an hour before T
    cur, base = counts(rows, "Oulu", end - 24 * HOUR, end), counts(rows, "Oulu", end - 96 * HOUR, end - 24 * HOUR)
    assert cur == (24, 24, 48) and base == (142, 71, 71)  # 71 h of baseline: 1 hour of drop falls before it
    assert (alert["dimension"], alert["segment_value"], alert["kind"], alert["direction"]) == \
        ("location", "Oulu", "drop", "down")
    assert (alert["event"], alert["status"], alert["closed_at"]) == ("opened", "open", None)
    assert alert["current"]["responses"] == 96 and alert["baseline"]["responses"] == 284
    assert alert["current"]["nps"] == pytest.approx(-25.0) and alert["baseline"]["nps"] == pytest.approx(25.0)
    assert alert["z"] == pytest.approx(oracle_z(cur, base), abs=1e-3) and alert["z"] < -1.96
    assert alert["p_value"] == pytest.approx(math.erfc(abs(alert["z"]) / math.sqrt(2)))
    assert alert["opened_at"] == datetime.fromtimestamp(end / 1000, tz=timezone.utc)
    (key, note), = notifications(harness)
    assert key == f"{alert['alert_id']}:opened".encode()
    assert note == {
        "id": f"{alert['alert_id']}:opened", "event": "alert.opened", "org_id": "", "to": None,
        "data": {"alert_id": alert["alert_id"], "segment": {"location": "Oulu"}, "kind": "drop", "direction": "down",
                 "baseline": {"nps": pytest.approx(25.0), "responses": 284,
                              "ci95": pytest.approx(oracle_ci(*base), abs=0.01)},
                 "current": {"nps": pytest.approx(-25.0), "responses": 96,
                             "ci95": pytest.approx(oracle_ci(*cur), abs=0.01)},
                 "z": alert["z"], "p_value": alert["p_value"], "opened_at": "2026-11-19T23:00:00.000Z",
                 "closed_at": None, "status": "open"}}
    lo, hi = note["data"]["current"]["ci95"]
    assert (lo, hi) == (pytest.approx(alert["current"]["ci_low"]), pytest.approx(alert["current"]["ci_high"]))
    assert lo < -25 < hi
    # the alert state sits next to the segment, on its partition; overall did not move enough to alert
    table = harness.pipeline.tables["window_state"].data
    state = json.loads(table[b'"A|location=Oulu"'])
    assert state["end"] == end and state["open"]["down"]["alert_id"] == alert["alert_id"]
    assert json.loads(table[b'"A|overall=all"'])["open"] == {}
    assert harness.pipeline.stats.as_dict()["alerts.opened"] == 1


async def test_replays_re_evaluations_and_a_rebuilt_worker_duplicate_nothing(harness, tmp_path):
    rows = answers()
    messages = delta_messages(rows)
    await run(harness, messages)
    timer = harness.pipeline.timers["evaluate_alerts"]
    await timer()
    assert len(alerts(harness)) == 1 and len(notifications(harness)) == 1
    agent = harness.pipeline.batch_agents["windows"]
    await timer()  # the same hour again: nothing to do
    agent.alerts_end = None  # as after a rebalance: every segment again, each a no-op
    await timer()
    await run(harness, messages)  # a replay of every delta: the windows drop them, the alerts stay
    agent.alerts_end = None
    await timer()
    assert len(alerts(harness)) == 1 and len(notifications(harness)) == 1
    # a restarted worker: its table rebuilt from the changelog, nothing in memory
    rebuilt = Harness(tmp_path / "again")
    table = rebuilt.pipeline.tables["window_state"].data
    for _, key, value in harness.changelog["window_state"]:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    await rebuilt.pipeline.timers["evaluate_alerts"]()
    assert alerts(rebuilt) == [] and notifications(rebuilt) == []
    # the next hour: it evaluates (state moves) and still duplicates nothing
    later = [("L00", T + 5 * 60_000, "promoter")]
    await run(rebuilt, delta_messages(later, first_offset=len(rows)))
    await rebuilt.pipeline.timers["evaluate_alerts"]()
    assert alerts(rebuilt) == []
    assert json.loads(table[b'"A|location=Oulu"'])["end"] == T


async def test_quiet_segments_are_evaluated_when_the_hour_completes_and_the_alert_closes_after_recovery(harness):
    rows = answers()
    await run(harness, delta_messages(rows))
    await harness.pipeline.timers["evaluate_alerts"]()
    (opened,) = alerts(harness)
    # Oulu goes silent; the others go on for 48 hours: Oulu's alert closes once its condition (|z| >= 1 on
    # at least 30 answers) has not held for 24 h
    others = [r for r in answers(hours_back=48, drop_hours=0, until=T + 48 * HOUR) if r[0] != "Oulu"]
    await run(harness, delta_messages(others, first_offset=len(rows)))
    await harness.pipeline.timers["evaluate_alerts"]()
    opened_again, closed = alerts(harness)
    assert opened_again == opened
    assert (closed["alert_id"], closed["event"], closed["status"]) == (opened["alert_id"], "closed", "closed")
    assert closed["opened_at"] == opened["opened_at"] and closed["closed_at"] > closed["opened_at"]
    assert closed["current"] == opened["current"]  # the figures the alert opened with
    assert [n["event"] for _, n in notifications(harness)] == ["alert.opened", "alert.closed"]
    assert json.loads(harness.pipeline.tables["window_state"].data[b'"A|location=Oulu"'])["open"] == {}


async def test_nothing_is_evaluated_within_an_hour_nor_for_segments_too_small_to_alert(harness):
    rows = [r for r in answers(hours_back=3) if r[0] in ("L00", "L01")]  # 12 answers per location
    await run(harness, delta_messages(rows))
    await harness.pipeline.timers["evaluate_alerts"]()
    table = harness.pipeline.tables["window_state"].data
    assert b'"A|location=L00"' not in table  # 12 < 30 answers: skipped, no state written
    assert b'"A|overall=all"' not in table  # 24 < 30
    assert harness.changelog["window_state"] and not any(k.startswith(b'"A|') for _, k, _ in
                                                         harness.changelog["window_state"])


async def test_history_imported_within_the_hour_is_evaluated_at_once(harness):
    """Live answers first (every segment too small to test, and the hour already evaluated), then the history
    with the drop arrives — event time stays in the same hour: the changed segments are still evaluated."""
    rows = answers()
    live = [r for r in rows if r[1] >= T - HOUR]
    await run(harness, delta_messages(live))
    timer = harness.pipeline.timers["evaluate_alerts"]
    await timer()
    assert alerts(harness) == [] and harness.pipeline.batch_agents["windows"].alerts_end == T - HOUR
    await run(harness, delta_messages([r for r in rows if r[1] < T - HOUR], first_offset=len(live)))
    await timer()
    (alert,) = alerts(harness)
    assert (alert["segment_value"], alert["kind"]) == ("Oulu", "drop")
    await timer()  # nothing changed since: nothing more
    assert len(alerts(harness)) == 1
