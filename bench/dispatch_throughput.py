#!/usr/bin/env python
"""Throughput of survey dispatch: trigger events → contact rules → invitations sent → dispatch rows in ClickHouse.

    .venv/bin/python bench/dispatch_throughput.py [--count 5000] [--orgs 6] [--channel outbox|smtp] [--keep]

One run starts a throwaway local Kafka broker (KRaft, temp dir) and one worker (`python -m npsflow.cli worker`)
with a generated programs file: ``--orgs`` organizations, one e-mail program each (delay 0, sampling 1.0, no cap,
no reminder), every trigger a new contact — so every trigger becomes one sent e-mail. Channel: the outbox
(``.eml`` files under the worker's home, the default) or ``smtp`` (a real aiosmtpd server in this process).

N pre-encoded TriggerEvent records are produced (keyed by ``<org>|<contact>`` like the CLI, acks=all) after the worker is ready; the clock runs
from the first send until the worker's counter ``sink.dispatches.rows`` (incremented after the ClickHouse insert
returned) reaches N. ``decisions_rps``: N / the time until the dispatch agent's per-outcome counters
(``dispatch.<status>…``: one dispatch record per trigger) reach N (0.1 s polls). Printed: triggers/s end to end,
per-stage completion times (dispatch decided, invitation sent, row written) from the /api/v1/stats timeline, and a
final JSON line. ``--orgs 1``: every trigger of one organization (spread over all partitions by contact).
Also in the JSON line: ``worker_cpu_s`` (CPU seconds of each worker thread during the run, from /proc),
``main_cpu_us`` (the worker's main thread — the event loop — per trigger: steadier than the rates on a shared
machine) and ``load`` (the load average at the first send and at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import ScratchBroker, log  # noqa: E402

PARTITIONS = 6
STALL_SECONDS = 60.0




def programs_yaml(orgs: int, cap: int | None = None) -> str:
    out = ["version: 1", "organizations:"]
    for i in range(orgs):
        out += [f"  - id: org-{i}", f"    name: Org {i}", "    timezone: Europe/Stockholm", "    default_locale: sv",
                "    branding:", f"      sv: {{name: Org {i}, sender_email: nps@org{i}.example.com}}",
                "    programs:", "      - id: p", "        survey_id: s", "        event_types: [job.completed]",
                "        delay: 0m", "        channels: [email]", "        quiet_hours: null",
                "        cost: {email: 0.002, currency: EUR}"] + ([f"        daily_cap: {cap}"] if cap else [])
    return "\n".join(out) + "\n"


def payloads(count: int, orgs: int) -> list[tuple[bytes, bytes]]:
    from npsflow.ingest import trigger_converter
    from schemas import codec as avro

    codec, convert = avro.AvroCodec(), trigger_converter()
    now = datetime.now(timezone.utc).isoformat()
    out = []
    for i in range(count):
        key, subject, record = convert({
            "event_id": f"ev-{i}", "org_id": f"org-{i % orgs}", "event_type": "job.completed", "occurred_at": now,
            "contact": {"contact_id": f"c-{i}", "email": f"c{i}@kund.example.com", "locale": "sv"},
            "segment": {"location": f"loc-{i % 12}"}})
        out.append((key, codec.encode(subject, record)))
    return out


DECISIONS = ("dispatch.sent", "dispatch.scheduled", "dispatch.suppressed.")


def decisions(s: dict) -> int:
    """Triggers decided: the per-outcome counters of stage 1 and the cap stage (``dispatch.sent``,
    ``dispatch.scheduled``, ``dispatch.suppressed.<reason>``). Before 2026-12-06 this summed every ``dispatch.*``
    counter, the agent's ``batches`` and ``wait_ms``/``process_ms``/``ack_ms`` timers included, which made
    ``decisions_rps`` far too high."""
    return sum(v for k, v in s.items() if k == DECISIONS[0] or k == DECISIONS[1] or k.startswith(DECISIONS[2]))


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/stats", timeout=30) as r:
        return json.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--orgs", type=int, default=6,
                    help="organizations the triggers are spread over (default 6; 1 = every trigger of one org)")
    ap.add_argument("--channel", choices=("outbox", "smtp"), default="outbox")
    ap.add_argument("--cap", type=int, default=None,
                    help="a daily cap per program (every invitation then passes the cap stage; default none)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.orgs < 1:
        ap.error("--orgs must be at least 1")
    os.chdir(ROOT)
    from npsflow import config, stack
    from npsflow.producer import Producer

    scratch = ScratchBroker("npsflow-dispatch-bench-", keep=args.keep)
    tmp, kafka = scratch.tmp, scratch.kafka
    smtp = None
    result: dict = {"count": args.count, "orgs": args.orgs, "channel": args.channel, "cap": args.cap, "cpus": os.cpu_count(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        bootstrap = kafka.start()
        home = tmp / "home"
        home.mkdir()
        (tmp / "programs.yaml").write_text(programs_yaml(args.orgs, args.cap))
        env = {"NPSFLOW_HOME": str(home), "NPSFLOW_KAFKA": bootstrap, "NPSFLOW_PARTITIONS": str(PARTITIONS),
               "NPSFLOW_NAMESPACE": "dbench" + uuid.uuid4().hex[:6], "NPSFLOW_PROGRAMS": str(tmp / "programs.yaml"),
               "NPSFLOW_CLICKHOUSE_DSN": f"chdb://{home / 'clickhouse'}", "NPSFLOW_SECRET": "bench-secret-0123456789"}
        if args.channel == "smtp":
            from aiosmtpd.controller import Controller

            class Sink:
                received = 0

                async def handle_DATA(self, server, session, envelope):
                    Sink.received += 1
                    return "250 OK"

            from npsflow.worker import free_port

            smtp = Controller(Sink(), hostname="127.0.0.1", port=free_port())
            smtp.start()
            (tmp / "channels.yaml").write_text(
                f"email: {{transport: smtp, host: 127.0.0.1, port: {smtp.port}, starttls: false}}\n")
            env["NPSFLOW_CHANNELS"] = str(tmp / "channels.yaml")
        settings = config.load(env)
        stack.ensure_topics(settings, bootstrap)
        info = stack.start_worker(settings, bootstrap)
        port = int(info["internal_url"].rsplit(":", 1)[1])  # the internal listener (stats)
        items = payloads(args.count, args.orgs)
        timeline = []
        from bench.pipeline_throughput import _cpu_diff, _thread_cpu

        cpu0, load0 = _thread_cpu(info["pid"]), os.getloadavg()[0]
        t0 = time.monotonic()
        with Producer(bootstrap) as producer:
            for key, value in items:
                producer.send(settings.topics.triggers, key, value)
            producer.flush()
        t_produced = time.monotonic() - t0
        last_change, previous = time.monotonic(), None
        while True:
            s = stats(port)
            now = time.monotonic()
            timeline.append((now - t0, s))
            if s.get("sink.dispatches.rows", 0) >= args.count:
                break
            if s != previous:
                last_change, previous = now, s
            elif now - last_change > STALL_SECONDS:
                raise RuntimeError(f"stalled for {STALL_SECONDS}s; last stats {s}")
            time.sleep(0.1)
        seconds = timeline[-1][0]
        final = timeline[-1][1]
        cpu = _cpu_diff(cpu0, _thread_cpu(info["pid"]))
        result.update(worker_cpu_s=cpu, main_cpu_us=round(cpu.get("main", 0.0) / args.count * 1e6, 1),
                      load=[round(load0, 2), round(os.getloadavg()[0], 2)])

        def done_at(key: str) -> float | None:
            return next((round(t, 2) for t, s in timeline if s.get(key, 0) >= args.count), None)

        decided = next((t for t, s in timeline if decisions(s) >= args.count), None)
        result.update(seconds=round(seconds, 2), rate=round(args.count / seconds, 1),
                      decisions_rps=round(args.count / decided, 1) if decided else None,
                      decisions_s=round(decided, 2) if decided else None,
                      producer_seconds=round(t_produced, 2),
                      stages={k: done_at(k) for k in ("dispatch.sent", "deliver.invitation.sent",
                                                      "sink.dispatches.rows")},
                      sent=final.get("deliver.invitation.sent", 0), smtp_received=smtp.handler.received if smtp else None)
        stack.stop_worker(settings)
    finally:
        if smtp is not None:
            smtp.stop()
        scratch.close()
    log(f"{args.count} triggers ({args.orgs} orgs, {args.channel}): {result['rate']} triggers/s end to end, "
        f"{result['decisions_rps']} decisions/s (all decided after {result['decisions_s']} s, 0.1 s polls) "
        f"({result['seconds']} s; produced in {result['producer_seconds']} s); stages done at {result['stages']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
