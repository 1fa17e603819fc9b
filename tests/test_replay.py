"""``npsflow replay`` on the real broker and real chDB: records produced to the topics with the codec, a lost or
truncated store restored, repeats deduplicated, ranges and tables restricted, a worker on the embedded store."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pytest

from npsflow import replay as rp
from npsflow.prepare import ensure_topics
from schemas import codec as avro
from schemas.examples import examples
from sinks import clickhouse as ch
from sinks import queries
from tests.e2e_helpers import make_env

PARTITIONS = 3
LOCATIONS = ("Espoo", "Malmö", "Oslo")
GARBAGE = b"\x00\x00\x00\x00\x63not avro at all"


# ------------------------------------------------------------------------------------------------ arguments
def test_parse_offsets_and_tables():
    assert rp.parse_offsets("0:15, 3:200") == {0: 15, 3: 200}
    for bad in ("0", "a:1", "0:-1", "0:1,0:2", ""):
        with pytest.raises(ValueError):
            rp.parse_offsets(bad)
    assert rp.parse_tables(("cases,responses",)) == ["responses", "cases"]  # SINKS order
    assert rp.parse_tables(()) == list(rp.TABLES)
    with pytest.raises(ValueError, match="unknown table 'responsez'"):
        rp.parse_tables(("responsez",))
    assert rp.looks_like_offsets("0:10,2:5") and not rp.looks_like_offsets("2026-11-01T00:00:00Z")


# ------------------------------------------------------------------------------------------------ the data
def classified(i: int, version: int, score: int, day: date, earlier: list[date] = ()) -> dict:
    rec = examples()[avro.CLASSIFIED_RESPONSE]
    at = datetime(day.year, day.month, day.day, 9, i % 60, tzinfo=timezone.utc)
    category = "detractor" if score <= 6 else "passive" if score <= 8 else "promoter"
    rec.update(response_id=f"r-{i}", score=score, category=category, version=version, responded_at=at,
               is_edit=version > 1, earlier_days=list(earlier),
               segment={"location": LOCATIONS[i % 3], "channel": "sms"})
    return rec


def the_records(now_ms: int) -> dict:
    """{topic key: [(partition, timestamp_ms, value bytes)]}: 40 answers over 3 days, 6 of them edited (two moved
    to another day), one garbage record per topic of responses and dead letters; 6 dispatches at three times."""
    codec = avro.AvroCodec()
    d1, d2, d3 = date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)
    answers = []
    for i in range(40):
        answers.append(classified(i, 1, (i * 7) % 11, (d1, d2, d3)[i % 3]))
    for i in range(6):  # edits: a new version, later in Kafka; two of them a day later
        first = answers[i]
        moved = i < 2
        answers.append(classified(i, 2, 10 - first["score"], d3 if moved else first["responded_at"].date(),
                                  [first["responded_at"].date()] if moved else []))
    hour = 3600_000
    out: dict[str, list] = {"classified": [], "dispatches": [], "dead_letters": [], "windows": [], "cases": [],
                            "alerts": []}
    for n, rec in enumerate(answers):
        out["classified"].append((n % PARTITIONS, now_ms - 3 * hour, codec.encode(avro.CLASSIFIED_RESPONSE, rec)))
    out["classified"].append((0, now_ms - 3 * hour, GARBAGE))
    for n in range(6):  # two at each of three Kafka times
        rec = {**examples()[avro.DISPATCHED_MESSAGE], "dispatch_id": f"d-{n}", "invitation_id": f"inv-{n}"}
        out["dispatches"].append((n % 2, now_ms - (3 - n // 2) * hour, codec.encode(avro.DISPATCHED_MESSAGE, rec)))
    for n in range(2):
        rec = {**examples()[avro.DEAD_LETTER], "dead_letter_id": f"dl-{n}"}
        out["dead_letters"].append((n, now_ms - 3 * hour, codec.encode(avro.DEAD_LETTER, rec)))
    out["dead_letters"].append((1, now_ms - 3 * hour, GARBAGE))
    window = {**examples()[avro.WINDOW_UPDATE], "updated_at": datetime.now(timezone.utc)}  # TTL: 90 days
    out["windows"].append((0, now_ms - 3 * hour, codec.encode(avro.WINDOW_UPDATE, window)))
    for key, subject in (("cases", avro.CASE), ("alerts", avro.ALERT)):
        out[key].append((0, now_ms - 3 * hour, codec.encode(subject, examples()[subject])))
    return {"answers": answers, "records": out}


def expected_by_location(answers: list[dict]) -> dict:
    """Independent expectation: the highest version of every answer, counted per location."""
    latest: dict = {}
    for rec in answers:
        if rec["response_id"] not in latest or rec["version"] > latest[rec["response_id"]]["version"]:
            latest[rec["response_id"]] = rec
    cells: dict = {}
    for rec in latest.values():
        c = cells.setdefault(rec["segment"]["location"], Counter())
        c["responses"] += 1
        c[rec["category"] + "s"] += 1
    return {loc: dict(c) for loc, c in cells.items()}


def produce(bootstrap: str, settings, records: dict) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, items in records.items():
        topic = getattr(settings.topics, key)
        for partition, ts, value in items:
            producer.send(topic, value=value, key=b"k", partition=partition, timestamp_ms=ts)
    producer.flush(30)
    producer.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, kafka_bootstrap):
    """The topics of one namespace with the records above (produced once for the module's tests)."""
    env = make_env(tmp_path_factory.mktemp("replay"), kafka_bootstrap, NPSFLOW_PARTITIONS=str(PARTITIONS))
    ensure_topics(env.settings, kafka_bootstrap)
    now_ms = int(time.time() * 1000)
    data = the_records(now_ms)
    produce(kafka_bootstrap, env.settings, data["records"])
    return env, data, now_ms


def with_dsn(env, path) -> dict:
    return {**env.vars, "NPSFLOW_CLICKHOUSE_DSN": f"chdb://{path}"}


def run(env, dsn_path, *args, check=True):
    env_vars = env.vars
    env.vars = with_dsn(env, dsn_path)
    try:
        return env.cli("replay", *args, check=check)
    finally:
        env.vars = env_vars


def report_of(dsn_path) -> tuple[dict, dict]:
    """(counts per location from ``npsflow report``'s query, raw row counts per table)."""
    store = ch.ClickHouseStore(f"chdb://{dsn_path}")
    try:
        rep = queries.report(store, ["location"])
        raw = {t: store.query(f"SELECT count() AS n FROM {{db}}.{t}")[0]["n"] for t in rp.TABLES}
    finally:
        store.close()
    cells = {row["location"]: {k: row[k] for k in ("responses", "promoters", "passives", "detractors") if row[k]}
             for row in rep["rows"]}
    return cells, raw


def by_table(result: dict) -> dict:
    return {t["table"]: t for t in result["tables"]}


# ------------------------------------------------------------------------------------------------ the tests
def test_replay_restores_a_lost_store_and_repeats_count_once(world, tmp_path):
    env, data, _ = world
    store_dir = tmp_path / "fresh"  # a lost store: a new, empty chDB directory
    first = json.loads(run(env, store_dir, "--from", "earliest", "--format", "json").stdout)
    tables = by_table(first)
    assert tables["responses"]["records"] == 47 and tables["responses"]["rows"] == 46
    assert tables["responses"]["undecodable"] == 1 and "offset" in tables["responses"]["first_problem"]
    assert tables["dispatches"]["rows"] == 6
    assert tables["dead_letters"]["rows"] == 3 and tables["dead_letters"]["undecodable"] == 1  # the direct row
    assert {t: tables[t]["rows"] for t in ("window_updates", "cases", "alerts")} == dict.fromkeys(
        ("window_updates", "cases", "alerts"), 1)
    assert first["rollup_days"] == ["2026-11-04", "2026-11-03", "2026-11-02"]

    expected = expected_by_location(data["answers"])
    cells, raw = report_of(store_dir)
    assert cells == expected
    assert raw == {"responses": 46, "window_updates": 1, "dead_letters": 3, "dispatches": 6, "cases": 1,
                   "alerts": 1}
    store = ch.ClickHouseStore(f"chdb://{store_dir}")
    try:  # the rollup holds the same counts as the answers (recomputed by the replay)
        daily = store.query("SELECT sum(responses) AS n, sum(promoters) AS p FROM {db}.nps_daily FINAL WHERE deleted = 0")
        dl = store.query("SELECT reason FROM {db}.dead_letters WHERE dead_letter_id LIKE 'sink:%'")
    finally:
        store.close()
    assert daily[0]["n"] == 40 and daily[0]["p"] == sum(c.get("promoters", 0) for c in expected.values())
    assert len(dl) == 1  # the undecodable dead letter: the row the sink agent writes for it

    second = json.loads(run(env, store_dir, "--from", "earliest", "--format", "json").stdout)
    assert by_table(second)["responses"]["rows"] == 46  # handed over again …
    assert report_of(store_dir) == (expected, raw)  # … and dropped by ClickHouse: same tokens, no row more

    store = ch.ClickHouseStore(f"chdb://{store_dir}")
    try:  # truncated tables (ledger and rollup too): the replay gives the same report again
        for table in (*rp.TABLES, "responses_by_day", "comments_by_day", "nps_daily", "nps_daily_touched",
                      "nps_daily_state", "terms_daily", "terms_daily_state"):
            store.command(f"TRUNCATE TABLE {{db}}.{table}")
    finally:
        store.close()
    assert report_of(store_dir)[0] == {}
    text = run(env, store_dir, "--from", "earliest").stdout
    assert "responses" in text and "46 rows" in text and "recomputed 3 days" in text
    assert report_of(store_dir) == (expected, raw)


def test_offset_ranges_times_and_tables_restrict(world, tmp_path):
    env, _, now_ms = world
    store_dir = tmp_path / "ranges"
    result = json.loads(run(env, store_dir, "--table", "responses", "--from-offset", "0:2", "--to", "0:5",
                            "--format", "json").stdout)
    assert [t["table"] for t in result["tables"]] == ["responses"]
    assert by_table(result)["responses"]["ranges"] == [{"partition": 0, "start": 2, "stop": 5, "gone": 0}]
    store = ch.ClickHouseStore(f"chdb://{store_dir}")
    try:
        rows = store.query("SELECT kafka_partition AS p, kafka_offset AS o FROM {db}.responses ORDER BY o")
        others = store.query("SELECT count() AS n FROM {db}.dispatches")[0]["n"]
    finally:
        store.close()
    assert [(r["p"], r["o"]) for r in rows] == [(0, 2), (0, 3), (0, 4)] and others == 0

    hour = 3600_000  # dispatches were written two at each of now-3h, now-2h, now-1h: [now-2.5h, now-0.5h) → 4
    since = datetime.fromtimestamp((now_ms - 2.5 * hour) / 1000, timezone.utc).isoformat()
    until = datetime.fromtimestamp((now_ms - 0.5 * hour) / 1000, timezone.utc).isoformat()
    result = json.loads(run(env, store_dir, "--table", "dispatches", "--from", since, "--to", until,
                            "--format", "json").stdout)
    assert by_table(result)["dispatches"]["rows"] == 4
    store = ch.ClickHouseStore(f"chdb://{store_dir}")
    try:
        ids = [r["dispatch_id"] for r in store.query("SELECT dispatch_id FROM {db}.dispatches ORDER BY dispatch_id")]
    finally:
        store.close()
    assert ids == ["d-2", "d-3", "d-4", "d-5"]


@pytest.mark.parametrize("args, message", [
    (("--table", "responses", "--from-offset", "7:0"), "--from-offset names partition 7"),
    (("--from", "2026-11-01T00:00:00"), "needs a timezone"),
    (("--from", "earliest", "--table", "nope"), "unknown table 'nope'"),
    (("--from-offset", "0:1"), "exactly one --table"),
    (("--from-offset", "0-1", "--table", "cases"), "is not PARTITION:OFFSET"),
    (("--from", "2026-11-02T00:00:00Z", "--to", "2026-11-01T00:00:00Z"), "later than --from"),
])
def test_bad_arguments_one_line_exit_2(world, tmp_path, args, message):
    env, _, _ = world
    proc = run(env, tmp_path / "unused", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and message in error[0], proc.stderr


def test_missing_topic_is_one_line_exit_1_and_not_created(tmp_path, kafka_bootstrap):
    from kafka import KafkaAdminClient

    env = make_env(tmp_path, kafka_bootstrap)  # a namespace nobody created topics for
    proc = env.cli("replay", "--from", "earliest", "--table", "cases", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0], proc.stderr
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert env.settings.topics.cases not in admin.list_topics()
    finally:
        admin.close()


def test_refused_while_a_worker_holds_the_embedded_store(tmp_path, kafka_bootstrap):
    env = make_env(tmp_path, kafka_bootstrap)
    env.start_worker()
    try:
        proc = env.cli("replay", "--from", "earliest", check=False)
    finally:
        env.stop_worker()
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds the embedded ClickHouse" in lines[0] and "stop it" in lines[0], proc.stderr
    after = env.cli("replay", "--from", "earliest", "--table", "responses")  # stopped: it runs (empty topics)
    assert "0 records" in after.stdout


def test_replay_reapplies_recorded_erasures(tmp_path, kafka_bootstrap):
    """``npsflow forget`` of one contact, then the store truncated and replayed from the topics (which still hold
    both contacts' records): the erased contact's rows stay gone — refused triggers included, found through the
    secret —, the other's come back, and the replay reports the erasures it re-applied."""
    from streams.contact_rules import contact_key

    secret = "replay-erasure-secret-0123456789"
    env = make_env(tmp_path / "home", kafka_bootstrap, NPSFLOW_PARTITIONS=str(PARTITIONS), NPSFLOW_SECRET=secret)
    ensure_topics(env.settings, kafka_bootstrap)
    codec, now_ms = avro.AvroCodec(), int(time.time() * 1000)
    day = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    contacts = {"gone": "cust-gone-4711", "kept": "cust-kept-0815"}
    keys = {who: contact_key("acme", cid, secret) for who, cid in contacts.items()}
    records: dict[str, list] = {"classified": [], "dispatches": [], "cases": [], "dead_letters": []}
    for n, who in enumerate(contacts):
        inv = f"inv-{who}"
        answer = {**examples()[avro.CLASSIFIED_RESPONSE], "response_id": inv, "invitation_id": inv, "score": 2,
                  "category": "detractor", "version": 1, "is_edit": False, "earlier_days": [], "org_id": "acme",
                  "respondent": keys[who], "responded_at": day, "comment": f"comment of {who}"}
        dispatch = {**examples()[avro.DISPATCHED_MESSAGE], "dispatch_id": inv, "invitation_id": inv,
                    "org_id": "acme", "contact_key": keys[who]}
        case = {**examples()[avro.CASE], "case_id": f"case-{who}", "org_id": "acme", "route": f"acme|{keys[who]}",
                "response_id": inv}
        refused = {**examples()[avro.DEAD_LETTER], "dead_letter_id": f"dl-{who}", "key": f"acme|{contacts[who]}"}
        for topic, subject, rec in (("classified", avro.CLASSIFIED_RESPONSE, answer),
                                    ("dispatches", avro.DISPATCHED_MESSAGE, dispatch), ("cases", avro.CASE, case),
                                    ("dead_letters", avro.DEAD_LETTER, refused)):
            records[topic].append((n, now_ms - 60_000, codec.encode(subject, rec)))
    produce(kafka_bootstrap, env.settings, records)
    store_dir = tmp_path / "store"
    run(env, store_dir, "--from", "earliest")

    def rows(store_path) -> dict:
        store = ch.ClickHouseStore(f"chdb://{store_path}")
        try:
            return {
                "responses": sorted(r["r"] for r in store.query("SELECT respondent AS r FROM {db}.responses FINAL")),
                "dispatches": sorted(r["k"] for r in store.query("SELECT contact_key AS k FROM {db}.dispatches FINAL")),
                "cases": sorted(r["c"] for r in store.query("SELECT case_id AS c FROM {db}.cases FINAL")),
                "dead_letters": sorted(r["k"] for r in store.query("SELECT key AS k FROM {db}.dead_letters FINAL")),
                "by_day": sorted(r["r"] for r in store.query("SELECT respondent AS r FROM {db}.responses_by_day FINAL"))}
        finally:
            store.close()

    both = {"responses": sorted(keys.values()), "dispatches": sorted(keys.values()),
            "cases": ["case-gone", "case-kept"], "dead_letters": [f"acme|{c}" for c in sorted(contacts.values())],
            "by_day": sorted(keys.values())}
    assert rows(store_dir) == both
    env_vars, env.vars = env.vars, with_dsn(env, store_dir)
    try:
        erased = json.loads(env.cli("forget", "--org", "acme", "--contact", contacts["gone"], "--format",
                                    "json").stdout)["erased"]
    finally:
        env.vars = env_vars
    assert {t: erased[t] for t in ("responses", "dispatches", "cases", "dead_letters")} == dict.fromkeys(
        ("responses", "dispatches", "cases", "dead_letters"), 1)
    kept = {"responses": [keys["kept"]], "dispatches": [keys["kept"]], "cases": ["case-kept"],
            "dead_letters": [f"acme|{contacts['kept']}"], "by_day": [keys["kept"]]}
    assert rows(store_dir) == kept

    store = ch.ClickHouseStore(f"chdb://{store_dir}")
    try:  # a lost store's tables (the audit table survives: it is not re-sunk from a topic)
        for table in (*rp.TABLES, "responses_by_day", "comments_by_day", "nps_daily", "nps_daily_touched"):
            store.command(f"TRUNCATE TABLE {{db}}.{table}")
    finally:
        store.close()
    result = json.loads(run(env, store_dir, "--from", "earliest", "--format", "json").stdout)
    assert result["erasures"] == {"contacts": 1, "rows": {"cases": 1, "comments_by_day": 1, "dead_letters": 1,
                                                          "dispatches": 1, "responses": 1, "responses_by_day": 1}}
    assert by_table(result)["cases"]["rows"] == 2  # both came back from the topic …
    assert rows(store_dir) == kept  # … and the erased contact's went again
    again = run(env, store_dir, "--from", "earliest").stdout  # the text output says it too
    assert "re-applied 1 recorded erasures" in again and rows(store_dir) == kept
