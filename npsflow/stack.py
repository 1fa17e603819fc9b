"""`npsflow stack up | down | status`: the local Kafka (one broker, or a cluster with ``--brokers N``) plus the
background workers (one ``all`` worker, or with ``--workers M`` > 1 one ``sink`` worker — the one the CLI asks,
owner of the embedded ClickHouse — and M ``process`` workers named ``process-<i>``, all in one consumer group,
and ``--web K`` web workers named ``web-<i>``, in no group: listeners only, routing every survey link to the
worker holding its invitation), ready when `up` returns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from npsflow.config import Settings, is_worker_process, redact_dsn
from npsflow.prepare import dispatch_inputs, ensure_topics

__all__ = ["StackError", "cluster_settings", "describe", "down", "ensure_topics", "named_workers", "start_worker",
           "start_workers", "status", "stop_worker", "up", "worker_settings"]


class StackError(Exception):
    pass


def _local_kafka(settings: Settings, brokers: int | None = None):
    """The local Kafka under $NPSFLOW_HOME/kafka: a single broker or a cluster (whichever it holds or
    ``brokers`` asks for)."""
    from deploy.local.kafka import local_kafka

    return local_kafka(settings.home / "kafka", brokers)


def cluster_settings(settings: Settings, brokers: int, env: dict | None = None) -> Settings:
    """On a local cluster of ``brokers`` nodes the topics are replicated min(3, N) times with min ISR one less,
    unless NPSFLOW_REPLICATION_FACTOR / NPSFLOW_MIN_ISR say otherwise."""
    env = os.environ if env is None else env
    if brokers <= 1:
        return settings
    rf = settings.replication_factor if env.get("NPSFLOW_REPLICATION_FACTOR") else min(3, brokers)
    isr = settings.min_isr if env.get("NPSFLOW_MIN_ISR") else (max(1, rf - 1) if rf > 1 else None)
    return replace(settings, replication_factor=rf, min_isr=isr)


PROCESS_PREFIX = "process-"
WEB_PREFIX = "web-"


def default_web(workers: int) -> int:
    """Web workers `stack up` starts unless told: one beside a split stack (process + sink), none beside the
    single ``all`` worker."""
    return 1 if workers > 1 else 0


def worker_settings(settings: Settings, workers: int, web: int = 0) -> list[Settings]:
    """The settings of each background worker: one ``all`` worker; or, for ``workers`` > 1, the ``sink`` worker
    (unnamed: worker.json, what the CLI asks; it alone opens an embedded ClickHouse) and ``workers`` process
    workers named process-1 … process-M on free ports (one consumer group: the app id is the namespace); then
    ``web`` web workers named web-1 … web-K on free ports."""
    if workers < 1:
        raise StackError("--workers must be at least 1")
    if web < 0:
        raise StackError("--web must not be negative")
    # each named worker listens on free ports and advertises its own internal listener (not one set for all)
    free = {"public_bind": replace(settings.public_bind, port=None),
            "internal_bind": replace(settings.internal_bind, port=None), "internal_advertised": None}
    webs = [replace(settings, role="web", worker_name=f"{WEB_PREFIX}{i}", **free) for i in range(1, web + 1)]
    if workers == 1:
        return [settings, *webs]
    return [replace(settings, role="sink"), *(
        replace(settings, role="process", worker_name=f"{PROCESS_PREFIX}{i}", **free) for i in range(1, workers + 1)),
        *webs]


def named_workers(settings: Settings) -> list[Settings]:
    """The settings of every named worker with files under $NPSFLOW_HOME/workers (running or not)."""
    folder = settings.home / "workers"
    names = sorted({p.stem for p in folder.glob("*.pid")} | {p.stem for p in folder.glob("*.json")})
    return [replace(settings, worker_name=name) for name in names]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def spawn_worker(settings: Settings, bootstrap: str) -> subprocess.Popen | None:
    """Launch `npsflow worker` in the background (its own session) with ``settings``; None if it already runs."""
    info = settings.worker_info()
    if info and info.get("ready"):
        return None
    settings.worker_pid_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.to_env(), "NPSFLOW_KAFKA": bootstrap}
    if not settings.worker_name:
        env.pop("NPSFLOW_WORKER_NAME", None)
    if not settings.internal_advertised:
        env.pop("NPSFLOW_INTERNAL_ADVERTISED_URL", None)
    with open(settings.worker_log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "npsflow.cli", "worker"], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    settings.worker_pid_file.write_text(str(proc.pid))
    return proc


def wait_worker(settings: Settings, proc: subprocess.Popen | None, timeout: float = 120.0) -> dict:
    """Wait until the worker ``proc`` announced itself ready in its worker file; stopped on a timeout."""
    log_path, deadline = settings.worker_log, time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"worker{_named(settings)} exited with code {proc.returncode} during start; "
                             f"last lines of {log_path}:\n{_tail(log_path)}")
        info = settings.worker_info()
        if info and info.get("ready") and (proc is None or info.get("pid") == proc.pid):
            return info
        time.sleep(0.2)
    stop_worker(settings)
    raise StackError(f"worker{_named(settings)} not ready after {timeout:.0f}s; last lines of {log_path}:\n"
                     f"{_tail(log_path)}")


def _named(settings: Settings) -> str:
    return f" {settings.worker_name}" if settings.worker_name else ""


def start_worker(settings: Settings, bootstrap: str, timeout: float = 120.0) -> dict:
    return wait_worker(settings, spawn_worker(settings, bootstrap), timeout)


def start_workers(all_settings: list[Settings], bootstrap: str, timeout: float = 180.0) -> list[dict]:
    """Launch every worker at once (they join the group together: fewer rebalances), then wait for each; on a
    failure every one of them is stopped."""
    try:
        procs = [spawn_worker(s, bootstrap) for s in all_settings]
        return [wait_worker(s, p, timeout) for s, p in zip(all_settings, procs)]
    except BaseException:
        for s in all_settings:
            stop_worker(s)
        raise


def _signal_worker(pid: int, sig: int) -> bool:
    """Send ``sig`` to our worker's process group (it runs in its own session) — only after checking that
    ``pid`` still is an npsflow worker: a stale worker.pid may name a pid the OS gave to another process."""
    if not is_worker_process(pid):
        return False
    try:
        if os.getpgid(pid) == pid:  # started with start_new_session: its group holds its children too
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except OSError:
        return False
    return True


def stop_worker(settings: Settings, timeout: float = 30.0) -> bool:
    """Stop the background worker named by worker.pid; True if one was stopped.

    A pid whose process is gone or is not an npsflow worker (``/proc/<pid>/cmdline`` shows no
    ``npsflow.cli … worker``) is stale: nothing is signalled, the pid/info files are removed.
    """
    pid_file = settings.worker_pid_file
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    stopped = False
    if _alive(pid) and _signal_worker(pid, signal.SIGTERM):
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal_worker(pid, signal.SIGKILL)
        stopped = True
    pid_file.unlink(missing_ok=True)
    settings.worker_file.unlink(missing_ok=True)
    return stopped


def up(settings: Settings, brokers: int | None = None, workers: int = 1, web: int | None = None) -> dict:
    """Start the local Kafka (``brokers`` nodes; None: what $NPSFLOW_HOME/kafka holds, else one) unless
    NPSFLOW_KAFKA names one, create the topics, start the workers (``worker_settings``; ``web`` None:
    ``default_web``). Anything started is stopped again when a later step fails. Returns ``{"kafka", "worker"
    (the one the CLI asks), "workers" (process workers), "web" (web workers)}``."""
    dispatch_inputs(settings)  # refuse a broken programs/channels file before starting anything
    plan = worker_settings(settings, workers, default_web(workers) if web is None else web)
    if settings.kafka:
        if brokers and brokers > 1:
            raise StackError("--brokers starts a local cluster; NPSFLOW_KAFKA names an existing one: "
                             "set NPSFLOW_REPLICATION_FACTOR / NPSFLOW_MIN_ISR for it instead")
        return {"kafka": {"external": True, "bootstrap": settings.kafka}, **_up_workers(settings, plan,
                                                                                          settings.kafka)}
    kafka = _local_kafka(settings, brokers)
    started = not kafka.is_running()
    bootstrap = kafka.start()
    size = kafka.status().get("size", 1)
    try:
        plan = [cluster_settings(s, size) for s in plan]
        return {"kafka": kafka.status(), **_up_workers(plan[0], plan, bootstrap)}
    except BaseException:
        if started:
            kafka.stop()
        raise


def _up_workers(settings: Settings, plan: list[Settings], bootstrap: str) -> dict:
    ensure_topics(settings, bootstrap)
    infos = start_workers(plan, bootstrap)
    webs = [i for i in infos[1:] if i.get("role") == "web"]
    return {"worker": infos[0], "workers": [i for i in infos[1:] if i.get("role") != "web"], "web": webs}


def down(settings: Settings) -> dict:
    named = [s.worker_name for s in named_workers(settings) if stop_worker(s)]
    worker_stopped = stop_worker(settings)
    kafka_stopped = False
    if not settings.kafka:
        kafka = _local_kafka(settings)
        kafka_stopped = bool(kafka.status().get("running"))
        kafka.stop()
    return {"worker_stopped": worker_stopped, "workers_stopped": named, "kafka_stopped": kafka_stopped}


def status(settings: Settings) -> dict:
    broker = {"external": True, "bootstrap": settings.kafka} if settings.kafka else _local_kafka(settings).status()
    broker["security"] = settings.kafka_security.describe()
    info = settings.worker_info()
    named = [_shown(s.worker_info()) or {"name": s.worker_name, "running": False} for s in named_workers(settings)]
    web = [w for w in named if (w.get("name") or "").startswith(WEB_PREFIX)]
    return {"kafka": broker, "worker": _shown(info) or {"running": False},
            "workers": [w for w in named if w not in web], "web": web, "clickhouse_dsn": settings.clickhouse_dsn_shown}


def _shown(info: dict | None) -> dict | None:
    """A worker.json for display: a DSN written by an older version may hold a password."""
    if info and info.get("clickhouse_dsn"):
        return {**info, "clickhouse_dsn": redact_dsn(info["clickhouse_dsn"])}
    return info


def describe(state: dict) -> str:
    return json.dumps(state, indent=2, default=str)
