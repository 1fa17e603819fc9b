"""Per-record CPU cost of the classify agent's pure path, without Kafka (µs per record per stage).

    .venv/bin/python bench/classify_step.py [--count 50000] [--repeat 3] [--profile out.prof]

The records are built like bench/pipeline_throughput.py builds them (``make_payloads``: simulated responses,
``to_raw_response``, Confluent-Avro RawResponse, keyed by response_id; all valid and unique, responded_at in
the last hour), unless ``--bad-ratio`` / ``--duplicate-ratio`` / ``--edit-ratio`` mix in the simulator's bad
inputs, replays and edits. Each is put on the partition of its key (6 partitions) with increasing offsets and
handed over in batches of ``streams.classify_agent.BATCH`` records, as the fetcher would.

Stages (each timed over all N records in CPU time of the process, best of ``--repeat`` runs; every run starts
from empty state):

* ``decode``: ``ClassifyAgent.incoming`` (Avro decode of the wire bytes into an ``Incoming``);
* ``validate``: decode + ``streams.responses.validate`` + ``identified`` (no state, no encode);
* ``step``: decode + ``ClassifyStep.run`` (route, join, dedup, memo, Avro encode of the ClassifiedResponse,
  window deltas) over the agent's real view of its tables;
* ``prepare``: the real ``ClassifyAgent.prepare`` (decode, step, staging of memos, watermarks, classified
  records, delta messages and dead letters into a ``BatchOutput``): what the worker does per batch before the
  send. Not included: the Kafka fetch, the send (``BatchOutput.flush``), the ack, the event loop.

Also printed, from the same records: the content hash alone and the ClassifiedResponse encode alone.

The agent is built on a Faust app created like the worker's (memory store) that is never started: no broker.
The cyclic GC runs with the worker's thresholds (npsflow/worker.py). The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from npsflow import config  # noqa: E402
from npsflow.ingest import to_raw_response  # noqa: E402
from npsflow.simulate import ResponseSimulator  # noqa: E402
from schemas import codec as avro  # noqa: E402
from streams.app import create_app  # noqa: E402
from streams.batch_consumer import Record  # noqa: E402
from streams.classify import identified  # noqa: E402
from streams.classify_agent import BATCH, ClassifyAgent  # noqa: E402
from streams.kafka_io import partition_for  # noqa: E402
from streams.responses import Rejected, validate  # noqa: E402

PARTITIONS = 6
TOPIC = "bench.responses.raw"


def make_records(count: int, seed: int, now: datetime, **ratios) -> list[Record]:
    """N simulated RawResponses as fetched records on the partition of their key (offsets per partition)."""
    codec = avro.AvroCodec(registry_url="")
    simulator = ResponseSimulator(seed=seed, clock=lambda: now)
    offsets = [0] * PARTITIONS
    out = []
    for obj in simulator.records(count, **ratios):
        rec = to_raw_response(obj, source="bench", received_at=now)
        key = (rec["response_id"] or rec["invitation_id"] or "").encode()
        partition = partition_for(key, PARTITIONS)
        out.append(Record(TOPIC, partition, offsets[partition], key, codec.encode(avro.RAW_RESPONSE, rec)))
        offsets[partition] += 1
    return out


def fresh_agent(home: Path, now: datetime) -> ClassifyAgent:
    """A ClassifyAgent over a never-started Faust app (memory store, empty tables), clock fixed at ``now``."""
    settings = config.load({"NPSFLOW_HOME": str(home), "NPSFLOW_PARTITIONS": str(PARTITIONS),
                            "NPSFLOW_SCHEMA_REGISTRY_URL": ""})
    pipeline = create_app(settings, clock=lambda: now, web_enabled=False)
    pipeline.app.finalize()
    return ClassifyAgent(pipeline)


def batches(records: list[Record]) -> list[list[Record]]:
    return [records[i:i + BATCH] for i in range(0, len(records), BATCH)]


def stage_decode(agent: ClassifyAgent, records: list[Record], now: datetime) -> None:
    incoming = agent.incoming
    for record in records:
        incoming(record)


def stage_validate(agent: ClassifyAgent, records: list[Record], now: datetime) -> None:
    incoming = agent.incoming
    for record in records:
        item = incoming(record)
        if item.raw is not None:
            try:
                identified(validate(item.raw, now)).version
            except Rejected:
                pass


def stage_step(agent: ClassifyAgent, records: list[Record], now: datetime) -> None:
    for batch in batches(records):
        agent.step.run([agent.incoming(record) for record in batch], agent.view, now)


def stage_prepare(agent: ClassifyAgent, records: list[Record], now: datetime) -> None:
    for batch in batches(records):
        agent.prepare(batch)


STAGES = {"decode": stage_decode, "validate": stage_validate, "step": stage_step, "prepare": stage_prepare}


def timed(fn, *args) -> float:
    """CPU seconds of this process (not wall time: the machine may be shared, and waiting for a core is not
    the code's cost)."""
    gc.collect()
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


def parts(agent: ClassifyAgent, records: list[Record], now: datetime, repeat: int) -> dict[str, float]:
    """The content hash and the ClassifiedResponse encode alone (µs per valid record)."""
    from streams.classify import classified_record

    responses = []
    for record in records:
        item = agent.incoming(record)
        try:
            responses.append(identified(validate(item.raw, now)))
        except (Rejected, TypeError, AttributeError):
            pass
    n = max(len(responses), 1)
    hash_fn = type(responses[0]).__dict__["content_hash"].func
    best_hash = min(timed(lambda: [hash_fn(r) for r in responses]) for _ in range(repeat))
    memo = {"e": False, "ps": None, "ds": []}
    dicts = [classified_record(r, memo, now) for r in responses]
    encode = agent.step.encode
    best_encode = min(timed(lambda: [encode(d) for d in dicts]) for _ in range(repeat))
    return {"hash_us": best_hash / n * 1e6, "encode_us": best_encode / n * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-ratio", type=float, default=0.0)
    parser.add_argument("--duplicate-ratio", type=float, default=0.0)
    parser.add_argument("--edit-ratio", type=float, default=0.0)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    parser.add_argument("--profile", metavar="FILE", help="cProfile the prepare stage once into FILE")
    args = parser.parse_args()
    logging.getLogger("npsflow.streams").setLevel(logging.ERROR)  # "no survey programs": dispatch is not measured
    gc.set_threshold(50_000, 20, 20)  # as the worker (npsflow/worker.py)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    t = time.perf_counter()
    records = make_records(args.count, args.seed, now, bad_ratio=args.bad_ratio,
                           duplicate_ratio=args.duplicate_ratio, edit_ratio=args.edit_ratio)
    print(f"{len(records)} records built in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    result = {"bench": "classify_step", "count": len(records)}
    with tempfile.TemporaryDirectory(prefix="npsflow-bench-") as tmp:
        for name in args.stages.split(","):
            best = min(timed(STAGES[name], fresh_agent(Path(tmp) / f"{name}{i}", now), records, now)
                       for i in range(args.repeat))
            result[f"{name}_us"] = round(best / len(records) * 1e6, 2)
            print(f"{name:10s} {result[f'{name}_us']:7.2f} µs/record", file=sys.stderr)
        for name, value in parts(fresh_agent(Path(tmp) / "parts", now), records, now, args.repeat).items():
            result[name] = round(value, 2)
            print(f"{name:10s} {value:7.2f} µs/record (alone)", file=sys.stderr)
        if args.profile:
            agent = fresh_agent(Path(tmp) / "profile", now)
            cProfile.runctx("stage_prepare(agent, records, now)", globals(), {"agent": agent, "records": records,
                            "now": now, "stage_prepare": stage_prepare}, args.profile)
    result["us_per_record"] = result.get("prepare_us")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
