#!/usr/bin/env python
"""The npsflow responses job written with Quix Streams: the peer measured by bench/pipeline_throughput.py.

    python bench/quix_peer.py --bootstrap HOST:PORT --namespace NS --chdb /abs/dir --state-dir DIR

Reads ``<ns>.responses.raw`` (Avro RawResponse, Confluent wire format, keyed by response_id) and does what the
npsflow worker's classify → windows → sink path does for such records, with npsflow's own pure functions:

1. decode with ``schemas.codec.AvroCodec`` and validate with ``streams.responses.validate``; a codec error or a
   rejected record goes to ``<ns>.deadletters`` (JSON: stage, reason, detail, partition, offset);
2. latest-wins dedup by response_id: Quix state (``state.get/set``, per message key) remembers the highest
   ``Response.version``; the same or an older version is dropped;
3. classification (``Response.category``: promoter / passive / detractor) and, for the kept versions, the text
   analysis npsflow's classify does (``streams.text.analyse``: the comment masked, its language and terms),
   with the text data loaded before the app reports ready, as the npsflow worker does at its start;
4. the classified responses → a chDB table through a Quix ``BatchingSink`` (flushed before each commit;
   ``commit_interval`` 1 s like npsflow's sink max age);
5. per segment (``streams.windows.segment_keys`` of the configured dimensions; one record per segment, then
   ``group_by`` segment → repartition topic) hourly tumbling windows (grace = npsflow's lateness, 6 h) counting
   promoters / passives / detractors; every update (``.current()``) → ``<ns>.quix-windows`` (JSON
   ``{"start", "end", "value": [P, Pa, D]}``, key = the segment ``dim=value``).

Protocol with the bench (stdout, one JSON object per line): ``{"ready": true, "t": monotonic}`` once the raw
topic's partitions are assigned; ``{"rows": total, "t": monotonic}`` after every ClickHouse insert returned;
a line ``stop`` on stdin stops the app, then ``{"report": {...}}`` (counts read back from its chDB) and exit.
``time.monotonic()`` is CLOCK_MONOTONIC, the same clock in every process on Linux.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path


def broker_address(bootstrap: str):
    """The bootstrap servers, or — with NPSFLOW_KAFKA_* security settings (npsflow.kafka_security) — Quix's
    ConnectionConfig carrying SASL/TLS like every other npsflow client."""
    import os

    from npsflow.kafka_security import from_env

    security = from_env(dict(os.environ))
    if security.protocol == "PLAINTEXT":
        return bootstrap
    from quixstreams.kafka.configuration import ConnectionConfig

    return ConnectionConfig.from_librdkafka_dict({"bootstrap.servers": bootstrap, **security.librdkafka_config()})

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOUR_MS = 3_600_000
LATENESS_MS = 6 * HOUR_MS  # npsflow's default window lateness
CATEGORY_INDEX = {"promoter": 0, "passive": 1, "detractor": 2}
TABLE = "quix_responses"
COLUMNS = ("response_id", "version", "survey_id", "score", "category", "comment", "locale", "responded_at",
           "received_at", "processed_at", "segment", "source", "lang", "terms")


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def build(args):
    import clickhouse_connect
    from quixstreams import Application, message_context
    from quixstreams.sinks import BatchingSink, SinkBatch

    from schemas import codec as avro
    from streams import text
    from streams.responses import Rejected, validate
    from streams.windows import segment_keys

    text.warm_up()  # before the app reports ready, like the npsflow worker (which loads it while Kafka connects)
    codec = avro.AvroCodec()
    dimensions = [d.strip() for d in args.dimensions.split(",") if d.strip()]
    ns = args.namespace
    ready = threading.Event()

    class PeerApplication(Application):
        def _on_assign(self, consumer, topic_partitions):  # a readiness signal for the bench only
            super()._on_assign(consumer, topic_partitions)
            if not ready.is_set() and any(tp.topic == f"{ns}.responses.raw" for tp in topic_partitions):
                ready.set()
                emit({"ready": True, "t": time.monotonic()})

    class ClickHouseSink(BatchingSink):
        """The classified responses → chDB (its own directory), one insert per topic-partition batch."""

        def __init__(self, path: str):
            super().__init__()
            self.path, self.client, self.total = path, None, 0

        def setup(self):
            self.client = clickhouse_connect.get_client(dsn=f"chdb://{self.path}", tz_mode="aware")
            self.client.command(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (response_id String, version UInt64, survey_id String, "
                "score UInt8, category LowCardinality(String), comment Nullable(String), "
                "locale LowCardinality(String), responded_at DateTime64(3, 'UTC'), "
                "received_at DateTime64(3, 'UTC'), processed_at DateTime64(3, 'UTC'), "
                "segment Map(LowCardinality(String), String), source LowCardinality(String), "
                "lang LowCardinality(String), terms Array(LowCardinality(String))) "
                "ENGINE = ReplacingMergeTree(version) ORDER BY response_id")

        def write(self, batch: SinkBatch):
            rows = [[item.value[c] for c in COLUMNS] for item in batch]
            self.client.insert(TABLE, rows, column_names=COLUMNS)
            self.total += len(rows)
            emit({"rows": self.total, "t": time.monotonic()})

    app = PeerApplication(
        broker_address=broker_address(args.bootstrap), consumer_group=f"{ns}-quix", auto_offset_reset="earliest",
        commit_interval=args.commit_interval, state_dir=args.state_dir, loglevel="WARNING")
    raw = app.topic(f"{ns}.responses.raw", key_deserializer="str", value_deserializer="bytes")
    dead = app.topic(f"{ns}.deadletters", key_serializer="str", value_serializer="json")
    windows = app.topic(f"{ns}.quix-windows", key_serializer="str", value_serializer="json")

    def decode_validate(value: bytes) -> dict:
        ctx = message_context()
        where = {"stage": "quix", "partition": ctx.partition, "offset": ctx.offset}
        try:
            rec = codec.decode(value, expected=avro.RAW_RESPONSE)
            response = validate(rec, datetime.now(timezone.utc))
        except avro.CodecError as exc:
            return {"reject": {**where, "reason": exc.reason, "detail": exc.detail}}
        except Rejected as exc:
            return {"reject": {**where, "reason": exc.reason, "detail": exc.detail}}
        return {
            "response_id": response.response_id, "version": response.version, "survey_id": response.survey_id,
            "score": response.score, "category": response.category.value, "comment": response.comment,
            "locale": response.locale or "", "responded_at": response.responded_at,
            "received_at": response.received_at, "segment": response.segment, "source": response.source,
            "t": response.responded_ms,
        }

    def latest_wins(value: dict, state) -> bool:
        previous = state.get("v")
        if previous is not None and previous >= value["version"]:
            return False  # a duplicate or an older version
        state.set("v", value["version"])
        return True

    def classified_row(value: dict) -> dict:
        said = text.analyse(value["comment"], value["locale"]) if value["comment"] else None
        return {**value, "processed_at": datetime.now(timezone.utc),
                "comment": said.masked if said else value["comment"], "lang": said.lang if said else "",
                "terms": list(said.terms) if said else []}

    def per_segment(value: dict) -> list[dict]:
        c = CATEGORY_INDEX[value["category"]]
        return [{"seg": str(k), "c": c} for k in segment_keys(value["segment"], dimensions)]

    def init_counts(value: dict) -> list[int]:
        counts = [0, 0, 0]
        counts[value["c"]] += 1
        return counts

    def add_counts(counts: list[int], value: dict) -> list[int]:
        counts[value["c"]] += 1
        return counts

    sdf = app.dataframe(raw).apply(decode_validate)
    rejects = sdf.filter(lambda v: "reject" in v).apply(lambda v: v["reject"])
    rejects.to_topic(dead)
    ok = sdf.filter(lambda v: "reject" not in v).filter(latest_wins, stateful=True)
    ok = ok.set_timestamp(lambda value, key, timestamp, headers: value["t"])
    sink = ClickHouseSink(args.chdb)
    ok.apply(classified_row).sink(sink)
    seg = ok.apply(per_segment, expand=True).group_by(lambda v: v["seg"], name="segment",
                                                      key_serializer="str", key_deserializer="str")
    seg = (seg.tumbling_window(HOUR_MS, grace_ms=LATENESS_MS, name="segment-hour")
           .reduce(reducer=add_counts, initializer=init_counts).current())
    seg.to_topic(windows)
    return app, sink


def report(client) -> dict:
    total = client.query(f"SELECT count() FROM {TABLE} FINAL").result_rows[0][0]
    by_location = {}
    for loc, cat, n in client.query(
            f"SELECT if(segment['location'] = '', '(none)', segment['location']) AS loc, category, count() "
            f"FROM {TABLE} FINAL GROUP BY loc, category").result_rows:
        by_location.setdefault(loc, [0, 0, 0])[CATEGORY_INDEX[cat]] += int(n)
    overall = [sum(v[i] for v in by_location.values()) for i in range(3)]
    return {"responses": int(total), "overall": overall, "by_location": by_location}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--chdb", required=True, help="absolute chDB directory (the peer's own)")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--dimensions", default="overall,location,employee,channel")
    ap.add_argument("--commit-interval", type=float, default=1.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app, sink = build(args)

    def wait_for_stop():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        app.stop()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    app.run()
    if sink.client is None:
        sink.setup()
    emit({"report": report(sink.client)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
