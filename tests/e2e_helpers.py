"""Helpers for end-to-end tests: run the real CLI and worker against the real local broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from npsflow import config, stack


@dataclass
class Env:
    home: Path
    vars: dict

    @property
    def settings(self) -> config.Settings:
        return config.load(self.vars)

    def cli(self, *args: str, check: bool = True, timeout: float = 120,
            env_without: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        env = {k: v for k, v in self.vars.items() if k not in env_without}
        proc = subprocess.run([sys.executable, "-m", "npsflow.cli", *args], env=env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"npsflow {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def cli_json(self, *args: str):
        return json.loads(self.cli(*args, "--format", "json").stdout)

    @property
    def public_url(self) -> str:
        """The running worker's public listener (survey page, response API)."""
        return self.settings.worker_info()["public_url"]

    @property
    def internal_url(self) -> str:
        """The running worker's internal listener (read APIs, dashboard, stats)."""
        return self.settings.worker_info()["internal_url"]

    def stats(self) -> dict:
        import requests

        from npsflow.reader import internal_headers

        return requests.get(f"{self.internal_url}/api/v1/stats", headers=internal_headers(self.settings),
                            timeout=30).json()

    def start_worker(self) -> dict:
        return stack.start_worker(self.settings, self.vars["NPSFLOW_KAFKA"])

    def stop_worker(self) -> None:
        stack.stop_worker(self.settings)

    def kill_worker(self) -> None:
        """SIGKILL: no graceful shutdown, no final commit."""
        import signal

        pid = int((self.home / "worker.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
            except ChildProcessError:
                break
            time.sleep(0.05)
        (self.home / "worker.json").unlink(missing_ok=True)


def make_env(tmp_path: Path, bootstrap: str, **extra: str) -> Env:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"NPSFLOW_HOME": str(home), "NPSFLOW_KAFKA": bootstrap,
                "NPSFLOW_NAMESPACE": "t" + uuid.uuid4().hex[:10],
                "NPSFLOW_CLICKHOUSE_DSN": f"chdb://{home / 'clickhouse'}", "NPSFLOW_SINK_MAX_AGE": "0.3", **extra})
    return Env(home, env)


def wait_for(predicate, timeout: float = 90, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def write_jsonl(path: Path, lines: list) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False))
            handle.write("\n")
    return path


def read_topic(bootstrap: str, topic: str, n: int, until_idle: bool = False, security=None) -> list:
    """Read at least ``n`` records of ``topic`` from the beginning with a real consumer (no group); with
    ``until_idle``, then everything else there is (until a second passes without a record). ``security``:
    npsflow.kafka_security.KafkaSecurity (SASL/TLS)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    extra = security.aiokafka_kwargs() if security is not None else {}

    async def read() -> list:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **extra)
        await consumer.start()
        out: list = []
        try:
            while len(out) < n:
                for msgs in (await consumer.getmany(timeout_ms=10_000)).values():
                    out.extend(msgs)
            more = until_idle
            while more:
                batches = await consumer.getmany(timeout_ms=1_000)
                for msgs in batches.values():
                    out.extend(msgs)
                more = bool(batches)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def window_audit(bootstrap: str, topics, segment: str = "overall=all") -> dict:
    """Why a live window disagrees with the records: the deltas topic applied the way the windows agent applies it
    (per delta partition in offset order, each raw (partition, offset) once: ``hw``), attributed to answers through
    the raw topic's keys. Returns {"applied": n, "net": {response_id: net count ≠ 1 …}, "items": {rid: [...]}} —
    the answers counted twice (or retracted below zero), with every delta item that touched them (delta partition
    and offset, raw partition and offset, add/retract)."""
    raw = {(r.partition, r.offset): (r.key or b"").decode() for r in
           read_topic(bootstrap, topics.raw_responses, 1, until_idle=True)}
    deltas = sorted((r for r in read_topic(bootstrap, topics.window_deltas, 1, until_idle=True)
                     if r.key == segment.encode()), key=lambda r: (r.partition, r.offset))
    hw: dict[int, int] = {}
    net: dict[str, int] = {}
    items: dict[str, list] = {}
    applied = 0
    for record in deltas:
        for p, o, add_ms, add_cat, ret_ms, ret_cat in json.loads(record.value)["i"]:
            rid = raw.get((p, o), f"?{p}/{o}")
            skipped = o <= hw.get(p, -1)
            items.setdefault(rid, []).append((record.partition, record.offset, p, o, add_cat, ret_cat, skipped))
            if skipped:
                continue
            hw[p] = o
            applied += 1
            net[rid] = net.get(rid, 0) + (add_cat is not None) - (ret_cat is not None)
    odd = {rid: n for rid, n in net.items() if n not in (0, 1)}
    return {"applied": applied, "net": odd, "items": {rid: items[rid] for rid in odd}}
