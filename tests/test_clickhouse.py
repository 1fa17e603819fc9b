"""ClickHouse sink, migrations, batching and read side — against real embedded ClickHouse (chDB), never mocked."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import clickhouse_connect
import pytest

from schemas import codec as avro
from schemas.examples import examples
from sinks import clickhouse as ch
from sinks import queries, rows
from sinks.batching import BatchingSink
from sinks.rollup import apply_view
from streams.nps import summarize

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
ALERT_EXAMPLE = examples()[avro.ALERT]
# window_updates has TTL updated_at + 90 days: rows older than that are dropped at insert, so use recent times
W0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def response(rid: str, score: int, *, version: int = 1, at: datetime = T0, segment: dict | None = None,
             **extra) -> dict:
    """A decoded io.npsflow.ClassifiedResponse record."""
    category = "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
    return {"response_id": rid, "survey_id": "s1", "invitation_id": None, "score": score, "category": category,
            "comment": None, "locale": "fi-FI", "responded_at": at, "received_at": at + timedelta(seconds=1),
            "processed_at": at + timedelta(seconds=2), "segment": segment or {}, "version": version,
            "is_edit": version > 1, "previous_score": None, "source": "api", **extra}


def insert_responses(store, records: list[dict], token: str | None = None, first_offset: int = 0,
                     inserted_at: datetime | None = None) -> None:
    """``inserted_at``: when the rows "arrived" (default: now, by ClickHouse) — an hour ago makes their days quiet
    for the rollup refresher (sinks.rollup)."""
    extra = {} if inserted_at is None else {"inserted_at": inserted_at}
    store.insert("responses", [{**rows.response_row(r, 0, first_offset + i), **extra} for i, r in enumerate(records)],
                 dedup_token=token)


def count(store, table: str, final: bool = False) -> int:
    return int(store.query(f"SELECT count() AS n FROM {{db}}.{table}{' FINAL' if final else ''}")[0]["n"])


def stop_merges(store, table: str) -> None:
    """Keep physical duplicates visible: a background merge could collapse them under a plain count()."""
    store.command(f"SYSTEM STOP MERGES {store.table(table)}")


# =============================================================================================== engine / store
def test_raw_chdb_same_path_twice_in_one_process_shares_the_engine(tmp_path: Path):
    path = tmp_path / "raw"
    path.mkdir()
    a = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    b = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    try:
        a.command("CREATE TABLE default.t (x UInt8) ENGINE = MergeTree ORDER BY x")
        b.insert("t", [[1]], column_names=["x"], database="default")
        assert a.command("SELECT count() FROM default.t") == 1
    finally:
        a.close()
        b.close()


def test_stores_on_one_dsn_share_client_and_thread(ch_store, ch_dsn):
    other = ch.ClickHouseStore(ch_dsn)
    try:
        assert other.client is ch_store.client and other.executor is ch_store.executor
        assert ch.connect(ch_dsn) is ch_store.client
        assert len([k for k in ch.open_engines() if k.startswith("chdb://")]) == 1
    finally:
        other.close()
    assert ch_store.query("SELECT 1 AS one") == [{"one": 1}]  # closing one store leaves the others working


def test_second_chdb_path_in_one_process_is_refused_clearly_then_allowed_after_close(ch_store, tmp_path: Path):
    with pytest.raises(ch.ClickHouseError, match="one engine path per process"):
        ch.ClickHouseStore(f"chdb://{tmp_path / 'other'}")
    ch_store.insert("alerts", [rows.alert_row({**ALERT_EXAMPLE, "alert_id": "a1"})])
    ch_store.close()
    assert ch.open_engines() == []
    with ch.ClickHouseStore(f"chdb://{tmp_path / 'other'}") as other:  # a new path once all are closed
        assert other.query("SELECT 1 AS one") == [{"one": 1}]
    with ch.ClickHouseStore(ch_store.dsn) as again:  # and the first path reopens with its data
        assert count(again, "alerts") == 1


def test_directory_is_locked_against_other_processes_until_closed(ch_store):
    probe = ("import sys, clickhouse_connect\n"
             "try:\n    clickhouse_connect.get_client(dsn=sys.argv[1]).command('SELECT 1')\n"
             "except Exception as e:\n    print(str(e).splitlines()[0]); sys.exit(3)\n")
    held = subprocess.run([sys.executable, "-c", probe, ch_store.dsn], capture_output=True, text=True, timeout=120)
    assert held.returncode == 3, held.stdout + held.stderr
    ch_store.close()
    free = subprocess.run([sys.executable, "-c", probe, ch_store.dsn], capture_output=True, text=True, timeout=120)
    assert free.returncode == 0, free.stdout + free.stderr


def test_databases_isolate_stores_on_one_engine(ch_store, ch_dsn):
    with ch.ClickHouseStore(ch_dsn, database="npsflow_other") as other:
        assert ch.migrate(other) == [m.name for m in ch.load_migrations()]
        insert_responses(other, [response("r1", 10)])
        assert count(other, "responses") == 1
        assert count(ch_store, "responses") == 0
        assert queries.report(ch_store)["total"]["responses"] == 0


def test_parse_dsn():
    server = ch.parse_dsn("https://u:p@ch.example:8443/analytics?secure=1")
    assert (server.kind, server.database, server.server_dsn) == ("http", "analytics", "https://u:p@ch.example:8443?secure=1")
    assert ch.parse_dsn("http://localhost:8123").database == "npsflow"
    assert ch.parse_dsn("chdb:///tmp/x/../y").path == "/tmp/y"
    for bad in ("chdb://memory", "chdb://relative", "mysql://x", "http://h/bad-name;drop"):
        with pytest.raises(ValueError):
            ch.parse_dsn(bad)


async def test_async_calls_run_on_the_store_thread_without_blocking(ch_store):
    await asyncio.gather(*[ch_store.ainsert("responses", [rows.response_row(response(f"r{i}", i % 11), 0, i)])
                           for i in range(20)])
    assert (await ch_store.aquery("SELECT count() AS n FROM {db}.responses"))[0]["n"] == 20
    result = await ch_store.arun(queries.report, ["location"], None, None)  # nested store calls run inline
    assert result["total"]["responses"] == 20


# =============================================================================================== migrations
def test_migrations_are_recorded_and_idempotent(ch_store):
    assert ch.migrate(ch_store) == []  # the fixture already applied them
    assert ch.migrate(ch_store) == []
    recorded = ch.applied_migrations(ch_store)
    assert [r["name"] for r in recorded.values()] == ["0001_init.sql", "0002_dispatches.sql", "0003_dispatch_kind.sql",
                                                      "0004_response_follow_up.sql", "0005_nps_daily_rollup.sql",
                                                          "0006_terms.sql", "0007_cases.sql", "0008_alerts.sql", "0009_erasures.sql"]
    assert recorded[1]["checksum"] == ch.load_migrations()[0].checksum
    engines = {r["name"]: r for r in ch_store.query(
        "SELECT name, engine, create_table_query AS q FROM system.tables WHERE database = {d:String}",
        {"d": ch_store.database})}
    written = {"responses", "window_updates", "dead_letters", "alerts", "dispatches", "cases", "erasures"}  # sinks, forget
    derived = {"responses_by_day": "ReplacingMergeTree", "nps_daily": "ReplacingMergeTree",  # sinks.rollup
               "comments_by_day": "ReplacingMergeTree", "comments_by_day_mv": "MaterializedView",
               "nps_daily_state": "ReplacingMergeTree", "nps_daily_touched": "AggregatingMergeTree",
               "responses_by_day_mv": "MaterializedView", "nps_daily_touched_mv": "MaterializedView",
               "terms_daily": "ReplacingMergeTree", "terms_daily_state": "ReplacingMergeTree",
               "nps_cells": "View", "term_cells": "View"}  # the fixture's views
    assert set(engines) == {"schema_migrations"} | written | set(derived)
    for name in written:  # Kafka delivers at least once: identical retried batches are dropped at insert
        assert engines[name]["engine"] == "ReplacingMergeTree", name
        assert "non_replicated_deduplication_window = 10000" in engines[name]["q"], name
    assert {name: engines[name]["engine"] for name in derived} == derived


def test_dead_letter_payloads_reach_clickhouse_with_personal_data_masked():
    """A refused answer's comment may hold a phone number or an address: the analytics table keeps the payload
    masked (the region from its locale); the Kafka topic keeps the original for inspection."""
    base = {"dead_letter_id": "classify:1", "stage": "classify", "reason": "score_not_integer",
            "detail": "score must be an integer 0-10, got 'ring 070-123 45 67'",
            "source_topic": "t", "source_partition": 0, "source_offset": 1, "key": "r-1",
            "failed_at": datetime(2024, 5, 1, 12, tzinfo=timezone.utc)}
    payload = {"response_id": "r-1", "score": "ten", "locale": "sv-SE", "segment": {"location": "Malmö"},
               "comment": "Ring mig på 070-123 45 67 eller anna@example.se, personnummer 811218-9876"}
    row = rows.dead_letter_row({**base, "payload_json": json.dumps(payload, ensure_ascii=False)})
    stored = json.loads(row["payload_json"])
    assert stored["comment"] == "Ring mig på [phone] eller [email], personnummer [id]"
    assert row["detail"] == "score must be an integer 0-10, got 'ring [phone]'"
    assert {k: v for k, v in stored.items() if k != "comment"} == {k: v for k, v in payload.items() if k != "comment"}
    truncated = rows.dead_letter_row({**base, "payload_json": '{"comment": "mail me: kim@example.com", "sc'})
    assert truncated["payload_json"] == '{"comment": "mail me: [email]", "sc'
    raw = "base64:" + "MDcwMTIzNDU2Nw=="
    assert rows.dead_letter_row({**base, "payload_json": raw})["payload_json"] == raw


def test_no_personal_data_columns(ch_store):
    columns = {r["name"] for r in ch_store.query("SELECT name FROM system.columns WHERE database = {d:String}",
                                                   {"d": ch_store.database})}
    assert not [c for c in columns if any(p in c for p in ("email", "mail", "phone"))]


def test_new_migrations_apply_in_order_and_changed_checksum_is_an_error(ch_store, tmp_path: Path):
    mdir = tmp_path / "migrations"
    mdir.mkdir()
    for m in ch.load_migrations():
        (mdir / m.name).write_text(m.sql)
    (mdir / "9003_third.sql").write_text("ALTER TABLE {db}.t2 ADD COLUMN IF NOT EXISTS z UInt8;\n")
    (mdir / "9002_second.sql").write_text(
        "-- a table and a column\nCREATE TABLE IF NOT EXISTS {db}.t2 (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        "ALTER TABLE {db}.t2 ADD COLUMN IF NOT EXISTS y String;\n")
    assert ch.migrate(ch_store, mdir) == ["9002_second.sql", "9003_third.sql"]
    assert ch.migrate(ch_store, mdir) == []
    cols = [r["name"] for r in ch_store.query("SELECT name FROM system.columns WHERE database = {d:String} "
                                              "AND table = 't2' ORDER BY position", {"d": ch_store.database})]
    assert cols == ["x", "y", "z"]
    # CRLF line endings are not a change
    (mdir / "9002_second.sql").write_bytes((mdir / "9002_second.sql").read_text().replace("\n", "\r\n").encode())
    assert ch.migrate(ch_store, mdir) == []
    (mdir / "9002_second.sql").write_text("CREATE TABLE IF NOT EXISTS {db}.t2 (x UInt16) ENGINE = Log;\n")
    with pytest.raises(ch.MigrationError, match=r"9002_second.sql was changed after it was applied"):
        ch.migrate(ch_store, mdir)
    (mdir / "9002_second.sql").unlink()
    with pytest.raises(ch.MigrationError, match="file is missing"):
        ch.migrate(ch_store, mdir)


def test_bad_migration_file_name_is_rejected(tmp_path: Path):
    (tmp_path / "2_x.sql").write_text("SELECT 1;")
    with pytest.raises(ch.MigrationError, match="NNNN_lowercase_name.sql"):
        ch.load_migrations(tmp_path)


# =============================================================================================== insert dedup
def test_dedup_token_same_token_once_different_token_twice(ch_store):
    stop_merges(ch_store, "responses")
    batch = [response(f"r{i}", 10) for i in range(5)]
    insert_responses(ch_store, batch, token="responses:t:0:0-4")
    insert_responses(ch_store, batch, token="responses:t:0:0-4")
    assert count(ch_store, "responses") == 5  # the retry was dropped by ClickHouse
    insert_responses(ch_store, batch, token="responses:t:0:5-9")
    assert count(ch_store, "responses") == 10  # a different token is a different insert (physical duplicates)
    assert count(ch_store, "responses", final=True) == 5  # ...which the ReplacingMergeTree collapses
    assert queries.report(ch_store)["total"]["responses"] == 5  # and reads never double count


# =============================================================================================== row mappers
def test_row_mappers_fill_neutral_values_and_drop_unknown_fields(ch_store):
    rec = response("r1", 4, version=2, segment={"location": "Espoo"}, email="someone@example.com",
                   phone="+358401234567")
    rec["previous_score"] = 9
    row = rows.response_row(rec, 3, 42)
    assert "email" not in row and "phone" not in row
    assert (row["invitation_id"], row["comment"], row["is_edit"], row["kafka_partition"], row["kafka_offset"]) == \
           ("", "", 1, 3, 42)
    dl = rows.dead_letter_row({"dead_letter_id": "classify:1", "stage": "classify", "reason": "bad_json",
                               "detail": "x", "source_topic": None, "source_partition": None,
                               "source_offset": None, "key": None, "payload_json": None,
                               "failed_at": datetime(2024, 5, 1, 12)}, 0, 7)  # naive = UTC
    assert (dl["source_topic"], dl["source_partition"], dl["source_offset"], dl["key"], dl["payload_json"]) == \
           ("", -1, -1, "", "")
    wu = rows.window_update_row({"dimension": "location", "segment_value": "Espoo", "window": "24h",
                                 "window_seconds": 86400, "window_start": W0 - D, "window_end": W0,
                                 "promoters": 0, "passives": 0, "detractors": 0, "responses": 0, "nps": None,
                                 "ci_low": -100.0, "ci_high": 100.0, "band": None, "seq": 1, "updated_at": W0}, 0, 0)
    al = rows.alert_row({"alert_id": "a1", "kind": "shift", "event": "opened", "status": "open", "direction": None,
                         "dimension": None, "segment_value": None, "baseline": None, "current": None, "z": None,
                         "p_value": None, "cusum": None, "opened_at": None, "closed_at": None, "detail": None,
                         "created_at": T0}, 0, 0)
    ch_store.insert("responses", [row])
    ch_store.insert("dead_letters", [dl])
    ch_store.insert("window_updates", [wu])
    ch_store.insert("alerts", [al])
    stored = ch_store.query("SELECT * FROM {db}.responses")[0]
    assert stored["category"] == "detractor" and stored["previous_score"] == 9
    assert stored["segment"] == {"location": "Espoo"}
    assert stored["responded_at"] == T0 and stored["responded_at"].tzinfo is not None
    assert stored["inserted_at"] > T0
    assert ch_store.query("SELECT failed_at FROM {db}.dead_letters")[0]["failed_at"] == \
           datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert ch_store.query("SELECT nps, band FROM {db}.window_updates")[0] == {"nps": None, "band": ""}
    assert ch_store.query("SELECT z, dimension, opened_at, current_responses FROM {db}.alerts")[0] == \
        {"z": None, "dimension": "", "opened_at": T0, "current_responses": 0}


# =============================================================================================== report
def seed_report_data(store, inserted_at: datetime | None = None) -> None:
    """10 distinct responses after latest-wins; see the per-row comments for the hand count."""
    first = [
        response("e1", 10, at=T0 + 1 * H, segment={"location": "Espoo", "channel": "web"}),        # P
        response("e2", 9, at=T0 + 2 * H, segment={"location": "Espoo", "channel": "web"}),         # P
        response("e3", 8, at=T0 + 3 * H, segment={"location": "Espoo", "channel": "sms"}),         # Pa
        response("e4", 3, at=T0 + 4 * H, segment={"location": "Espoo", "channel": "sms"}),         # edited below
        response("e5", 5, at=T0 - D, segment={"location": "Espoo"}),                                # edited below
        response("m1", 10, at=T0 + 6 * H, segment={"location": "Espoo", "channel": "web"}),        # edited below
        response("h1", 6, at=T0 + D, segment={"location": "Helsinki", "channel": "web"}),          # D
        response("h2", 10, at=T0 + D + H, segment={"location": "Helsinki", "channel": "web"}),     # P (dup below)
        response("h3", 9, version=2, at=T0 + D + 2 * H, segment={"location": "Helsinki", "channel": "sms"}),  # P
        response("n1", 7, at=T0 + 2 * D),                                                           # Pa, no segment
    ]
    insert_responses(store, first, token="responses:t:0:0-9", inserted_at=inserted_at)
    insert_responses(store, [
        # edit: detractor -> promoter, and channel sms -> web
        response("e4", 10, version=2, at=T0 + 4 * H, segment={"location": "Espoo", "channel": "web"}),
        # edit moving responded_at into the period: only the latest time counts
        response("e5", 9, version=2, at=T0 + 5 * H, segment={"location": "Espoo"}, earlier_days=[(T0 - D).date()]),
        # edit moving the response to another location and category
        response("m1", 0, version=2, at=T0 + 6 * H, segment={"location": "Helsinki", "channel": "web"}),
        # a replay of h2 under another token: a physical duplicate row
        response("h2", 10, at=T0 + D + H, segment={"location": "Helsinki", "channel": "web"}),
        # an OLDER version (the earlier answer: versions follow responded_at) arriving after the newer one: must
        # not win
        response("h3", 2, version=1, at=T0 + D + 90 * timedelta(minutes=1), segment={"location": "Oulu"}),
    ], token="responses:t:0:10-14", first_offset=10, inserted_at=inserted_at)


def expect(p: int, pa: int, d: int, nps: float | None) -> dict:
    out = summarize(p, pa, d).as_dict()
    assert (out["promoters"], out["passives"], out["detractors"], out["nps"]) == (p, pa, d, nps)
    return out


def test_report_latest_wins_totals_and_rows(ch_store):
    stop_merges(ch_store, "responses")
    seed_report_data(ch_store)
    assert count(ch_store, "responses") == 15  # nothing collapsed physically: argMax does the work
    result = queries.report(ch_store, ["location"], None, None)
    assert set(result) == {"by", "rows", "total"} and result["by"] == ["location"]  # the shape of issue #2
    assert result["total"] == expect(6, 2, 2, 40.0)
    assert result["rows"] == [
        {"location": "Espoo", **expect(4, 1, 0, 80.0)},
        {"location": "Helsinki", **expect(2, 0, 2, 0.0)},
        {"location": "(none)", **expect(0, 1, 0, 0.0)},
    ]
    assert queries.report(ch_store, [], None, None) == {"by": [], "rows": [], "total": expect(6, 2, 2, 40.0)}


def test_report_by_two_dimensions_sorted_by_n_then_values(ch_store):
    seed_report_data(ch_store)
    result = queries.report(ch_store, ["location", "channel"], None, None)
    assert [(r["location"], r["channel"], r["promoters"], r["passives"], r["detractors"]) for r in result["rows"]] == [
        ("Espoo", "web", 3, 0, 0),
        ("Helsinki", "web", 1, 0, 2),
        ("(none)", "(none)", 0, 1, 0),
        ("Espoo", "(none)", 1, 0, 0),
        ("Espoo", "sms", 0, 1, 0),
        ("Helsinki", "sms", 1, 0, 0),
    ]
    assert result["total"]["responses"] == 10


def test_report_since_until_filter_on_latest_responded_at(ch_store):
    seed_report_data(ch_store)
    first_day = queries.report(ch_store, ["location"], T0, T0 + D)
    assert first_day["total"] == expect(4, 1, 1, 50.0)  # e1 e2 e3 e4 e5 m1; h1 at exactly `until` is out
    assert first_day["rows"] == [{"location": "Espoo", **expect(4, 1, 0, 80.0)},
                                 {"location": "Helsinki", **expect(0, 0, 1, -100.0)}]
    later = queries.report(ch_store, [], T0 + D, None)
    assert later["total"] == expect(2, 1, 1, 25.0)  # h1 h2 h3 n1 (h3's stale v1 is ignored)
    before = queries.report(ch_store, [], None, T0)  # e5's old responded_at (T0-1d) no longer counts
    assert before["total"] == {"responses": 0, "promoters": 0, "passives": 0, "detractors": 0, "nps": None,
                               "ci95": list(expect(0, 0, 0, None)["ci95"]), "band": None}
    helsinki_tz = timezone(timedelta(hours=3))  # aware non-UTC bounds are converted, not misread
    assert queries.report(ch_store, [], (T0 + D).astimezone(helsinki_tz), None)["total"] == later["total"]


def test_report_oracle_9_promoters_2_detractors(ch_store):
    records = [response(f"p{i}", 9 + i % 2, segment={"location": "Espoo"}) for i in range(8)]
    records += [response("x", 3), response("d1", 0), response("d2", 6)]
    insert_responses(ch_store, records, token="a")
    insert_responses(ch_store, records[:4], token="b")  # replays
    insert_responses(ch_store, [response("x", 10, version=3)], token="c")  # edit: detractor -> promoter
    insert_responses(ch_store, [response("x", 1, version=2)], token="d")  # late older edit, ignored
    total = queries.report(ch_store, [], None, None)["total"]
    assert total == {"responses": 11, "promoters": 9, "passives": 0, "detractors": 2, "nps": 63.64,
                     "ci95": [8.0, 92.0], "band": "excellent"}


def test_report_rejects_unsafe_dimensions(ch_store):
    for bad in ("Location", "loc-ation", "x'] OR 1=1 --", "", "nps", "1abc", "a" * 65):
        with pytest.raises(ValueError):
            queries.report(ch_store, [bad], None, None)
    with pytest.raises(ValueError):
        queries.report(ch_store, ["location", "location"], None, None)
    with pytest.raises(ValueError):
        queries.report(ch_store, [], T0 + D, T0)


def test_report_segment_values_are_data_not_sql(ch_store):
    evil = "x'); DROP TABLE responses; --"
    insert_responses(ch_store, [response("r1", 10, segment={"location": evil})])
    assert queries.report(ch_store, ["location"], None, None)["rows"][0]["location"] == evil
    assert queries.windows(ch_store, ("location", evil)) == []
    assert count(ch_store, "responses") == 1


# =============================================================================================== windows
def window_update(value: str, window: str, seconds: int, seq: int, p: int, pa: int, d: int) -> dict:
    s = summarize(p, pa, d)
    lo, hi = s.ci95
    return rows.window_update_row({
        "dimension": "location", "segment_value": value, "window": window, "window_seconds": seconds,
        "window_start": W0 + timedelta(seconds=seq) - timedelta(seconds=seconds),
        "window_end": W0 + timedelta(seconds=seq), "promoters": p, "passives": pa, "detractors": d,
        "responses": s.responses, "nps": s.nps, "ci_low": lo, "ci_high": hi,
        "band": s.band.value if s.band else None, "seq": seq, "updated_at": W0 + timedelta(seconds=seq)}, 0, seq)


def test_window_updates_expire_after_90_days(ch_store):
    # TTL deletes run in background merges (when is up to ClickHouse), so check the schema, not the timing
    ddl = ch_store.query("SELECT create_table_query AS q FROM system.tables WHERE database = {d:String} "
                         "AND name = 'window_updates'", {"d": ch_store.database})[0]["q"]
    assert "TTL toDateTime(updated_at) + toIntervalDay(90)" in ddl


def test_windows_latest_by_seq(ch_store):
    ch_store.insert("window_updates", [
        window_update("Espoo", "7d", 604800, 1, 1, 0, 0),
        window_update("Espoo", "24h", 86400, 1, 1, 0, 0),
        window_update("Espoo", "24h", 86400, 3, 3, 1, 1),
        window_update("Helsinki", "24h", 86400, 1, 0, 0, 0),
    ])
    ch_store.insert("window_updates", [window_update("Espoo", "24h", 86400, 2, 2, 0, 0),  # late, older seq
                                       window_update("Espoo", "24h", 86400, 3, 3, 1, 1)])  # duplicate
    result = queries.windows(ch_store, None)
    assert [(r["segment_value"], r["window"], r["seq"], r["responses"], r["nps"], r["band"]) for r in result] == [
        ("Espoo", "24h", 3, 5, 40.0, "good"),
        ("Espoo", "7d", 1, 1, 100.0, "world_class"),
        ("Helsinki", "24h", 1, 0, None, None),
    ]
    assert result[0]["window_end"] == (W0 + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    only = queries.windows(ch_store, ("location", "Helsinki"))
    assert [(r["dimension"], r["segment_value"]) for r in only] == [("location", "Helsinki")]
    with pytest.raises(ValueError):
        queries.windows(ch_store, ("Bad Dim", "x"))


def test_windows_latest_by_updated_at_then_seq_survives_a_seq_reset(ch_store):
    """A reset window state restarts seq at 1: the newer update (updated_at) wins over an old high seq."""
    old = window_update("Espoo", "24h", 86400, 50, 1, 0, 0)
    old["updated_at"] = W0 - 2 * H
    new = window_update("Espoo", "24h", 86400, 1, 0, 0, 4)  # after the reset: seq 1, but newest
    same_ms = [window_update("Oslo", "24h", 86400, s, s, 0, 0) for s in (1, 2)]
    for r in same_ms:
        r["updated_at"] = W0  # same updated_at: seq breaks the tie
    ch_store.insert("window_updates", [old, new, *same_ms])
    result = {r["segment_value"]: r for r in queries.windows(ch_store, None)}
    assert (result["Espoo"]["seq"], result["Espoo"]["detractors"], result["Espoo"]["nps"]) == (1, 4, -100.0)
    assert result["Espoo"]["updated_at"] == new["updated_at"].strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert (result["Oslo"]["seq"], result["Oslo"]["promoters"]) == (2, 2)


def test_ch_time_zero_pads_years_before_1000():
    assert queries._ch_time(datetime(999, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)) == "0999-01-02 03:04:05.678"
    assert queries._ch_time(datetime(2024, 5, 1, 12, 0, 0, 1999)) == "2024-05-01 12:00:00.001"
    assert queries._ch_time(datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2)))) \
        == "2024-05-01 12:00:00.000"


# =============================================================================================== dead letters
def dead_letter(ident: str, stage: str, reason: str, minute: int, partition: int | None = 0) -> dict:
    return rows.dead_letter_row({
        "dead_letter_id": ident, "stage": stage, "reason": reason, "detail": f"{reason} #{ident}",
        "source_topic": "npsflow.responses.raw" if partition is not None else None, "source_partition": partition,
        "source_offset": minute if partition is not None else None, "key": None,
        "payload_json": '{"score": 11}', "failed_at": T0 + timedelta(minutes=minute)}, 0, 0)


def test_deadletters_counts_examples_and_dedup(ch_store):
    ch_store.insert("dead_letters", [
        dead_letter("c1", "classify", "invalid_score", 1),
        dead_letter("c2", "classify", "invalid_score", 2),
        dead_letter("c3", "classify", "invalid_score", 3),
        dead_letter("c4", "classify", "bad_json", 4),
        dead_letter("s1", "sink", "sink_row_error", 5, partition=None),
    ])
    ch_store.insert("dead_letters", [dead_letter("c1", "classify", "invalid_score", 1)])  # redelivered
    result = queries.deadletters(ch_store, examples=2)
    assert result["total"] == 5
    assert [(r["stage"], r["reason"], r["count"]) for r in result["reasons"]] == [
        ("classify", "invalid_score", 3), ("classify", "bad_json", 1), ("sink", "sink_row_error", 1)]
    assert [e["dead_letter_id"] for e in result["reasons"][0]["examples"]] == ["c3", "c2"]  # newest first
    sink_example = result["reasons"][2]["examples"][0]
    assert sink_example["source_partition"] is None and sink_example["source_offset"] is None
    assert sink_example["payload_json"] == '{"score": 11}' and sink_example["failed_at"] == "2024-05-01T00:05:00.000Z"
    assert queries.deadletters(ch_store, examples=0)["reasons"][0]["examples"] == []


# =============================================================================================== batching
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Writer:
    """The production writer (store.ainsert with the token), recording calls and failing on demand."""

    def __init__(self, store, table: str = "responses") -> None:
        self.store, self.table = store, table
        self.tokens: list[str] = []
        self.fail_next = 0
        self.fail_after_write = 0  # the insert lands, then the client sees an error (e.g. a timeout)

    def offsets(self) -> list[str]:
        """The tokens without their content digest: "{table}:{topic}:{partition}:{first}-{last}"."""
        return [t.rsplit(":", 1)[0] for t in self.tokens]

    async def __call__(self, batch: list[dict], token: str) -> None:
        self.tokens.append(token)
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("ClickHouse unavailable")
        await self.store.ainsert(self.table, batch, dedup_token=token)
        if self.fail_after_write:
            self.fail_after_write -= 1
            raise TimeoutError("read timed out after the insert")


def make_sink(store, clock=None, **kw):
    writer = Writer(store)
    sink = BatchingSink(table="responses", topic="npsflow.classified", writer=writer,
                        clock=clock or Clock(), **{"max_rows": 3, "max_age": 5.0, **kw})
    return sink, writer


def add(sink, partition: int, offset: int) -> None:
    sink.add(partition, offset, rows.response_row(response(f"p{partition}o{offset}", 10), partition, offset),
             f"ack-{partition}-{offset}")


async def test_batch_flushes_at_max_rows(ch_store):
    sink, writer = make_sink(ch_store)
    add(sink, 0, 10)
    add(sink, 0, 11)
    assert await sink.flush_due() == [] and writer.tokens == []
    add(sink, 0, 12)
    assert await sink.flush_due() == ["ack-0-10", "ack-0-11", "ack-0-12"]
    assert writer.offsets() == ["responses:npsflow.classified:0:10-12"]
    assert count(ch_store, "responses") == 3 and sink.pending() == 0


async def test_batch_flushes_at_max_age_with_fake_clock(ch_store):
    clock = Clock()
    sink, writer = make_sink(ch_store, clock, max_rows=100, max_age=5.0)
    add(sink, 0, 0)
    clock.now += 3
    add(sink, 0, 1)
    clock.now += 1.9
    assert await sink.flush_due() == []
    assert sink.next_due_in() == pytest.approx(0.1)
    clock.now += 0.1  # the oldest row is now max_age old
    assert await sink.flush_due() == ["ack-0-0", "ack-0-1"]
    assert count(ch_store, "responses") == 2 and sink.next_due_in() is None


async def test_batches_are_per_partition(ch_store):
    clock = Clock()
    sink, writer = make_sink(ch_store, clock, max_rows=2)
    add(sink, 0, 5)
    add(sink, 1, 5)
    add(sink, 0, 6)
    assert await sink.flush_due() == ["ack-0-5", "ack-0-6"]
    assert writer.offsets() == ["responses:npsflow.classified:0:5-6"] and sink.pending() == 1
    add(sink, 2, 0)
    assert await sink.flush_due(force=True) == ["ack-1-5", "ack-2-0"]
    assert writer.offsets()[1:] == ["responses:npsflow.classified:1:5-5", "responses:npsflow.classified:2:0-0"]
    assert count(ch_store, "responses") == 4


async def test_ack_only_entries_wait_for_the_rows_before_them(ch_store):
    sink, writer = make_sink(ch_store, max_rows=3)
    add(sink, 0, 0)
    sink.add(0, 1, None, "ack-0-1")  # e.g. dead-lettered: nothing to insert, but offset order holds
    add(sink, 0, 2)
    assert await sink.flush_due() == ["ack-0-0", "ack-0-1", "ack-0-2"]
    assert writer.offsets() == ["responses:npsflow.classified:0:0-2"] and count(ch_store, "responses") == 2
    sink.add(0, 3, None, "ack-0-3")
    assert await sink.flush_due(force=True) == ["ack-0-3"] and len(writer.tokens) == 1  # no empty insert


async def test_failed_insert_keeps_batch_acks_nothing_and_backs_off(ch_store, caplog):
    clock = Clock()
    sink, writer = make_sink(ch_store, clock, max_rows=2, backoff_initial=1.0)
    add(sink, 0, 0)
    add(sink, 0, 1)
    add(sink, 1, 0)
    add(sink, 1, 1)
    writer.fail_next = 1  # partition 0 fails, partition 1 is unaffected
    with caplog.at_level(logging.WARNING, logger="npsflow.sink"):
        acks = await sink.flush_due()
    assert acks == ["ack-1-0", "ack-1-1"]
    assert "ClickHouse unavailable" in caplog.text and "responses:npsflow.classified:0:0-1" in caplog.text
    assert isinstance(sink.last_errors()[0], ConnectionError)
    assert sink.pending() == 2 and count(ch_store, "responses") == 2
    add(sink, 0, 2)  # the failed batch is sealed: new rows never change what its token names
    add(sink, 0, 3)
    clock.now += 0.5
    assert await sink.flush_due() == [] and len(writer.tokens) == 2  # backing off: no attempt yet
    clock.now += 0.5
    assert await sink.flush_due() == ["ack-0-0", "ack-0-1", "ack-0-2", "ack-0-3"]
    assert writer.offsets() == ["responses:npsflow.classified:0:0-1", "responses:npsflow.classified:1:0-1",
                             "responses:npsflow.classified:0:0-1", "responses:npsflow.classified:0:2-3"]
    assert count(ch_store, "responses") == 6 and sink.last_errors() == {} and sink.pending() == 0


async def test_backoff_grows_exponentially(ch_store):
    clock = Clock()
    sink, writer = make_sink(ch_store, clock, max_rows=1, backoff_initial=1.0, backoff_max=3.0)
    writer.fail_next = 10
    add(sink, 0, 0)
    delays = []
    for _ in range(4):
        assert await sink.flush_due() == []
        delays.append(sink.next_due_in())
        clock.now += delays[-1]
    assert delays == [1.0, 2.0, 3.0, 3.0]
    writer.fail_next = 0
    assert await sink.flush_due() == ["ack-0-0"]


async def test_retry_of_a_batch_that_actually_landed_is_deduplicated(ch_store):
    stop_merges(ch_store, "responses")
    sink, writer = make_sink(ch_store, max_rows=3)
    writer.fail_after_write = 1  # the rows are in ClickHouse but the caller saw an error
    for offset in range(3):
        add(sink, 4, offset)
    assert await sink.flush_due() == []
    assert count(ch_store, "responses") == 3
    assert await sink.flush_due(force=True) == ["ack-4-0", "ack-4-1", "ack-4-2"]  # same token again
    assert writer.offsets() == ["responses:npsflow.classified:4:0-2"] * 2
    assert writer.tokens[0] == writer.tokens[1]  # the digest is stable for the identical batch
    assert count(ch_store, "responses") == 3  # exact: ClickHouse dropped the retried block (no FINAL needed)


def test_batching_sink_validates_bounds():
    with pytest.raises(ValueError):
        BatchingSink(table="t", topic="x", writer=None, max_rows=0)


def test_close_all_makes_stores_fail_clearly(ch_store):
    ch.close_all()
    with pytest.raises(ch.ClickHouseError, match="is closed"):
        ch_store.query("SELECT 1")
    assert ch.open_engines() == []


def test_dedup_tokens_survive_a_restart(ch_store):
    """A worker that crashed after inserting, restarted, and retried the same batch still inserts it once."""
    batch = [response("r1", 10), response("r2", 3)]
    insert_responses(ch_store, batch, token="responses:t:0:0-1")
    ch_store.close()
    with ch.ClickHouseStore(ch_store.dsn) as again:
        stop_merges(again, "responses")
        insert_responses(again, batch, token="responses:t:0:0-1")
        assert count(again, "responses") == 2


# =============================================================================================== tokens
async def test_same_offsets_with_other_content_land_identical_retry_dedups(ch_store):
    """After a Kafka reset (ClickHouse kept) offsets repeat with other rows: the content digest tells them apart."""
    stop_merges(ch_store, "responses")

    async def run(ids: list[str]) -> list[str]:
        sink, writer = make_sink(ch_store, max_rows=2)
        for offset, rid in enumerate(ids):
            sink.add(0, offset, rows.response_row(response(rid, 9), 0, offset), f"ack-{offset}")
        assert await sink.flush_due() == ["ack-0", "ack-1"]
        return writer.tokens

    first = await run(["a1", "a2"])
    assert count(ch_store, "responses") == 2
    again = await run(["a1", "a2"])  # identical retry (e.g. a restart before the commit): dropped by ClickHouse
    assert again == first and count(ch_store, "responses") == 2
    other = await run(["b1", "b2"])  # same topic/partition/offsets, different content: must land
    assert other[0].rsplit(":", 1)[0] == first[0].rsplit(":", 1)[0] and other != first
    assert count(ch_store, "responses") == 4
    ids = {r["response_id"] for r in ch_store.query("SELECT response_id FROM {db}.responses")}
    assert ids == {"a1", "a2", "b1", "b2"}


# =============================================================================================== permanent errors
def bad_row(rid: str, offset: int) -> dict:
    return rows.response_row(response(rid, 9, version=-1), 0, offset)  # UInt64 column: refused


def test_chdb_really_refuses_a_negative_version(ch_store):
    from clickhouse_connect.driver.exceptions import DataError

    from sinks.batching import is_permanent

    with pytest.raises(DataError) as info:
        ch_store.insert("responses", [bad_row("x", 0)])
    assert is_permanent(info.value) and count(ch_store, "responses") == 0


def test_error_classification():
    from clickhouse_connect.driver import exceptions as cce

    from sinks.batching import is_permanent

    assert is_permanent(cce.DataError("Unable to create native array for column `version`"))
    assert is_permanent(cce.ProgrammingError("bad insert"))
    assert is_permanent(cce.DatabaseError("Code: 27. DB::Exception: Cannot parse input (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"))
    assert not is_permanent(cce.OperationalError("Error HTTPConnectionPool: connection refused"))
    assert not is_permanent(cce.DatabaseError("Code: 241. Memory limit (MEMORY_LIMIT_EXCEEDED)"))
    assert not is_permanent(cce.ProgrammingError("Code: 60. Table npsflow.responses does not exist (UNKNOWN_TABLE)"))
    assert not is_permanent(ConnectionError("ClickHouse unavailable")) and not is_permanent(TimeoutError("t"))
    assert not is_permanent(ch.ClickHouseError("store is closed"))


class Rejections:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, dict, object, BaseException]] = []

    async def __call__(self, partition, offset, row, ack, exc) -> None:
        self.calls.append((partition, offset, row, ack, exc))


async def test_one_bad_row_is_split_out_good_rows_land_all_acked(ch_store):
    from clickhouse_connect.driver.exceptions import DataError

    rejected = Rejections()
    sink, writer = make_sink(ch_store, max_rows=8, on_rejected=rejected)
    for offset in range(8):
        row = bad_row("bad", offset) if offset == 5 else rows.response_row(response(f"g{offset}", 9), 0, offset)
        sink.add(0, offset, row, f"ack-{offset}")
    assert await sink.flush_due() == [f"ack-{o}" for o in range(8)]
    assert count(ch_store, "responses") == 7 and sink.pending() == 0
    ((partition, offset, row, ack, exc),) = rejected.calls
    assert (partition, offset, row["response_id"], ack) == (0, 5, "bad", "ack-5") and isinstance(exc, DataError)
    base = writer.tokens[0]
    assert all(t == base or t.startswith(base + "/") for t in writer.tokens)  # sub-tokens derive from the batch
    assert f"{base}/5-5" in writer.tokens and sink.rejected_rows == 1 and sink.last_errors() == {}


async def test_split_retried_after_a_transient_error_dedups_and_rejects_once_per_success(ch_store):
    """A transient error in the middle of a split keeps the whole batch; the retry re-splits with the same
    tokens, so the halves that already landed are dropped by ClickHouse (no FINAL needed)."""
    stop_merges(ch_store, "responses")
    rejected = Rejections()
    clock = Clock()
    sink, writer = make_sink(ch_store, clock, max_rows=4, on_rejected=rejected)

    inner = writer.__call__
    calls = {"n": 0}

    async def flaky(batch, token):
        calls["n"] += 1
        if calls["n"] == 3:  # whole batch (1) fails permanently, first half (2) lands, second half: down
            writer.tokens.append(token)
            raise ConnectionError("ClickHouse unavailable")
        await inner(batch, token)

    sink.writer = flaky
    for offset in range(4):
        row = bad_row("bad", offset) if offset == 3 else rows.response_row(response(f"g{offset}", 9), 0, offset)
        sink.add(0, offset, row, f"ack-{offset}")
    assert await sink.flush_due() == [] and rejected.calls == [] and sink.pending() == 4
    assert count(ch_store, "responses") == 2
    clock.now += 10
    assert await sink.flush_due() == ["ack-0", "ack-1", "ack-2", "ack-3"]
    assert count(ch_store, "responses") == 3 and [c[1] for c in rejected.calls] == [3]


async def test_transient_errors_hold_acks_until_success_no_rejections(ch_store):
    from clickhouse_connect.driver.exceptions import OperationalError

    rejected = Rejections()
    clock = Clock()
    sink, writer = make_sink(ch_store, clock, max_rows=3, on_rejected=rejected)
    inner = writer.__call__
    failures = {"left": 2}

    async def down_twice(batch, token):
        writer.tokens.append(token)
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("Error connecting to ClickHouse: connection refused")
        await inner(batch, token)

    sink.writer = down_twice
    for offset in range(3):
        add(sink, 0, offset)
    for _ in range(2):
        assert await sink.flush_due() == [] and count(ch_store, "responses") == 0
        clock.now += sink.next_due_in()
    assert await sink.flush_due() == ["ack-0-0", "ack-0-1", "ack-0-2"]
    assert count(ch_store, "responses") == 3 and rejected.calls == [] and sink.rejected_rows == 0
    assert len(set(writer.tokens)) == 1  # three attempts of the very same batch (no split)


@pytest.mark.parametrize("schema_problem", ["missing_column", "missing_table"])
async def test_a_schema_mismatch_stalls_and_retries_instead_of_dead_lettering_rows(ch_store, schema_problem):
    """A migration not applied yet (a column or the table missing) is about the installation, not the rows:
    the batch is kept and retried, nothing is dead-lettered, and it lands once the schema is there."""
    rejected = Rejections()
    clock = Clock()
    sink, writer = make_sink(ch_store, clock, max_rows=3, on_rejected=rejected)
    if schema_problem == "missing_column":
        ch_store.command("ALTER TABLE {db}.responses DROP COLUMN source")  # one the ledger's view does not read
    else:
        ch_store.command("RENAME TABLE {db}.responses TO {db}.responses_aside")
    for offset in range(3):
        add(sink, 0, offset)
    for _ in range(3):
        assert await sink.flush_due() == []
        clock.now += sink.next_due_in()
    assert rejected.calls == [] and sink.rejected_rows == 0 and sink.pending() == 3 and sink.failed_attempts == 3
    if schema_problem == "missing_column":
        ch_store.command("ALTER TABLE {db}.responses ADD COLUMN source LowCardinality(String) DEFAULT ''")
    else:
        ch_store.command("RENAME TABLE {db}.responses_aside TO {db}.responses")
    assert await sink.flush_due() == ["ack-0-0", "ack-0-1", "ack-0-2"]
    assert count(ch_store, "responses") == 3


async def test_without_a_rejection_handler_permanent_errors_are_retried(ch_store):
    sink, writer = make_sink(ch_store, max_rows=2)
    sink.add(0, 0, bad_row("bad", 0), "ack-0")
    sink.add(0, 1, rows.response_row(response("g", 9), 0, 1), "ack-1")
    assert await sink.flush_due() == [] and sink.pending() == 2 and len(writer.tokens) == 1


async def test_a_failing_rejection_handler_keeps_the_batch(ch_store):
    async def broken(*args):
        raise ConnectionError("kafka unavailable")

    sink, writer = make_sink(ch_store, max_rows=2, on_rejected=broken)
    sink.add(0, 0, bad_row("bad", 0), "ack-0")
    sink.add(0, 1, rows.response_row(response("g", 9), 0, 1), "ack-1")
    assert await sink.flush_due() == [] and sink.pending() == 2
    assert count(ch_store, "responses") == 1  # the good row landed; its retry is deduplicated by its token


async def test_drop_partitions_during_a_flush_hands_back_no_acks(ch_store):
    sink, writer = make_sink(ch_store, max_rows=1)
    inner = writer.__call__

    async def revoke_while_writing(batch, token):
        await inner(batch, token)
        sink.drop_partitions([0])

    sink.writer = revoke_while_writing
    add(sink, 0, 0)
    add(sink, 1, 0)
    assert await sink.flush_due() == ["ack-1-0"] and sink.pending() == 0


# =============================================================================================== follow_up
def test_response_row_maps_follow_up_and_it_lands(ch_store):
    with_answer = rows.response_row(response("r1", 2, comment="Late", follow_up="Call before coming"), 0, 0)
    none = rows.response_row(response("r2", 10, follow_up=None), 0, 1)
    v1_shaped = response("r3", 8)  # a ClassifiedResponse v1 record has no follow_up key at all
    assert "follow_up" not in v1_shaped
    missing = rows.response_row(v1_shaped, 0, 2)
    assert (with_answer["follow_up"], none["follow_up"], missing["follow_up"]) == ("Call before coming", "", "")
    ch_store.insert("responses", [with_answer, none, missing])
    got = ch_store.query("SELECT response_id, comment, follow_up FROM {db}.responses FINAL ORDER BY response_id")
    assert got == [{"response_id": "r1", "comment": "Late", "follow_up": "Call before coming"},
                   {"response_id": "r2", "comment": "", "follow_up": ""},
                   {"response_id": "r3", "comment": "", "follow_up": ""}]


def test_migration_0004_adds_follow_up_keeps_old_rows_and_is_idempotent(ch_store, ch_dsn, tmp_path: Path):
    mdir = tmp_path / "migrations_v3"
    mdir.mkdir()
    for m in ch.load_migrations():
        if m.version < 4:
            (mdir / m.name).write_text(m.sql)
    with ch.ClickHouseStore(ch_dsn, database="npsflow_v3") as old:
        assert ch.migrate(old, mdir) == ["0001_init.sql", "0002_dispatches.sql", "0003_dispatch_kind.sql"]
        row = rows.response_row(response("before", 3, comment="meh"), 0, 0)
        old.insert("responses", [{k: v for k, v in row.items()  # written by the old sink
                                  if k not in ("follow_up", "earlier_days", "org_id", "lang", "terms", "respondent")}])
        assert ch.migrate(old) == ["0004_response_follow_up.sql", "0005_nps_daily_rollup.sql", "0006_terms.sql",
                                   "0007_cases.sql", "0008_alerts.sql", "0009_erasures.sql"]
        assert ch.migrate(old) == []
        fourth = next(m for m in ch.load_migrations() if m.version == 4)
        assert fourth.name == "0004_response_follow_up.sql"
        for _ in range(2):  # the DDL itself is idempotent too (ADD COLUMN IF NOT EXISTS)
            for statement in fourth.statements(old.database):
                old.command(statement)
        columns = old.query("SELECT name, type, default_kind, default_expression FROM system.columns "
                            "WHERE database = {d:String} AND table = 'responses' ORDER BY position",
                            {"d": old.database})
        names = [c["name"] for c in columns]
        assert names.count("follow_up") == 1 and names.index("follow_up") == names.index("comment") + 1
        assert next(c for c in columns if c["name"] == "follow_up") == \
            {"name": "follow_up", "type": "String", "default_kind": "DEFAULT", "default_expression": "''"}
        old.insert("responses", [rows.response_row(response("after", 9, follow_up="The technician"), 0, 1)])
        assert old.query("SELECT response_id, comment, follow_up FROM {db}.responses FINAL ORDER BY response_id") == \
            [{"response_id": "after", "comment": "", "follow_up": "The technician"},
             {"response_id": "before", "comment": "meh", "follow_up": ""}]
        apply_view(old)
        assert queries.report(old)["total"]["responses"] == 2  # the read side is unaffected


def test_report_compared_with_the_previous_period(ch_store):
    """Day 2 against day 1 of the seed (counts by hand above; z by hand with the adjusted estimates of
    streams.nps.compare: Helsinki (2,0,1) vs (0,0,1): 0.4167 / sqrt(0.120370 + 0.140625) = 0.816; total
    (2,0,1) vs (4,1,1): −0.1667 / sqrt(0.120370 + 0.067901) = −0.384)."""
    seed_report_data(ch_store)
    result = queries.report_compared(ch_store, ["location"], T0 + D, T0 + 2 * D)
    assert result["period"] == {"since": "2024-05-02T00:00:00.000Z", "until": "2024-05-03T00:00:00.000Z"}
    assert result["previous_period"] == {"since": "2024-05-01T00:00:00.000Z", "until": "2024-05-02T00:00:00.000Z"}
    helsinki, espoo = result["rows"]
    assert (helsinki["location"], helsinki["nps"], helsinki["previous"]["nps"]) == ("Helsinki", 33.33, -100.0)
    assert (helsinki["change"], helsinki["z"], helsinki["significant"]) == (133.33, 0.816, False)
    assert (espoo["location"], espoo["responses"], espoo["previous"]["responses"]) == ("Espoo", 0, 5)
    assert (espoo["change"], espoo["significant"]) == (None, False)  # nothing this period: no change to speak of
    total = result["total"]
    assert (total["responses"], total["previous"]["responses"]) == (3, 6)
    assert (total["change"], total["z"], total["significant"]) == (-16.67, -0.384, False)
    with pytest.raises(ValueError, match="needs --since"):
        queries.report_compared(ch_store, ["location"], None, None)


def test_dashboard_comments_are_the_newest_of_the_whole_trend_window(ch_store):
    """The dashboard reads the last two days first and widens the window only when they hold too few comments:
    the result is always the newest comments of the whole window, edits and moved answers included."""
    now = T0 + 20 * D + 12 * H
    ages = [0, 0, 1, 4, 4, 5, 9, 10, 10, 12, 13, 13, 16]  # days before `now`; 16 is outside a 14-day window
    records = [response(f"k{i}", i % 11, at=now - age * D - i * timedelta(minutes=1), comment=f"comment {i}")
               for i, age in enumerate(ages)]
    edited = {**records[3], "comment": "", "version": 2, "is_edit": True,
              "responded_at": records[3]["responded_at"] + H}  # an edit removed this comment
    insert_responses(ch_store, records)
    insert_responses(ch_store, [edited], first_offset=50)
    expected = sorted((r for r in records if r is not records[3] and r["responded_at"] >= now - 13 * D - 12 * H),
                      key=lambda r: r["responded_at"], reverse=True)
    for n in (2, 3, 6, 11, 50):
        got = queries.dashboard(ch_store, "location", days=14, comments=n, now=now)["comments"]
        assert [c["response_id"] for c in got] == [r["response_id"] for r in expected[:n]], n


def test_dashboard_numbers_trend_and_latest_comments(ch_store):
    seed_report_data(ch_store)
    insert_responses(ch_store, [
        response("c1", 2, at=T0 + 2 * D + H, segment={"location": "Oulu"}, comment="<script>alert(1)</script> slow"),
        response("c2", 10, at=T0 + 2 * D + 2 * H, segment={"location": "Oulu"}, comment="Great"),
        response("c3", 9, at=T0 + 2 * D + 3 * H, segment={"location": "Oulu"}, comment=""),
    ], token="responses:t:0:20-22", first_offset=20)
    data = queries.dashboard(ch_store, "location", days=4, comments=5, now=T0 + 2 * D)
    assert (data["by"], data["rows"], data["total"]) == ("location", *(lambda r: (r["rows"], r["total"]))(
        queries.report(ch_store, ["location"], None, None)))  # exactly the report's numbers
    assert data["trend"]["days"] == ["2024-04-30", "2024-05-01", "2024-05-02", "2024-05-03"]
    # by hand: 05-01 e1 e2 e3 e4 e5 (Espoo 4P 1Pa) + m1 (Helsinki D) = 4/1/1 → 50; 05-02 h1 D, h2 P, h3 P → 33.33;
    # 05-03 n1 Pa + c1 D + c2 P + c3 P → 2/1/1 → 25
    assert [(p["responses"], p["nps"]) for p in data["trend"]["total"]] == [(0, None), (6, 50.0), (3, 33.33), (4, 25.0)]
    assert [(p["responses"], p["nps"]) for p in data["trend"]["segments"]["Oulu"]] == [
        (0, None), (0, None), (0, None), (3, 33.33)]
    assert [(c["response_id"], c["comment"], c["location"], c["category"]) for c in data["comments"]] == [
        ("c2", "Great", "Oulu", "promoter"), ("c1", "<script>alert(1)</script> slow", "Oulu", "detractor")]
    with pytest.raises(ValueError):
        queries.dashboard(ch_store, "location;drop")


def test_dashboard_comments_carry_their_language(ch_store):
    """Each comment's language for the page's ``lang``: the language classify stored with the answer; else (rows
    from before migration 0006, or "und") the response's locale as a BCP 47 tag; None when neither is known."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    at = (lambda i: now - timedelta(minutes=i))  # noqa: E731
    insert_responses(ch_store, [
        response("stored", 9, at=at(1), comment="Mycket bra", lang="sv", locale="fi-FI"),  # detected wins
        response("old-row", 9, at=at(2), comment="Sehr gut", lang="", locale="de_DE.UTF-8"),
        response("und", 9, at=at(3), comment="Wunderbar", lang="und", locale="nn-no"),
        response("unknown", 9, at=at(4), comment="ok", lang="und", locale=""),
        response("posix", 9, at=at(5), comment="ok", lang="und", locale="C"),
        response("edited", 9, at=at(6), comment="Bra", lang="", locale="da-DK"),
    ])
    insert_responses(ch_store, [response("edited", 10, version=2, at=at(6), comment="Godt", lang="", locale="sv-FI")],
                     token="edit", first_offset=10)
    data = queries.dashboard(ch_store, "location", days=1, now=now)
    assert {c["response_id"]: c["lang"] for c in data["comments"]} == {
        "stored": "sv", "old-row": "de-DE", "und": "nn-NO", "unknown": None, "posix": None, "edited": "sv-FI"}
    with pytest.raises(ValueError, match="clashes"):  # the comments' own key: a dimension cannot take it
        queries.validate_dimension("lang")


def test_language_tags_from_stored_languages_and_locales():
    tag = queries.language_tag
    assert [tag(v) for v in ("fi", "sv-SE", "fi_FI.UTF-8", "nb_NO@euro", "de-de", "sv-Latn-SE", " en ")] == [
        "fi", "sv-SE", "fi-FI", "nb-NO", "de-DE", "sv-latn-SE", "en"]
    assert [tag(v) for v in (None, "", "und", "und-SE", "C", "POSIX", "x", "12", "*", "fi FI", '"><b>')] == [None] * 11


def test_retention_is_a_ttl_on_event_time_set_changed_and_removed(ch_store):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    insert_responses(ch_store, [response("old", 9, at=now - 40 * D), response("new", 3, at=now - 10 * D)])
    assert ch.apply_retention(ch_store, 30) == dict.fromkeys(
        ["responses", "dispatches", "dead_letters", "alerts", "responses_by_day", "comments_by_day", "nps_daily",
         "terms_daily", "nps_daily_touched", "nps_daily_state", "terms_daily_state", "cases"], "set")
    assert ch.apply_retention(ch_store, 30) == dict.fromkeys(ch.RETENTION_COLUMNS, "unchanged")
    for table in ("responses", "responses_by_day"):  # (comments_by_day holds nothing here: no comment, no edit)
        ch_store.command(f"OPTIMIZE TABLE {{db}}.{table} FINAL")  # TTL applies when parts merge
        assert [r["response_id"] for r in ch_store.query(f"SELECT response_id FROM {{db}}.{table}")] == ["new"]
    assert ch.apply_retention(ch_store, 5) == dict.fromkeys(ch.RETENTION_COLUMNS, "set")  # shorter: applied to
    ch_store.command("OPTIMIZE TABLE {db}.responses FINAL")                               # the rows already there
    assert ch_store.query("SELECT response_id FROM {db}.responses") == []
    assert ch.apply_retention(ch_store, None) == dict.fromkeys(ch.RETENTION_COLUMNS, "removed")
    insert_responses(ch_store, [response("older", 9, at=now - 400 * D)], token="t2")
    ch_store.command("OPTIMIZE TABLE {db}.responses FINAL")
    assert [r["response_id"] for r in ch_store.query("SELECT response_id FROM {db}.responses")] == [
        "older"]  # no TTL any more: kept


def test_retention_never_expires_far_future_rows_and_is_bounded(ch_store):
    """A TTL through DateTime (toDateTime) would wrap past 2106 and expire such rows at once; on the DateTime64
    column itself it does not."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    far = datetime(2150, 1, 1, tzinfo=timezone.utc)
    insert_responses(ch_store, [response("far", 9, at=far), response("now", 9, at=now)])
    ch.apply_retention(ch_store, 730)
    ch_store.command("OPTIMIZE TABLE {db}.responses FINAL")
    assert sorted(r["response_id"] for r in ch_store.query("SELECT response_id FROM {db}.responses")) == ["far", "now"]
    for bad in (0, 36_501):
        with pytest.raises(ValueError, match="retention"):
            ch.apply_retention(ch_store, bad)


def test_reserved_dimension_names_and_a_segment_called_all(ch_store):
    for name in ("change", "previous", "z", "significant", "score", "comment", "category", "responded_at",
                 "response_id", "value", "nps"):
        with pytest.raises(ValueError, match="clashes"):
            queries.validate_dimension(name)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    insert_responses(ch_store, [response("a", 9, at=now, segment={"location": "(all)"}),
                                response("b", 3, at=now, segment={"location": "Espoo"})])
    data = queries.dashboard(ch_store, "location", days=1, now=now)
    assert [(p["responses"], p["nps"]) for p in data["trend"]["total"]] == [(2, 0.0)]  # not counted twice
    assert [(p["responses"], p["nps"]) for p in data["trend"]["segments"]["(all)"]] == [(1, 100.0)]


def test_dispatches_are_kept_longer_than_responses(ch_store):
    ch.apply_retention(ch_store, 100, dispatch_extra_days=31)
    ttl = {r["name"]: r["q"] for r in ch_store.query(
        "SELECT name, create_table_query AS q FROM system.tables WHERE database = {d:String}",
        {"d": ch_store.database})}
    assert "TTL responded_at + toIntervalDay(100)" in ttl["responses"]
    assert "TTL decided_at + toIntervalDay(131)" in ttl["dispatches"]
    assert ch.apply_retention(ch_store, 100, dispatch_extra_days=31) == dict.fromkeys(ch.RETENTION_COLUMNS, "unchanged")


# =============================================================================================== combined inserts
def add_row(sink, partition: int, offset: int, row: dict | None = None) -> None:
    sink.add(partition, offset, row or rows.response_row(response(f"p{partition}o{offset}", 10), partition, offset),
             f"ack-{partition}-{offset}")


async def test_combined_insert_writes_every_partitions_due_batches_at_once(ch_store):
    """combine=True: one insert (one token naming every range) instead of one per partition."""
    sink, writer = make_sink(ch_store, combine=True, max_rows=100)
    for partition in (0, 1, 2):
        for offset in (10, 11):
            add_row(sink, partition, offset)
    acks = await sink.flush_due(seal_all=True)
    assert sorted(acks) == sorted(f"ack-{p}-{o}" for p in (0, 1, 2) for o in (10, 11))
    assert writer.offsets() == ["responses:npsflow.classified:0:10-11,1:10-11,2:10-11"]
    assert count(ch_store, "responses") == 6 and sink.pending() == 0


async def test_combined_insert_retries_the_same_group_and_a_landed_retry_is_deduplicated(ch_store):
    stop_merges(ch_store, "responses")
    clock = Clock()
    sink, writer = make_sink(ch_store, clock, combine=True, max_rows=100)
    add_row(sink, 0, 1)
    add_row(sink, 1, 7)
    writer.fail_after_write = 1  # the insert lands, the client sees a timeout
    assert await sink.flush_due(seal_all=True) == [] and sink.failed_attempts == 1
    add_row(sink, 0, 2)  # arrives meanwhile: not part of the group being retried
    clock.now += sink.next_due_in()
    assert sorted(await sink.flush_due(seal_all=True)) == ["ack-0-1", "ack-1-7"]
    assert writer.tokens[0] == writer.tokens[1]  # exactly the same rows, the same token
    assert count(ch_store, "responses") == 2  # the landed first attempt and its retry: once
    assert await sink.flush_due(seal_all=True) == ["ack-0-2"]
    assert count(ch_store, "responses") == 3


async def test_combined_insert_with_a_bad_row_falls_back_to_batches_and_rejects_only_that_row(ch_store):
    rejected = Rejections()
    sink, writer = make_sink(ch_store, combine=True, max_rows=100, on_rejected=rejected)
    add_row(sink, 0, 1)
    add_row(sink, 1, 5, bad_row("bad", 5))
    add_row(sink, 1, 6)
    assert sorted(await sink.flush_due(seal_all=True)) == ["ack-0-1", "ack-1-5", "ack-1-6"]
    ((partition, offset, row, ack, exc),) = rejected.calls
    assert (partition, offset, row["response_id"]) == (1, 5, "bad")
    ids = {r["response_id"] for r in ch_store.query("SELECT response_id FROM {db}.responses")}
    assert ids == {"p0o1", "p1o6"}
