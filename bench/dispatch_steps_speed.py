#!/usr/bin/env python
"""The pure dispatch steps without Kafka: µs per trigger of stage 1 and per mail of the deliver stage.

    .venv/bin/python bench/dispatch_steps_speed.py [--count 20000] [--repeat 3] [--profile]

What ``bench/dispatch_throughput.py --orgs 1`` makes one worker do, minus Kafka and Faust: the same programs
file (one org, one e-mail program, no cap), the same pre-encoded TriggerEvents, every trigger a new contact.

* ``decide``: Avro decode of each trigger + ``DecideStep.run`` over batches of ``BATCH`` on an in-memory table of
  JSON bytes (what ``StateTable`` keeps) + the batch's state changes and outputs serialized like the agent does
  (``stage_changes``: orjson per changed key; murmur2 partition per output).
* ``deliver``: the invite commands of those decisions through ``DeliverBatch`` (command, ``mark``), the
  ``Invitation`` with its signed links (``DispatchBook.channel_invitation``), the outbox channel (``.eml`` files
  in a temp dir, as in the worker), ``finish``, and the dispatch records encoded (Avro).

A benchmark, not a test: it prints µs per item (wall, and CPU of the thread running the steps: the worker's event
loop) as the best of ``--repeat`` runs, and a JSON line. ``--profile`` prints cProfile's top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.dispatch_throughput import payloads, programs_yaml  # noqa: E402
from npsflow.programs import parse_programs  # noqa: E402
from schemas import codec as avro  # noqa: E402
from sinks.channels.outbox import OutboxChannel  # noqa: E402
from streams.deliver import DeliverBatch  # noqa: E402
from streams.dispatch import REMINDER, DispatchBook  # noqa: E402
from streams.dispatch_agent import BATCH, SEND_CHUNK  # noqa: E402
from streams.dispatch_steps import DecideStep, Overlay, TriggerIn  # noqa: E402
from streams.kafka_io import json_key, partition_for  # noqa: E402

PARTITIONS = 6
SECRET = b"bench-secret-0123456789"


class Table(dict):
    """A StateTable's store: JSON-string keys → JSON bytes."""

    def view(self) -> Overlay:
        return Overlay(lambda key: (lambda raw: None if raw is None else orjson.loads(raw))(self.get(json_key(key))))

    def stage(self, overlay: Overlay) -> int:
        staged = 0
        for key, (partition, value) in overlay.drain().items():
            raw_key = json_key(key)
            if value is None:
                self.pop(raw_key, None)
            else:
                self[raw_key] = orjson.dumps(value)
            staged += 1
        return staged


def decide_all(book: DispatchBook, items: list[tuple[bytes, bytes]], now: datetime) -> list[bytes]:
    codec, table = avro.AvroCodec(), Table()
    step = DecideStep(book, lambda key: partition_for(key, PARTITIONS),
                      lambda record: codec.encode(avro.DISPATCHED_MESSAGE, record))
    partitioned = sorted(((partition_for(key, PARTITIONS), offset, key, value)
                          for offset, (key, value) in enumerate(items)))
    invites = []
    for start in range(0, len(partitioned), BATCH):
        batch = [TriggerIn(p, o, k, v, codec.decode(v, expected=avro.TRIGGER_EVENT))
                 for p, o, k, v in partitioned[start:start + BATCH]]
        state = table.view()
        outcome = step.run(batch, state, now)
        table.stage(state)
        for o in outcome.outputs:
            partition_for(o.key, PARTITIONS)
            if o.name == "invitations":
                invites.append(o.value)
    return invites


async def deliver_all(book: DispatchBook, invites: list[bytes], channel, now: datetime) -> int:
    codec, table, sent = avro.AvroCodec(), Table(), 0
    for start in range(0, len(invites), BATCH):
        batch = DeliverBatch(book, table.view(), now, lambda name: True, 30 * 86400 * 1000)
        for raw in invites[start:start + BATCH]:
            command = orjson.loads(raw)
            batch.command(command["op"], command["inv"], command, 0)
        queue = list(batch.sends.values())
        for at in range(0, len(queue), SEND_CHUNK):
            chunk = batch.mark(queue[at:at + SEND_CHUNK])
            table.stage(batch.state)
            results = await asyncio.gather(*(channel.send(book.channel_invitation(s.inv, reminder=s.kind == REMINDER))
                                             for s in chunk))
            for send, result in zip(chunk, results):
                batch.finish(send, result)
                sent += result.ok
        table.stage(batch.state)
        for inv, kind in batch.records:
            codec.encode(avro.DISPATCHED_MESSAGE, book.invitation_record(inv, kind=kind))
    return sent


def timed(what, *args) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this thread, result): the CPU figure is what the worker's event loop pays,
    and holds up better than the wall clock on a machine shared with other runs."""
    started, cpu = time.perf_counter(), time.thread_time()
    result = what(*args)
    return time.perf_counter() - started, time.thread_time() - cpu, result


def run(items: list, now: datetime, profiler) -> dict:
    book = DispatchBook(parse_programs(programs_yaml(1)), SECRET, "https://nps.example.com/s")
    home = Path(tempfile.mkdtemp(prefix="npsflow-steps-bench-"))
    try:
        channel = OutboxChannel(home, "email")
        if profiler:
            profiler.enable()
        decide_s, decide_cpu, invites = timed(decide_all, book, items, now)
        deliver_s, deliver_cpu, sent = timed(lambda: asyncio.run(deliver_all(book, invites, channel, now)))
        if profiler:
            profiler.disable()
        files = len(list((home / "outbox" / "email").glob("*.eml")))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    n = len(items)
    return {"invites": len(invites), "sent": sent, "files": files,
            "decide_us": round(decide_s / n * 1e6, 1), "decide_cpu_us": round(decide_cpu / n * 1e6, 1),
            "deliver_us": round(deliver_s / max(1, sent) * 1e6, 1),
            "deliver_cpu_us": round(deliver_cpu / max(1, sent) * 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best of each figure is reported")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    items = payloads(args.count, 1)
    profiler = cProfile.Profile() if args.profile else None
    runs = [run(items, datetime.now(timezone.utc), profiler) for _ in range(1 if args.profile else args.repeat)]
    result = {"count": args.count, "runs": len(runs), **{k: min(r[k] for r in runs) for k in runs[0]
                                                       if k.endswith("_us")}, "sent": runs[-1]["sent"],
              "files": runs[-1]["files"]}
    result.update(decide_rps=round(1e6 / result["decide_us"]), deliver_rps=round(1e6 / result["deliver_us"]))
    print(f"best of {len(runs)}: decide {result['decide_us']} µs/trigger ({result['decide_cpu_us']} CPU), deliver "
          f"{result['deliver_us']} µs/mail ({result['deliver_cpu_us']} CPU of the loop's thread), "
          f"{result['files']} files", file=sys.stderr)
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(35)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
