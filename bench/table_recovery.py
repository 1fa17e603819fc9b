#!/usr/bin/env python
"""How long a process worker takes to rebuild its tables, and what they cost in memory (sizing, README "Running at
scale"): the in-memory state store is rebuilt from the compacted changelogs at every start and takeover.

    .venv/bin/python bench/table_recovery.py [--memos 500000] [--partitions 6] [--keep]

One run starts a throwaway local Kafka broker and, twice, one `--role process` worker in a fresh namespace:
first with empty changelogs (the baseline: start-up without state), then after ``--memos`` dedup memos —
realistic values of ~280 bytes as classify writes them, keyed by response id like classify does (murmur2, so
each lands on its partition) — were produced to ``<ns>-responses-seen-changelog``. The clock runs from the
worker's spawn until it announced itself ready (Faust calls that only once table recovery completed).
``recovery_rps`` = memos / (start with memos − baseline start); ``bytes_per_memo`` = the worker's RSS growth
over the baseline / memos. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import ScratchBroker, log  # noqa: E402




def memo(i: int) -> bytes:
    """A dedup memo shaped like classify's (streams.classify): version, hash, score, time, segments, source …"""
    t = 1_796_536_584_000 + i * 1000
    return json.dumps({"v": t * 1_000_000 + i % 997, "h": f"{i * 2654435761 % 2**64:016x}", "s": i % 11, "t": t,
                       "seg": {"location": ["Stockholm", "Malmö", "Espoo", "Oslo"][i % 4], "employee": f"e-{i % 50}",
                               "channel": "sms"}, "c": bool(i % 3), "src": [i % 6, i], "e": False, "ps": None,
                       "pseg": None, "pt": None, "pc": True, "ds": [20793], "o": None, "k": None, "w": t + 3600_000},
                      separators=(",", ":"), ensure_ascii=False).encode()


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed_start(settings, bootstrap: str) -> tuple[float, float]:
    """(seconds from spawn to ready, RSS MiB once ready) of one process worker; stopped afterwards."""
    from npsflow import stack

    t0 = time.monotonic()
    info = stack.start_worker(settings, bootstrap)
    seconds = time.monotonic() - t0
    time.sleep(2)  # settle: the text analysis data load beside recovery
    rss = rss_mib(int(info["pid"]))
    stack.stop_worker(settings)
    return seconds, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--memos", type=int, default=500_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    from npsflow import config, stack
    from npsflow.producer import Producer
    from streams.kafka_io import json_key

    scratch = ScratchBroker("npsflow-recovery-bench-", keep=args.keep)
    tmp, kafka = scratch.tmp, scratch.kafka
    result: dict = {"memos": args.memos, "partitions": args.partitions, "cpus": os.cpu_count(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        bootstrap = kafka.start()
        home = tmp / "home"
        home.mkdir()
        settings = config.load({"NPSFLOW_HOME": str(home), "NPSFLOW_KAFKA": bootstrap, "NPSFLOW_ROLE": "process",
                                "NPSFLOW_PARTITIONS": str(args.partitions),
                                "NPSFLOW_NAMESPACE": "rbench" + uuid.uuid4().hex[:6],
                                "NPSFLOW_SECRET": "bench-secret-0123456789"})
        stack.ensure_topics(settings, bootstrap)
        empty_s, empty_rss = timed_start(settings, bootstrap)
        log(f"baseline: ready after {empty_s:.1f} s, RSS {empty_rss:.0f} MiB")
        changelog = f"{settings.topics.namespace}-responses-seen-changelog"
        t0, size = time.monotonic(), 0
        with Producer(bootstrap) as producer:
            for i in range(args.memos):
                value = memo(i)
                size += len(value)
                producer.send(changelog, json_key(f"r-{i:016x}"), value)
            producer.flush()
        log(f"produced {args.memos} memos ({size / args.memos:.0f} B each) in {time.monotonic() - t0:.1f} s")
        full_s, full_rss = timed_start(settings, bootstrap)
        recovery = full_s - empty_s
        result.update(baseline_start_s=round(empty_s, 2), start_s=round(full_s, 2), recovery_s=round(recovery, 2),
                      recovery_rps=round(args.memos / recovery) if recovery > 0 else None,
                      baseline_rss_mib=round(empty_rss), rss_mib=round(full_rss),
                      bytes_per_memo=round((full_rss - empty_rss) * 1024 * 1024 / args.memos),
                      memo_value_bytes=round(size / args.memos))
    finally:
        scratch.close()
    log(f"{args.memos} memos: ready after {result.get('start_s')} s (baseline {result.get('baseline_start_s')} s) → "
        f"{result.get('recovery_rps')} memos/s recovered; RSS {result.get('baseline_rss_mib')} → "
        f"{result.get('rss_mib')} MiB ({result.get('bytes_per_memo')} B per memo)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
