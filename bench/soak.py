#!/usr/bin/env python
"""Soak: the whole pipeline at a steady load for a long time; memory, lag, latency and state sampled over time.

    .venv/bin/python bench/soak.py [--minutes 60] [--rate 2500] [--trigger-rate 5] [--sample-seconds 60] [--split]
    make soak                                   # = --minutes 60 (SOAK_ARGS="--minutes 10 --split" to change)

Opt-in (not in `make test`, not in CI). One run starts a throwaway local broker (deploy.local.kafka, temp dir) and
one npsflow worker (`--role all`; `--split`: a `--role process` and a `--role sink` worker, as
bench/pipeline_throughput.py), with the demo's survey programs (npsflow/demo_programs.yaml) and the default channels
(the outbox: one .eml file per invitation under the worker's home). A producer process of its own then sends, for
``--minutes``:

  responses  simulated answers (npsflow.simulate.ResponseSimulator: valid, unique, comments in five languages,
             responded_at within the last seconds) at ``--rate`` per second (default 2 500: half the maximum measured
             end to end on 2 cores, 5 000–6 700/s, README "Performance");
  triggers   simulated business events of the demo organization (TriggerSimulator) at ``--trigger-rate`` per
             second (default 5): invitations, quarantine suppressions, dispatch state.

Every ``--sample-seconds`` (default 60; one sample also before the first send and one after the backlog drained)
one CSV row:

  rss_mib_<proc>     VmRSS (/proc/<pid>/status) of every process: the broker JVM, each worker, the producer and
                     this script;  cpu_pct_<proc>: its CPU (user+system) over the interval, % of one core
  lag_<group>        consumer lag of each worker group: Σ (end offset − committed offset) over the partitions the
                     group has committed (kafka-python admin client)
  behind_*           records sent but not yet seen in a window update / ClickHouse, and how long the oldest of them
                     has waited (s)
  window_p50/p99_ms  produced → the first `overall=all` 24h WindowUpdate with `responses` ≥ k (consumed from
                     <ns>.windows), for the records *reached* in the interval (as bench/pipeline_throughput.py)
  clickhouse_p99_ms  produced → the first poll of `sink.responses.rows` ≥ k (polled every --poll s, 0.1)
  keys_<table>       the stateful worker's key count per table (`state.<table>.keys` of /api/v1/stats)
  changelog_mib_<t>  the table's changelog on the broker's disk (its partition directories); broker_data_mib: all
  rows, dead_letters, invitations: the worker's counters;  load1/load5: the machine's load average

and at the end a PNG plot of the same (matplotlib, the extra "bench"; without it only the CSV), a summary — RSS slope
per hour of each process (least squares over the second half of the load phase), the state's growth per hour and
the RSS per added state key, max lag, p99 range — and one JSON line.

Flat memory is the goal, but not all of the worker's memory can be flat under unique answers: the dedup memory
(`responses-seen`, one memo per answer for NPSFLOW_DEDUP_RETENTION, 90 d) and the cases opened for detractors grow
with every answer by design (README "Sizing": ~500 B per memo). So the figure to judge is RSS growth per added state
key next to the ~500 B a memo should take; a leak shows as a figure well above that, or as growth without keys.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import ScratchBroker, log  # noqa: E402

from bench.pipeline_throughput import (  # noqa: E402  (the shared helpers of the benches)
    DONE_COUNTERS, PARTITIONS, Workers, _get, _percentiles, _worker_settings, worker_api)

TICK = 0.02  # the producer's pacing step (s)
REPORT_EVERY = 0.25  # the producer reports its send times this often (s)
DRAIN_SECONDS = 180.0  # after the load: wait at most this long for the backlog to drain




# ------------------------------------------------------------------------------------------ producer
# Its own process (this script with --_produce), so its CPU never competes with the sampling for a GIL. It connects,
# prints "ready", waits for a line on stdin, then sends for `seconds`: response k (0-based) not before t0 + k / rate,
# triggers likewise at trigger_rate. Every REPORT_EVERY s one line {"k0", "ts"}: the CLOCK_MONOTONIC time each of
# the responses k0+1 … was handed to the producer; at the end {"done": …}.
async def _produce_main(bootstrap: str, raw_topic: str, trigger_topic: str, rate: float, trigger_rate: float,
                        seconds: float, seed: int) -> None:
    from datetime import datetime, timedelta, timezone

    from aiokafka import AIOKafkaProducer

    from npsflow.ingest import to_raw_response, trigger_converter
    from npsflow.simulate import ResponseSimulator, TriggerSimulator
    from schemas import codec as avro

    codec, convert = avro.AvroCodec(), trigger_converter()
    now = datetime.now(timezone.utc)
    responses = ResponseSimulator(seed=seed, start=now - timedelta(seconds=60))
    triggers = TriggerSimulator(seed=seed + 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024,
                                max_request_size=4 * 1024 * 1024, client_id="npsflow-soak")
    await producer.start()
    errors = {"n": 0, "last": None}

    def check(fut) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            errors["n"] += 1
            errors["last"] = repr(fut.exception())

    try:
        await producer.partitions_for(raw_topic)
        await producer.partitions_for(trigger_topic)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu0, t0 = time.process_time(), time.monotonic()
        k = m = 0
        k0, ts, last_report, behind_max = 0, [], t0, 0.0
        while True:
            now_m = time.monotonic()
            elapsed = min(now_m - t0, seconds)
            due = int(elapsed * rate) - k
            if due > 0:
                behind_max = max(behind_max, now_m - (t0 + k / rate))
                for obj in responses.records(due):  # event times spread up to "now"
                    rec = to_raw_response(obj, source="soak")
                    value = codec.encode(avro.RAW_RESPONSE, rec)
                    ts.append(round(time.monotonic(), 4))
                    (await producer.send(raw_topic, value, key=rec["response_id"].encode())).add_done_callback(check)
                k += due
            due_t = int(elapsed * trigger_rate) - m
            if due_t > 0:
                for _, obj in triggers.labeled_records(due_t):
                    key, subject, record = convert(obj)
                    (await producer.send(trigger_topic, codec.encode(subject, record), key=key)).add_done_callback(check)
                m += due_t
            now_m = time.monotonic()
            if ts and (now_m - last_report >= REPORT_EVERY or elapsed >= seconds):
                print(json.dumps({"k0": k0, "ts": ts}), flush=True)
                k0, ts, last_report = k, [], now_m
            if elapsed >= seconds:
                break
            await asyncio.sleep(max(0.0, TICK - (time.monotonic() - now_m)))
        await producer.flush()
        print(json.dumps({"done": True, "sent": k, "triggers": m, "errors": errors["n"], "last_error": errors["last"],
                          "seconds": round(time.monotonic() - t0, 2), "cpu_s": round(time.process_time() - cpu0, 2),
                          "behind_max_s": round(behind_max, 3)}), flush=True)
    finally:
        await producer.stop()


class Reach:
    """Latency by count, as bench/pipeline_throughput.py measures it: the k-th sent record has arrived once an
    observation (time, count) with count ≥ k was made. Thread-safe; unmatched sends and not yet needed observations
    are kept, everything matched is dropped (memory stays bounded however long the run)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: deque[tuple[int, float]] = deque()  # (k, send time), k 1-based
        self.obs: deque[tuple[float, int]] = deque()  # (time, count), counts increasing
        self.best = 0
        self.done: list[float] = []  # latencies (ms) reached since the last drain

    def sent(self, k0: int, ts: list[float]) -> None:
        with self.lock:
            self.pending.extend((k0 + i + 1, t) for i, t in enumerate(ts))
            self._match()

    def seen(self, t: float, count: int) -> None:
        with self.lock:
            if count > self.best:
                self.best = count
                self.obs.append((t, count))
                self._match()

    def _match(self) -> None:
        while self.pending and self.obs:
            k, t_send = self.pending[0]
            while self.obs and self.obs[0][1] < k:
                self.obs.popleft()  # too low for k, so for every later record too
            if not self.obs:
                break
            self.done.append((self.obs[0][0] - t_send) * 1000.0)
            self.pending.popleft()

    def drain(self, now: float) -> tuple[list[float], int, float]:
        """(latencies reached since the last call, records not reached yet, age of the oldest of them in s)."""
        with self.lock:
            done, self.done = self.done, []
            oldest = now - self.pending[0][1] if self.pending else 0.0
            return done, len(self.pending), oldest


# ------------------------------------------------------------------------------------------ sampling
def proc_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path``."""
    total = 0
    try:
        for entry in os.scandir(path):
            try:
                if entry.is_dir(follow_symlinks=False):
                    total += dir_bytes(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512  # on disk: Kafka's index files
                    # are preallocated (10 MiB each, sparse), so their size would count 120 MiB for an empty table
            except OSError:
                continue
    except OSError:
        pass
    return total


class Lag:
    """Consumer lag of groups: Σ (end offset − committed) over the partitions each group has committed."""

    def __init__(self, bootstrap: str, groups: list[str]) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        self.groups = groups
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="npsflow-soak-lag")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      client_id="npsflow-soak-lag")

    def sample(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for group in self.groups:
            try:
                offsets = self.admin.list_group_offsets(group).get(group, {})  # kafka-python 3.x
                committed = {tp: om.offset for tp, om in offsets.items()
                             if om is not None and om.offset is not None and om.offset >= 0}
                ends = self.consumer.end_offsets(list(committed)) if committed else {}
                out[group] = sum(max(0, ends[tp] - off) for tp, off in committed.items() if tp in ends)
            except Exception as exc:  # reported in the row as empty, logged once per sample
                log(f"  lag of {group}: {type(exc).__name__}: {exc}")
                out[group] = None
        return out

    def close(self) -> None:
        for client in (self.admin, self.consumer):
            try:
                client.close()
            except Exception:
                pass


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour; None with fewer than 2 distinct times."""
    pts = [(t, v) for t, v in points if v is not None]
    if len(pts) < 2:
        return None
    n = len(pts)
    mt, mv = sum(t for t, _ in pts) / n, sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in pts) / den * 3600.0


# ------------------------------------------------------------------------------------------------ run
class Soak:
    def __init__(self, args, tmp: Path, bootstrap: str, broker_pid: int | None, data_dir: Path) -> None:
        from npsflow.simulate import demo_programs_path
        from streams.app import consumer_group

        self.args, self.tmp, self.bootstrap, self.data_dir = args, tmp, bootstrap, data_dir
        # the knobs of the run, read by _worker_settings from the environment (NPSFLOW_*)
        os.environ.setdefault("NPSFLOW_PROGRAMS", str(demo_programs_path()))
        os.environ.setdefault("NPSFLOW_SECRET", "soak-secret-0123456789abcdef")
        if args.no_cases:
            os.environ["NPSFLOW_CASES"] = str(ROOT / "bench" / "no_cases.yaml")
        self.settings = _worker_settings(tmp, bootstrap, "soak-home")
        self.workers = Workers(self.settings, bootstrap, args.split)
        self.apis = {s.role: worker_api(s) for s in self.workers.all}
        self.stateful = next(s.role for s in self.workers.all if s.role in ("all", "process"))
        self.sink = next(s.role for s in self.workers.all if s.role in ("all", "sink"))
        self.procs: dict[str, int] = {}
        if broker_pid:
            self.procs["broker"] = broker_pid
        for s, pid in zip(self.workers.all, self.workers.pids):
            self.procs["worker" if s.role == "all" else f"worker_{s.role}"] = pid
        self.groups = sorted({consumer_group(s) for s in self.workers.all})
        self.tables = list(self.settings.topics.TABLES)
        self.window_reach, self.ch_reach = Reach(), Reach()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.latest_stats: dict = {}

    # --- watchers (threads)
    def watch_windows(self, ready: threading.Event) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from schemas import codec as avro

        codec, topic = avro.AvroCodec(), self.settings.topics.windows
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                                 fetch_max_wait_ms=10, client_id="npsflow-soak-windows")
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ready.set()
            while not self.stop.is_set():
                for msgs in consumer.poll(timeout_ms=50, max_records=10000).values():
                    now = time.monotonic()
                    for m in msgs:
                        u = codec.decode(m.value, expected=avro.WINDOW_UPDATE)
                        if u["dimension"] == "overall" and u["window"] == "24h":
                            self.window_reach.seen(now, u["responses"])
        except Exception as exc:
            self.errors.append(f"windows watcher: {type(exc).__name__}: {exc}")
            ready.set()
        finally:
            consumer.close()

    def poll_rows(self) -> None:
        api, tick = self.apis[self.sink], time.monotonic()
        while not self.stop.is_set():
            try:
                s = _get(api, "/api/v1/stats")
            except Exception as exc:  # one failed poll is not the end of a long run
                self.errors.append(f"stats poller: {type(exc).__name__}: {exc}")
                time.sleep(1.0)
                continue
            self.latest_stats = s
            self.ch_reach.seen(time.monotonic(), max(s.get(k, 0) for k in DONE_COUNTERS))
            tick = max(tick + self.args.poll, time.monotonic() - self.args.poll)
            time.sleep(max(0.0, tick - time.monotonic()))

    def read_producer(self, proc: subprocess.Popen, result: dict) -> None:
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                log(f"  producer said: {line.rstrip()}")
                continue
            if "ts" in msg:
                result["sent"] = msg["k0"] + len(msg["ts"])
                self.window_reach.sent(msg["k0"], msg["ts"])
                self.ch_reach.sent(msg["k0"], msg["ts"])
            elif msg.get("done"):
                result.update(msg)

    # --- one CSV row
    def sample(self, phase: str, t0: float, prev: dict, sent: int) -> dict:
        now = time.monotonic()
        row: dict = {"t_s": round(now - t0, 1), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "phase": phase, "sent": sent}
        cpu_now = {}
        for name, pid in self.procs.items():
            rss = proc_rss_mib(pid)
            row[f"rss_mib_{name}"] = None if rss is None else round(rss, 1)
            cpu = proc_cpu_s(pid)
            cpu_now[name] = cpu
            if cpu is not None and prev.get("cpu", {}).get(name) is not None and now > prev["t"]:
                row[f"cpu_pct_{name}"] = round(100.0 * (cpu - prev["cpu"][name]) / (now - prev["t"]), 1)
            else:
                row[f"cpu_pct_{name}"] = None
        for group, lag in self.lag.sample().items():
            row[f"lag_{group}"] = lag
        lat_w, behind_w, oldest_w = self.window_reach.drain(now)
        lat_c, behind_c, oldest_c = self.ch_reach.drain(now)
        pw, pc = _percentiles(lat_w), _percentiles(lat_c)
        row.update(window_n=pw["n"], window_p50_ms=pw.get("p50"), window_p99_ms=pw.get("p99"),
                   window_max_ms=pw.get("max"), clickhouse_n=pc["n"], clickhouse_p50_ms=pc.get("p50"),
                   clickhouse_p99_ms=pc.get("p99"), clickhouse_max_ms=pc.get("max"),
                   behind_window=behind_w, behind_window_oldest_s=round(oldest_w, 1),
                   behind_clickhouse=behind_c, behind_clickhouse_oldest_s=round(oldest_c, 1))
        try:
            st = _get(self.apis[self.stateful], "/api/v1/stats")
        except Exception as exc:
            self.errors.append(f"stats at sample: {type(exc).__name__}: {exc}")
            st = {}
        sink_st = st if self.sink == self.stateful else self.latest_stats
        for table in self.tables:
            row[f"keys_{table}"] = st.get(f"state.{table}.keys")
        ns = self.settings.topics.namespace
        for table in self.tables:
            prefix = f"{ns}-{table}-changelog-"
            total = sum(dir_bytes(Path(e.path)) for e in os.scandir(self.data_dir) if e.name.startswith(prefix))
            row[f"changelog_mib_{table}"] = round(total / 2**20, 2)
        row["broker_data_mib"] = round(dir_bytes(self.data_dir) / 2**20, 1)
        row["rows"] = max(sink_st.get(k, 0) for k in DONE_COUNTERS) if sink_st else None
        both = [st] if sink_st is st else [st, sink_st]
        row["dead_letters"] = sum(v for d in both for k, v in d.items() if k.startswith("dead_letter."))
        row["invitations"] = st.get("deliver.invitation.sent")
        row["load1"], row["load5"], _ = (round(x, 2) for x in os.getloadavg())
        prev.update(t=now, cpu=cpu_now)
        return row

    def run(self) -> dict:
        args = self.args
        out_csv, out_png = args.out.with_suffix(".csv"), args.out.with_suffix(".png")
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        self.lag = Lag(self.bootstrap, self.groups)
        ready = threading.Event()
        threads = [threading.Thread(target=self.watch_windows, args=(ready,), daemon=True),
                   threading.Thread(target=self.poll_rows, daemon=True)]
        threads[0].start()
        ready.wait(30)
        threads[1].start()
        producer = subprocess.Popen(
            [sys.executable, __file__, "--_produce", self.bootstrap, self.settings.topics.raw_responses,
             self.settings.topics.triggers, str(args.rate), str(args.trigger_rate), str(args.minutes * 60),
             str(args.seed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
        line = producer.stdout.readline().strip()
        if line != "ready":
            producer.kill()
            raise RuntimeError(f"producer did not start (said {line!r})")
        self.procs["producer"] = producer.pid
        self.procs["bench"] = os.getpid()
        prod: dict = {"sent": 0}
        reader = threading.Thread(target=self.read_producer, args=(producer, prod), daemon=True)
        reader.start()
        rows: list[dict] = []
        prev: dict = {"t": time.monotonic(), "cpu": {}}
        fh = open(out_csv, "w", newline="")
        writer = None

        def record(row: dict) -> None:
            nonlocal writer
            if writer is None:
                writer = csv.DictWriter(fh, fieldnames=list(row), extrasaction="ignore")
                writer.writeheader()
            writer.writerow(row)
            fh.flush()
            rows.append(row)
            log(f"  t={row['t_s']:>7}s {row['phase']:8s} sent {row['sent']:>9} rows {row['rows']!s:>9} "
                + " ".join(f"{k[8:]}={row[k]}" for k in row if k.startswith("rss_mib_"))
                + f" lag {[row[k] for k in row if k.startswith('lag_')]} p99 w/ch {row['window_p99_ms']}/"
                  f"{row['clickhouse_p99_ms']} ms keys {sum(row[k] or 0 for k in row if k.startswith('keys_'))}"
                  f" load {row['load1']}")

        try:
            t0 = time.monotonic()
            record(self.sample("baseline", t0, prev, 0))
            log(f"sending {args.rate:g} answers/s and {args.trigger_rate:g} triggers/s for {args.minutes:g} min; "
                f"a sample every {args.sample_seconds:g} s → {out_csv}")
            producer.stdin.write("go\n")
            producer.stdin.flush()
            t0 = time.monotonic()
            end = t0 + args.minutes * 60
            next_sample = t0 + args.sample_seconds
            while True:
                if producer.poll() is not None and not prod.get("done"):
                    reader.join(5)
                    if not prod.get("done"):
                        raise RuntimeError(f"producer exited with {producer.returncode}")
                if time.monotonic() >= next_sample and next_sample <= end + 1:
                    record(self.sample("load", t0, prev, prod["sent"]))
                    next_sample += args.sample_seconds
                if prod.get("done"):
                    break
                time.sleep(0.2)
            # the backlog: until every sent record has reached a window update and ClickHouse (or DRAIN_SECONDS)
            deadline = time.monotonic() + DRAIN_SECONDS
            while time.monotonic() < deadline:
                if not self.window_reach.pending and not self.ch_reach.pending:
                    break
                time.sleep(0.5)
            record(self.sample("drained", t0, prev, prod["sent"]))
            report = _get(self.apis[self.sink], "/api/v1/report", timeout=120)
        finally:
            self.stop.set()
            if producer.poll() is None:
                producer.kill()
            for t in threads:
                t.join(10)
            fh.close()
            self.lag.close()
            self.workers.stop()
        png = plot(rows, out_png, args) if not args.no_plot else None
        return summarize(rows, prod, report, args, out_csv, png, self.errors)


# -------------------------------------------------------------------------------------------- report
def _series(rows: list[dict], key: str) -> list[tuple[float, float]]:
    return [(r["t_s"], r[key]) for r in rows if r.get(key) is not None]


def summarize(rows: list[dict], prod: dict, report: dict, args, out_csv: Path, png: Path | None,
              errors: list[str]) -> dict:
    load = [r for r in rows if r["phase"] == "load"]
    half = [r for r in load if r["t_s"] >= args.minutes * 60 / 2] or load
    procs = [k[len("rss_mib_"):] for k in rows[0] if k.startswith("rss_mib_")]
    stateful = "worker" if "rss_mib_worker" in rows[0] else "worker_process"
    key_cols = [k for k in rows[0] if k.startswith("keys_")]
    for r in rows:
        r["_keys"] = sum(r[k] or 0 for k in key_cols)
    rss_slope = {p: slope_per_hour(_series(half, f"rss_mib_{p}")) for p in procs}
    keys_slope = slope_per_hour(_series(half, "_keys"))
    w_slope = rss_slope.get(stateful)
    bytes_per_key = round(w_slope * 2**20 / keys_slope) if w_slope is not None and keys_slope else None
    lag_cols = [k for k in rows[0] if k.startswith("lag_")]
    p99w = [r["window_p99_ms"] for r in load if r.get("window_p99_ms") is not None]
    p99c = [r["clickhouse_p99_ms"] for r in load if r.get("clickhouse_p99_ms") is not None]
    last = rows[-1]
    out = {
        "bench": "soak", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
        "minutes": args.minutes, "rate": args.rate, "trigger_rate": args.trigger_rate, "split": args.split,
        "cases": not args.no_cases, "sample_seconds": args.sample_seconds, "samples": len(rows),
        "sent": prod.get("sent"), "triggers": prod.get("triggers"), "producer_errors": prod.get("errors"),
        "producer_behind_max_s": prod.get("behind_max_s"),
        "rows": last.get("rows"), "clickhouse_total_responses": (report.get("total") or {}).get("responses"),
        "dead_letters": last.get("dead_letters"), "invitations": last.get("invitations"),
        "rss_mib_start": {p: rows[0].get(f"rss_mib_{p}") for p in procs},
        "rss_mib_end": {p: last.get(f"rss_mib_{p}") for p in procs},
        "rss_mib_max": {p: max((v for _, v in _series(rows, f"rss_mib_{p}")), default=None) for p in procs},
        "rss_slope_mib_per_h": {p: None if v is None else round(v, 1) for p, v in rss_slope.items()},
        "state_keys_end": last["_keys"], "state_keys_per_h": None if keys_slope is None else round(keys_slope),
        "worker_rss_bytes_per_state_key": bytes_per_key,
        "keys_end": {k[5:]: last.get(k) for k in key_cols},
        "changelog_mib_end": {k[len("changelog_mib_"):]: last.get(k) for k in last if k.startswith("changelog_mib_")},
        "broker_data_mib_end": last.get("broker_data_mib"),
        "lag_max": {k[4:]: max((v for _, v in _series(load, k)), default=None) for k in lag_cols},
        "lag_end": {k[4:]: last.get(k) for k in lag_cols},
        "window_p99_ms_range": [min(p99w), max(p99w)] if p99w else None,
        "clickhouse_p99_ms_range": [min(p99c), max(p99c)] if p99c else None,
        "behind_clickhouse_oldest_s_max": max((r["behind_clickhouse_oldest_s"] for r in load), default=None),
        "load1_range": [min(r["load1"] for r in rows), max(r["load1"] for r in rows)],
        "csv": str(out_csv), "png": str(png) if png else None, "errors": errors[:10],
    }
    for r in rows:
        r.pop("_keys", None)
    return out


def plot(rows: list[dict], path: Path, args) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (the extra 'bench': pip install -c requirements.lock -e '.[bench]'): "
            "no PNG, the CSV has everything")
        return None
    minutes = [r["t_s"] / 60 for r in rows]

    def line(ax, key, label, **kw):
        pts = [(m, r[key]) for m, r in zip(minutes, rows) if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label, **kw)

    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    ax = axes[0][0]
    for key in [k for k in rows[0] if k.startswith("rss_mib_")]:
        line(ax, key, key[len("rss_mib_"):])
    ax.set_title("RSS per process (MiB)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    for key in [k for k in rows[0] if k.startswith("lag_")]:
        line(ax, key, f"lag {key[4:]}")
    line(ax, "behind_clickhouse", "sent, not yet in ClickHouse")
    ax.set_title("consumer lag (records)")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    line(ax, "window_p99_ms", "window update p99")
    line(ax, "clickhouse_p99_ms", "ClickHouse row p99")
    line(ax, "clickhouse_p50_ms", "ClickHouse row p50", linestyle="--")
    ax.set_title("latency from produce (ms), per interval")
    ax.set_xlabel("minutes")
    ax.legend(fontsize=8)
    ax = axes[1][1]
    for key in [k for k in rows[0] if k.startswith("keys_")]:
        if any(r.get(key) for r in rows):
            line(ax, key, key[5:])
    ax.set_title("state: keys per table (stateful worker)")
    ax.set_xlabel("minutes")
    ax.legend(fontsize=8, loc="upper left")
    ax2 = ax.twinx()
    line(ax2, "broker_data_mib", "broker data (MiB)", color="grey", linestyle=":")
    ax2.set_ylabel("broker data on disk (MiB)")
    load = [r["load1"] for r in rows]
    fig.suptitle(f"npsflow soak: {args.rate:g} answers/s + {args.trigger_rate:g} triggers/s for {args.minutes:g} min"
                 f"{', split' if args.split else ', one worker'}; {os.cpu_count()} CPUs, load1 "
                 f"{min(load):.1f}–{max(load):.1f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def print_summary(s: dict) -> None:
    print(f"\nnpsflow soak: {s['rate']:g} answers/s + {s['trigger_rate']:g} triggers/s for {s['minutes']:g} min "
          f"({'split' if s['split'] else 'one worker'}, cases {'on' if s['cases'] else 'off'}), "
          f"{s['samples']} samples, {s['cpus']} CPUs, load1 {s['load1_range'][0]}–{s['load1_range'][1]}")
    print(f"  sent {s['sent']} answers, {s['triggers']} triggers (producer errors {s['producer_errors']}, at most "
          f"{s['producer_behind_max_s']} s behind its schedule); ClickHouse rows {s['rows']} "
          f"(report total {s['clickhouse_total_responses']}), dead letters {s['dead_letters']}, "
          f"invitations {s['invitations']}")
    print("  RSS MiB (start → end, max; slope per hour over the second half of the load):")
    for p in s["rss_mib_start"]:
        print(f"    {p:16s} {s['rss_mib_start'][p]!s:>8} → {s['rss_mib_end'][p]!s:>8}  max {s['rss_mib_max'][p]!s:>8}"
              f"  slope {s['rss_slope_mib_per_h'][p]!s:>8} MiB/h")
    print(f"  state keys at the end {s['state_keys_end']} ({s['state_keys_per_h']} per hour); worker RSS per added "
          f"key {s['worker_rss_bytes_per_state_key']} B (a dedup memo: ~500 B by design)")
    print(f"  keys: {s['keys_end']}")
    print(f"  changelogs on disk (MiB): {s['changelog_mib_end']}; broker data {s['broker_data_mib_end']} MiB")
    print(f"  lag max {s['lag_max']}, at the end {s['lag_end']}")
    print(f"  p99 per interval: window update {s['window_p99_ms_range']} ms, ClickHouse row "
          f"{s['clickhouse_p99_ms_range']} ms; oldest record not yet in ClickHouse at a sample: "
          f"{s['behind_clickhouse_oldest_s_max']} s")
    print(f"  CSV {s['csv']}" + (f", plot {s['png']}" if s["png"] else ""))
    if s["errors"]:
        print(f"  errors: {s['errors']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the load (default 60)")
    ap.add_argument("--rate", type=float, default=2500.0,
                    help="answers per second (default 2500: half the maximum measured end to end on 2 cores, "
                         "5 000–6 700/s; measure yours with bench/pipeline_throughput.py)")
    ap.add_argument("--trigger-rate", type=float, default=5.0, help="trigger events per second (default 5; 0: none)")
    ap.add_argument("--sample-seconds", type=float, default=60.0, help="sampling interval (default 60)")
    ap.add_argument("--poll", type=float, default=0.1,
                    help="interval of the sink's stats polls for the ClickHouse latency (default 0.1 s)")
    ap.add_argument("--split", action="store_true", help="a --role process and a --role sink worker")
    ap.add_argument("--no-cases", action="store_true", help="follow-up cases off (bench/no_cases.yaml)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--out", type=Path, default=None,
                    help="CSV/PNG path without suffix (default bench/results/soak-<UTC time>)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (broker, worker homes, logs)")
    ap.add_argument("--_produce", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._produce:
        b, raw, trig, rate, trate, seconds, seed = args._produce
        asyncio.run(_produce_main(b, raw, trig, float(rate), float(trate), float(seconds), int(seed)))
        return 0
    if args.out is None:
        args.out = ROOT / "bench" / "results" / time.strftime("soak-%Y%m%d-%H%M", time.gmtime())
    args.out = args.out.resolve()
    os.chdir(ROOT)

    def stop(signum, frame):  # SIGTERM (and SIGINT, even when started in the background): clean up, then exit
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scratch = ScratchBroker("npsflow-soak-", keep=args.keep)
    tmp, kafka = scratch.tmp, scratch.kafka
    log(f"temp dir {tmp}; load average {os.getloadavg()[0]:.2f}")
    try:
        bootstrap = kafka.start()
        log(f"broker {bootstrap}; {PARTITIONS} partitions")
        soak = Soak(args, tmp, bootstrap, kafka.status().get("pid"), kafka.data_dir)
        log(f"workers ready: {soak.procs}; groups {soak.groups}")
        summary = soak.run()
    finally:
        scratch.close()
    print_summary(summary)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
