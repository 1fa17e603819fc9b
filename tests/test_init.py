"""`npsflow init` (npsflow.prepare.init): the one-off job of a deployment (compose `init` service, Kubernetes Job)
against the real local broker and embedded chDB — every topic created with the configured partitions, the store
migrated with its views, idempotent; one line and exit 1 when Kafka or ClickHouse cannot be reached."""

from __future__ import annotations

import socket

import pytest

from tests.e2e_helpers import make_env


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening, closed: nothing answers there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.kafka
def test_init_creates_every_topic_and_migrates_the_store_twice_the_same(tmp_path, kafka_bootstrap):
    from kafka.admin import KafkaAdminClient

    from deploy.local.kafka import _partition_counts
    from sinks.clickhouse import ClickHouseStore, applied_migrations, load_migrations

    env = make_env(tmp_path, kafka_bootstrap, NPSFLOW_PARTITIONS="3", NPSFLOW_RETENTION="400d")
    settings = env.settings
    first = env.cli("init")
    lines = first.stdout.strip().splitlines()
    wanted = {*settings.topics.all(), *settings.topics.changelogs(), *settings.topics.compacted(),
              settings.topics.owners, f"{settings.topics.namespace}-__assignor-__leader"}
    assert len(lines) == 2, first.stdout
    assert lines[0].startswith(f"kafka {kafka_bootstrap}: {len(wanted)} topic(s) created, 0 already there")
    migrations = len(load_migrations())
    assert f"{migrations} migration(s) applied ({migrations} in all)" in lines[1]
    assert "retention 400 d" in lines[1] and "not applied" not in lines[1]

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = _partition_counts(admin, sorted(wanted))
    finally:
        admin.close()
    assert set(described) == wanted
    assert described[settings.topics.raw_responses] == 3 and described[settings.topics.owners] == 1

    again = env.cli("init")  # idempotent: nothing created, nothing migrated, the same outcome
    lines = again.stdout.strip().splitlines()
    assert lines[0].startswith(f"kafka {kafka_bootstrap}: 0 topic(s) created, {len(wanted)} already there"), again.stdout
    assert f"schema up to date ({migrations} in all)" in lines[1]

    store = ClickHouseStore(settings.clickhouse_dsn)
    try:
        assert len(applied_migrations(store)) == migrations
        tables = {r[0] for r in store.client.query(
            f"SELECT name FROM system.tables WHERE database = '{store.database}'").result_rows}
        assert {"responses", "nps_cells", "schema_migrations"} <= tables
    finally:
        store.close()


@pytest.mark.kafka
def test_init_with_clickhouse_unreachable_is_one_line_and_exit_1(tmp_path, kafka_bootstrap):
    password = tmp_path / "ch_password"
    password.write_text("not-a-real-password-123\n")
    env = make_env(tmp_path, kafka_bootstrap, NPSFLOW_CLICKHOUSE_DSN=f"http://npsflow@127.0.0.1:{_closed_port()}/npsflow",
                   NPSFLOW_CLICKHOUSE_PASSWORD_FILE=str(password))
    proc = env.cli("init", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("Error: cannot reach ClickHouse at http://npsflow@127.0.0.1:"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "not-a-real-password" not in proc.stderr
    assert "topic(s) created" in proc.stdout or proc.stdout == ""  # Kafka came first and worked


def test_init_with_kafka_unreachable_is_one_line_and_exit_1(tmp_path):
    env = make_env(tmp_path, f"127.0.0.1:{_closed_port()}")
    proc = env.cli("init", "--timeout", "2", check=False, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("Error: cannot reach Kafka at 127.0.0.1:"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert not (tmp_path / "home" / "clickhouse").exists()  # nothing touched after the failure
