"""`npsflow stack up --brokers 3 --workers 3` for real: a 3-node KRaft cluster from the same jars, topics with 12
partitions, replication factor 3 and min.insync.replicas=2, three process workers in one group and the sink
worker in its own. Mid-stream one process worker is SIGKILLed and one broker stopped (and later restarted). The
report and the dispatches must then be exact (0 lost, 0 double) BEFORE the whole input is replayed on top (the
replay would hide a loss), and after it the final report and the live windows must equal an independent
expectation computed from the records (``oracle``: latest responded_at per response id).

The two faults come one after the other: the killed worker's partitions are taken over (the report shows the
first half) before the broker is stopped. Triggers go the same way (half before the kill, half while the broker
is down, all again on top): one dispatch record per trigger, no contact mailed twice. Afterwards the links of 60
mails are opened and answered through the web worker (no consumer group, no tables: it asks the partition's owner,
found in the owner directory ``<ns>.owners``) and counted like the rest.

This test found (session 7) that a sink worker in the stream workers' consumer group split the tables from their
source partitions (Faust's assignor groups topics by their subscribers): replays were counted again in the live
windows. Sink workers now hold no tables and run in a group of their own (streams.app.consumer_group).

Measured (printed with -s): the test's wall time and the RSS of the three JVMs.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections import Counter

import pytest
import requests

from npsflow import stack
from tests.e2e_helpers import Env, read_topic, wait_for, window_audit, write_jsonl
from tests.programs import bolt, programs_yaml, shop
from tests.standins import SmtpServer
from tests.test_e2e_survey import csrf_of
from tests.test_e2e_pipeline import c3, counts, oracle

pytestmark = pytest.mark.kafka

PROCESS_WORKERS = 3


PROGRAMS = programs_yaml(bolt(shop()))
TRIGGERS = 600
ANSWERED = 60  # invitations answered through the web worker


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def cluster_env(tmp_path, smtp):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "programs.yaml").write_text(PROGRAMS)
    (tmp_path / "channels.yaml").write_text(
        f"email: {{transport: smtp, host: 127.0.0.1, port: {smtp.port}, starttls: false, timeout: 10}}\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NPSFLOW_") or k in ("NPSFLOW_CACHE", "NPSFLOW_LOGLEVEL")}
    env.update(NPSFLOW_HOME=str(home), NPSFLOW_NAMESPACE="t" + uuid.uuid4().hex[:10], NPSFLOW_PARTITIONS="12",
               NPSFLOW_SINK_MAX_AGE="0.3", NPSFLOW_SECRET="s" * 32,
               NPSFLOW_PROGRAMS=str(tmp_path / "programs.yaml"), NPSFLOW_CHANNELS=str(tmp_path / "channels.yaml"),
               NPSFLOW_SURVEY_URL="https://nps.example.se/s", NPSFLOW_PAGE_RATE="100")
    e = Env(home, env)
    try:
        yield e
    finally:
        stack.down(e.settings)  # every worker and every broker, also when the test failed
        assert not stack.status(e.settings)["kafka"]["running"]


def _rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _guard_counts(infos: list, settings) -> dict:
    """The GapGuards' counters (``<agent>.offset_gap``, ``…_reseek``, ``…_reread``, ``…_unrecoverable``) summed
    over the given workers: printed with the result, and with a failure (a partition that stopped shows here)."""
    total: Counter = Counter()
    for info in infos:
        try:
            total.update({k: v for k, v in _stats(info, settings).items() if ".offset_" in k})
        except Exception as exc:  # a worker that does not answer is news as well
            total[f"unreachable:{info.get('name')}:{type(exc).__name__}"] += 1
    return dict(sorted(total.items()))


def _stats(info: dict, settings) -> dict:
    import requests

    from npsflow.reader import internal_headers

    return requests.get(f"{info['internal_url']}/api/v1/stats", headers=internal_headers(settings), timeout=30).json()


def _topic_layout(bootstrap: str, topic: str) -> tuple[int, set[int], str | None]:
    """(partitions, {replicas per partition}, the topic's own min.insync.replicas)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (desc,) = admin.describe_topics([topic])
        replicas = {len(p["replica_nodes"]) for p in desc["partitions"]}
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])["topic"][topic]
        return len(desc["partitions"]), replicas, (configs.get("min.insync.replicas") or {}).get("value")
    finally:
        admin.close()


def _triggers(n: int) -> list[dict]:
    """``n`` purchases of distinct contacts (one invitation each), spread over every partition by contact."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    return [{"event_id": f"o-{i}", "org_id": "bolt", "event_type": "order.delivered", "occurred_at": at,
             "contact": {"contact_id": f"k-{i}", "email": f"k{i}@kund.se"}, "location": "Kiruna"} for i in range(n)]


def _answer_through(web: dict, mails: list) -> dict[str, int]:
    """Open each mail's survey link on ``web``'s public listener and answer it (score = its index mod 11);
    {address: score}."""
    scores = {}
    for i, mail in enumerate(mails):
        token = re.findall(r"https://nps\.example\.se/s/([A-Za-z0-9_.\-]+)", mail.get_body(("plain",)).get_content())[0]
        url = f"{web['public_url']}/s/{token}"
        page = requests.get(url, timeout=30)
        assert page.status_code == 200 and "Bolt" in page.text, (mail["To"], page.status_code)
        thanks = requests.post(url, data={"csrf": csrf_of(page.text), "score": str(i % 11)}, timeout=30)
        assert thanks.status_code == 200, (mail["To"], thanks.status_code)
        scores[mail["To"]] = i % 11
    return scores


def _owners(bootstrap: str, topic: str) -> dict[int, str]:
    """The owner directory as published so far: partition → worker name (latest record per partition)."""
    import json

    latest: dict[int, str] = {}
    for record in read_topic(bootstrap, topic, 1, until_idle=True):
        if record.value:
            value = json.loads(record.value)
            latest[int(value["partition"])] = value["worker"]
    return latest


def _kill(info: dict) -> None:
    """SIGKILL a worker's process group: no graceful shutdown, no final commit."""
    pid = int(info["pid"])
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z",
             what="the killed worker to be gone", timeout=10, interval=0.05)


def test_three_brokers_three_process_workers_a_killed_worker_and_a_stopped_broker_count_everything_once(
        cluster_env, smtp, tmp_path):
    from npsflow.simulate import ResponseSimulator

    t0 = time.monotonic()
    env = cluster_env
    state = stack.up(env.settings, brokers=3, workers=PROCESS_WORKERS)
    t_up = time.monotonic() - t0
    kafka, workers = state["kafka"], state["workers"]
    assert len(kafka["nodes"]) == 3 and all(n["running"] for n in kafka["nodes"])
    assert state["worker"]["role"] == "sink" and [w["role"] for w in workers] == ["process"] * PROCESS_WORKERS
    assert len({w["internal_url"] for w in [state["worker"], *workers]}) == PROCESS_WORKERS + 1
    partitions, replicas, isr = _topic_layout(kafka["bootstrap"], env.settings.topics.raw_responses)
    assert (partitions, replicas, isr) == (12, {3}, "2")
    status = stack.status(env.settings)
    assert [w["name"] for w in status["workers"]] == [f"process-{i}" for i in range(1, PROCESS_WORKERS + 1)]

    records = list(ResponseSimulator(seed=13).records(9000, duplicate_ratio=0.05, edit_ratio=0.05))
    first, second = records[:4500], records[4500:]
    expected = oracle(records)
    total = sum(expected["total"].values())

    triggers = _triggers(TRIGGERS)
    env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "t1.jsonl", triggers[:TRIGGERS // 2])))
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "first.jsonl", first)))
    victim = workers[0]
    wait_for(lambda: _stats(victim, env.settings).get("classify.batches", 0) > 0, timeout=120,
             what="the first process worker to classify")
    _kill(victim)  # mid-stream: its partitions go to the others, redelivered from the last commit
    # the group settles before the broker goes: the owner directory (streams.owners: published by each process
    # worker once a rebalance is over and its tables are recovered) names a survivor for every partition — the
    # victim's partitions taken over. (Not "the survivors classified len(first) records": the victim may have
    # committed part of its partitions before it died, CI found that.)
    owners: dict = {}

    def taken_over():
        owners.update(_owners(kafka["bootstrap"], env.settings.topics.owners))
        return len(owners) == 12 and set(owners.values()) <= {w["name"] for w in workers[1:]}

    try:
        wait_for(taken_over, timeout=300, interval=1, what="the survivors to take over the victim's partitions")
    except AssertionError:
        raise AssertionError(f"owners after 300 s: {owners}; survivors' stats: "
                             f"{[_stats(w, env.settings) for w in workers[1:]]}") from None
    cluster = stack._local_kafka(env.settings)
    t_stop = time.monotonic()
    cluster.stop_node(2)  # mid-stream: leaders move, acks=all still has 2 in-sync replicas
    t_stop = time.monotonic() - t_stop
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "second.jsonl", second)))
    env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "t2.jsonl", triggers[TRIGGERS // 2:])))
    t_start = time.monotonic()
    cluster.start_node(2)
    t_start = time.monotonic() - t_start
    # every answer counted once BEFORE the replay on top: that replay sends every answer again, so it would hide a
    # loss (session 9: a survivor began a partition the victim had never committed at its end — its head was
    # never processed; the replay then counted those answers, and counted twice the ones the victim had)
    seen_total: list = []

    def reported_once():
        seen_total[:] = [env.cli_json("report")["total"]["responses"]]
        return seen_total[0] >= total

    def decided_once():
        seen_total[1:] = [env.cli_json("dispatches")["total"]]
        return seen_total[1] >= TRIGGERS

    try:
        wait_for(reported_once, what="every answer in the report before the replay", timeout=180, interval=1)
        wait_for(decided_once, what="every trigger decided before the replay", timeout=120, interval=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counted (answers, triggers) {seen_total} of {(total, TRIGGERS)}; guards: "
                             f"{_guard_counts([state['worker'], *workers[1:]], env.settings)}") from None
    assert seen_total == [total, TRIGGERS], f"counted twice before the replay: {seen_total} for {(total, TRIGGERS)}"
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "all.jsonl", records)))  # replays on top
    env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "t-all.jsonl", triggers)))

    # every trigger decided once (one dispatch record each), no contact mailed twice, every send that the records
    # call sent reached the SMTP server; a send cut off by the SIGKILL is recorded as failed/send_interrupted
    data = wait_for(lambda: (lambda d: d if d["total"] == TRIGGERS else None)(env.cli_json("dispatches")),
                    what="one dispatch record per trigger", timeout=120, interval=1)
    interrupted = sum(r["count"] for r in data["reasons"] if r["reason"] == "send_interrupted")
    assert set(data["by_status"]) <= {"sent", "failed"} and data["by_status"].get("failed", 0) == interrupted
    per_address = Counter(m["To"] for m in smtp.received())
    assert max(per_address.values()) == 1, "a contact got two mails"
    assert set(per_address) <= {t["contact"]["email"] for t in triggers}
    assert data["by_status"]["sent"] <= len(per_address) <= data["by_status"]["sent"] + interrupted

    # every invitation answerable through the web worker (no consumer group, no tables: it asks the owner), after
    # the faults moved partitions: the links of ANSWERED mails opened and answered there like a respondent would
    answered = _answer_through(state["web"][0], smtp.received()[:ANSWERED])
    by_score = Counter("promoter" if s >= 9 else "passive" if s >= 7 else "detractor" for s in answered.values())
    expected["total"].update(by_score)
    expected["by_location"]["Kiruna"].update(by_score)
    total += len(answered)

    def report():
        r = env.cli_json("report", "--by", "location")
        return r if r["total"]["responses"] == total else None

    final = wait_for(report, what="every response counted once", timeout=180, interval=1)
    assert c3(expected["total"]) == (final["total"]["promoters"], final["total"]["passives"],
                                     final["total"]["detractors"])
    for row in final["rows"]:
        assert counts(row) == c3(expected["by_location"][row["location"]]), row["location"]

    rss = [round(_rss_mib(n["pid"])) for n in stack.status(env.settings)["kafka"]["nodes"] if n["pid"]]
    guards = _guard_counts([state["worker"], *workers[1:]], env.settings)
    print(f"\ncluster e2e: up {t_up:.1f}s (3 brokers + {PROCESS_WORKERS + 2} workers: process, sink, web), stop node {t_stop:.1f}s, "
          f"restart node {t_start:.1f}s, report exact after {time.monotonic() - t0:.1f}s; JVM RSS MiB {rss}; "
          f"dispatches {data['by_status']}, {len(per_address)} mails; guards {guards}")
    # nothing here is old enough for retention: a gap the guards gave up on would be a loss (or a guard bug)
    assert not [k for k in guards if k.endswith("offset_gap_unrecoverable") or k.startswith("unreachable")], guards

    seen = []

    def overall():
        ws = [w for w in env.cli_json("windows", "--segment", "overall=all") if w["window"] == "30d"]
        seen[:] = ws
        return ws[0] if ws and ws[0]["responses"] == total else None

    try:
        window = wait_for(overall, what="the live windows to count every response once", timeout=60, interval=1)
    except AssertionError as exc:  # say whether they lag (fewer) or counted twice (more), and which answers
        audit = window_audit(kafka["bootstrap"], env.settings.topics)
        raise AssertionError(f"{exc}; expected {total}, the 30d overall windows said "
                             f"{[(w['responses'], w.get('window_start')) for w in seen]}; the deltas applied "
                             f"once per source offset: {audit['applied']} items, answers not counted once: "
                             f"{len(audit['net'])}, e.g. {list(audit['items'].items())[:5]}") from None
    assert (window["promoters"], window["passives"], window["detractors"]) == c3(expected["total"])
    survivors = [_stats(w, env.settings) for w in workers[1:]]
    assert sum(s.get("classify.duplicate", 0) for s in survivors) > 0  # the replay met the memos
