#!/usr/bin/env python
"""Throughput of the npsflow pipeline against a bare aiokafka + fastavro consume loop, on one real broker.

    .venv/bin/python bench/pipeline_throughput.py [--count 20000] [--keep] [--profile] [--no-quix] [--no-latency]
    make bench

One run starts a throwaway local Kafka broker (deploy.local.kafka, KRaft, in a temp dir) and measures:

  producer   produce-only: N pre-encoded RawResponse records (keyed by response_id, acks=all) from a separate
             producer process to an empty 6-partition topic. This is the ceiling of every "live" figure below.
  baseline   AIOKafkaConsumer (fresh group, earliest, getmany(max_records=10000)) + AvroCodec().decode() of
             every record, two ways:
               preloaded  the N records are already in the topic; clock from partition assignment to the Nth
                          decoded record (the group join is excluded and reported separately);
               live       consumer joined first; the producer process then sends all N as fast as it can;
                          clock from the producer's first send to the Nth decoded record.
  pipeline   the whole worker (`python -m npsflow.cli worker`: classify → classified + window deltas → windows
             → window updates; sink agents → embedded ClickHouse) in a fresh NPSFLOW_HOME / NPSFLOW_NAMESPACE.
             Started and waited for until ready (worker.json), then the same producer process sends the N records
             to the namespace's raw topic; clock from the first send until the worker's counter
             `sink.responses.rows` (incremented after the ClickHouse insert returned) reaches N, polled every
             0.1 s over GET /api/v1/stats. Afterwards GET /api/v1/report checks total.responses == N.

  quix       the same responses job written with Quix Streams (bench/quix_peer.py, its own process, its own chDB
             directory; needs the extra "bench": quixstreams, confluent-kafka). Started and ready (raw partitions
             assigned), then the same producer process sends the same N records to the peer's raw topic; clock from
             the first send until the peer reports N rows inserted into its ClickHouse. Then the results of both are
             checked against each other and against the records themselves: N responses in each ClickHouse store,
             the same promoter / passive / detractor counts overall and per location (npsflow: GET
             /api/v1/report?by=location), the same per-segment totals (npsflow: the latest 24h WindowUpdate per
             segment on <ns>.windows; Quix: its hourly tumbling windows, summed) → `quix_exact`. --no-quix skips it.
  latency    a fresh worker at a steady load of half the pipeline's measured rate for --latency-seconds (15):
             response produced → the first `overall=all` 24h WindowUpdate whose `responses` >= k (consumed from
             <ns>.windows), and → the worker's `sink.responses.rows` >= k (polled every 20 ms over /api/v1/stats).
             p50/p90/p99/max, also per 5 s slice of send time. --no-latency skips it.

The headline ratio is pipeline / baseline-live: both clocks start at the same event (first send by an identical
producer process) and stop when the last record has been fully handled, so producer speed, broker latency and
batching delays hit both sides alike. (Pre-loading the raw topic before starting the worker would fold the
worker's ~2 s start-up into the measurement, or leave it unclear where the clock starts.)

Besides the rates the script prints per-stage completion times from the /api/v1/stats timeline and the CPU
seconds of the worker's threads, the broker JVM and the producer during the pipeline run. `--profile` runs the
worker under cProfile (slower!) and prints its top functions. The last line is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import ScratchBroker  # noqa: E402

PARTITIONS = 6
POLL = 0.1
POLL_LATENCY = 0.02
DONE_COUNTERS = ("sink.responses.rows", "sink.responses.events")
STALL_SECONDS = 60.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- records
def make_payloads(count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """N valid, unique simulated responses as (key, Confluent-Avro RawResponse) pairs."""
    from npsflow.ingest import to_raw_response
    from npsflow.simulate import ResponseSimulator
    from schemas import codec as avro

    codec = avro.AvroCodec()
    out = []
    for obj in ResponseSimulator(seed=seed).records(count):
        rec = to_raw_response(obj, source="bench")
        out.append((rec["response_id"].encode(), codec.encode(avro.RAW_RESPONSE, rec)))
    return out


# ------------------------------------------------------------------------------------------ producer
# The producer runs in its own process (this script with --_produce), identical for every measurement, so it
# never competes with the measured consumer for this interpreter's GIL. Protocol: it connects, prints
# "ready", waits for a line on stdin, sends everything, flushes, prints one JSON line with its timestamps.
async def _produce_main(bootstrap: str, topic: str, payload_file: str, rate: float = 0.0) -> None:
    from aiokafka import AIOKafkaProducer

    with open(payload_file, "rb") as fh:
        payloads = pickle.load(fh)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024, max_request_size=4 * 1024 * 1024,
                                client_id="npsflow-bench")
    await producer.start()
    try:
        await producer.partitions_for(topic)  # metadata fetched before the clock starts
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu0 = time.process_time()
        t0 = time.monotonic()
        futures = []
        sends = []  # rate mode: when each record was handed to the producer, seconds after t0
        if rate > 0:  # a steady load: record k is sent at t0 + k / rate (never earlier)
            for k, (key, value) in enumerate(payloads):
                delay = t0 + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sends.append(round(time.monotonic() - t0, 6))
                futures.append(await producer.send(topic, value, key=key))
        else:
            for key, value in payloads:
                futures.append(await producer.send(topic, value, key=key))
        t_enqueued = time.monotonic()
        await asyncio.gather(*futures)
        t1 = time.monotonic()
        print(json.dumps({"t_start": t0, "t_enqueued": t_enqueued, "t_acked": t1, "count": len(payloads),
                          "cpu_s": time.process_time() - cpu0, "sends": sends}), flush=True)
    finally:
        await producer.stop()


class ProducerProc:
    """The producer child process; `go()` starts sending, `result()` waits for its timestamps."""

    def __init__(self, bootstrap: str, topic: str, payload_file: Path, rate: float = 0.0):
        self.proc = subprocess.Popen([sys.executable, __file__, "--_produce", bootstrap, topic, str(payload_file),
                                      "--_rate", str(rate)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"producer did not start (said {line!r})")

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 600) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode:
            raise RuntimeError(f"producer exited with {self.proc.returncode}")
        return json.loads(out.strip().splitlines()[-1])


def produce_only(bootstrap: str, topic: str, payload_file: Path) -> dict:
    p = ProducerProc(bootstrap, topic, payload_file)
    p.go()
    r = p.result()
    r["seconds"] = r["t_acked"] - r["t_start"]
    r["rate"] = r["count"] / r["seconds"]
    return r


# ------------------------------------------------------------------------------------------ baseline
async def _consume(bootstrap: str, topic: str, count: int, start_producer=None) -> dict:
    from aiokafka import AIOKafkaConsumer
    from schemas import codec as avro

    codec = avro.AvroCodec()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", client_id="npsflow-bench-baseline")
    t_start = time.monotonic()
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.01)
        t_assigned = time.monotonic()
        producer = None
        if start_producer is not None:
            producer = await asyncio.to_thread(start_producer)  # connects, then "go"
        cpu0 = time.process_time()
        n = 0
        while n < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=10000)
            for records in batches.values():
                for msg in records:
                    codec.decode(msg.value, expected=avro.RAW_RESPONSE)
                    n += 1
        t_done = time.monotonic()
        cpu = time.process_time() - cpu0
    finally:
        await consumer.stop()
    out = {"count": n, "join_seconds": t_assigned - t_start, "consumer_cpu_s": cpu}
    if producer is not None:
        prod = await asyncio.to_thread(producer.result)
        out.update(seconds=t_done - prod["t_start"], producer=prod,
                   producer_seconds=prod["t_acked"] - prod["t_start"])
    else:
        out["seconds"] = t_done - t_assigned
    out["rate"] = n / out["seconds"]
    return out


def baseline_preloaded(bootstrap: str, topic: str, payload_file: Path, count: int) -> dict:
    produce_only(bootstrap, topic, payload_file)
    return asyncio.run(_consume(bootstrap, topic, count))


def baseline_live(bootstrap: str, topic: str, payload_file: Path, count: int) -> dict:
    def start():
        p = ProducerProc(bootstrap, topic, payload_file)
        p.go()
        return p

    return asyncio.run(_consume(bootstrap, topic, count, start_producer=start))


# ------------------------------------------------------------------------------------------ pipeline
def worker_api(settings) -> str:
    """Base URL of the worker's read API (stats, report, windows), from its ``worker.json``. The one place that
    knows how the bench reaches the worker: adapt it when the read API moves (e.g. to an internal listener)."""
    info = settings.worker_info() or {}
    if not info.get("internal_url"):
        raise RuntimeError(f"worker.json has no internal_url: {info}")
    return info["internal_url"].rstrip("/")  # the internal listener: stats, report, windows


def _get(api: str, path: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(f"{api}{path}", timeout=timeout) as resp:
        return json.loads(resp.read())


def _worker_settings(tmp: Path, bootstrap: str, name: str):
    """Settings of a fresh worker (own home, namespace, chDB directory) whose topics exist."""
    from npsflow import config, stack

    home = tmp / name
    env = {k: v for k, v in os.environ.items() if k.startswith("NPSFLOW_")}  # user knobs (SINK_MAX_ROWS, …)
    env.update(NPSFLOW_HOME=str(home), NPSFLOW_KAFKA=bootstrap,
               NPSFLOW_NAMESPACE="bench" + uuid.uuid4().hex[:8],
               NPSFLOW_CLICKHOUSE_DSN=f"chdb://{home / 'clickhouse'}")
    env.pop("NPSFLOW_WEB_PORT", None)
    settings = config.load(env)
    home.mkdir(parents=True, exist_ok=True)
    stack.ensure_topics(settings, bootstrap)
    return settings


def read_topic(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes]]:
    """Every record of ``topic`` up to its current end, as (partition, key, value), in order per partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             client_id="npsflow-bench-reader")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic} did not reach its end offsets")
            for tp, msgs in consumer.poll(timeout_ms=200, max_records=10000).items():
                out.extend((tp.partition, m.key, m.value) for m in msgs if m.offset < end[tp])
        return out
    finally:
        consumer.close()


def npsflow_windows(bootstrap: str, topic: str, window: str = "24h") -> dict[str, list[int]]:
    """The latest (highest seq) WindowUpdate of ``window`` per segment on the worker's windows topic, as
    {"dim=value": [promoters, passives, detractors]}."""
    from schemas import codec as avro

    codec = avro.AvroCodec()
    latest: dict[str, tuple[int, list[int]]] = {}
    for _, _, value in read_topic(bootstrap, topic):
        u = codec.decode(value, expected=avro.WINDOW_UPDATE)
        if u["window"] != window:
            continue
        seg = f"{u['dimension']}={u['segment_value']}"
        if seg not in latest or u["seq"] > latest[seg][0]:
            latest[seg] = (u["seq"], [u["promoters"], u["passives"], u["detractors"]])
    return {seg: counts for seg, (_, counts) in sorted(latest.items())}


def quix_windows(bootstrap: str, topic: str) -> dict[str, list[int]]:
    """The Quix peer's hourly windows: the last update per (segment, window start) (one segment = one key = one
    partition, so the last in partition order), summed over the hours, as {"dim=value": [P, Pa, D]}."""
    last: dict[tuple[str, int], list[int]] = {}
    for _, key, value in read_topic(bootstrap, topic):
        v = json.loads(value)
        last[(key.decode(), int(v["start"]))] = v["value"]
    out: dict[str, list[int]] = {}
    for (seg, _), counts in last.items():
        acc = out.setdefault(seg, [0, 0, 0])
        for i in range(3):
            acc[i] += counts[i]
    return dict(sorted(out.items()))


def truth(payload_file: Path, dimensions: list[str]) -> dict:
    """What both must find, computed here from the records themselves (validate + classify, no dedup needed:
    the records are unique): counts overall, per location and per segment."""
    from datetime import datetime, timezone

    from schemas import codec as avro
    from streams.responses import validate
    from streams.windows import segment_keys

    codec, index = avro.AvroCodec(), {"promoter": 0, "passive": 1, "detractor": 2}
    overall, by_location, segments = [0, 0, 0], {}, {}
    for _, value in pickle.loads(payload_file.read_bytes()):
        r = validate(codec.decode(value, expected=avro.RAW_RESPONSE), datetime.now(timezone.utc))
        i = index[r.category.value]
        overall[i] += 1
        by_location.setdefault(r.segment.get("location") or "(none)", [0, 0, 0])[i] += 1
        for key in segment_keys(r.segment, dimensions):
            segments.setdefault(str(key), [0, 0, 0])[i] += 1
    return {"responses": sum(overall), "overall": overall, "by_location": dict(sorted(by_location.items())),
            "windows": dict(sorted(segments.items()))}


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user+system) per thread name of a process, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "main" if tid == str(pid) else comm
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_diff(before: dict, after: dict) -> dict[str, float]:
    d = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in set(before) | set(after)}
    return dict(sorted(((k, v) for k, v in d.items() if v > 0.005), key=lambda kv: -kv[1]))


def _start_profiled_worker(settings, bootstrap: str, prof: Path, timeout: float = 120) -> dict:
    """Like npsflow.stack.start_worker, but `python -m cProfile -o prof -m npsflow.cli worker`."""
    from npsflow import stack

    log_path = settings.home / "worker.log"
    env = {**os.environ, **settings.to_env(), "NPSFLOW_KAFKA": bootstrap}
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "npsflow.cli", "worker"],
                                stdout=fh, stderr=fh, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                cwd=str(ROOT))
    (settings.home / "worker.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"profiled worker exited with {proc.returncode}; see {log_path}")
        info = settings.worker_info()
        if info and info.get("ready") and info.get("pid") == proc.pid:
            return info
        time.sleep(0.2)
    stack.stop_worker(settings)
    raise RuntimeError(f"profiled worker not ready after {timeout}s; see {log_path}")


class Workers:
    """The npsflow workers of one measurement: one ``--role all`` worker, or with ``split`` a ``--role sink``
    worker (owns the embedded ClickHouse, answers the read API) and a ``--role process`` worker (the stream
    agents) in the same consumer group — two processes, so two cores."""

    def __init__(self, settings, bootstrap: str, split: bool, profile: Path | None = None) -> None:
        from dataclasses import replace

        from npsflow import stack

        self.stack = stack
        self.all = [replace(settings, role="sink"), self._process(settings)] if split else [settings]
        self.infos = []
        for s in self.all:
            started = _start_profiled_worker(s, bootstrap, profile) if profile and s.role != "sink" \
                else stack.start_worker(s, bootstrap)
            self.infos.append(started)
        self.api = worker_api(self.all[0])
        self.pids = [info["pid"] for info in self.infos]

    @staticmethod
    def _process(settings):
        from dataclasses import replace

        home = settings.home.parent / (settings.home.name + "-process")
        home.mkdir(parents=True, exist_ok=True)
        return replace(settings, role="process", home=home, clickhouse_dsn=f"chdb://{home / 'unused'}")

    def cpu(self) -> dict:
        out: dict[str, float] = {}
        for settings, pid in zip(self.all, self.pids):
            for name, value in _thread_cpu(pid).items():
                key = name if len(self.all) == 1 else f"{settings.role}:{name}"
                out[key] = out.get(key, 0.0) + value
        return out

    def stop(self) -> None:
        for s in reversed(self.all):
            self.stack.stop_worker(s)


def pipeline(bootstrap: str, tmp: Path, payload_file: Path, count: int, profile: bool, split: bool = False) -> dict:
    from deploy.local.kafka import LocalKafka

    settings = _worker_settings(tmp, bootstrap, "pipeline-home")
    prof = tmp / "worker.prof"
    t_boot = time.monotonic()
    workers = Workers(settings, bootstrap, split, prof if profile else None)
    startup = time.monotonic() - t_boot
    api = workers.api
    broker_pid = LocalKafka(tmp / "kafka").status().get("pid")
    try:
        producer = ProducerProc(bootstrap, settings.topics.raw_responses, payload_file)
        cpu_w0, cpu_b0 = workers.cpu(), _thread_cpu(broker_pid) if broker_pid else {}
        producer.go()
        timeline: list[tuple[float, dict]] = []
        last_change, previous = time.monotonic(), None
        while True:
            stats = _get(api, "/api/v1/stats")
            now = time.monotonic()
            timeline.append((now, stats))
            # the sink's per-table counter (named `.rows`; some versions of the worker call it `.events`)
            if max(stats.get(k, 0) for k in DONE_COUNTERS) >= count:
                break
            if stats != previous:
                last_change, previous = now, stats
            elif now - last_change > STALL_SECONDS:
                raise RuntimeError(f"pipeline stalled for {STALL_SECONDS}s; last stats {stats}")
            time.sleep(POLL)
        t_done = timeline[-1][0]
        cpu_w1, cpu_b1 = workers.cpu(), _thread_cpu(broker_pid) if broker_pid else {}
        prod = producer.result()
        t0 = prod["t_start"]
        # let the window updates drain too (not part of the headline figure), then check ClickHouse
        final = stats
        for _ in range(50):
            time.sleep(0.2)
            s = _get(api, "/api/v1/stats")
            if s == final:
                break
            final = s
        report = _get(api, "/api/v1/report?by=location", timeout=120)
        deadletters = _get(api, "/api/v1/deadletters", timeout=120)
        # the window updates (the topic the worker writes; the last of them may still be on the way)
        deadline = time.monotonic() + 30
        while True:
            windows = npsflow_windows(bootstrap, settings.topics.windows)
            if sum(windows.get("overall=all", ())) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        workers.stop()
    timeline.append((time.monotonic(), final))
    stages = {}
    for key in sorted(final):
        target = final[key]
        reached = next((t for t, s in timeline if s.get(key, 0) >= target), None)
        first = next((t for t, s in timeline if s.get(key, 0) > 0), None)
        stages[key] = {"value": target,
                       "first_s": None if first is None else round(max(first - t0, 0.0), 2),
                       "done_s": None if reached is None else round(reached - t0, 2)}
    seconds = t_done - t0
    out = {"count": count, "seconds": seconds, "rate": count / seconds, "worker_startup_s": startup,
           "producer": prod, "producer_seconds": prod["t_acked"] - t0, "stages": stages,
           "clickhouse_total_responses": (report.get("total") or {}).get("responses"),
           "dead_letters": deadletters.get("total"),
           "report_overall": [(report.get("total") or {}).get(k) for k in ("promoters", "passives", "detractors")],
           "report_by_location": {row["location"]: [row["promoters"], row["passives"], row["detractors"]]
                                  for row in report.get("rows", [])},
           "windows_24h": windows, "dimensions": list(settings.dimensions),
           "cpu_seconds": {"worker_threads": _cpu_diff(cpu_w0, cpu_w1),
                           "broker_jvm": round(sum(cpu_b1.values()) - sum(cpu_b0.values()), 2),
                           "producer": round(prod["cpu_s"], 2)},
           "sink_max_rows": settings.sink_max_rows, "sink_max_age": settings.sink_max_age,
           "profiled": profile, "split": split}
    if profile:
        out["profile_file"] = str(prof)
    return out


# ------------------------------------------------------------------------------------------- quix peer
def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, int(round(p * len(v) + 0.5)) - 1))], 1)

    return {"n": len(v), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": round(v[-1], 1)}


class PeerProc:
    """bench/quix_peer.py in its own process; its stdout JSON lines are read by a thread into ``lines``."""

    def __init__(self, python: str, bootstrap: str, namespace: str, home: Path, dimensions: list[str]):
        import queue
        import threading

        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / "quix-peer.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        with open(self.log_path, "ab") as log_fh:
            self.proc = subprocess.Popen(
                [python, str(ROOT / "bench" / "quix_peer.py"), "--bootstrap", bootstrap, "--namespace", namespace,
                 "--chdb", str(home / "clickhouse"), "--state-dir", str(home / "state"),
                 "--dimensions", ",".join(dimensions)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_fh, text=True, cwd=str(ROOT), env=env,
                start_new_session=True)
        self.lines: "queue.Queue[dict]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                log(f"  quix peer said: {line.rstrip()}")
        self.lines.put({"eof": True})

    def next(self, timeout: float) -> dict:
        import queue

        try:
            msg = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"quix peer silent for {timeout}s; see {self.log_path}") from None
        if msg.get("eof"):
            raise RuntimeError(f"quix peer exited ({self.proc.poll()}); see {self.log_path}")
        return msg

    def stop(self) -> dict | None:
        """Ask for a clean stop; returns its report (counts read back from its chDB)."""
        report = None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            while report is None:
                report = self.next(60).get("report")
        finally:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return report


def quix_peer(bootstrap: str, tmp: Path, payload_file: Path, count: int, python: str,
              dimensions: list[str]) -> dict:
    """The same job in Quix Streams: started and ready (raw partitions assigned) first, then the same producer
    process sends the N records to the peer's raw topic; clock from the first send until the peer reports N
    rows inserted into its chDB (its own report line, stamped with CLOCK_MONOTONIC after the insert returned)."""
    from deploy.local.kafka import LocalKafka, create_topics

    ns = "quix" + uuid.uuid4().hex[:8]
    raw = f"{ns}.responses.raw"
    create_topics(bootstrap, {raw: PARTITIONS, f"{ns}.deadletters": PARTITIONS, f"{ns}.quix-windows": PARTITIONS})
    t_boot = time.monotonic()
    peer = PeerProc(python, bootstrap, ns, tmp / "quix-home", dimensions)
    report = None
    try:
        while not peer.next(180).get("ready"):
            pass
        startup = time.monotonic() - t_boot
        broker_pid = LocalKafka(tmp / "kafka").status().get("pid")
        producer = ProducerProc(bootstrap, raw, payload_file)
        cpu_p0, cpu_b0 = _thread_cpu(peer.proc.pid), _thread_cpu(broker_pid) if broker_pid else {}
        producer.go()
        rows, t_done, first_rows = 0, None, None
        while rows < count:
            msg = peer.next(STALL_SECONDS)
            if "rows" in msg:
                rows, t_done = msg["rows"], msg["t"]
                first_rows = first_rows or t_done
        cpu_p1, cpu_b1 = _thread_cpu(peer.proc.pid), _thread_cpu(broker_pid) if broker_pid else {}
        prod = producer.result()
        t0 = prod["t_start"]
        deadline = time.monotonic() + 30
        while True:
            windows = quix_windows(bootstrap, f"{ns}.quix-windows")
            if sum(windows.get("overall=all", ())) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        t_windows = time.monotonic()
        dead = len(read_topic(bootstrap, f"{ns}.deadletters"))
        report = peer.stop()
    finally:
        if peer.proc.poll() is None:
            peer.proc.kill()
    seconds = t_done - t0
    return {"count": count, "rows": rows, "seconds": seconds, "rate": count / seconds, "startup_s": startup,
            "first_rows_s": round(first_rows - t0, 2), "windows_read_after_s": round(t_windows - t0, 2),
            "producer_seconds": prod["t_acked"] - t0, "dead_letters": dead, "report": report, "windows": windows,
            "cpu_seconds": {"peer_threads": _cpu_diff(cpu_p0, cpu_p1),
                            "broker_jvm": round(sum(cpu_b1.values()) - sum(cpu_b0.values()), 2),
                            "producer": round(prod["cpu_s"], 2)}}


def compare(expected: dict, pipe: dict, quix: dict) -> dict:
    """Each check: npsflow == Quix == the records' own truth."""
    rep = quix.get("report") or {}
    pairs = {
        "responses": (pipe["clickhouse_total_responses"], rep.get("responses"), expected["responses"]),
        "overall": (pipe["report_overall"], rep.get("overall"), expected["overall"]),
        "by_location": (dict(sorted(pipe["report_by_location"].items())), dict(sorted((rep.get("by_location")
                                                                                      or {}).items())),
                        expected["by_location"]),
        "windows": (pipe["windows_24h"], quix["windows"], expected["windows"]),
    }
    checks = {name: a == b == c for name, (a, b, c) in pairs.items()}
    diffs = {}
    for name, (a, b, c) in pairs.items():
        if not checks[name]:
            if isinstance(c, dict):
                keys = sorted(set(a) | set(b) | set(c))
                diffs[name] = {k: {"npsflow": a.get(k), "quix": b.get(k), "truth": c.get(k)} for k in keys
                               if not a.get(k) == b.get(k) == c.get(k)}
            else:
                diffs[name] = {"npsflow": a, "quix": b, "truth": c}
    return {"checks": checks, "exact": all(checks.values()), "diffs": diffs}


# --------------------------------------------------------------------------------------------- latency
def _first_reach(sends: list[float], seen: list[tuple[float, int]]) -> tuple[list[float], int]:
    """For the k-th send (1-based), the first observation (time, count) with count >= k: latencies in ms, and
    how many sends were never reached."""
    out, i, best = [], 0, 0
    seen = sorted(seen)
    for k, t_send in enumerate(sends, start=1):
        while best < k and i < len(seen):
            best = max(best, seen[i][1])
            i += 1
        if best < k:
            return out, len(sends) - len(out)
        out.append((seen[i - 1][0] - t_send) * 1000.0)
    return out, 0


def latency(bootstrap: str, tmp: Path, rate: float, seconds: float, seed: int, split: bool = False) -> dict:
    """A fresh worker at a steady load of ``rate`` records/s for ``seconds``: response produced → the first
    ``overall=all`` 24h WindowUpdate whose ``responses`` >= k (consumed from the windows topic here), and →
    ``sink.responses.rows`` >= k (polled every POLL_LATENCY s over /api/v1/stats)."""
    import threading

    from kafka import KafkaConsumer, TopicPartition

    from schemas import codec as avro

    n = max(int(rate * seconds), 50)
    payload_file = tmp / "latency-payloads.pickle"
    payload_file.write_bytes(pickle.dumps(make_payloads(n, seed + 1)))  # fresh: responded_at in the last hour
    settings = _worker_settings(tmp, bootstrap, "latency-home")
    workers = Workers(settings, bootstrap, split)
    api = workers.api
    stop = threading.Event()
    updates: list[tuple[float, int]] = []
    polls: list[tuple[float, int]] = []
    errors: list[str] = []

    def watch_windows() -> None:
        codec = avro.AvroCodec()
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                 fetch_max_wait_ms=10, client_id="npsflow-bench-latency")
        try:
            tps = [TopicPartition(settings.topics.windows, p)
                   for p in sorted(consumer.partitions_for_topic(settings.topics.windows) or ())]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ready.set()
            while not stop.is_set():
                for msgs in consumer.poll(timeout_ms=10, max_records=10000).values():
                    now = time.monotonic()
                    for m in msgs:
                        u = codec.decode(m.value, expected=avro.WINDOW_UPDATE)
                        if u["dimension"] == "overall" and u["window"] == "24h":
                            updates.append((now, u["responses"]))
        except Exception as exc:  # reported, not hidden
            errors.append(f"windows watcher: {type(exc).__name__}: {exc}")
            ready.set()
        finally:
            consumer.close()

    def poll_rows() -> None:
        tick = time.monotonic()
        while not stop.is_set():
            try:
                s = _get(api, "/api/v1/stats")
            except Exception as exc:
                errors.append(f"stats poller: {type(exc).__name__}: {exc}")
                return
            polls.append((time.monotonic(), max(s.get(k, 0) for k in DONE_COUNTERS)))  # when the answer came
            tick = max(tick + POLL_LATENCY, time.monotonic() - POLL_LATENCY)
            time.sleep(max(0.0, tick - time.monotonic()))

    ready = threading.Event()
    threads = [threading.Thread(target=watch_windows, daemon=True), threading.Thread(target=poll_rows, daemon=True)]
    try:
        threads[0].start()
        ready.wait(30)
        threads[1].start()
        producer = ProducerProc(bootstrap, settings.topics.raw_responses, payload_file, rate=rate)
        producer.go()
        prod = producer.result(timeout=seconds * 4 + 120)
        deadline = time.monotonic() + STALL_SECONDS
        while time.monotonic() < deadline and not errors:
            if (updates and max(u for _, u in updates) >= n) and (polls and polls[-1][1] >= n):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        workers.stop()
    sends = [prod["t_start"] + x for x in prod["sends"]]
    lat_w, missing_w = _first_reach(sends, list(updates))
    lat_c, missing_c = _first_reach(sends, list(polls))
    gaps = [b[0] - a[0] for a, b in zip(polls, polls[1:])]

    def slices(lat: list[float], width: float = 5.0) -> dict:
        """p50 / p99 of the records sent in each ``width``-second slice of the run: a growing figure is a
        backlog (the load is above what the worker sustains), a flat one is batching/commit delay."""
        out: dict[str, dict] = {}
        for offset, ms in zip(prod["sends"], lat):
            out.setdefault(f"{int(offset // width) * width:g}s", []).append(ms)
        return {k: {kk: v for kk, v in _percentiles(vs).items() if kk in ("p50", "p99")} for k, vs in out.items()}

    return {"rate": rate, "count": n, "seconds": seconds, "send_seconds": round(prod["sends"][-1], 2),
            "window_ms": _percentiles(lat_w), "window_missing": missing_w,
            "clickhouse_ms": _percentiles(lat_c), "clickhouse_missing": missing_c,
            "window_ms_by_slice": slices(lat_w), "clickhouse_ms_by_slice": slices(lat_c),
            "poll_interval_ms": round(1000 * sum(gaps) / len(gaps), 1) if gaps else None,
            "errors": errors}


def print_profile(prof: Path, limit: int = 30) -> None:
    import pstats

    for order in ("tottime", "cumulative"):
        print(f"\n--- worker cProfile, top {limit} by {order} (main thread only) ---")
        pstats.Stats(str(prof)).strip_dirs().sort_stats(order).print_stats(limit)


# ------------------------------------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20000, help="records per measurement (default 20000)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (broker, worker home, logs)")
    ap.add_argument("--profile", action="store_true",
                    help="run the worker under cProfile (slows it down) and print its hotspots")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-quix", action="store_true", help="skip the Quix Streams peer")
    ap.add_argument("--no-latency", action="store_true", help="skip the latency run at a steady load")
    ap.add_argument("--split", action="store_true",
                    help="npsflow as two workers in one group: --role process (stream agents) and --role sink "
                         "(ClickHouse), i.e. two processes instead of one --role all worker")
    ap.add_argument("--quix-python", default=sys.executable,
                    help="interpreter with quixstreams installed for the peer (default: this one; `make bench` "
                         "installs the extra 'bench')")
    ap.add_argument("--latency-seconds", type=float, default=15.0, help="length of the steady load (default 15)")
    ap.add_argument("--_produce", nargs=3, metavar=("BOOTSTRAP", "TOPIC", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--_rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._produce:
        asyncio.run(_produce_main(*args._produce, rate=args._rate))
        return 0

    os.chdir(ROOT)
    from deploy.local.kafka import create_topics

    scratch = ScratchBroker("npsflow-bench-", keep=args.keep)
    tmp, kafka = scratch.tmp, scratch.kafka
    log(f"temp dir {tmp}")
    result: dict = {"count": args.count, "partitions": PARTITIONS, "cpus": os.cpu_count(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        t = time.monotonic()
        bootstrap = kafka.start()
        log(f"broker {bootstrap} up in {time.monotonic() - t:.1f}s")
        t = time.monotonic()
        payloads = make_payloads(args.count, args.seed)
        log(f"{args.count} RawResponse records encoded in {time.monotonic() - t:.1f}s "
            f"(avg {sum(len(v) for _, v in payloads) / len(payloads):.0f} bytes)")
        payload_file = tmp / "payloads.pickle"
        payload_file.write_bytes(pickle.dumps(payloads))
        topics = {f"bench-{name}": PARTITIONS for name in ("produce", "preloaded", "live")}
        create_topics(bootstrap, topics)

        log("producer only …")
        result["producer_only"] = prod = produce_only(bootstrap, "bench-produce", payload_file)
        log(f"  producer only        {prod['rate']:9.0f} records/s  ({prod['seconds']:.2f}s)")

        log("baseline, preloaded topic …")
        result["baseline_preloaded"] = pre = baseline_preloaded(bootstrap, "bench-preloaded", payload_file,
                                                                args.count)
        log(f"  baseline preloaded   {pre['rate']:9.0f} records/s  ({pre['seconds']:.2f}s, "
            f"group join {pre['join_seconds']:.1f}s excluded)")

        log("baseline, produce while consuming …")
        result["baseline_live"] = live = baseline_live(bootstrap, "bench-live", payload_file, args.count)
        log(f"  baseline live        {live['rate']:9.0f} records/s  ({live['seconds']:.2f}s; "
            f"producer acked all after {live['producer_seconds']:.2f}s)")

        log("pipeline (worker → ClickHouse), produce while consuming …")
        result["pipeline"] = pipe = pipeline(bootstrap, tmp, payload_file, args.count, args.profile, args.split)
        log(f"  pipeline             {pipe['rate']:9.0f} records/s  ({pipe['seconds']:.2f}s; "
            f"producer acked all after {pipe['producer_seconds']:.2f}s; worker start {pipe['worker_startup_s']:.1f}s)")
        if args.profile:
            print_profile(Path(pipe["profile_file"]))

        quix = check = None
        if not args.no_quix:
            log("quix streams peer (same job → its own ClickHouse), produce while consuming …")
            result["quix"] = quix = quix_peer(bootstrap, tmp, payload_file, args.count, args.quix_python,
                                              pipe["dimensions"])
            log(f"  quix peer            {quix['rate']:9.0f} records/s  ({quix['seconds']:.2f}s; "
                f"peer start {quix['startup_s']:.1f}s)")
            result["check"] = check = compare(truth(payload_file, pipe["dimensions"]), pipe, quix)
            log(f"  results equal (npsflow == quix == records): {check['checks']}")

        lat = None
        if not args.no_latency:
            rate = pipe["rate"] / 2
            log(f"latency at a steady {rate:.0f} records/s (half the pipeline's maximum) for "
                f"{args.latency_seconds:.0f}s, fresh worker …")
            result["latency"] = lat = latency(bootstrap, tmp, rate, args.latency_seconds, args.seed, args.split)
            log(f"  produced → window update  {lat['window_ms']}")
            log(f"  produced → ClickHouse row {lat['clickhouse_ms']} (polls every ~{lat['poll_interval_ms']} ms)")
    finally:
        scratch.close()

    ratio = pipe["rate"] / live["rate"]
    result["ratio_pipeline_to_baseline_live"] = ratio
    result["ratio_pipeline_to_baseline_preloaded"] = pipe["rate"] / pre["rate"]
    result["goal_ratio"] = 0.5
    result["goal_met"] = ratio >= 0.5

    print(f"\nnpsflow pipeline throughput, {args.count} records, {PARTITIONS} partitions, {os.cpu_count()} CPUs")
    print(f"  producer only (ceiling)            {prod['rate']:9.0f} records/s")
    print(f"  baseline preloaded (consume+decode){pre['rate']:9.0f} records/s")
    print(f"  baseline live (first send → last decoded)          {live['rate']:9.0f} records/s")
    print(f"  pipeline live (first send → all rows in ClickHouse){pipe['rate']:9.0f} records/s")
    print(f"  ratio pipeline / baseline live     {ratio:9.2f}   (goal ≥ 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")
    print(f"  ratio pipeline / baseline preloaded{result['ratio_pipeline_to_baseline_preloaded']:9.2f}")
    print(f"  ClickHouse total.responses {pipe['clickhouse_total_responses']}  dead letters {pipe['dead_letters']}")
    print("\n  per-stage counters (/api/v1/stats), seconds after the first send: first increment → final value")
    for key, st in pipe["stages"].items():
        print(f"    {key:34s} {st['value']:>8}   {st['first_s']!s:>6} → {st['done_s']!s:>6}")
    cpu = pipe["cpu_seconds"]
    print(f"\n  CPU seconds during the pipeline run ({pipe['seconds']:.1f}s wall, {os.cpu_count()} cores):")
    print(f"    worker threads: {cpu['worker_threads']}")
    print(f"    broker JVM: {cpu['broker_jvm']}   producer: {cpu['producer']}")
    if quix is not None:
        print(f"\n  Quix Streams peer (first send → all rows in its ClickHouse) {quix['rate']:9.0f} records/s "
              f"({quix['seconds']:.2f}s)")
        print(f"  npsflow / quix                     {pipe['rate'] / quix['rate']:9.3f}")
        print(f"  results equal: {check['checks']}" + ("" if check["exact"] else f"\n  differences: {check['diffs']}"))
        print(f"  quix CPU seconds: {quix['cpu_seconds']}")
    if lat is not None:
        print(f"\n  latency at {lat['rate']:.0f} records/s for {lat['send_seconds']}s ({lat['count']} records), ms:")
        print(f"    produced → window update (overall 24h, Kafka)  {lat['window_ms']}"
              + (f"  never reached: {lat['window_missing']}" if lat["window_missing"] else ""))
        print(f"    produced → row in ClickHouse (stats polled every ~{lat['poll_interval_ms']} ms + HTTP round trip)"
              f"  {lat['clickhouse_ms']}" + (f"  never reached: {lat['clickhouse_missing']}"
                                             if lat["clickhouse_missing"] else ""))
        print(f"    by send time, window update:  {lat['window_ms_by_slice']}")
        print(f"    by send time, ClickHouse row:  {lat['clickhouse_ms_by_slice']}")
        if lat["errors"]:
            print(f"    errors: {lat['errors']}")
    summary = {
        "count": args.count, "date": result["date"], "cpus": os.cpu_count(),
        "producer_only_rps": round(prod["rate"]),
        "baseline_preloaded_rps": round(pre["rate"]),
        "baseline_live_rps": round(live["rate"]),
        "pipeline_rps": round(pipe["rate"]),
        "ratio": round(ratio, 3),
        "ratio_vs_preloaded": round(result["ratio_pipeline_to_baseline_preloaded"], 3),
        "goal_met": ratio >= 0.5,
        "pipeline_seconds": round(pipe["seconds"], 2),
        "clickhouse_total_responses": pipe["clickhouse_total_responses"],
        "stages_done_s": {k: v["done_s"] for k, v in pipe["stages"].items()},
        "worker_cpu_s": cpu["worker_threads"], "broker_cpu_s": cpu["broker_jvm"],
        "profiled": args.profile,
        "quix_rps": round(quix["rate"]) if quix else None,
        "vs_quix": round(pipe["rate"] / quix["rate"], 3) if quix else None,
        "quix_exact": check["exact"] if check else None,
        "window_p99_ms": lat["window_ms"].get("p99") if lat else None,
        "clickhouse_p99_ms": lat["clickhouse_ms"].get("p99") if lat else None,
        "latency_rps": round(lat["rate"]) if lat else None,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
