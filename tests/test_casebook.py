"""Cases in real chDB: the sink's rows (sinks.rows.case_row) read back by sinks.casebook, checked against the pure
state machine's own summary and status (streams.cases: an independent implementation of the same rules)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from schemas import codec as avro
from sinks.casebook import case, case_stats, cases
from sinks.rows import case_row
from streams import cases as core
from streams.cases_agent import case_record

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
MS = int(T0.timestamp() * 1000)
HOUR = 3_600_000
CODEC = avro.AvroCodec()
CONFIG = core.CasesConfig.from_yaml_dict({"organizations": [
    {"id": "acme", "owners": {"location": {"Espoo": "espoo-mgr", "Oslo": "oslo-mgr"}}, "fallback_owner": "hq"}]})


class State(dict):
    def get(self, key, default=None):
        return super().get(key, default)


def answer(rid: str, score: int, location: str, contact: str, at_ms: int = MS, comment: str | None = None) -> dict:
    return {"kind": "answer", "answer": {
        "response_id": rid, "version": at_ms * 1_000_000, "score": score, "comment": comment,
        "segment": {"location": location}, "responded_at": at_ms, "org_id": "acme", "respondent": contact}}


def run(events: list[tuple[dict, int]]) -> list[dict]:
    """Apply events at their times; every case revision the agent would produce, Avro round-tripped."""
    state, out = State(), []
    for event, now in events:
        changes, outputs = core.apply(event, state, now, CONFIG)
        state.update(changes)
        for o in outputs:
            if o["type"] == "case":
                out.append(CODEC.decode(CODEC.encode(avro.CASE, case_record(o["case"])), expected=avro.CASE))
    return out


def sink(store, records: list[dict]) -> None:
    store.insert("cases", [case_row(r, 0, i) for i, r in enumerate(records)])


def test_cases_list_summary_and_one_case_agree_with_the_state_machine(ch_store):
    events = [(answer("r1", 2, "Espoo", "c1", comment="Slow. Call 0701234567"), MS),
              (answer("r2", 5, "Oslo", "c2"), MS + HOUR),
              (answer("r3", 0, "Turku", "c3"), MS + 2 * HOUR),
              (answer("r4", 6, "Espoo", "c4"), MS + 3 * HOUR)]
    revisions = run(events)
    by_id = {r["response_id"]: r["case_id"] for r in revisions}
    route = {r["case_id"]: r["route"] for r in revisions}
    commands = [
        ({"kind": "ack", "case_id": by_id["r1"], "route": route[by_id["r1"]], "actor": "anna",
          "text": "Called him back on +46 70 123 45 67", "command_id": "k1"}, MS + 5 * HOUR),
        ({"kind": "close", "case_id": by_id["r1"], "route": route[by_id["r1"]], "actor": "anna"}, MS + 6 * HOUR),
        ({"kind": "close", "case_id": by_id["r2"], "route": route[by_id["r2"]], "actor": "ola"}, MS + 60 * HOUR),
    ]
    state_events = events + commands
    revisions = run(state_events)
    sink(ch_store, revisions)
    sink(ch_store, revisions[:3])  # an older revision inserted again later: the highest rev still wins

    now = T0 + timedelta(hours=49)  # r3 (opened +2 h) is overdue at +50 h; r4 (+3 h) not yet
    now_ms = int(now.timestamp() * 1000)
    latest = {}
    for r in revisions:
        latest[r["case_id"]] = {**r, **{k: int(v.timestamp() * 1000) if isinstance(v, datetime) else v
                                        for k, v in r.items()}}
    expected_summary = core.summary(latest.values(), now_ms)
    result = cases(ch_store, now=now)
    assert result["summary"] == expected_summary
    assert {c["case_id"]: c["status"] for c in result["cases"]} == {
        cid: core.status_at(c, now_ms) for cid, c in latest.items()}
    assert [c["response_id"] for c in result["cases"]] == ["r4", "r3", "r2", "r1"]  # newest first
    assert {c["response_id"]: c["owner"] for c in result["cases"]} == {
        "r1": "espoo-mgr", "r2": "oslo-mgr", "r3": "hq", "r4": "espoo-mgr"}
    assert [c["response_id"] for c in cases(ch_store, status="closed", now=now)["cases"]] == ["r2", "r1"]
    assert cases(ch_store, owner="espoo-mgr", now=now)["summary"]["closed_within_sla"] == 1

    one = case(ch_store, by_id["r1"], now=now)
    assert one["first_contact_at"] == "2026-11-02T14:00:00.000Z" and one["command_ids"] == ["k1"]
    assert "0701234567" in (revisions[0]["comment"] or "")  # the sink masks notes, not the classified comment
    assert "123 45 67" not in one["notes"][0]["text"] and one["notes"][0]["actor"] == "anna"
    assert [h["kind"] for h in one["history"]] == ["opened", "ack", "close"]
    assert case(ch_store, "case-nope") is None


def test_follow_up_statistics_by_owner_and_by_segment(ch_store):
    events = [(answer("r1", 2, "Espoo", "c1"), MS), (answer("r2", 3, "Espoo", "c2"), MS)]
    first = run(events)
    ids = [r["case_id"] for r in first]
    routes = [r["route"] for r in first]
    events += [({"kind": "ack", "case_id": ids[0], "route": routes[0], "actor": "a"}, MS + 2 * HOUR),
               ({"kind": "ack", "case_id": ids[1], "route": routes[1], "actor": "a"}, MS + 4 * HOUR),
               ({"kind": "close", "case_id": ids[0], "route": routes[0], "actor": "a"}, MS + 5 * HOUR),
               ({"kind": "close", "case_id": ids[1], "route": routes[1], "actor": "a"}, MS + 50 * HOUR)]
    sink(ch_store, run(events))
    (row,) = case_stats(ch_store, "owner")
    assert row == {"owner": "espoo-mgr", "cases": 2, "open": 0, "overdue": 0, "acknowledged": 2,
                   "median_hours_to_contact": 3.0, "closed": 2, "closed_within_sla_pct": 50.0}
    (loc,) = case_stats(ch_store, "location")
    assert loc["location"] == "Espoo" and loc["cases"] == 2


def test_the_dashboard_shows_the_most_urgent_open_cases_first(ch_store):
    from sinks.casebook import open_cases

    events = [(answer(f"r{i}", i % 7, "Espoo", f"c{i}"), MS + i * HOUR) for i in range(5)]
    revisions = run(events)
    first = revisions[0]
    revisions += run(events + [({"kind": "close", "case_id": first["case_id"], "route": first["route"],
                                 "actor": "a"}, MS + 9 * HOUR)])[-1:]
    sink(ch_store, revisions)
    now = T0 + timedelta(hours=50)  # r1 (due +49 h) and r2 (+50 h) overdue, r3, r4 not yet; r0 closed
    shown = open_cases(ch_store, limit=3, now=now)
    assert [(c["response_id"], c["status"]) for c in shown["cases"]] == [
        ("r1", "overdue"), ("r2", "overdue"), ("r3", "open")]
    assert shown["summary"] == {"open": 2, "overdue": 2, "closed_within_sla": 1, "closed_late": 0}
