"""The cluster variant of the migrations, for multi-node ClickHouse: generated from the same files.

Every ``CREATE TABLE {db}.t … ENGINE = XMergeTree(args)`` becomes

* ``{db}.t_local ON CLUSTER '<cluster>'`` with ``ReplicatedXMergeTree('/clickhouse/tables/{shard}/<db>/t_local',
  '{replica}', args)`` (the ``{shard}``/``{replica}`` macros come from each server's config), and
* ``{db}.t ON CLUSTER '<cluster>' AS {db}.t_local ENGINE = Distributed('<cluster>', <db>, t_local, <sharding
  key>)`` — the name the application reads and writes, so ``sinks/`` works unchanged against it.

The sharding key keeps everything that must meet on one shard together: all versions of a response
(``response_id``), all decisions of a dispatch (``dispatch_id``) … so latest-wins reads and merges stay per shard.
``ALTER TABLE {db}.t …`` and ``DROP TABLE IF EXISTS {db}.t`` go to both, ``ON CLUSTER``. ``cluster_extras`` adds what the worker applies by itself
on a single server: the views ``ON CLUSTER`` and the retention TTLs on the ``_local`` tables. A materialized
view goes ``ON CLUSTER`` from the local source table into the local target table (each shard feeds its own day
ledger); a backfill ``INSERT … SELECT``
runs once, through the Distributed tables. ``non_replicated_deduplication_window`` is dropped
(replicated tables deduplicate inserts by default). Print it with ``npsflow clickhouse ddl --cluster NAME``.
"""

from __future__ import annotations

import re

from sinks.clickhouse import load_migrations, quote_ident, split_statements

SHARDING_KEYS = {
    "responses": "cityHash64(response_id)",
    "dispatches": "cityHash64(dispatch_id)",
    "window_updates": "cityHash64(dimension, segment_value)",
    "dead_letters": "cityHash64(dead_letter_id)",
    "alerts": "cityHash64(alert_id)",
    "cases": "cityHash64(case_id)",
    "erasures": "cityHash64(request_id)",
    # the day ledger next to its responses (its MV runs on each shard, local table to local table)
    "responses_by_day": "cityHash64(response_id)",
    "comments_by_day": "cityHash64(response_id)",
    # one day's rollup rows on one shard: FINAL (latest computed_at per cell) stays per shard
    "nps_daily": "toUInt32(day)",
    "nps_daily_state": "toUInt32(day)",
    "nps_daily_touched": "toUInt32(day)",
    "terms_daily": "toUInt32(day)",
    "terms_daily_state": "toUInt32(day)",
}
_CREATE = re.compile(r"^CREATE TABLE IF NOT EXISTS (?P<db>\S+)\.(?P<table>\w+)"
                     r"(?: AS (?P<src_db>\S+)\.(?P<src>\w+))?\s*\n", re.IGNORECASE)
_ENGINE = re.compile(r"ENGINE\s*=\s*(?P<kind>\w*MergeTree)(?:\((?P<args>[^)]*)\))?", re.IGNORECASE)
_ALTER = re.compile(r"^ALTER TABLE (?P<db>\S+)\.(?P<table>\w+)\s", re.IGNORECASE)
_VIEW = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (?P<db>\S+)\.(?P<view>\w+) "
                   r"TO (?P<tdb>\S+)\.(?P<to>\w+) AS\s", re.IGNORECASE)
_FROM = re.compile(r"\bFROM (?P<db>\S+)\.(?P<table>\w+)\b")
_DROP = re.compile(r"^DROP TABLE IF EXISTS (?P<db>\S+)\.(?P<table>\w+)(?P<sync> SYNC)?\s*$", re.IGNORECASE)
_DEDUP_SETTING = re.compile(r"\s*SETTINGS\s+non_replicated_deduplication_window\s*=\s*\d+\s*$", re.IGNORECASE)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cluster_statements(statement: str, cluster: str, database: str) -> list[str]:
    """One migration statement → its cluster form (one or two statements)."""
    on = f"ON CLUSTER {_quote(cluster)}"
    create = _CREATE.match(statement)
    if create:
        table = create["table"]
        if table not in SHARDING_KEYS:
            raise ValueError(f"no sharding key for table {table!r}: add it to sinks.cluster.SHARDING_KEYS")
        local = f"{create['db']}.{table}_local"
        body = statement[create.end():]
        engine = _ENGINE.search(body)
        if engine is None:
            raise ValueError(f"{table}: no *MergeTree engine to replicate")
        path = _quote(f"/clickhouse/tables/{{shard}}/{database}/{table}_local")
        args = ", ".join(a for a in (path, "'{replica}'", (engine["args"] or "").strip()) if a)
        body = body[:engine.start()] + f"ENGINE = Replicated{engine['kind']}({args})" + body[engine.end():]
        body = _DEDUP_SETTING.sub("", body)
        like = f" AS {create['src_db']}.{create['src']}_local" if create["src"] else ""  # the columns of another
        return [
            f"CREATE TABLE IF NOT EXISTS {local} {on}{like}\n{body}",
            f"CREATE TABLE IF NOT EXISTS {create['db']}.{table} {on} AS {local}\n"
            f"ENGINE = Distributed({_quote(cluster)}, {create['db']}, {table}_local, {SHARDING_KEYS[table]})",
        ]
    drop = _DROP.match(statement)
    if drop:  # the Distributed front first, then the shards' tables (SYNC: their replica paths are free at once)
        sync = " SYNC" if drop["sync"] else ""
        return [f"DROP TABLE IF EXISTS {drop['db']}.{drop['table']} {on}{sync}",
                f"DROP TABLE IF EXISTS {drop['db']}.{drop['table']}_local {on}{sync}"]
    alter = _ALTER.match(statement)
    if alter and alter["table"].endswith("_mv"):  # a materialized view's query: it reads the local table
        rest = _FROM.sub(lambda m: f"FROM {m['db']}.{m['table']}_local", statement[alter.end():], count=1)
        return [f"ALTER TABLE {alter['db']}.{alter['table']} {on} {rest}"]
    if alter:
        rest = statement[alter.end():]
        return [f"ALTER TABLE {alter['db']}.{alter['table']}_local {on} {rest}",
                f"ALTER TABLE {alter['db']}.{alter['table']} {on} {rest}"]
    view = _VIEW.match(statement)
    if view:  # on every server, from its local source table into its local target table
        select = _FROM.sub(lambda m: f"FROM {m['db']}.{m['table']}_local", statement[view.end():], count=1)
        return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {view['db']}.{view['view']} {on} "
                f"TO {view['tdb']}.{view['to']}_local AS\n{select}"]
    if re.match(r"^INSERT INTO ", statement, re.IGNORECASE):
        return [statement]  # a backfill: once, through the Distributed tables
    raise ValueError(f"no cluster form for: {statement.splitlines()[0][:80]}")


def _check_cluster_name(cluster: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", cluster or ""):
        raise ValueError(f"cluster name must be 1-64 of A-Z a-z 0-9 _ . -, got {cluster!r}")


def cluster_ddl(cluster: str, database: str = "npsflow") -> list[tuple[str, list[str]]]:
    """Every migration (name, its statements in cluster form), in version order."""
    _check_cluster_name(cluster)
    db = quote_ident(database)
    out = []
    for migration in load_migrations():
        statements = split_statements(migration.sql.replace("{db}", db))
        out.append((migration.name, [s for st in statements for s in cluster_statements(st, cluster, database)]))
    return out


def cluster_extras(cluster: str, database: str = "npsflow", retention_days: int | None = None,
                   dispatch_extra_days: int = 0) -> list[tuple[str, list[str]]]:
    """What the worker applies by itself on one server, in cluster form: the views (``nps_cells`` and the
    ``bi_*`` panel views, ``ON CLUSTER`` so every server answers them; recreate after every upgrade) and, with
    ``retention_days``, the TTLs on the ``_local`` tables (a Distributed table has no TTL of its own)."""
    from sinks.bi import panels, view_sql
    from sinks.clickhouse import MAX_RETENTION_DAYS, RETENTION_COLUMNS
    from sinks.rollup import cells_view, terms_view

    _check_cluster_name(cluster)
    db, on = quote_ident(database), f"ON CLUSTER {_quote(cluster)}"
    views = []
    for sql in [cells_view(), terms_view()] + [view_sql(p) for p in panels()]:
        head, rest = sql.split(" AS\n", 1)
        views.append(f"{head.replace('{db}', db)} {on} AS\n{rest.replace('{db}', db)}")
    out = [("views", views)]
    if retention_days is not None:
        if not 1 <= int(retention_days) <= MAX_RETENTION_DAYS:
            raise ValueError(f"retention must be 1–{MAX_RETENTION_DAYS} days, got {retention_days}")
        out.append(("retention", [
            f"ALTER TABLE {db}.{table}_local {on} MODIFY TTL {column} + "
            f"toIntervalDay({int(retention_days) + (dispatch_extra_days if table == 'dispatches' else 0)})"
            for table, column in RETENTION_COLUMNS.items()]))
    return out
