"""The pieces under the fault suite (tests/test_faults.py), without a broker: the NPSFLOW_FAULTS_FILE hook around a
real chDB store, the sinks' failing state and /readyz's report of it, a full disk in the outbox, disk errors
classified as passing."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from types import SimpleNamespace

import pytest
from clickhouse_connect.driver import exceptions as cce

from npsflow import config
from sinks import faults
from sinks.batching import BatchingSink, is_permanent
from web.health import Readiness


def write_plan(path, *phases) -> None:
    path.write_text(json.dumps({"clickhouse_insert": list(phases)}))


def test_no_faults_file_means_the_store_itself(tmp_path):
    store = object()
    assert faults.wrap(store, None) is store  # production: nothing wraps the store, no code of the hook runs
    settings = config.load({"NPSFLOW_HOME": str(tmp_path)})
    assert settings.faults_file is None and "NPSFLOW_FAULTS_FILE" not in settings.to_env()
    plan = tmp_path / "plan.json"
    settings = config.load({"NPSFLOW_HOME": str(tmp_path), "NPSFLOW_FAULTS_FILE": str(plan)})
    assert settings.faults_file == plan and settings.to_env()["NPSFLOW_FAULTS_FILE"] == str(plan)  # the worker gets it


def test_the_plan_applies_by_time_and_table_and_is_reread_when_it_changes(tmp_path):
    now = [100.0]
    path = tmp_path / "plan.json"
    plan = faults.FaultPlan(path, clock=lambda: now[0])
    assert plan.fault_for("responses") is None  # no file: no fault
    write_plan(path, {"kind": "error", "from": 90, "until": 110, "tables": ["responses"]},
               {"kind": "partial", "from": 110, "until": 120}, {"kind": "nonsense", "until": 1e12})
    assert plan.fault_for("responses")["kind"] == "error"
    assert plan.fault_for("dispatches") is None
    now[0] = 115.0
    assert plan.fault_for("dispatches")["kind"] == "partial"
    now[0] = 120.0
    assert plan.fault_for("responses") is None  # until is exclusive; unknown kinds are ignored
    path.write_text("{not json")
    os.utime(path, ns=(1, 1))  # a new modification time: re-read, malformed: no fault
    assert plan.fault_for("responses") is None


@pytest.fixture
def table(ch_store):
    ch_store.command("CREATE TABLE {db}.t (id UInt32, v String) ENGINE = ReplacingMergeTree ORDER BY id "
                     "SETTINGS non_replicated_deduplication_window = 1000")
    return ch_store


def rows(n: int) -> list[dict]:
    return [{"id": i, "v": f"v{i}"} for i in range(n)]


async def test_error_and_timeout_write_nothing_and_raise_a_transient_error(table, tmp_path):
    path = tmp_path / "plan.json"
    store = faults.wrap(table, path)
    write_plan(path, {"kind": "error", "until": 1e12})
    with pytest.raises(cce.OperationalError) as refused:
        await store.ainsert("t", rows(10), dedup_token="tok")
    assert not is_permanent(refused.value)  # the sinks keep the batch and retry it
    write_plan(path, {"kind": "timeout", "until": 1e12, "seconds": 0.3, "tables": ["t"]})
    began = asyncio.get_running_loop().time()
    with pytest.raises(cce.OperationalError, match="Read timed out") as timed_out:
        await store.ainsert("t", rows(10), dedup_token="tok")
    assert asyncio.get_running_loop().time() - began >= 0.3 and not is_permanent(timed_out.value)
    assert table.query("SELECT count() AS n FROM {db}.t")[0]["n"] == 0
    assert (await store.aquery("SELECT 1 AS one")) == [{"one": 1}]  # reads are not faulted


async def test_a_partial_insert_writes_half_then_raises_and_the_retry_leaves_each_row_once(table, tmp_path):
    path = tmp_path / "plan.json"
    store = faults.wrap(table, path)
    write_plan(path, {"kind": "partial", "until": 1e12})
    with pytest.raises(cce.OperationalError, match="Connection reset"):
        await store.ainsert("t", rows(10), dedup_token="tok")
    assert table.query("SELECT count() AS n FROM {db}.t")[0]["n"] == 5  # really written
    path.unlink()
    await store.ainsert("t", rows(10), dedup_token="tok")  # the sink's retry: same rows, same token
    await store.ainsert("t", rows(10), dedup_token="tok")  # and once more: dropped by ClickHouse
    assert table.query("SELECT count() AS n FROM {db}.t")[0]["n"] == 15  # the half landed under another token
    assert table.query("SELECT count() AS n, uniqExact(id) AS ids FROM {db}.t FINAL")[0] == {"n": 10, "ids": 10}


def failing_sink(now: list, broken: list):
    """A BatchingSink whose writer refuses while ``broken[0]``, and the sink role's Readiness over it; both on the
    clock ``now[0]``."""

    async def writer(batch, token):
        if broken[0]:
            raise cce.OperationalError("Connection refused")

    sink = BatchingSink(table="responses", topic="t", writer=writer, max_rows=10, max_age=0.0,
                        clock=lambda: now[0], combine=True)
    app = SimpleNamespace(agents={}, rebalancing=False, in_recovery=False, rebalancing_count=1)
    return sink, Readiness(app, role="sink", store=object(), sinks=lambda: {"responses": sink},
                           clock=lambda: now[0])


async def test_a_sink_failing_is_known_until_an_insert_lands_and_readyz_says_so_after_the_grace():
    now = [0.0]
    broken = [True]
    sink, readiness = failing_sink(now, broken)
    sink.add(0, 1, {"id": 1}, "ack-1")
    assert await sink.flush_due(seal_all=True) == []
    seconds, attempts, _ = sink.failing()
    assert (seconds, attempts) == (0.0, 1) and readiness.sink_inserts() is None  # within the grace
    now[0] = 3.0
    assert await sink.flush_due(force=True) == []
    seconds, attempts, error = sink.failing()
    assert (seconds, attempts) == (3.0, 2)
    reason = readiness.sink_inserts()
    assert reason == ("clickhouse: inserts into responses failing for 3 s (2 attempts; rows kept, offsets not "
                      "committed): OperationalError: Connection refused")
    broken[0] = False
    now[0] = 4.0
    assert await sink.flush_due(force=True) == ["ack-1"]
    assert sink.failing() is None
    # one insert landing after a reported run of failures is not yet health (a full disk frees space now and then)
    assert readiness.sink_inserts() == ("clickhouse: inserts into responses landed again 0 s ago after failing for "
                                        "4 s; ready once they keep landing for 10 s")
    now[0] = 4.0 + 9.9
    assert readiness.sink_inserts() is not None
    now[0] = 4.0 + 10.0
    assert readiness.sink_inserts() is None


async def test_a_short_run_of_failures_that_was_never_reported_needs_no_recovery_hold():
    now = [0.0]
    broken = [True]
    sink, readiness = failing_sink(now, broken)
    sink.add(0, 1, {"id": 1}, "ack-1")
    assert await sink.flush_due(seal_all=True) == []
    broken[0] = False
    now[0] = 1.0  # under the 2 s grace: /readyz never said unhealthy
    assert await sink.flush_due(force=True) == ["ack-1"]
    assert readiness.sink_inserts() is None


async def test_a_full_disk_in_the_outbox_is_a_passing_failure(tmp_path, monkeypatch):
    from sinks.channels import outbox as outbox_module
    from tests.test_channels import NOW, invitation

    def full(files):
        return [OSError(errno.ENOSPC, "No space left on device") for _ in files]

    monkeypatch.setattr(outbox_module, "write_files", full)
    result = await outbox_module.OutboxChannel(tmp_path, "email", clock=lambda: NOW).send(invitation())
    assert (result.status, result.reason, result.retryable) == ("failed", "outbox_write_failed", True)

    def refused(files):
        return [PermissionError(errno.EACCES, "Permission denied") for _ in files]

    monkeypatch.setattr(outbox_module, "write_files", refused)
    result = await outbox_module.OutboxChannel(tmp_path, "email", clock=lambda: NOW).send(invitation())
    assert (result.reason, result.retryable) == ("outbox_write_failed", False)


@pytest.mark.parametrize("text", [
    "Code: 75. DB::ErrnoException: Cannot write to file /x/data.bin, errno: 27, strerror: File too large. "
    "(CANNOT_WRITE_TO_FILE_DESCRIPTOR)",
    "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)",
    "Code: 1001. std::exception: No space left on device",
])
def test_disk_errors_are_passing_never_a_rejected_row(text):
    assert not is_permanent(cce.DatabaseError(text))
    assert not is_permanent(RuntimeError(text))


def test_a_stopped_brokers_port_in_time_wait_is_free_for_its_restart():
    """A broker stopped with clients connected leaves its port's connections in TIME_WAIT (it closed them first): the
    JVM binds it again (SO_REUSEADDR), so LocalKafka must see it as free — it did not, and the restarted broker moved
    to a new port its clients never found (the fault suite's broker case)."""
    import socket
    import time

    from deploy.local.kafka import _port_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM's listeners (its connections inherit it)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server closes first: its side of the connection ends in TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    time.sleep(0.2)
    server.close()
    with socket.socket() as plain:
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))  # the old check's bind: refused while TIME_WAIT lasts
    assert _port_free(port)
    with socket.socket() as squatter:  # but a port something listens on is not free
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        assert not _port_free(port)
