"""The CLI's contract: --help everywhere, one-line errors with non-zero exit codes, the stack lifecycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SUBCOMMANDS = [[], ["stack"], ["stack", "up"], ["stack", "down"], ["stack", "status"], ["worker"], ["ingest"],
               ["ingest", "responses"], ["ingest", "triggers"], ["report"], ["windows"], ["deadletters"], ["dispatches"], ["simulate"], ["demo"],
               ["programs"], ["programs", "check"], ["survey-link"], ["api-key"], ["api-key", "new"],
               ["grafana"], ["grafana", "build"], ["grafana", "push"], ["clickhouse"], ["clickhouse", "ddl"],
               ["rollup"], ["rollup", "refresh"]]


def run(args, env_extra=None, home=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPSFLOW_")}
    if home is not None:
        env["NPSFLOW_HOME"] = str(home)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "npsflow.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers until its reaper runs; it is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda a: " ".join(a) or "main")
def test_help_on_every_command(args):
    proc = run([*args, "--help"])
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout


def test_report_on_an_empty_store_is_all_zero(tmp_path):
    proc = run(["report", "--format", "json"], home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["total"]["responses"] == 0 and data["total"]["nps"] is None and data["rows"] == []


def test_bad_dimension_is_a_one_line_error(tmp_path):
    proc = run(["report", "--by", "location;DROP TABLE x"], home=tmp_path)
    assert proc.returncode == 1
    assert one_line_error(proc).startswith("Error: ")


def test_bad_time_is_a_usage_error(tmp_path):
    proc = run(["report", "--since", "last tuesday"], home=tmp_path)
    assert proc.returncode == 2
    assert "--since" in proc.stderr and "Traceback" not in proc.stderr


def test_ingest_without_kafka_says_so_in_one_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"response_id": "r-1", "score": 9}\n')
    proc = run(["ingest", "responses", str(path)], home=tmp_path)
    assert proc.returncode == 1
    assert "npsflow stack up" in one_line_error(proc)


def test_bad_setting_is_a_one_line_error(tmp_path):
    proc = run(["report"], env_extra={"NPSFLOW_PARTITIONS": "six"}, home=tmp_path)
    assert proc.returncode == 1
    assert "NPSFLOW_PARTITIONS" in one_line_error(proc)


@pytest.mark.parametrize("segment", ["Location=X", "bad dim=X", "promoters=1"])
def test_windows_with_a_bad_segment_dimension_is_a_one_line_error(tmp_path, segment):
    proc = run(["windows", "--segment", segment], home=tmp_path)
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert line.startswith("Error: --segment") and "dimension" in line


SURROGATE_LINE = '{"response_id": "r-2", "score": 9, "comment": "\\ud800"}'


def _ingest_file(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(['{"response_id": "  r-1 ", "score": 9}', SURROGATE_LINE, "[1]",
                               '{"response_id": "r-3", "score": 7}']) + "\n")
    return path


def test_ingest_plan_dead_letters_an_unencodable_line_and_keeps_the_rest(tmp_path):
    from npsflow.ingest import iter_file, parse_lines, plan_ingest
    from schemas import codec as avro

    assert json.loads(SURROGATE_LINE)["comment"] == "\ud800"  # json accepts it; UTF-8/Avro cannot carry it
    codec = avro.AvroCodec()
    plan = plan_ingest(parse_lines(iter_file(str(_ingest_file(tmp_path)))), codec, "file:r.jsonl", run_id="run1")
    assert [k for k, _ in plan.records] == [b"r-1", b"r-3"]  # keyed by the stripped response_id
    assert [codec.decode(v, expected=avro.RAW_RESPONSE)["score"] for _, v in plan.records] == [9, 7]
    assert [(b.line_no, b.reason) for b in plan.bad] == [(2, "avro_encode_error"), (3, "not_a_json_object")]
    dls = [codec.decode(v, expected=avro.DEAD_LETTER) for v in plan.dead_letters]
    assert [(d["stage"], d["reason"], d["source_offset"]) for d in dls] == \
        [("ingest", "avro_encode_error", 2), ("ingest", "not_a_json_object", 3)]
    assert dls[0]["detail"].startswith("line 2: ") and "\n" not in dls[0]["detail"]
    assert json.loads(json.loads(dls[0]["payload_json"]))["response_id"] == "r-2"
    assert [d["dead_letter_id"] for d in dls] == ["ingest:run1:file:r.jsonl:2", "ingest:run1:file:r.jsonl:3"]


def test_ingest_dead_letter_ids_are_unique_per_run():
    from npsflow.ingest import parse_lines, plan_ingest
    from schemas import codec as avro

    codec = avro.AvroCodec()
    ids = set()
    for _ in range(2):  # e.g. two `npsflow ingest responses -` runs over stdin
        plan = plan_ingest(parse_lines(["not json"]), codec, "file:-")
        ids.update(codec.decode(v, expected=avro.DEAD_LETTER)["dead_letter_id"] for v in plan.dead_letters)
    assert len(ids) == 2


@pytest.mark.kafka
def test_ingest_sends_the_rest_of_the_file_after_an_unencodable_line(tmp_path, kafka_bootstrap):
    from kafka import KafkaConsumer

    from npsflow import stack
    from schemas import codec as avro
    from tests.e2e_helpers import make_env

    env = make_env(tmp_path, kafka_bootstrap)
    stack.ensure_topics(env.settings, kafka_bootstrap)
    proc = env.cli("ingest", "responses", str(_ingest_file(tmp_path)), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "sent 2 records" in proc.stdout
    assert "line 2: cannot be encoded as Avro" in proc.stderr and "line 3: expected a JSON object" in proc.stderr
    codec, topics = avro.AvroCodec(), env.settings.topics

    def consume(topic: str, n: int) -> list:
        consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=30000)
        got = []
        try:
            for msg in consumer:
                got.append(msg)
                if len(got) >= n:
                    break
        finally:
            consumer.close()
        return got

    assert sorted(m.key for m in consume(topics.raw_responses, 2)) == [b"r-1", b"r-3"]
    reasons = sorted(codec.decode(m.value, expected=avro.DEAD_LETTER)["reason"]
                     for m in consume(topics.dead_letters, 2))
    assert reasons == ["avro_encode_error", "not_a_json_object"]


def test_missing_file_is_a_usage_error(tmp_path):
    proc = run(["ingest", "responses", str(tmp_path / "nope.jsonl")], home=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.kafka
def test_stack_up_status_down_leaves_no_process(tmp_path):
    home = tmp_path / "home"
    up = run(["stack", "up"], home=home, timeout=300)
    assert up.returncode == 0, up.stderr
    status = json.loads(run(["stack", "status", "--format", "json"], home=home).stdout)
    kafka_pid, worker_pid = status["kafka"]["pid"], status["worker"]["pid"]
    assert status["kafka"]["running"] and status["worker"]["ready"]
    again = run(["stack", "up"], home=home, timeout=300)  # idempotent: same processes
    assert again.returncode == 0
    status2 = json.loads(run(["stack", "status", "--format", "json"], home=home).stdout)
    assert (status2["kafka"]["pid"], status2["worker"]["pid"]) == (kafka_pid, worker_pid)
    down = run(["stack", "down"], home=home, timeout=120)
    assert down.returncode == 0 and "worker stopped" in down.stdout and "kafka stopped" in down.stdout
    for pid in (kafka_pid, worker_pid):
        assert not running(pid), f"process {pid} survived `stack down`"
    final = json.loads(run(["stack", "status", "--format", "json"], home=home).stdout)
    assert not final["kafka"]["running"] and not final["worker"].get("pid")


def test_dispatches_on_an_empty_store(tmp_path):
    proc = run(["dispatches", "--format", "json"], home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"total": 0, "by_status": {}, "reasons": [], "by_channel": {},
                                       "sent_by_channel": {},
                                       "reminders": {"total": 0, "by_status": {}, "reasons": []},
                                       "promoter_actions": {}, "cost": {}}
    table = run(["dispatches"], home=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "Invitations: 0" in table.stdout and "reminders: 0" in table.stdout
    assert table.stdout.rstrip().endswith("cost so far (invitations and reminders): 0")


def test_dispatches_shows_invitations_then_reminders_then_cost(tmp_path, ch_store):
    from datetime import timedelta

    from tests.test_dispatches_store import T0, insert, record, reminder

    insert(ch_store, [
        record(1, "sent", cost=0.15),
        record(2, "sent", channel="email", cost=0.001),
        record(3, "suppressed", reason="quarantine", channel=None),
        record(4, "scheduled", reason="quiet_hours"),
        record(4, "sent", cost=0.15, at=T0 + timedelta(hours=12)),
        reminder(1, "sent", cost=0.15),
        reminder(2, "suppressed", reason="responded", channel="email"),
    ])
    ch_store.close()  # the CLI opens the same chDB directory (NPSFLOW_HOME/clickhouse) in its own process
    proc = run(["dispatches", "--format", "json"], home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "total": 4, "by_status": {"sent": 3, "suppressed": 1},
        "reasons": [{"status": "suppressed", "reason": "quarantine", "count": 1}],
        "by_channel": {"email": 1, "sms": 2}, "sent_by_channel": {"email": 1, "sms": 2},
        "reminders": {"total": 2, "by_status": {"sent": 1, "suppressed": 1},
                      "reasons": [{"status": "suppressed", "reason": "responded", "count": 1}]},
        "promoter_actions": {}, "cost": {"EUR": 0.451},
    }
    table = run(["dispatches"], home=tmp_path)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    positions = [out.index(s) for s in ("Invitations: 4", "quarantine", "Reminders: 2", "responded",
                                        "cost so far (invitations and reminders): 0.451 EUR")]
    assert positions == sorted(positions), out


@pytest.mark.parametrize("args", [["simulate", "--rate", "-5"], ["simulate", "--count", "0"],
                                  ["simulate", "--bad-ratio", "1.5"], ["demo", "--count", "0"]])
def test_bad_simulation_options_are_usage_errors(tmp_path, args):
    proc = run(args, home=tmp_path)
    assert proc.returncode == 2 and "Invalid value" in proc.stderr and "Traceback" not in proc.stderr


BROKEN_PROGRAMS = "version: 1\norganizations:\n  - id: x\n    name: X\n"


def test_programs_check_lists_every_mistake_or_summarizes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_PROGRAMS)
    proc = run(["programs", "check", str(bad)], home=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["organizations[0].timezone: required", "organizations[0].default_locale: required",
                                        "organizations[0].branding: required", "organizations[0].programs: required",
                                        f"Error: {bad}: 4 mistake(s)"]
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "deploy" / "programs.example.yaml"
    ok = run(["programs", "check", str(example)], home=tmp_path)
    assert ok.returncode == 0 and "ok — 2 organization(s), 4 program(s)" in ok.stdout


@pytest.mark.parametrize("command", [["worker"], ["stack", "up"]])
def test_a_broken_programs_file_stops_the_worker_with_one_line(tmp_path, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_PROGRAMS)
    proc = run(command, home=tmp_path, env_extra={"NPSFLOW_PROGRAMS": str(bad), "NPSFLOW_KAFKA": "127.0.0.1:1"})
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert line.startswith(f"Error: NPSFLOW_PROGRAMS {bad}: 4 mistake(s), first: organizations[0].timezone: required")
    assert not (tmp_path / "worker.json").exists()


def test_unreachable_kafka_is_a_one_line_worker_error(tmp_path):
    proc = run(["worker"], home=tmp_path, env_extra={"NPSFLOW_KAFKA": "127.0.0.1:1"})
    assert proc.returncode == 1
    assert one_line_error(proc).startswith("Error: cannot reach Kafka at 127.0.0.1:1")


def test_a_broken_channels_file_is_a_one_line_error(tmp_path):
    channels = tmp_path / "channels.yaml"
    channels.write_text("sms: {transport: pigeon}\n")
    proc = run(["worker"], home=tmp_path, env_extra={"NPSFLOW_CHANNELS": str(channels), "NPSFLOW_KAFKA": "127.0.0.1:1"})
    assert proc.returncode == 1
    assert one_line_error(proc) == (f"Error: NPSFLOW_CHANNELS {channels}: channels.sms.transport must be outbox or "
                                    "gateway, not 'pigeon'")


def test_a_reminder_longer_than_the_link_lifetime_is_refused_at_start(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "deploy" / "programs.example.yaml"  # reminders of 2 d, 3 d
    proc = run(["worker"], home=tmp_path, env_extra={"NPSFLOW_PROGRAMS": str(example), "NPSFLOW_LINK_TTL": "2d",
                                                     "NPSFLOW_KAFKA": "127.0.0.1:1"})
    assert proc.returncode == 1
    assert one_line_error(proc).startswith(f"Error: NPSFLOW_PROGRAMS {example}: the reminder of "
                                           "nordvik-ror/service-visit (2 days, 0:00:00) would carry an expired link")


@pytest.mark.parametrize("command", [["dispatches"], ["report"], ["deadletters"]])
def test_an_unreachable_clickhouse_server_is_one_short_line(tmp_path, command):
    proc = run(command, home=tmp_path, env_extra={"NPSFLOW_CLICKHOUSE_DSN": "http://127.0.0.1:1"})
    assert proc.returncode == 1
    assert one_line_error(proc) == "Error: cannot open ClickHouse at http://127.0.0.1:1: [Errno 111] Connection refused"


def test_survey_link_prints_a_working_signed_link(tmp_path):
    from datetime import datetime, timezone

    from streams import links
    from streams.dispatch import link_key

    env = {"NPSFLOW_SURVEY_URL": "https://nps.example.com/s", "NPSFLOW_SECRET": "s" * 24}
    proc = run(["survey-link", "abcdefghij234567abcd", "--score", "8"], home=tmp_path, env_extra=env)
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip()
    assert url.startswith("https://nps.example.com/s/")
    claims = links.verify_token(url.rsplit("/", 1)[1], {"k1": link_key(b"s" * 24)}, datetime.now(timezone.utc))
    assert (claims.invitation_id, claims.score) == ("abcdefghij234567abcd", 8)
    refused = run(["survey-link", "anna@example.se"], home=tmp_path, env_extra=env)
    assert refused.returncode == 1 and "personal data" in one_line_error(refused)
    no_base = run(["survey-link", "abc"], home=tmp_path)
    assert no_base.returncode == 1 and "NPSFLOW_SURVEY_URL" in one_line_error(no_base)


def test_api_key_new_prints_a_key_and_only_its_hash_to_configure(tmp_path):
    from streams.guards import api_key_hash

    proc = run(["api-key", "new"], home=tmp_path)
    assert proc.returncode == 0
    key = proc.stdout.split("key:")[1].split()[0]
    line = proc.stdout.split("hash:")[1].split()[0]
    assert key.startswith("npk_") and len(key) > 40 and line == api_key_hash(key)


def test_report_compare_previous_json_and_table(tmp_path, ch_store):
    from tests.test_clickhouse import seed_report_data

    seed_report_data(ch_store)
    ch_store.close()  # the CLI opens the same chDB directory in its own process
    args = ["report", "--by", "location", "--since", "2024-05-02T00:00:00Z", "--until", "2024-05-03T00:00:00Z",
            "--compare-previous"]
    proc = run([*args, "--format", "json"], home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"by", "rows", "total", "period", "previous_period"}
    assert [(r["location"], r["responses"], r["previous"]["responses"], r["change"], r["significant"])
            for r in data["rows"]] == [("Helsinki", 3, 1, 133.33, False), ("Espoo", 0, 5, None, False)]
    assert (data["total"]["change"], data["total"]["significant"]) == (-16.67, False)
    table = run(args, home=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "vs the previous period" in table.stdout and "+133.33" in table.stdout and "-16.67" in table.stdout
    missing = run(["report", "--compare-previous"], home=tmp_path)
    assert missing.returncode == 1 and "needs --since" in one_line_error(missing)


def test_rollup_refresh_and_rebuild(tmp_path, ch_store):
    from datetime import datetime, timedelta, timezone

    from sinks import clickhouse as ch
    from tests.test_clickhouse import seed_report_data

    seed_report_data(ch_store, inserted_at=datetime.now(timezone.utc) - timedelta(hours=1))
    ch_store.close()  # the CLI opens the same chDB directory in its own process
    first = run(["rollup", "refresh"], home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "refreshed 4 days (2024-04-30..2024-05-03)"  # e5's old day, then 05-01..05-03
    again = run(["rollup", "refresh"], home=tmp_path)
    assert (again.returncode, again.stdout.strip()) == (0, "nothing to refresh")
    rebuilt = run(["rollup", "refresh", "--rebuild"], home=tmp_path)
    assert (rebuilt.returncode, rebuilt.stdout.strip()) == (0, first.stdout.strip())
    store = ch.ClickHouseStore(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        rows = store.query("SELECT day, sum(responses) AS n FROM {db}.nps_daily FINAL GROUP BY day ORDER BY day")
        # 05-01 e1 e2 e3 e4 e5 m1, 05-02 h1 h2 h3, 05-03 n1; 04-30 holds only e5's tombstone: no cell
        assert [(str(r["day"]), r["n"]) for r in rows] == [("2024-05-01", 6), ("2024-05-02", 3), ("2024-05-03", 1)]
    finally:
        store.close()
    repaired = run(["rollup", "refresh", "--repair"], home=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.startswith("ledger repaired: 11 rows rewritten;")  # 10 answers + e5's tombstone
    bad = run(["rollup", "refresh", "--quiet-seconds", "-1"], home=tmp_path)
    assert bad.returncode == 2 and "quiet-seconds" in bad.stderr


def test_terms_and_themes_json_and_a_table_that_shows_comments_as_written(tmp_path, ch_store):
    from tests.test_clickhouse import H, T0, insert_responses
    from tests.test_terms_read import answer

    records = [answer(f"d{i}", 1, T0 + i * H, ["lasku", "väärä"], comment=f"[bold]Lasku[/bold] [phone] {i}")
               for i in range(12)]
    records += [answer(f"p{i}", 10, T0 + i * H, ["kiitos"]) for i in range(30)]
    insert_responses(ch_store, records)
    ch_store.close()  # the CLI opens the same chDB directory in its own process
    period = ["--since", T0.isoformat(), "--until", (T0 + 2 * 24 * H).isoformat()]
    proc = run(["terms", *period, "--format", "json"], home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    lasku = next(e for e in data["terms"] if e["term"] == "lasku")
    assert (lasku["responses"], lasku["detractors"], lasku["significant"]) == (12, 12, True)
    assert lasku["examples"][0] == "[bold]Lasku[/bold] [phone] 11"
    table = run(["terms", *period], home=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "[bold]Lasku[/bold]" in table.stdout and "[phone]" in table.stdout  # as written, not styled
    by_theme = run(["themes", *period, "--format", "json"], home=tmp_path)
    assert by_theme.returncode == 0, by_theme.stderr
    themes = json.loads(by_theme.stdout)
    assert next(t for t in themes["themes"] if t["theme"] == "Invoicing")["responses"] == 12  # the example themes
    bad = run(["terms", "--by", "location;DROP"], home=tmp_path)
    assert bad.returncode == 1 and one_line_error(bad).startswith("Error: ")
