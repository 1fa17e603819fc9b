"""The cluster variant of the migrations: generated from the same files, parsed by the real ClickHouse parser."""

from __future__ import annotations

import re

import pytest

from sinks.clickhouse import load_migrations, split_statements
from sinks.cluster import SHARDING_KEYS, cluster_ddl, cluster_extras, cluster_statements


def test_every_migration_statement_has_a_cluster_form_that_clickhouse_parses(ch_store):
    generated = cluster_ddl("prod_cluster", "npsflow")
    assert [name for name, _ in generated] == [m.name for m in load_migrations()]
    statements = [s for _, sts in generated for s in sts]
    for statement in statements:
        # every DDL statement goes to the whole cluster; a backfill INSERT runs once, through the Distributed tables
        assert ("ON CLUSTER 'prod_cluster'" in statement) != statement.startswith("INSERT INTO `npsflow`.")
        assert ch_store.query("EXPLAIN AST " + statement)  # syntax checked by the engine itself, not executed
    creates = [s for s in statements if s.startswith("CREATE TABLE")]
    local = [s for s in creates if "_local ON CLUSTER" in s]
    distributed = [s for s in creates if "ENGINE = Distributed(" in s]
    tables = lambda found: {re.match(r"CREATE TABLE IF NOT EXISTS `npsflow`\.(\w+?)(_local)? ", s)[1]  # noqa: E731
                            for s in found}
    assert tables(local) == tables(distributed) == set(SHARDING_KEYS)  # alerts twice: 0001, and 0008 replaced it
    drops = [s for s in statements if s.startswith("DROP")]
    assert drops == ["DROP TABLE IF EXISTS `npsflow`.alerts ON CLUSTER 'prod_cluster' SYNC",
                     "DROP TABLE IF EXISTS `npsflow`.alerts_local ON CLUSTER 'prod_cluster' SYNC"]
    for s in local:
        table = re.match(r"CREATE TABLE IF NOT EXISTS `npsflow`\.(\w+)_local", s)[1]
        assert re.search(rf"ENGINE = Replicated(Replacing|Aggregating)MergeTree\('/clickhouse/tables/{{shard}}/npsflow/"
                         rf"{table}_local', '{{replica}}'", s)
        assert "non_replicated_deduplication_window" not in s
    responses = next(s for s in local if "`npsflow`.responses_local" in s)
    assert "'{replica}', version)" in responses  # the version column still decides which row wins
    assert "ENGINE = Distributed('prod_cluster', `npsflow`, responses_local, cityHash64(response_id))" in "\n".join(
        distributed)
    views = {re.match(r"CREATE MATERIALIZED VIEW IF NOT EXISTS `npsflow`\.(\w+) ON CLUSTER 'prod_cluster' "
                      r"TO `npsflow`\.(\w+) AS\n.*?FROM `npsflow`\.(\w+)", s, re.S).groups()
             for s in statements if s.startswith("CREATE MATERIALIZED VIEW")}
    assert views == {("responses_by_day_mv", "responses_by_day_local", "responses_local"),  # shard-local feeds
                     ("nps_daily_touched_mv", "nps_daily_touched_local", "responses_by_day_local"),
                     ("comments_by_day_mv", "comments_by_day_local", "responses_by_day_local")}
    alters = [s for s in statements if s.startswith("ALTER")]
    assert {re.match(r"ALTER TABLE `npsflow`\.(\w+) ", s)[1] for s in alters} == {
        "dispatches_local", "dispatches", "responses_local", "responses",  # both the shards and the front
        "responses_by_day_local", "responses_by_day", "comments_by_day_local", "comments_by_day",
        "responses_by_day_mv", "comments_by_day_mv"}  # a view's new query: once per server, local tables
    modify = next(s for s in alters if "MODIFY QUERY" in s)
    assert modify.startswith("ALTER TABLE `npsflow`.responses_by_day_mv ON CLUSTER 'prod_cluster' MODIFY QUERY")
    assert "FROM `npsflow`.responses_local\n" in modify


def test_the_plain_migrations_are_untouched_and_bad_input_refused():
    statement = split_statements(load_migrations()[0].sql.replace("{db}", "`npsflow`"))[0]
    assert "ON CLUSTER" not in statement and "Replicated" not in statement  # chDB/single server DDL unchanged
    with pytest.raises(ValueError, match="cluster name"):
        cluster_ddl("prod'; DROP")
    with pytest.raises(ValueError, match="no sharding key"):
        cluster_statements("CREATE TABLE IF NOT EXISTS `npsflow`.other\n(a String)\nENGINE = MergeTree\nORDER BY a",
                           "c", "npsflow")


def test_cli_prints_the_cluster_ddl(tmp_path):
    from tests.test_cli import one_line_error, run

    proc = run(["clickhouse", "ddl", "--cluster", "prod"], home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("-- 0001_init.sql\nCREATE TABLE IF NOT EXISTS `npsflow`.responses_local ON CLUSTER")
    assert proc.stdout.count(";\n") == sum(len(s) for _, s in cluster_ddl("prod") + cluster_extras("prod"))
    assert "-- views\nCREATE OR REPLACE VIEW `npsflow`.nps_cells ON CLUSTER 'prod' AS" in proc.stdout
    with_ttl = run(["clickhouse", "ddl", "--cluster", "prod", "--retention", "400"], home=tmp_path)
    assert with_ttl.returncode == 0 and "-- retention\nALTER TABLE `npsflow`.responses_local ON CLUSTER 'prod' " \
        "MODIFY TTL responded_at + toIntervalDay(400)" in with_ttl.stdout
    bad = run(["clickhouse", "ddl", "--cluster", "a b"], home=tmp_path)
    assert bad.returncode == 1 and "cluster name" in one_line_error(bad)


def test_views_and_retention_in_cluster_form(ch_store):
    from sinks import bi
    from sinks.clickhouse import RETENTION_COLUMNS

    extras = dict(cluster_extras("prod_cluster", "npsflow", retention_days=30, dispatch_extra_days=31))
    assert list(extras) == ["views", "retention"]
    views = extras["views"]
    names = [re.match(r"CREATE OR REPLACE VIEW `npsflow`\.(\w+) ON CLUSTER 'prod_cluster' AS\n", v)[1] for v in views]
    assert names == ["nps_cells", "term_cells"] + [bi.view_name(p) for p in bi.panels()]  # first: the others read them
    assert all("{db}" not in v for v in views)
    ttl = {re.match(r"ALTER TABLE `npsflow`\.(\w+)_local ON CLUSTER 'prod_cluster' MODIFY TTL (\w+) \+ "
                    r"toIntervalDay\((\d+)\)$", t).groups() for t in extras["retention"]}
    assert ttl == {(table, column, "61" if table == "dispatches" else "30")
                   for table, column in RETENTION_COLUMNS.items()}
    for statement in views + extras["retention"]:
        assert ch_store.query("EXPLAIN AST " + statement)  # parsed by ClickHouse itself
    assert [name for name, _ in cluster_extras("c")] == ["views"]
    with pytest.raises(ValueError, match="retention"):
        cluster_extras("c", retention_days=0)
    with pytest.raises(ValueError, match="cluster name"):
        cluster_extras("a b")


def test_erasure_on_a_cluster_deletes_on_every_shards_local_table_on_cluster(ch_store):
    """sinks.erasure on the cluster DDL: the Distributed fronts are what is counted; their rows are deleted on the
    local tables ON CLUSTER (a Distributed table takes no mutation); the local tables are not listed themselves.
    The engine definitions are ClickHouse's own formatting of our cluster DDL (formatQuery), and the statements
    are parsed by the real ClickHouse parser — no cluster runs here."""
    from sinks.erasure import delete_statement, select_tables

    fronts = [s for _, sts in cluster_ddl("prod_cluster", "npsflow") for s in sts if "ENGINE = Distributed(" in s]
    rows = []
    for statement in fronts:
        formatted = ch_store.query("SELECT formatQuery({q:String}) AS f", {"q": statement})[0]["f"]
        table = re.search(r"CREATE TABLE IF NOT EXISTS npsflow\.(\w+) ", formatted)[1]
        engine = formatted[formatted.index("ENGINE = ") + len("ENGINE = "):]
        rows.append({"t": table, "cols": ["respondent", "response_id"], "engine": "Distributed", "engine_full": engine})
        rows.append({"t": f"{table}_local", "cols": ["respondent", "response_id"],
                     "engine": "ReplicatedReplacingMergeTree", "engine_full": "ReplicatedReplacingMergeTree(…)"})
    rows.append({"t": "dispatches", "cols": ["contact_key"], "engine": "Distributed",  # arguments as literals
                 "engine_full": "Distributed('prod_cluster', 'npsflow', 'dispatches_local', cityHash64(contact_key))"})
    found = select_tables(rows)
    assert not any(t.endswith("_local") for t in found) and "responses" in found and "dispatches" in found
    assert found["responses"] == ({"respondent", "response_id"}, "`npsflow`.`responses_local` ON CLUSTER 'prod_cluster'")
    assert found["dispatches"][1] == "`npsflow`.`dispatches_local` ON CLUSTER 'prod_cluster'"
    statement = delete_statement(found["responses"][1], "(respondent = 'p') OR (response_id IN ['r-1'])")
    assert ch_store.query("EXPLAIN AST " + statement)
    single = select_tables([{"t": "responses", "cols": ["respondent"], "engine": "ReplacingMergeTree",
                             "engine_full": "ReplacingMergeTree(version)"}])
    assert single == {"responses": ({"respondent"}, "{db}.`responses`")}
