#!/usr/bin/env python
"""Time every dashboard query on a large embedded ClickHouse (chDB): the Grafana panels (sinks/bi.py), the
report and the live dashboard (sinks/queries.py). Goal (issue 5): each ≤ 200 ms on this machine at 10 M responses.

    .venv/bin/python bench/dashboard_queries.py [--responses 10000000] [--dispatches 2000000] [--runs 3] [--keep]

Data, generated inside ClickHouse (INSERT … SELECT FROM numbers(N)): N responses over the last 30 days
(score 0–10 from a hash, 12 locations × 8 employees, 3 channels, 5 % with a comment), 5 % of them edited
once (a second row, higher version — latest wins), every 10th tied to an invitation; D dispatch records
(90 % sent). The rows "arrived" 5 minutes before the run, so the rollup refresher (sinks.rollup) recomputes
every day once, timed. Periods: the last 7 days (Grafana's default: partial days at both ends, read from the day
ledger) and the 7 whole days before today's midnight; org "All", dimension "location", granularity "day". Each
query runs ``--runs`` times (the first is reported separately: cold) and the median of the rest is the figure.
Merges are left to ClickHouse (the reads are correct before and after them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL_MS = 200.0

RESPONSES_SQL = """
INSERT INTO {{db}}.responses (response_id, survey_id, invitation_id, org_id, score, category, comment, locale,
    responded_at, received_at, processed_at, segment, version, is_edit, previous_score, source,
    kafka_partition, kafka_offset, inserted_at)
SELECT concat('r', toString(number % {n})) AS response_id, 'nps-service',
       if(number % {n} % 10 = 0, concat('i', toString(number % {n})), ''),
       if(number % {n} % 10 = 0, 'org-1', ''),
       toUInt8(cityHash64(number, 1) % 11) AS s,
       multiIf(s >= 9, 'promoter', s >= 7, 'passive', 'detractor'),
       if(cityHash64(number, 2) % 20 = 0, concat('comment ', toString(number)), ''),
       'sv',
       now64(3) - toIntervalSecond(cityHash64(number % {n}, 3) % (30 * 86400)) AS at, at, at,
       map('location', concat('loc-', toString(cityHash64(number % {n}, 4) % 12)),
           'employee', concat('e-', toString(cityHash64(number % {n}, 5) % 96)),
           'channel', ['sms', 'email', 'web'][1 + cityHash64(number % {n}, 6) % 3]),
       1 + intDiv(number, {n}) AS version, version > 1, NULL, 'bench', 0, number,
       now64(3) - toIntervalMinute(5)  -- arrived a while ago: the refresher may roll the days up
FROM numbers({rows})
"""

DISPATCHES_SQL = """
INSERT INTO {{db}}.dispatches (dispatch_id, invitation_id, event_id, org_id, survey_id, contact_key, channel,
    status, reason, scheduled_for, decided_at, cost, currency, locale, segment, kafka_partition, kafka_offset,
    kind, attempts, provider_id)
SELECT concat('i', toString(number * 10)), concat('i', toString(number * 10)), toString(number), 'org-1',
       'nps-service', hex(cityHash64(number)), ['sms', 'email'][1 + number % 2],
       if(number % 10 = 0, 'suppressed', 'sent'), if(number % 10 = 0, 'quarantine', ''), NULL,
       now64(3) - toIntervalSecond(cityHash64(number, 7) % (30 * 86400)), if(number % 10 = 0, NULL, 0.15),
       'EUR', 'sv', map('location', concat('loc-', toString(number % 12))), 0, number, 'invitation', 1, ''
FROM numbers({rows})
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(fn, runs: int) -> dict:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    warm = times[1:] or times
    return {"cold_ms": round(times[0], 1), "median_ms": round(statistics.median(warm), 1),
            "meets_goal": statistics.median(warm) <= GOAL_MS}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--responses", type=int, default=10_000_000)
    ap.add_argument("--dispatches", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    from sinks import bi, queries, rollup
    from sinks.clickhouse import ClickHouseStore, migrate

    tmp = Path(tempfile.mkdtemp(prefix="npsflow-dashboard-bench-"))
    store = ClickHouseStore(f"chdb://{tmp / 'clickhouse'}")
    result: dict = {"responses": args.responses, "dispatches": args.dispatches,
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "goal_ms": GOAL_MS, "queries": {}}
    try:
        migrate(store)
        n = args.responses
        edited = n // 20
        t = time.perf_counter()
        store.command(RESPONSES_SQL.format(n=n, rows=n + edited))  # rows ≥ n are the edits (version 2)
        store.command(DISPATCHES_SQL.format(rows=args.dispatches))
        result["load_seconds"] = round(time.perf_counter() - t, 1)
        rows = store.query("SELECT count() AS c FROM {db}.responses")[0]["c"]
        log(f"loaded {rows} response rows ({n} responses, {edited} edits) and {args.dispatches} dispatches "
            f"in {result['load_seconds']} s")
        bi.apply_views(store)
        t = time.perf_counter()
        refreshed = rollup.refresh(store)
        result["rollup_refresh_seconds"] = round(time.perf_counter() - t, 1)
        result["rollup_days"] = len(refreshed.days)
        result["rollup_rows"] = store.query("SELECT count() AS c FROM {db}.nps_daily FINAL")[0]["c"]
        log(f"rollup: {refreshed.summary()} in {result['rollup_refresh_seconds']} s, "
            f"{result['rollup_rows']} cells")
        now = datetime.now(timezone.utc)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        variables = {"org": None, "dimension": "location", "granularity": "day"}
        # "last 7 days" as Grafana's default (ragged: two partial days from the ledger) and as whole days
        for label, since, until in (("7d", now - timedelta(days=7), now),
                                    ("7 whole days", midnight - timedelta(days=7), midnight)):
            for panel in bi.panels():
                sql = bi.render(panel.sql, time_from=since, time_to=until, variables=variables)
                result["queries"][f"grafana:{panel.key} ({label})"] = timed(lambda sql=sql: store.query(sql),
                                                                            args.runs)
        result["queries"]["report:location:7d"] = timed(
            lambda: queries.report(store, ["location"], now - timedelta(days=7), now), args.runs)
        result["queries"]["dashboard:location"] = timed(lambda: queries.dashboard(store, "location"), args.runs)
        for name, q in result["queries"].items():
            log(f"  {name:40s} cold {q['cold_ms']:8.1f} ms   median {q['median_ms']:8.1f} ms   "
                f"{'ok' if q['meets_goal'] else 'over the goal'}")
    finally:
        store.close()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
