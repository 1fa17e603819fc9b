"""Per-record Avro encode/decode cost of every npsflow schema (µs). A benchmark, not a test.

    .venv/bin/python bench/codec_speed.py [--n 20000]
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import struct
import time

import fastavro
from fastavro.schema import parse_schema

from schemas import catalog, codec
from schemas.codec import AvroCodec
from schemas.examples import examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    n = parser.parse_args().n
    c = AvroCodec(registry_url="")
    results = {}
    for subject, rec in examples().items():
        data = c.encode(subject, rec)
        t0 = time.perf_counter()
        for _ in range(n):
            c.encode(subject, rec)
        t1 = time.perf_counter()
        for _ in range(n):
            c.decode(data, expected=subject)
        t2 = time.perf_counter()
        results[subject] = {"encode_us": round((t1 - t0) / n * 1e6, 2), "decode_us": round((t2 - t1) / n * 1e6, 2)}
    v1 = next(v for v in catalog.load_versions() if v.subject == codec.RAW_RESPONSE and v.version == 1)
    rec = {"response_id": "r-old", "survey_id": "s-1", "score": "7", "comment": "ok", "responded_at": "x",
           "locale": None, "segment": {"location": "Espoo"}, "source": "cli", "received_at": 0}
    buf = io.BytesIO(b"\x00" + struct.pack(">I", v1.id))
    buf.seek(5)
    fastavro.schemaless_writer(buf, parse_schema(copy.deepcopy(v1.schema)), rec)
    old = buf.getvalue()
    t0 = time.perf_counter()
    for _ in range(n):
        c.decode(old)
    results["RawResponse v1 read as current"] = {"decode_us": round((time.perf_counter() - t0) / n * 1e6, 2)}
    for name, r in results.items():
        print(f"{name:34s} " + "  ".join(f"{k} {v:6.2f}" for k, v in r.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
