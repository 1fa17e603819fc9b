"""`npsflow stack up | down | status`: the local broker plus one background worker, ready when `up` returns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from npsflow.config import Settings, is_worker_process, redact_dsn
from npsflow.prepare import dispatch_inputs, ensure_topics

__all__ = ["StackError", "describe", "down", "ensure_topics", "start_worker", "status", "stop_worker", "up"]


class StackError(Exception):
    pass


def _local_kafka(settings: Settings):
    from deploy.local.kafka import LocalKafka

    return LocalKafka(settings.home / "kafka")


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


def start_worker(settings: Settings, bootstrap: str, timeout: float = 120.0) -> dict:
    info = settings.worker_info()
    if info and info.get("ready"):
        return info
    settings.home.mkdir(parents=True, exist_ok=True)
    log_path = settings.home / "worker.log"
    env = {**os.environ, **settings.to_env(), "NPSFLOW_KAFKA": bootstrap}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "npsflow.cli", "worker"], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    (settings.home / "worker.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"worker exited with code {proc.returncode} during start; "
                             f"last lines of {log_path}:\n{_tail(log_path)}")
        info = settings.worker_info()
        if info and info.get("ready") and info.get("pid") == proc.pid:
            return info
        time.sleep(0.2)
    stop_worker(settings)
    raise StackError(f"worker not ready after {timeout:.0f}s; last lines of {log_path}:\n{_tail(log_path)}")


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
    pid_file = settings.home / "worker.pid"
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


def up(settings: Settings) -> dict:
    dispatch_inputs(settings)  # refuse a broken programs/channels file before starting anything
    if settings.kafka:
        bootstrap = settings.kafka
        broker = {"external": True, "bootstrap": bootstrap}
    else:
        kafka = _local_kafka(settings)
        bootstrap = kafka.start()
        broker = kafka.status()
    ensure_topics(settings, bootstrap)
    worker = start_worker(settings, bootstrap)
    return {"kafka": broker, "worker": worker}


def down(settings: Settings) -> dict:
    worker_stopped = stop_worker(settings)
    kafka_stopped = False
    if not settings.kafka:
        kafka = _local_kafka(settings)
        kafka_stopped = bool(kafka.status().get("running"))
        kafka.stop()
    return {"worker_stopped": worker_stopped, "kafka_stopped": kafka_stopped}


def status(settings: Settings) -> dict:
    broker = {"external": True, "bootstrap": settings.kafka} if settings.kafka else _local_kafka(settings).status()
    broker["security"] = settings.kafka_security.describe()
    info = settings.worker_info()
    if info and info.get("clickhouse_dsn"):  # a worker.json written by an older version may hold a password
        info = {**info, "clickhouse_dsn": redact_dsn(info["clickhouse_dsn"])}
    return {"kafka": broker, "worker": info or {"running": False}, "clickhouse_dsn": settings.clickhouse_dsn_shown}


def describe(state: dict) -> str:
    return json.dumps(state, indent=2, default=str)
