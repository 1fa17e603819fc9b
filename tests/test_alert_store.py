"""Alerts in ClickHouse (real chDB): migration 0008, the row mapper, latest-event-wins reads, the reader and
`npsflow alerts --format json`, and the cluster form of the replacing migration."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from npsflow import config
from npsflow.cli import main
from npsflow.reader import alerts as read_alerts
from schemas import codec as avro
from sinks import queries, rows
from sinks.clickhouse import close_all
from sinks.cluster import cluster_statements
from streams.alert_events import alert_record
from streams.alerting import evaluate

HOUR = 3_600_000
T = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp() * 1000)
CODEC = avro.AvroCodec()


def drop_events() -> list[dict]:
    """A real opened + closed pair from streams.alerting: 28 days at 2 P / 1 Pa / 1 D an hour, then a day at
    0 / 1 / 3, then a quiet month (the alert recovers: its condition does not hold for 24 h)."""
    buckets = {T - h * HOUR: (2, 1, 1) for h in range(25, 24 * 29 + 1)}
    buckets.update({T - h * HOUR: (0, 1, 3) for h in range(1, 25)})
    state, opened = evaluate("location=Oulu", buckets, None, T)
    state, closed = evaluate("location=Oulu", buckets, state, T + 3 * 24 * HOUR)
    return opened + closed


def as_row(event: dict, offset: int = 0) -> dict:
    """Through Avro as the sink sees it."""
    return rows.alert_row(CODEC.decode(CODEC.encode(avro.ALERT, alert_record(event)), expected=avro.ALERT), 0, offset)


def test_the_latest_event_wins_in_any_order_and_the_json_shape(ch_store):
    opened, closed = drop_events()
    assert (opened["event"], closed["event"]) == ("opened", "closed")
    ch_store.insert("alerts", [as_row(opened)])
    (only,) = queries.alerts(ch_store)["alerts"]
    assert only == {
        "alert_id": opened["alert_id"], "segment": {"location": "Oulu"}, "kind": "drop", "direction": "down",
        "baseline": {"nps": 25.0, "responses": 2688, "ci95": opened["baseline"]["ci95"]},
        "current": {"nps": -75.0, "responses": 96, "ci95": opened["current"]["ci95"]},
        "z": opened["z"], "p_value": pytest.approx(opened["p_value"]), "cusum": pytest.approx(opened["cusum"]),
        "opened_at": "2026-11-20T00:00:00.000Z", "closed_at": None, "status": "open",
        "detail": only["detail"]}
    assert only["detail"].startswith("NPS drop in location=Oulu: -75.0 (n=96) vs 25.0 (n=2688)")
    assert queries.alerts(ch_store, "closed") == {"alerts": []}
    ch_store.insert("alerts", [as_row(closed, 1)])
    ch_store.insert("alerts", [as_row(opened, 2)])  # a replayed opening after the closing: the closing still wins
    (latest,) = queries.alerts(ch_store)["alerts"]
    assert latest["status"] == "closed" and latest["closed_at"] == _iso(closed["closed_at"])
    assert latest["current"] == only["current"] and latest["opened_at"] == only["opened_at"]
    assert queries.alerts(ch_store, "open") == {"alerts": []}
    assert queries.alerts(ch_store, "closed")["alerts"] == [latest]
    final = ch_store.query("SELECT alert_id, status FROM {db}.alerts FINAL")
    assert final == [{"alert_id": opened["alert_id"], "status": "closed"}]
    with pytest.raises(ValueError, match="status must be one of"):
        queries.alerts(ch_store, "overdue")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_rows_of_v1_kinds_are_refused_for_the_dead_letters():
    with pytest.raises(ValueError, match="not an alert event of v2"):
        rows.alert_row({"alert_id": "a", "kind": "nps_drop", "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc)})


def test_reader_and_cli_answer_the_issue_shape_without_a_worker(ch_store, tmp_path):
    opened, _ = drop_events()
    ch_store.insert("alerts", [as_row(opened)])
    env = {"NPSFLOW_HOME": str(tmp_path / "home"), "NPSFLOW_CLICKHOUSE_DSN": ch_store.dsn}
    assert read_alerts(config.load(env), "open") == queries.alerts(ch_store, "open")
    result = CliRunner().invoke(main, ["alerts", "--status", "open", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    (alert,) = json.loads(result.output)["alerts"]
    assert {"alert_id", "segment", "kind", "baseline", "current", "z", "p_value", "opened_at", "status"} <= set(alert)
    assert set(alert["baseline"]) == set(alert["current"]) == {"nps", "responses", "ci95"}
    assert alert["segment"] == {"location": "Oulu"} and alert["kind"] == "drop" and alert["status"] == "open"
    table = CliRunner().invoke(main, ["alerts"], env=env)
    assert table.exit_code == 0 and "location=Oulu" in table.output and "drop" in table.output
    closed = CliRunner().invoke(main, ["alerts", "--status", "closed", "--format", "json"], env=env)
    assert json.loads(closed.output) == {"alerts": []}
    close_all()  # the stores the CLI opened in this process (a CLI process would just exit)


def test_the_replacing_migration_has_a_cluster_form():
    assert cluster_statements("DROP TABLE IF EXISTS `npsflow`.alerts SYNC", "c1", "npsflow") == [
        "DROP TABLE IF EXISTS `npsflow`.alerts ON CLUSTER 'c1' SYNC",
        "DROP TABLE IF EXISTS `npsflow`.alerts_local ON CLUSTER 'c1' SYNC"]


def test_grafana_alert_annotations_on_chdb_and_in_every_dashboard(ch_store):
    from npsflow import grafana
    from sinks import bi

    opened, closed = drop_events()
    other = {**opened, "alert_id": "b" * 16, "segment": {"overall": "all"}, "opened_at": T + 2 * 24 * HOUR}
    ch_store.insert("alerts", [as_row(opened), as_row(closed, 1), as_row(other, 2)])

    def annotations(since_ms: int, until_ms: int) -> list[dict]:
        period = {"time_from": datetime.fromtimestamp(since_ms / 1000, tz=timezone.utc),
                  "time_to": datetime.fromtimestamp(until_ms / 1000, tz=timezone.utc)}
        return ch_store.query(bi.render(bi.ALERT_ANNOTATIONS, **period, variables={}))

    (region, point) = annotations(T - HOUR, T + 30 * 24 * HOUR)
    assert (region["time"], region["timeEnd"]) == (_dt(closed["opened_at"]), _dt(closed["closed_at"]))
    assert region["tags"] == "alert,drop,location=Oulu,closed" and region["text"].endswith("[closed]")
    assert point["time"] == point["timeEnd"] == _dt(other["opened_at"]) and point["tags"].endswith(",open")
    assert [a["tags"] for a in annotations(closed["closed_at"] + HOUR, T + 30 * 24 * HOUR)] == [point["tags"]]
    assert annotations(T - 48 * HOUR, T - HOUR) == []  # before anything opened
    for key in bi.DASHBOARDS:
        (annotation,) = grafana.dashboard_model(key)["annotations"]["list"]
        assert annotation["name"] == "NPS alerts" and annotation["enable"] is True
        assert annotation["target"]["rawSql"] == bi.for_grafana(bi.ALERT_ANNOTATIONS)
        assert annotation["datasource"] == annotation["target"]["datasource"] == {
            "type": "grafana-clickhouse-datasource", "uid": "npsflow-clickhouse"}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


async def test_the_internal_api_and_the_dashboard_show_the_open_alerts(ch_store, tmp_path):
    from tests.test_web_listeners import client_of
    from web.internal import InternalApi, internal_app

    opened, closed = drop_events()
    other = {**opened, "alert_id": "b" * 16, "segment": {"overall": "all"}, "opened_at": T + 2 * 24 * HOUR}
    ch_store.insert("alerts", [as_row(opened), as_row(closed, 1), as_row(other, 2)])
    settings = config.load({"NPSFLOW_HOME": str(tmp_path / "home"), "NPSFLOW_CLICKHOUSE_DSN": ch_store.dsn})
    client = await client_of(internal_app(InternalApi(ch_store, None, ["location"]),
                                          allowed_hosts=settings.web_hosts, token=None))
    try:
        everything = await (await client.get("/api/v1/alerts")).json()
        assert everything == queries.alerts(ch_store)
        assert [a["status"] for a in everything["alerts"]] == ["open", "closed"]
        assert (await (await client.get("/api/v1/alerts?status=open")).json()) == queries.alerts(ch_store, "open")
        for bad in ("status=overdue", "state=open"):
            reply = await client.get(f"/api/v1/alerts?{bad}")
            assert reply.status == 400 and (await reply.json())["error"], bad
        dashboard = await (await client.get("/api/v1/dashboard")).json()
        assert [a["alert_id"] for a in dashboard["alerts"]] == ["b" * 16]
        page = await (await client.get("/dashboard")).text()
        assert 'id="alerts"' in page and "renderAlerts" in page
    finally:
        await client.close()
