#!/usr/bin/env python
"""Throughput of the npsflow pipeline against a bare aiokafka + fastavro consume loop, on one real broker.

    .venv/bin/python bench/pipeline_throughput.py [--count 20000] [--keep] [--profile]
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
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTITIONS = 6
POLL = 0.1
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
async def _produce_main(bootstrap: str, topic: str, payload_file: str) -> None:
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
        for key, value in payloads:
            futures.append(await producer.send(topic, value, key=key))
        t_enqueued = time.monotonic()
        await asyncio.gather(*futures)
        t1 = time.monotonic()
        print(json.dumps({"t_start": t0, "t_enqueued": t_enqueued, "t_acked": t1, "count": len(payloads),
                          "cpu_s": time.process_time() - cpu0}), flush=True)
    finally:
        await producer.stop()


class ProducerProc:
    """The producer child process; `go()` starts sending, `result()` waits for its timestamps."""

    def __init__(self, bootstrap: str, topic: str, payload_file: Path):
        self.proc = subprocess.Popen([sys.executable, __file__, "--_produce", bootstrap, topic, str(payload_file)],
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
def _get(port: int, path: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return json.loads(resp.read())


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


def pipeline(bootstrap: str, tmp: Path, payload_file: Path, count: int, profile: bool) -> dict:
    from deploy.local.kafka import LocalKafka
    from npsflow import config, stack

    home = tmp / "pipeline-home"
    env = {k: v for k, v in os.environ.items() if k.startswith("NPSFLOW_")}  # user knobs (SINK_MAX_ROWS, …)
    env.update(NPSFLOW_HOME=str(home), NPSFLOW_KAFKA=bootstrap,
               NPSFLOW_NAMESPACE="bench" + uuid.uuid4().hex[:8],
               NPSFLOW_CLICKHOUSE_DSN=f"chdb://{home / 'clickhouse'}")
    env.pop("NPSFLOW_WEB_PORT", None)
    settings = config.load(env)
    home.mkdir(parents=True, exist_ok=True)
    stack.ensure_topics(settings, bootstrap)
    prof = tmp / "worker.prof"
    t_boot = time.monotonic()
    info = _start_profiled_worker(settings, bootstrap, prof) if profile else stack.start_worker(settings, bootstrap)
    startup = time.monotonic() - t_boot
    port, pid = int(info["internal_url"].rsplit(":", 1)[1]), info["pid"]  # the internal listener (stats, reads)
    broker_pid = LocalKafka(tmp / "kafka").status().get("pid")
    try:
        producer = ProducerProc(bootstrap, settings.topics.raw_responses, payload_file)
        cpu_w0, cpu_b0 = _thread_cpu(pid), _thread_cpu(broker_pid) if broker_pid else {}
        producer.go()
        timeline: list[tuple[float, dict]] = []
        last_change, previous = time.monotonic(), None
        while True:
            stats = _get(port, "/api/v1/stats")
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
        cpu_w1, cpu_b1 = _thread_cpu(pid), _thread_cpu(broker_pid) if broker_pid else {}
        prod = producer.result()
        t0 = prod["t_start"]
        # let the window updates drain too (not part of the headline figure), then check ClickHouse
        final = stats
        for _ in range(50):
            time.sleep(0.2)
            s = _get(port, "/api/v1/stats")
            if s == final:
                break
            final = s
        report = _get(port, "/api/v1/report", timeout=120)
        deadletters = _get(port, "/api/v1/deadletters", timeout=120)
    finally:
        stack.stop_worker(settings)
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
           "cpu_seconds": {"worker_threads": _cpu_diff(cpu_w0, cpu_w1),
                           "broker_jvm": round(sum(cpu_b1.values()) - sum(cpu_b0.values()), 2),
                           "producer": round(prod["cpu_s"], 2)},
           "sink_max_rows": settings.sink_max_rows, "sink_max_age": settings.sink_max_age,
           "profiled": profile}
    if profile:
        out["profile_file"] = str(prof)
    return out


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
    ap.add_argument("--_produce", nargs=3, metavar=("BOOTSTRAP", "TOPIC", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._produce:
        asyncio.run(_produce_main(*args._produce))
        return 0

    os.chdir(ROOT)
    from deploy.local.kafka import LocalKafka, create_topics

    tmp = Path(tempfile.mkdtemp(prefix="npsflow-bench-"))
    log(f"temp dir {tmp}")
    kafka = LocalKafka(tmp / "kafka")
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
        result["pipeline"] = pipe = pipeline(bootstrap, tmp, payload_file, args.count, args.profile)
        log(f"  pipeline             {pipe['rate']:9.0f} records/s  ({pipe['seconds']:.2f}s; "
            f"producer acked all after {pipe['producer_seconds']:.2f}s; worker start {pipe['worker_startup_s']:.1f}s)")
        if args.profile:
            print_profile(Path(pipe["profile_file"]))
    finally:
        kafka.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

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
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
