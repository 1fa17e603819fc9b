"""Stack process management: a stale worker.pid must never make `stack down` signal an unrelated process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from npsflow import config, stack


def started(proc: subprocess.Popen, marker: str) -> subprocess.Popen:
    """Wait until the child has exec'd (right after fork its /proc cmdline is still pytest's)."""
    for _ in range(10000):
        argv = config.process_cmdline(proc.pid) or []
        if marker in argv:
            return proc
        assert proc.poll() is None, "child exited early"
        time.sleep(0.001)
    raise AssertionError(f"child {proc.pid} never showed {marker!r} in its cmdline")


def test_stop_worker_leaves_an_unrelated_process_with_a_reused_pid_alone(tmp_path):
    settings = config.load({"NPSFLOW_HOME": str(tmp_path)})
    # its own session, like a worker: pid == pgid, so an unverified killpg(pid) would hit it
    other = started(subprocess.Popen(["sleep", "30"], start_new_session=True), "30")
    try:
        (tmp_path / "worker.pid").write_text(str(other.pid))
        settings.worker_file.write_text(json.dumps({"pid": other.pid, "web_port": 1, "ready": True}))
        assert settings.worker_info() is None  # a live pid that is not a worker is not "the worker"
        assert stack.stop_worker(settings, timeout=1) is False
        assert other.poll() is None, "stop_worker signalled an unrelated process"
        assert not (tmp_path / "worker.pid").exists() and not settings.worker_file.exists()
    finally:
        other.kill()
        other.wait()


def test_worker_process_detection():
    assert not config.is_worker_process(os.getpid())  # pytest is not a worker
    fake = started(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "npsflow.cli", "worker"]),
                   "npsflow.cli")
    try:
        assert config.is_worker_process(fake.pid)
    finally:
        fake.kill()
        fake.wait()
    assert not config.is_worker_process(fake.pid)  # gone


def test_stop_worker_stops_a_real_looking_worker(tmp_path):
    """A process whose argv is `… npsflow.cli worker` in its own session is signalled (SIGTERM) and stops."""
    settings = config.load({"NPSFLOW_HOME": str(tmp_path)})
    fake = started(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "npsflow.cli", "worker"],
                                    start_new_session=True), "npsflow.cli")
    try:
        (tmp_path / "worker.pid").write_text(str(fake.pid))
        assert stack.stop_worker(settings, timeout=30) is True
        assert fake.wait(timeout=30) is not None
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()
