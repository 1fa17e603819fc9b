"""Can chDB commit an all-empty part when writes fail with EFBIG (RLIMIT_FSIZE 0)? Source table + MV into an
AggregatingMergeTree, inserts during the fault, then reads after it."""
import os, resource, shutil, sys, glob
import clickhouse_connect
d = sys.argv[1]
shutil.rmtree(d, ignore_errors=True)
c = clickhouse_connect.get_client(dsn=f"chdb://{d}")
c.command("CREATE DATABASE IF NOT EXISTS t")
c.command("CREATE TABLE t.ledger (day Date32, v Int64) ENGINE = MergeTree ORDER BY day")
c.command("CREATE TABLE t.touched (day Date32, last_insert SimpleAggregateFunction(max, DateTime64(3, 'UTC'))) "
          "ENGINE = AggregatingMergeTree ORDER BY day")
c.command("CREATE MATERIALIZED VIEW t.touched_mv TO t.touched AS SELECT day, max(now64(3, 'UTC')) AS last_insert "
          "FROM t.ledger GROUP BY day")
c.command("INSERT INTO t.ledger VALUES ('2026-12-06', 1)")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
failed = ok = 0
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
for i in range(40):
    try:
        c.command(f"INSERT INTO t.ledger SETTINGS insert_deduplication_token='tok{i}' VALUES ('2026-12-06', {i})")
        ok += 1
    except Exception as exc:
        failed += 1
        last = str(exc).splitlines()[0][:160]
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print("during the fault: ok", ok, "failed", failed, "last error:", last if failed else None)
for table in ("ledger", "touched"):
    try:
        print(table, c.query(f"SELECT count() FROM t.{table}").result_rows, "(count from part metadata)")
        print(table, "read the data:", c.query(f"SELECT count(), max(day) FROM t.{table} WHERE day > '2000-01-01'").result_rows)
    except Exception as exc:
        print(table, "READ FAILED:", str(exc).splitlines()[0][:200])
for part in sorted(glob.glob(f"{d}/store/*/*/all_*")):
    sizes = [os.path.getsize(f) for f in glob.glob(part + "/*")]
    if sizes and max(sizes) == 0:
        print("ALL-EMPTY PART:", part)
