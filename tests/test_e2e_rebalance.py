"""Two workers in one consumer group on the real broker, rebalanced while they work: nothing lost, nothing
double counted — in ClickHouse (the report) and in the live windows.

Worker A runs everything (it owns the embedded ClickHouse); worker B (``--role process``, NPSFLOW_ROLE) runs the
stream agents only. B joins mid-stream (partitions and their tables move to it: a rebalance with table
recovery), then is killed with SIGKILL mid-stream (its partitions come back to A, redelivered from the last
commit: a second rebalance), and the same file is ingested once more on top (replays). The expected numbers come
from the records themselves (``oracle``: latest responded_at per response id), not from npsflow.
"""

from __future__ import annotations

import pytest

from tests.e2e_helpers import Env, make_env, wait_for, write_jsonl
from tests.test_e2e_pipeline import c3, counts, oracle

pytestmark = pytest.mark.kafka


def second_worker(env: Env, tmp_path) -> Env:
    home = tmp_path / "worker-b"
    home.mkdir()
    return Env(home, {**env.vars, "NPSFLOW_HOME": str(home), "NPSFLOW_ROLE": "process",
                      "NPSFLOW_CLICKHOUSE_DSN": f"chdb://{home / 'unused'}"})


@pytest.fixture
def env(tmp_path, kafka_bootstrap):
    e = make_env(tmp_path, kafka_bootstrap, NPSFLOW_SECRET="s" * 32)
    b = second_worker(e, tmp_path)
    yield e, b
    b.stop_worker()
    e.stop_worker()


def test_two_workers_rebalanced_and_one_killed_count_everything_once(env, tmp_path):
    from npsflow.simulate import ResponseSimulator

    env, other = env
    records = list(ResponseSimulator(seed=11).records(12000, duplicate_ratio=0.05, edit_ratio=0.05))
    first, second = records[:6000], records[6000:]
    expected = oracle(records)
    total = sum(expected["total"].values())
    env.start_worker()
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "first.jsonl", first)))
    other.start_worker()  # joins the group: partitions (and their tables) move to it mid-stream
    assert other.settings.worker_info()["role"] == "process"
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "second.jsonl", second)))
    wait_for(lambda: other.stats().get("classify.batches", 0) > 0, what="worker B to take partitions", timeout=120)
    other.kill_worker()  # mid-stream, no final commit: its partitions come back to A and are redelivered
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "all.jsonl", records)))  # replays on top

    def report():
        r = env.cli_json("report", "--by", "location")
        return r if r["total"]["responses"] == total else None

    final = wait_for(report, what="every response counted once", timeout=240, interval=1)
    assert c3(expected["total"]) == (final["total"]["promoters"], final["total"]["passives"],
                                     final["total"]["detractors"])
    for row in final["rows"]:
        assert counts(row) == c3(expected["by_location"][row["location"]]), row["location"]

    def overall():
        ws = [w for w in env.cli_json("windows", "--segment", "overall=all") if w["window"] == "30d"]
        return ws[0] if ws and ws[0]["responses"] == total else None

    window = wait_for(overall, what="the live windows to count every response once", timeout=120, interval=1)
    assert (window["promoters"], window["passives"], window["detractors"]) == c3(expected["total"])
    stats = env.stats()
    assert stats.get("classify.duplicate", 0) > 0  # the replay of the whole file met the memos


def test_a_process_worker_and_a_sink_worker_split_the_pipeline(env, tmp_path):
    """NPSFLOW_ROLE=sink (ClickHouse only, consumer group <ns>-sink) and NPSFLOW_ROLE=process (stream agents only,
    group <ns>): every response lands once, and each worker ran only its own part."""
    from npsflow.simulate import ResponseSimulator

    sink, process = env
    sink.vars["NPSFLOW_ROLE"] = "sink"
    records = list(ResponseSimulator(seed=12).records(3000, duplicate_ratio=0.05, edit_ratio=0.05))
    expected = oracle(records)
    sink.start_worker()
    process.start_worker()
    sink.cli("ingest", "responses", str(write_jsonl(tmp_path / "all.jsonl", records)))
    total = sum(expected["total"].values())
    final = wait_for(lambda: (r := sink.cli_json("report", "--by", "location"))["total"]["responses"] == total
                     and r, what="every response counted once", timeout=180, interval=1)
    for row in final["rows"]:
        assert counts(row) == c3(expected["by_location"][row["location"]]), row["location"]
    sink_stats, process_stats = sink.stats(), process.stats()
    assert sink_stats.get("sink.responses.rows", 0) > 0 and not any(k.startswith("classify.") for k in sink_stats)
    assert process_stats.get("classify.batches", 0) > 0 and not any(k.startswith("sink.") for k in process_stats)
