#!/usr/bin/env python
"""chDB under a file-size limit (EFBIG), outside npsflow: does an INSERT fail, or does it "succeed" and commit a part
whose files are all empty? (Found by the fault suite's old disk case, session 9; README Known limits.)

    .venv/bin/python bench/repro/chdb_efbig_empty_parts.py [DIR]

A MergeTree ledger with a materialized view into an AggregatingMergeTree (the shape of sinks' daily rollup), one
row inserted normally, then 40 plain SQL INSERTs with RLIMIT_FSIZE 0 set in this process (Python ignores SIGXFSZ, so
writes fail with EFBIG while the disk has room), the limit restored, then the data read back. Measured 2026-12-06,
chdb 4.4.0: 40 of 40 inserts reported success, 80 all-empty parts, every read of the data failed with Code 246
"Empty marks file". The same inserts on a really full disk (ENOSPC) fail cleanly with NOT_ENOUGH_SPACE. Ends with
one JSON line.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import shutil
import sys
import tempfile

import clickhouse_connect


def main() -> int:
    root = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="chdb-efbig-")
    db = os.path.join(root, "db")
    shutil.rmtree(db, ignore_errors=True)
    c = clickhouse_connect.get_client(dsn=f"chdb://{db}")
    c.command("CREATE DATABASE IF NOT EXISTS t")
    c.command("CREATE TABLE t.ledger (day Date32, v Int64) ENGINE = MergeTree ORDER BY day")
    c.command("CREATE TABLE t.touched (day Date32, last_insert SimpleAggregateFunction(max, DateTime64(3, 'UTC'))) "
              "ENGINE = AggregatingMergeTree ORDER BY day")
    c.command("CREATE MATERIALIZED VIEW t.touched_mv TO t.touched AS SELECT day, max(now64(3, 'UTC')) AS last_insert "
              "FROM t.ledger GROUP BY day")
    c.command("INSERT INTO t.ledger VALUES ('2026-12-06', 1)")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    ok = failed = 0
    last_error = None
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        for i in range(40):
            try:
                c.command(f"INSERT INTO t.ledger SETTINGS insert_deduplication_token='tok{i}' "
                          f"VALUES ('2026-12-06', {i})")
                ok += 1
            except Exception as exc:
                failed += 1
                last_error = str(exc).splitlines()[0][:200]
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print(f"during the limit: {ok} inserts reported success, {failed} failed (last error: {last_error})")
    reads = {}
    for table, column in (("ledger", "v"), ("touched", "last_insert")):  # reads the column's data, not metadata
        try:
            reads[table] = str(c.query(f"SELECT count(), max({column}) FROM t.{table}").result_rows[0])
        except Exception as exc:
            reads[table] = "failed: " + str(exc).splitlines()[0][:160]
        print(f"read t.{table}: {reads[table]}")
    empty = [p for p in glob.glob(f"{db}/store/*/*/all_*")
             if glob.glob(p + "/*") and max(os.path.getsize(f) for f in glob.glob(p + "/*")) == 0]
    print(f"parts whose files are all empty: {len(empty)}")
    print(json.dumps({"inserts_ok": ok, "inserts_failed": failed, "empty_parts": len(empty), "reads": reads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
