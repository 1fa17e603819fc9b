"""The local Kafka tooling (deploy/local/kafka.py) against a real broker: lifecycle, restart,
topic creation, and the three client stacks npsflow uses (aiokafka, kafka-python, Faust)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition

from deploy.local.kafka import (
    KAFKA_VERSION,
    KafkaStackError,
    LocalKafka,
    create_topics,
    ensure_jars,
    jars_dir,
)

pytestmark = pytest.mark.kafka


def _java_pids_for(state_dir: Path) -> list[int]:
    """pids of live (non-zombie) processes whose command line mentions state_dir."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(state_dir) in cmd and "java" in cmd and state != "Z":
            pids.append(int(proc.name))
    return pids


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30, **kw) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=int(timeout * 1000), **kw)
    got = []
    try:
        for msg in consumer:
            got.append(msg)
            if len(got) >= expect:
                break
        if kw.get("group_id"):
            consumer.commit()
    finally:
        consumer.close()
    return got


# --------------------------------------------------------------------------- jars


def test_jar_cache_is_complete_and_reused(kafka_bootstrap, monkeypatch):
    libs = ensure_jars()
    assert libs == jars_dir()
    assert libs.parts[-3:] == ("kafka", KAFKA_VERSION, "libs")
    names = {p.name for p in libs.glob("*.jar")}
    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in names
    assert any(n.startswith("slf4j-api-2.") for n in names), names  # SLF4J 2 for log4j-slf4j2-impl
    assert not any(n.startswith("slf4j-api-1.") for n in names), names
    assert (libs / ".npsflow-complete.json").is_file()
    # a complete cache never runs Maven again: works even with no mvn on PATH
    monkeypatch.setenv("PATH", "/nonexistent")
    assert ensure_jars() == libs


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(KafkaStackError, match="'java' not found"):
        LocalKafka(tmp_path / "k").start(timeout=10)
    assert not _java_pids_for(tmp_path)


# --------------------------------------------------------------------------- lifecycle


def test_start_status_stop(tmp_path):
    kafka = LocalKafka(tmp_path / "kafka")
    assert kafka.status()["running"] is False
    assert kafka.is_running() is False
    try:
        bootstrap = kafka.start()
        host, port = bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) > 0

        st = kafka.status()
        assert st["running"] is True and kafka.is_running()
        assert st["bootstrap"] == bootstrap and st["version"] == KAFKA_VERSION
        pid = st["pid"]
        assert _pid_exists(pid)
        assert _java_pids_for(kafka.state_dir) == [pid]

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            brokers = admin.describe_cluster()["brokers"]
            assert [(b["broker_id"], b["port"], b["is_fenced"]) for b in brokers] == [(1, int(port), False)]
        finally:
            admin.close()

        # starting again returns the running broker instead of a second JVM
        assert kafka.start() == bootstrap
        assert LocalKafka(tmp_path / "kafka").start() == bootstrap
        assert kafka.status()["pid"] == pid

        log = kafka.log_path.read_text()
        assert "Kafka Server started" in log  # log4j2 + slf4j 2 binding really log
        assert "No SLF4J providers were found" not in log
    finally:
        kafka.stop()

    assert not _pid_exists(pid)
    assert _java_pids_for(kafka.state_dir) == []
    st = kafka.status()
    assert st["running"] is False and st["pid"] is None and st["bootstrap"] is None
    kafka.stop()  # idempotent
    LocalKafka(tmp_path / "kafka").stop()
    assert (kafka.state_dir / "data" / ".kafka_cleanshutdown").exists()  # SIGTERM = clean shutdown


def test_restart_reuses_storage_even_on_new_ports(tmp_path):
    kafka = LocalKafka(tmp_path / "kafka")
    topic = "restart-check"
    try:
        first = kafka.start()
        cluster_id = kafka.status()["cluster_id"]
        create_topics(first, {topic: 2})
        producer = KafkaProducer(bootstrap_servers=first, acks="all")
        producer.send(topic, key=b"k", value=b"survives-restart", partition=1).get(timeout=30)
        producer.close()
        kafka.stop()

        # same ports when they are free
        assert kafka.start() == first
        kafka.stop()

        # occupy the old broker port: the restart must pick new ports and keep the data
        old_port = int(first.rsplit(":", 1)[1])
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", old_port))
            squatter.listen(1)
            second = kafka.start()
        assert second != first
        assert kafka.status()["cluster_id"] == cluster_id

        create_topics(second, {topic: 2})  # still there with 2 partitions: no error
        got = _consume_all(second, topic, expect=1)
        assert [(m.partition, m.key, m.value) for m in got] == [(1, b"k", b"survives-restart")]
    finally:
        kafka.stop()
    assert _java_pids_for(kafka.state_dir) == []


def test_broker_dying_at_startup_reports_log_tail(tmp_path):
    kafka = LocalKafka(tmp_path / "kafka")
    try:
        kafka.start()
        kafka.stop()
        meta = kafka.state_dir / "data" / "meta.properties"
        meta.write_text(meta.read_text().replace("node.id=1", "node.id=7"))
        with pytest.raises(KafkaStackError) as err:
            kafka.start(timeout=60)
        # 'exited during startup' (not a timeout message) proves the early exit was detected
        first_line, _, tail = str(err.value).partition("\n")
        assert "exited during startup" in first_line and str(kafka.log_path) in first_line
        assert "node" in tail.lower() and tail.count("\n") >= 3, tail
        assert kafka.status()["running"] is False
    finally:
        kafka.stop()
    assert _java_pids_for(kafka.state_dir) == []


def test_maven_failure_is_a_clear_error_and_leaves_no_cache(tmp_path, monkeypatch):
    """A Maven run that writes part of the jars and then fails (as an interrupted or broken fetch
    does) must raise a one-line KafkaStackError and leave no cache behind."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mvn").write_text(textwrap.dedent("""\
        #!/bin/sh
        for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; esac; done
        mkdir -p "$out" && echo partial > "$out/kafka-clients-half.jar"
        echo "[INFO] downloading"
        echo "[ERROR] Failed to execute goal: Could not transfer artifact (simulated)" >&2
        exit 1
        """))
    (bindir / "mvn").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("NPSFLOW_CACHE", str(tmp_path / "cache"))
    with pytest.raises(KafkaStackError) as err:
        ensure_jars()
    msg = str(err.value)
    assert msg.startswith(f"maven failed to fetch Kafka {KAFKA_VERSION} jars (rc=1): [ERROR] Failed"), msg
    assert "\n" not in msg
    version_dir = tmp_path / "cache" / "kafka" / KAFKA_VERSION
    assert not (version_dir / "libs").exists()
    assert not list(version_dir.glob(".libs.*"))  # the partial download was removed


# --------------------------------------------------------------------------- topics


def test_create_topics_idempotent_and_partition_mismatch(kafka_bootstrap):
    a, b = f"ct-a-{uuid.uuid4().hex[:8]}", f"ct-b-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {a: 3, b: 6}, configs={"retention.ms": 3_600_000})
    create_topics(kafka_bootstrap, {a: 3, b: 6})  # second call: no-op, no error
    create_topics(kafka_bootstrap, {a: 3})

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        desc = {t["name"]: t for t in admin.describe_topics([a, b])}
        assert len(desc[a]["partitions"]) == 3 and len(desc[b]["partitions"]) == 6
        assert all(p["leader_id"] == 1 for t in desc.values() for p in t["partitions"])
    finally:
        admin.close()

    with pytest.raises(KafkaStackError, match=rf"{a} has 3 partitions, wanted 4"):
        create_topics(kafka_bootstrap, {a: 4})
    c = f"ct-c-{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaStackError, match="partition mismatch"):
        create_topics(kafka_bootstrap, {c: 2, a: 5})
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert c not in admin.list_topics()  # counts are checked before anything is created
    finally:
        admin.close()


def test_auto_create_is_disabled(kafka_bootstrap):
    from kafka.errors import KafkaTimeoutError

    name = f"never-created-{uuid.uuid4().hex[:6]}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_block_ms=2000)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send(name, b"x").get(timeout=10)
    finally:
        producer.close(timeout=1)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert name not in admin.list_topics()
    finally:
        admin.close()


def test_kafka_topics_fixture(kafka_bootstrap, kafka_topics):
    t1, t2 = kafka_topics(), kafka_topics(partitions=2, prefix="x")
    assert t1 != t2 and t2.startswith("x-")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert {t["name"]: len(t["partitions"]) for t in admin.describe_topics([t1, t2])} == {t1: 6, t2: 2}
    finally:
        admin.close()


# --------------------------------------------------------------------------- client round trips


async def test_aiokafka_roundtrip_commit_and_resume(kafka_bootstrap, kafka_topics):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as ATP

    topic = kafka_topics(partitions=3)
    group = f"g-aio-{uuid.uuid4().hex[:8]}"

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=f"k{i % 3}".encode())
    finally:
        await producer.stop()

    async def consume(n: int, timeout: float = 30) -> list:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    max_poll_records=1)
        await consumer.start()
        got = []
        try:
            end = asyncio.get_running_loop().time() + timeout
            while len(got) < n and asyncio.get_running_loop().time() < end:
                for tp, msgs in (await consumer.getmany(timeout_ms=500, max_records=n - len(got))).items():
                    got.extend(msgs)
            # commit exactly what we processed (not the whole fetched batch)
            offsets = {}
            for m in got:
                tp = ATP(m.topic, m.partition)
                offsets[tp] = max(offsets.get(tp, 0), m.offset + 1)
            if offsets:
                await consumer.commit(offsets)
        finally:
            await consumer.stop()
        return got

    first = await consume(4)
    assert len(first) == 4
    second = await consume(6)  # same group: resumes from the committed offsets
    assert len(second) == 6
    seen = [m.value for m in first + second]
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(10))
    assert len(set(seen)) == 10  # nothing re-delivered, nothing lost

    # nothing left for the group
    assert await consume(1, timeout=3) == []


def test_kafka_python_roundtrip_group_and_admin(kafka_bootstrap):
    topic = f"kp-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True)
        assert topic in admin.list_topics()
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(6):
        producer.send(topic, f"v{i}".encode(), partition=i % 2)
    producer.flush()
    producer.close()

    group = f"g-kp-{uuid.uuid4().hex[:8]}"
    got = _consume_all(kafka_bootstrap, topic, expect=6, group_id=group, enable_auto_commit=False)
    assert sorted(m.value for m in got) == [f"v{i}".encode() for i in range(6)]

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        committed = admin.list_group_offsets(group)[group]
        by_tp = {(tp.topic, tp.partition): om.offset for tp, om in committed.items()}
        assert by_tp == {(topic, 0): 3, (topic, 1): 3}
    finally:
        admin.close()

    # a new consumer in the same group starts at the committed end: nothing to read
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.subscribe([topic])
        records = {}
        end = time.monotonic() + 10
        while time.monotonic() < end and not consumer.assignment():
            records.update(consumer.poll(timeout_ms=500))
        assert consumer.assignment() == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
        records.update(consumer.poll(timeout_ms=1000))
        assert not any(records.values())
    finally:
        consumer.close()


FAUST_APP = """
import os
import faust

app = faust.App(os.environ["APP_ID"], broker="kafka://" + os.environ["BOOT"], store="memory://",
                broker_session_timeout=10, broker_heartbeat_interval=1,
                topic_partitions=int(os.environ["PARTS"]), topic_replication_factor=1,
                web_enabled=False)
source = app.topic(os.environ["TOPIC"], value_type=bytes, value_serializer="raw",
                   partitions=int(os.environ["PARTS"]))
counts = app.Table("counts", default=int, partitions=int(os.environ["PARTS"]))


@app.agent(source)
async def count(stream):
    async for key, value in stream.items():
        counts[key] += 1
        print(f"PROCESSED {key.decode()} {value.decode()} count={counts[key]}", flush=True)
"""


def test_faust_worker_processes_messages(kafka_bootstrap, kafka_topics, tmp_path):
    parts = 6
    topic = kafka_topics(partitions=parts)
    (tmp_path / "fapp.py").write_text(textwrap.dedent(FAUST_APP))
    env = dict(os.environ, BOOT=kafka_bootstrap, TOPIC=topic, PARTS=str(parts),
               APP_ID=f"verify-{uuid.uuid4().hex[:8]}", PYTHONPATH=str(tmp_path))
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "faust", "-A", "fapp", "worker", "-l", "info",
                                   "--without-web"], cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Worker]: Ready" not in log_path.read_text(errors="replace"):
            assert worker.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.3)

        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        for i in range(9):
            producer.send(topic, key=f"k{i % 3}".encode(), value=f"v{i}".encode())
        producer.flush()
        producer.close()

        deadline = time.monotonic() + 60
        while True:
            out = log_path.read_text(errors="replace")
            done = [ln for ln in out.splitlines() if "PROCESSED" in ln]
            if len(done) >= 9:
                break
            assert worker.poll() is None, out[-3000:]
            assert time.monotonic() < deadline, out[-3000:]
            time.sleep(0.3)
        rows = [ln.split("PROCESSED ", 1)[1].split() for ln in done]  # [key, value, "count=N"]
        assert sorted(value for _, value, _ in rows) == sorted(f"v{i}" for i in range(9))
        final = {}
        for key, _, count in rows:
            final[key] = max(final.get(key, 0), int(count.split("=")[1]))
        assert final == {"k0": 3, "k1": 3, "k2": 3}  # the table counted every message once
        assert "PartitionsMismatch" not in out
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)


def test_cluster_ids_never_look_like_an_option():
    from deploy.local.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]  # ~1 in 32 raw UUIDs would start with '-' or '_'
    assert all(len(i) == 22 and i[0].isalnum() for i in ids)
