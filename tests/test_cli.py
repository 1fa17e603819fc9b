"""The CLI's contract: --help everywhere, one-line errors with non-zero exit codes, the stack lifecycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SUBCOMMANDS = [[], ["stack"], ["stack", "up"], ["stack", "down"], ["stack", "status"], ["worker"], ["ingest"],
               ["ingest", "responses"], ["report"], ["windows"], ["deadletters"], ["simulate"], ["demo"]]


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
