"""End-to-end on the real broker: CLI ingest → Faust worker → ClickHouse (chDB) → CLI report/windows/deadletters."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from tests.e2e_helpers import make_env, wait_for, write_jsonl

pytestmark = pytest.mark.kafka


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def category(score: int) -> str:
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def oracle(records: list[dict]) -> dict:
    """Independent expectation: valid records only, latest responded_at per response_id wins."""
    latest: dict[str, dict] = {}
    for r in records:
        rid, score, ts = r.get("response_id"), r.get("score"), r.get("responded_at")
        if not isinstance(rid, str) or not rid.strip():
            continue
        if isinstance(score, str) and re.fullmatch(r"\s*[+-]?\d+\s*", score):
            score = int(score)
        if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 10:
            continue
        try:
            when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except (AttributeError, ValueError):
            continue
        if when.tzinfo is None:  # a timestamp without a zone is ambiguous: refused
            continue
        if rid not in latest or when > latest[rid]["when"]:
            latest[rid] = {"when": when, "score": score, "segment": r.get("segment") or {}}
    by_location: dict[str, Counter] = defaultdict(Counter)
    total: Counter = Counter()
    for item in latest.values():
        cat = category(item["score"])
        by_location[item["segment"].get("location", "(none)")][cat] += 1
        total[cat] += 1
    return {"total": total, "by_location": by_location}


def counts(row: dict) -> tuple[int, int, int]:
    return row["promoters"], row["passives"], row["detractors"]


def c3(counter: Counter) -> tuple[int, int, int]:
    return counter["promoter"], counter["passive"], counter["detractor"]


@pytest.fixture
def env(tmp_path, kafka_bootstrap):
    e = make_env(tmp_path, kafka_bootstrap)
    yield e
    e.stop_worker()


def test_ingest_validate_dedup_edit_report_windows_deadletters(env, tmp_path):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    t0 = now - timedelta(hours=3)
    records: list = []
    seg = lambda loc, emp="e-1", ch="sms": {"location": loc, "employee": emp, "channel": ch}  # noqa: E731
    # Espoo: 9 promoters, 2 detractors -> the oracle NPS 63.64 [8.0, 92.0]
    for i in range(9):
        records.append({"response_id": f"esp-{i}", "survey_id": "s-1", "score": 9 + i % 2, "comment": "Hyvä!",
                        "responded_at": iso(t0 + timedelta(minutes=i)), "locale": "fi", "segment": seg("Espoo")})
    for i in range(2):
        records.append({"response_id": f"esp-d{i}", "survey_id": "s-1", "score": str(i * 3),
                        "responded_at": iso(t0 + timedelta(minutes=30 + i)), "locale": "fi",
                        "segment": seg("Espoo", "e-2")})
    # Oslo: 1 P, 2 Pa, 3 D -> -33.33 [-71.19, 26.74]
    for i, score in enumerate([10, 7, 8, 0, 5, 6]):
        records.append({"response_id": f"osl-{i}", "survey_id": "s-1", "score": score, "comment": "Bra",
                        "responded_at": iso(t0 + timedelta(minutes=5 * i)), "locale": "nb",
                        "segment": seg("Oslo", ch="email")})
    # exact replays count once
    records.append(dict(records[0]))
    records.append(dict(records[0]))
    # Malmö edits: in order (detractor -> promoter) and out of order (newer arrives first)
    records.append({"response_id": "mal-1", "score": 3, "responded_at": iso(t0), "segment": seg("Malmö")})
    records.append({"response_id": "mal-1", "score": 10, "responded_at": iso(t0 + timedelta(minutes=10)),
                    "segment": seg("Malmö")})
    records.append({"response_id": "mal-2", "score": 9, "responded_at": iso(t0 + timedelta(minutes=20)),
                    "segment": seg("Malmö")})
    records.append({"response_id": "mal-2", "score": 2, "responded_at": iso(t0), "segment": seg("Malmö")})
    # an edit that moves a response from Bergen to Malmö
    records.append({"response_id": "mov-1", "score": 0, "responded_at": iso(t0), "segment": seg("Bergen")})
    records.append({"response_id": "mov-1", "score": 8, "responded_at": iso(t0 + timedelta(minutes=1)),
                    "segment": seg("Malmö")})
    # invalid records -> dead letters with reasons
    bad = [
        ({"response_id": "bad-1", "score": "7.5", "responded_at": iso(t0)}, "score_not_integer"),
        ({"response_id": "bad-2", "score": "abc", "responded_at": iso(t0)}, "score_not_integer"),
        ({"response_id": "bad-3", "score": 11, "responded_at": iso(t0)}, "score_out_of_range"),
        ({"response_id": "bad-4", "score": -1, "responded_at": iso(t0)}, "score_out_of_range"),
        ({"response_id": "bad-5", "responded_at": iso(t0)}, "missing_score"),
        ({"score": 9, "responded_at": iso(t0)}, "missing_response_id"),
        ({"response_id": "bad-7", "score": 9, "responded_at": "yesterday"}, "responded_at_invalid"),
        ({"response_id": "bad-8", "score": 7.5, "responded_at": iso(t0)}, "score_not_integer"),
    ]
    records.extend(r for r, _ in bad)
    lines = [*records, "[1, 2]", '"just text"', "{broken json"]
    path = write_jsonl(tmp_path / "responses.jsonl", lines)

    env.start_worker()
    proc = env.cli("ingest", "responses", str(path), check=False)
    assert proc.returncode == 1
    n = len(records)
    assert f"sent {n} records" in proc.stdout
    assert f"line {n + 1}: expected a JSON object, got list" in proc.stderr
    assert f"line {n + 2}: expected a JSON object, got str" in proc.stderr
    assert f"line {n + 3}: not valid JSON" in proc.stderr

    expected = oracle(records)
    expected_total = sum(expected["total"].values())
    report = wait_for(lambda: (r := env.cli_json("report", "--by", "location"))["total"]["responses"]
                      == expected_total and r, what="report total")
    rows = {row["location"]: row for row in report["rows"]}
    assert set(rows) == set(expected["by_location"])
    for loc, counter in expected["by_location"].items():
        assert counts(rows[loc]) == c3(counter), loc
    assert counts(report["total"]) == c3(expected["total"])
    assert rows["Espoo"]["nps"] == 63.64 and rows["Espoo"]["ci95"] == [8.0, 92.0]
    assert rows["Espoo"]["band"] == "excellent"
    assert rows["Oslo"]["nps"] == -33.33 and rows["Oslo"]["ci95"] == [-71.19, 26.74]
    assert counts(rows["Malmö"]) == (2, 1, 0)  # mal-1 -> 10, mal-2 stays 9 (older edit ignored), mov-1 -> 8
    assert "Bergen" not in rows

    by_reason = Counter(reason for _, reason in bad)
    by_reason.update({"not_a_json_object": 2, "invalid_json": 1})
    dead = wait_for(lambda: (d := env.cli_json("deadletters"))["total"] == sum(by_reason.values()) and d,
                    what="dead letters")
    got = Counter()
    for r in dead["reasons"]:
        got[r["reason"]] += r["count"]
        assert r["examples"] and all(e["detail"] for e in r["examples"])
    assert got == by_reason

    def window(seg: str, name: str = "24h"):
        ws = env.cli_json("windows", "--segment", seg)
        match = [w for w in ws if w["window"] == name]
        return match[0] if match else None

    espoo = wait_for(lambda: (w := window("location=Espoo")) and w["responses"] == 11 and w, what="Espoo window")
    assert (espoo["promoters"], espoo["passives"], espoo["detractors"]) == (9, 0, 2)
    assert round(espoo["nps"], 2) == 63.64 and espoo["band"] == "excellent"
    overall = wait_for(lambda: (w := window("overall=all", "30d")) and w["responses"] == expected_total and w,
                       what="overall window")
    assert (overall["promoters"], overall["passives"], overall["detractors"]) == c3(expected["total"])
    bergen = wait_for(lambda: (w := window("location=Bergen")) and w["responses"] == 0 and w,
                      what="Bergen emptied by the edit")
    assert bergen["nps"] is None
    malmo = wait_for(lambda: (w := window("location=Malmö")) and w["responses"] == 3 and w, what="Malmö window")
    assert (malmo["promoters"], malmo["passives"], malmo["detractors"]) == (2, 1, 0)

    # replaying the whole file changes nothing anywhere
    env.cli("ingest", "responses", str(path), check=False)
    # first run: 2 replays of esp-0; second run: every current version again plus those 2 replays
    stats = wait_for(lambda: (s := env.stats()).get("classify.duplicate", 0) >= expected_total + 4 and s,
                     what="replay processed")
    again = env.cli_json("report", "--by", "location")
    assert again["total"] == report["total"] and again["rows"] == report["rows"]
    assert window("overall=all", "30d")["responses"] == expected_total
    assert stats["classify.new"] == expected_total
    # edits: mal-1, mov-1; stale: mal-2 old (run 1) + mal-1 old, mal-2 old, mov-1 old (run 2)
    assert stats["classify.edit"] == 2 and stats["classify.stale"] == 4

    # the rollup: the worker refreshes it itself; the CLI cannot open its embedded store meanwhile
    refused = env.cli("rollup", "refresh", check=False)
    assert refused.returncode == 1 and "a worker runs on this embedded ClickHouse" in refused.stderr

    # the report works after the stack stopped (embedded chDB opened by the CLI itself), also with every day
    # of the answers recomputed into the rollup
    env.stop_worker()
    after = env.cli_json("report", "--by", "location")
    assert after["total"] == report["total"]
    assert env.cli("rollup", "refresh", "--quiet-seconds", "0").stdout.startswith("refreshed ")
    rolled = env.cli_json("report", "--by", "location")
    assert (rolled["total"], rolled["rows"]) == (report["total"], report["rows"])


def test_worker_killed_mid_stream_loses_and_double_counts_nothing(env, tmp_path):
    from npsflow.simulate import ResponseSimulator

    sim = ResponseSimulator(seed=7)
    records = list(sim.records(4000, bad_ratio=0.01, duplicate_ratio=0.03, edit_ratio=0.03))
    path = write_jsonl(tmp_path / "sim.jsonl", records)
    expected = oracle(records)
    expected_total = sum(expected["total"].values())

    env.start_worker()
    env.cli("ingest", "responses", str(path))
    wait_for(lambda: env.cli_json("report")["total"]["responses"] > 0, what="first rows", interval=0.1)
    env.kill_worker()
    env.start_worker()
    report = wait_for(lambda: (r := env.cli_json("report", "--by", "location"))["total"]["responses"]
                      == expected_total and r, what="all responses after restart", timeout=150)
    for row in report["rows"]:
        assert counts(row) == c3(expected["by_location"][row["location"]]), row["location"]

    def overall():
        ws = [w for w in env.cli_json("windows", "--segment", "overall=all") if w["window"] == "30d"]
        return ws[0] if ws else None

    w = wait_for(lambda: (o := overall()) and o["responses"] == expected_total and o, what="windows after restart")
    assert (w["promoters"], w["passives"], w["detractors"]) == c3(expected["total"])
    # a second restart recovers the tables from their changelogs and still counts nothing twice
    env.stop_worker()
    env.start_worker()
    env.cli("ingest", "responses", str(path))
    wait_for(lambda: env.stats().get("classify.duplicate", 0) >= len(records) * 0.9, what="replay after restart")
    assert env.cli_json("report")["total"]["responses"] == expected_total
    assert overall()["responses"] == expected_total
