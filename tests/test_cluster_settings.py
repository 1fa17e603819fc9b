"""Replication settings, worker names and the stack's worker plan (no broker needed)."""

from __future__ import annotations

import pytest

from deploy.local.kafka import KafkaStackError, LocalKafka, LocalKafkaCluster, _check_replication, local_kafka
from npsflow import config, stack


def load(tmp_path, **env):
    return config.load({"NPSFLOW_HOME": str(tmp_path), **env})


def test_replication_defaults_and_validation(tmp_path):
    s = load(tmp_path)
    assert (s.replication_factor, s.min_isr, s.topic_configs) == (1, None, {})
    s = load(tmp_path, NPSFLOW_REPLICATION_FACTOR="3", NPSFLOW_MIN_ISR="2")
    assert (s.replication_factor, s.min_isr, s.topic_configs) == (3, 2, {"min.insync.replicas": "2"})
    assert config.load(s.to_env()).replication_factor == 3 and config.load(s.to_env()).min_isr == 2
    with pytest.raises(config.ConfigError, match="NPSFLOW_MIN_ISR \\(3\\) must not exceed"):
        load(tmp_path, NPSFLOW_REPLICATION_FACTOR="2", NPSFLOW_MIN_ISR="3")
    with pytest.raises(config.ConfigError, match="NPSFLOW_REPLICATION_FACTOR must be positive"):
        load(tmp_path, NPSFLOW_REPLICATION_FACTOR="0")


def test_create_topics_refuses_a_min_isr_above_the_replication_factor():
    with pytest.raises(KafkaStackError, match="min.insync.replicas 3 must be between 1 and the replication factor 2"):
        _check_replication(2, {"min.insync.replicas": "3"})
    _check_replication(3, {"min.insync.replicas": "2"})


def test_worker_names_give_each_worker_its_own_files(tmp_path):
    main, named = load(tmp_path), load(tmp_path, NPSFLOW_WORKER_NAME="process-2")
    assert main.worker_file == tmp_path / "worker.json" and main.worker_pid_file == tmp_path / "worker.pid"
    assert named.worker_file == tmp_path / "workers" / "process-2.json"
    assert named.worker_log == tmp_path / "workers" / "process-2.log"
    with pytest.raises(config.ConfigError, match="NPSFLOW_WORKER_NAME"):
        load(tmp_path, NPSFLOW_WORKER_NAME="../x")


def test_stack_plan_one_worker_or_a_sink_plus_process_workers(tmp_path):
    s = load(tmp_path, NPSFLOW_PUBLIC_BIND="127.0.0.1:7000")
    assert stack.worker_settings(s, 1) == [s]
    plan = stack.worker_settings(s, 3)
    assert [(p.role, p.worker_name) for p in plan] == [("sink", None), ("process", "process-1"),
                                                        ("process", "process-2"), ("process", "process-3")]
    assert plan[0].public_bind.port == 7000 and all(p.public_bind.port is None for p in plan[1:])  # free ports
    assert len({p.worker_file for p in plan}) == 4
    with_web = stack.worker_settings(s, 2, web=1)
    assert [(p.role, p.worker_name) for p in with_web] == [("sink", None), ("process", "process-1"),
                                                           ("process", "process-2"), ("web", "web-1")]
    assert with_web[-1].public_bind.port is None and with_web[-1].internal_advertised is None
    assert (stack.default_web(1), stack.default_web(3)) == (0, 1)


def test_cluster_settings_replicate_unless_told_otherwise(tmp_path):
    s = load(tmp_path)
    assert stack.cluster_settings(s, 1, env={}) is s
    three = stack.cluster_settings(s, 3, env={})
    assert (three.replication_factor, three.min_isr) == (3, 2)
    told = load(tmp_path, NPSFLOW_REPLICATION_FACTOR="2")
    kept = stack.cluster_settings(told, 3, env={"NPSFLOW_REPLICATION_FACTOR": "2"})
    assert (kept.replication_factor, kept.min_isr) == (2, 1)


def test_local_kafka_picks_the_kind_the_directory_holds(tmp_path):
    assert type(local_kafka(tmp_path / "a")) is LocalKafka
    cluster = local_kafka(tmp_path / "b", 3)
    assert isinstance(cluster, LocalKafkaCluster) and cluster.size == 3
    cluster._plan()  # writes cluster.json (ports, cluster id)
    assert isinstance(local_kafka(tmp_path / "b"), LocalKafkaCluster)
    assert len(set(cluster.voters().split(","))) == 3
    with pytest.raises(KafkaStackError, match="holds a local Kafka cluster"):
        local_kafka(tmp_path / "b", 1)
    with pytest.raises(KafkaStackError, match="has 3 nodes, not 5"):
        LocalKafkaCluster(tmp_path / "b", 5)
    assert cluster.status()["running"] is False and cluster.status()["bootstrap"] is None


def _subscriptions(tmp_path, role: str) -> tuple[set[str], set[str]]:
    """(the topics a worker of ``role`` consumes with its agents, the changelogs it recovers tables from): what it
    subscribes to in the consumer group."""
    from streams.app import create_app

    settings = load(tmp_path / role, NPSFLOW_ROLE=role)
    app = create_app(settings, web_enabled=False, store_factory=None if role == "process" else (lambda: None)).app
    app.finalize()
    agents = {topic for agent in app.agents.values() for topic in getattr(agent.channel, "topics", ())}
    return agents, set(app.tables.changelog_topics)


def test_a_sink_worker_in_the_group_subscribes_to_nothing_a_process_worker_does(tmp_path):
    """Faust's assignor assigns topics grouped by the set of members subscribing to them. Were the sink worker to
    subscribe to the tables' changelogs (as it did when every role declared the tables), the changelogs would be
    assigned apart from the raw topics: a process worker would classify partition p against table partitions
    held elsewhere and lose its dedup memos at the next recovery (the cluster test counted replays twice)."""
    process_agents, process_changelogs = _subscriptions(tmp_path, "process")
    sink_agents, sink_changelogs = _subscriptions(tmp_path, "sink")
    all_agents, all_changelogs = _subscriptions(tmp_path, "all")
    assert sink_changelogs == set()
    assert not (sink_agents & (process_agents | process_changelogs))
    assert (all_agents, all_changelogs) == (process_agents | sink_agents, process_changelogs)
    ns = load(tmp_path).topics.namespace
    assert {f"{ns}-responses-seen-changelog", f"{ns}-invitations-changelog"} <= process_changelogs
    assert f"{ns}.responses.raw" in process_agents and f"{ns}.responses.classified" in sink_agents


def test_sink_workers_have_a_consumer_group_of_their_own(tmp_path):
    from streams.app import create_app

    ns = load(tmp_path).topics.namespace
    groups = {role: create_app(load(tmp_path / role, NPSFLOW_ROLE=role), web_enabled=False,
                               store_factory=None if role == "process" else (lambda: None)).app.conf.id
              for role in ("all", "process", "sink")}
    assert groups == {"all": ns, "process": ns, "sink": f"{ns}-sink"}
