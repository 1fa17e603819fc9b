"""Grafana dashboards as code (sinks/bi.py, npsflow/grafana.py, `npsflow grafana`).

Every panel's SQL runs on real embedded ClickHouse (chDB, the ``ch_store`` fixture) over a seeded dataset with
edits, duplicates and late answers; expected numbers are counted by hand below (NPS/CI via streams.nps). Grafana
itself is not installable here: `push` talks to an in-process HTTP stand-in of Grafana's API.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from npsflow import config, grafana
from npsflow.cli import main
from sinks import bi, queries, rollup, rows
from streams.nps import adjusted_wald_ci, summarize
from tests.test_clickhouse import D, H, T0, insert_responses, response, seed_report_data, stop_merges

REPO = Path(__file__).resolve().parent.parent
PERIOD = {"time_from": T0, "time_to": T0 + 3 * D}  # [2024-05-01, 2024-05-04)
M = timedelta(minutes=1)
WEEK_START = datetime(2024, 4, 29, tzinfo=timezone.utc)  # the Monday of the seed's Wednesday-Friday
# [Sunday 04-28, Monday 06-03): the seed and _extra_weeks_and_months, 6 days in 4 weeks and 3 months
WIDE = {"time_from": datetime(2024, 4, 28, tzinfo=timezone.utc), "time_to": datetime(2024, 6, 3, tzinfo=timezone.utc)}
# in-process CLI runs read the settings from the environment: none of the caller's NPSFLOW_* variables
CLEAN_ENV = {k: None for k in os.environ if k.startswith("NPSFLOW_")}


def dispatch(did: str, org: str, status: str, at: datetime, *, kind: str = "invitation", inv: str | None = None,
             channel: str = "email", cost: float | None = None, reason: str = "") -> dict:
    return {"dispatch_id": did, "kind": kind, "invitation_id": did.split(":")[0] if inv is None else inv,
            "event_id": f"ev-{did}", "org_id": org, "contact_key": f"c-{did}", "channel": channel,
            "status": status, "reason": reason, "decided_at": at, "cost": cost,
            "currency": "EUR" if cost is not None else "", "segment": {}}


def seed(store, inserted_at: datetime | None = None) -> None:
    """seed_report_data (10 answers without invitation: "All" only) + invitations of two orgs and their answers.

    Latest answers in PERIOD (after latest-wins), by UTC day:
      05-01  seed e1 P, e2 P, e3 Pa, e4 P, e5 P, m1 D (Espoo ×5 … m1 Helsinki) + inv-a1 D (2) + inv-a2 P (9)
      05-02  seed h1 D, h2 P, h3 P (Helsinki)
      05-03  seed n1 Pa (no segment) + inv-b1 D (4, late: two days after its invitation)
    """
    for table in ("responses", "dispatches", "dead_letters"):
        stop_merges(store, table)
    seed_report_data(store, inserted_at)
    loc = lambda city, channel: {"location": city, "channel": channel}  # noqa: E731
    insert_responses(store, [
        response("inv-a1", 3, at=T0 + 2 * H, invitation_id="inv-a1", org_id="nordvik", comment="slow", segment=loc("Turku", "email")),
        response("inv-a2", 9, at=T0 + 5 * H, invitation_id="inv-a2", org_id="nordvik", comment="great", segment=loc("Turku", "sms")),
        response("inv-b1", 4, at=T0 + 2 * D + 6 * H, invitation_id="inv-b1", org_id="fjord", comment="no show",
                 segment=loc("Bergen", "email")),
    ], first_offset=100, inserted_at=inserted_at)
    insert_responses(store, [
        # edit of inv-a1: score 3 -> 2, new comment, one hour later (the latest responded_at wins)
        response("inv-a1", 2, version=2, at=T0 + 3 * H, invitation_id="inv-a1", org_id="nordvik", comment="very slow <b>",
                 segment=loc("Turku", "email")),
        # a replay of inv-a2 (physical duplicate)
        response("inv-a2", 9, at=T0 + 5 * H, invitation_id="inv-a2", org_id="nordvik", comment="great", segment=loc("Turku", "sms")),
    ], first_offset=200, inserted_at=inserted_at)
    decisions = [
        dispatch("inv-a1", "nordvik", "sent", T0 + 1 * H, cost=0.1),
        dispatch("inv-a1:reminder", "nordvik", "sent", T0 + 25 * H, kind="reminder", cost=0.1),
        dispatch("inv-a2", "nordvik", "scheduled", T0 + 2 * H, channel="sms", reason="quiet_hours"),
        dispatch("inv-a2", "nordvik", "sent", T0 + 3 * H, channel="sms", cost=0.5),
        dispatch("inv-a2", "nordvik", "sent", T0 + 3 * H, channel="sms", cost=0.5),  # redelivered duplicate
        dispatch("inv-a2:reminder", "nordvik", "suppressed", T0 + 27 * H, kind="reminder", channel="sms",
                 reason="responded"),
        dispatch("inv-a3", "nordvik", "sent", T0 + 4 * H, channel="sms", cost=0.5),
        dispatch("inv-a3:reminder", "nordvik", "sent", T0 + 28 * H, kind="reminder", channel="sms", cost=0.5),
        dispatch("sup-1", "nordvik", "suppressed", T0 + 5 * H, inv="", channel="", reason="quarantine"),
        dispatch("inv-a4", "nordvik", "failed", T0 + 7 * H, reason="smtp_5xx"),
        dispatch("inv-b1", "fjord", "sent", T0 + 6 * H, cost=0.1),
        dispatch("inv-old", "fjord", "sent", T0 - 2 * D, cost=0.1),  # before the period: not in the funnel
    ]
    store.insert("dispatches", [rows.dispatch_row(d, 0, i) for i, d in enumerate(decisions)])
    letters = [("dl1", "classify", T0 + H + 10 * M), ("dl1", "classify", T0 + H + 20 * M),  # redelivered
               ("dl2", "classify", T0 + H + 50 * M), ("dl3", "sink", T0 + H + 30 * M),
               ("dl4", "classify", T0 + 5 * H), ("dl1", "windows", T0 + 5 * H + 30 * M),
               ("dl5", "classify", T0 + 3 * D + H)]  # after the period
    store.insert("dead_letters", [rows.dead_letter_row({"dead_letter_id": i, "stage": s, "reason": "bad_json",
                                                        "failed_at": t}) for i, s, t in letters])


@pytest.fixture(params=["ledger", "rollup"])
def seeded(request, ch_store):
    """The seeded store, read two ways: "ledger" — nothing recomputed yet, every day comes from the day ledger;
    "rollup" — the rows arrived an hour ago and the refresher recomputed every day, so the whole days of a
    period come from ``nps_daily`` (the panels must return the same numbers either way)."""
    if request.param == "ledger":
        seed(ch_store)
    else:
        seed(ch_store, inserted_at=datetime.now(timezone.utc) - timedelta(hours=1))
        assert rollup.refresh(ch_store).days  # every seeded day
        sources = ch_store.query("SELECT DISTINCT source FROM {db}.nps_cells(since = {s:DateTime64(3, 'UTC')}, "
                                 "until = {u:DateTime64(3, 'UTC')})", {"s": T0, "u": T0 + 3 * D})
        assert sources == [{"source": "rollup"}]
    return ch_store


def run(store, sql: str, org: str | None = None, dimension: str = "location", granularity: str = "day",
        **period) -> list[dict]:
    rendered = bi.render(sql, **(period or PERIOD),
                         variables={"org": org, "dimension": dimension, "granularity": granularity})
    assert "$" not in rendered and "{db}" in rendered
    return store.query(rendered)


def summary_row(value: str, p: int, pa: int, d: int) -> dict:
    s = summarize(p, pa, d).as_dict()
    return {"value": value, "n": s["responses"], "promoters": p, "passives": pa, "detractors": d, "nps": s["nps"],
            "ci_low": s["ci95"][0], "ci_high": s["ci95"][1], "band": s["band"]}


def rounded(result: list[dict]) -> list[dict]:
    return [{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()} for r in result]


# =============================================================================================== committed files
def test_committed_files_are_regenerated_byte_identical(tmp_path: Path):
    written = grafana.build(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "dashboards/nps-overview.json", "dashboards/survey-operations.json",
        "provisioning/dashboards/npsflow.yaml", "provisioning/datasources/clickhouse.yaml"]
    for path in written:
        committed = REPO / "deploy" / "grafana" / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run `npsflow grafana build`"
    again = tmp_path / "again"
    grafana.build(again)
    assert all((again / p.relative_to(tmp_path)).read_bytes() == p.read_bytes() for p in written)  # deterministic


def test_cli_build_writes_the_files(tmp_path: Path):
    result = CliRunner().invoke(main, ["grafana", "build", "--out", str(tmp_path / "g")], env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 4
    assert json.loads((tmp_path / "g" / "dashboards" / "nps-overview.json").read_text())["title"] == "NPS overview"
    # the default settings build the committed files
    for rel in ("dashboards/nps-overview.json", "dashboards/survey-operations.json"):
        assert (tmp_path / "g" / rel).read_bytes() == (REPO / "deploy" / "grafana" / rel).read_bytes()


def _variables(path: Path) -> dict[str, dict]:
    return {v["name"]: v for v in json.loads(path.read_text())["templating"]["list"]}


def test_default_settings_give_the_default_dimension_options():
    # the committed files are a default build: the default NPSFLOW_DIMENSIONS without "overall" is bi.DIMENSIONS
    assert config.load({}).dimensions == ("overall", *bi.DIMENSIONS)
    assert grafana.dimension_options(config.load({}).dimensions) == bi.DIMENSIONS
    assert grafana.dimension_options(None) == grafana.dimension_options(()) == bi.DIMENSIONS
    assert grafana.dimension_options(["overall"]) == bi.DIMENSIONS  # none left: the default
    assert grafana.dimension_options(["shop", "overall", "shop", "region"]) == ("shop", "region")
    for bad in ("Store", "a,b", "nps", "value"):  # a comma would split the custom variable's options
        with pytest.raises(ValueError, match="dimension"):
            grafana.dimension_options(["store", bad])


def test_cli_build_takes_the_dimension_options_from_the_settings(tmp_path: Path):
    env = {**CLEAN_ENV, "NPSFLOW_DIMENSIONS": "overall,store,region"}
    result = CliRunner().invoke(main, ["grafana", "build", "--out", str(tmp_path / "g")], env=env)
    assert result.exit_code == 0, result.output
    dim = _variables(tmp_path / "g" / "dashboards" / "nps-overview.json")["dimension"]
    assert (dim["type"], dim["query"], dim["current"]["value"], dim["current"]["text"]) == (
        "custom", "store,region", "store", "store")
    # only the dimension variable differs from the committed build
    committed = json.loads((REPO / "deploy/grafana/dashboards/nps-overview.json").read_text())
    built = json.loads((tmp_path / "g" / "dashboards" / "nps-overview.json").read_text())
    assert [v for v in built["templating"]["list"] if v["name"] != "dimension"] == [
        v for v in committed["templating"]["list"] if v["name"] != "dimension"]
    assert built["panels"] == committed["panels"]
    # the same through build() directly; only "overall" configured: the default options
    grafana.build(tmp_path / "direct", dimensions=("overall", "store", "region"))
    assert (tmp_path / "direct" / "dashboards" / "nps-overview.json").read_bytes() == (
        tmp_path / "g" / "dashboards" / "nps-overview.json").read_bytes()
    grafana.build(tmp_path / "overall", dimensions=("overall",))
    assert _variables(tmp_path / "overall" / "dashboards" / "nps-overview.json")["dimension"]["query"] == (
        "location,employee,channel")
    # an invalid setting is one line and exit 1 (the settings refuse it), nothing written
    bad = CliRunner().invoke(main, ["grafana", "build", "--out", str(tmp_path / "bad")],
                             env={**CLEAN_ENV, "NPSFLOW_DIMENSIONS": "overall,Store"})
    assert bad.exit_code == 1 and "NPSFLOW_DIMENSIONS" in bad.output and not (tmp_path / "bad").exists()


def test_provisioning_files():
    import yaml

    ds = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/clickhouse.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert (source["type"], source["uid"], source["name"]) == (grafana.PLUGIN, grafana.DATASOURCE_UID,
                                                                grafana.DATASOURCE_NAME)
    assert source["jsonData"] == {"host": "$CLICKHOUSE_HOST", "port": "$CLICKHOUSE_PORT",
                                  "protocol": "$CLICKHOUSE_PROTOCOL", "secure": "$CLICKHOUSE_SECURE",
                                  "username": "$CLICKHOUSE_USER", "defaultDatabase": "npsflow"}
    assert source["secureJsonData"] == {"password": "$CLICKHOUSE_PASSWORD"}
    boards = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/npsflow.yaml").read_text())
    assert boards["apiVersion"] == 1
    assert boards["providers"] == [{"name": "npsflow", "folder": "npsflow", "type": "file", "disableDeletion": False,
                                    "allowUiUpdates": False, "updateIntervalSeconds": 60,
                                    "options": {"path": grafana.DASHBOARD_DIR}}]


# =============================================================================================== JSON structure
@pytest.mark.parametrize("key", sorted(bi.DASHBOARDS))
def test_dashboard_json_structure(key: str):
    model = json.loads((REPO / "deploy" / "grafana" / "dashboards" / f"{key}.json").read_text())
    title, specs = bi.DASHBOARDS[key]
    assert (model["title"], model["uid"], model["timezone"]) == (title, f"npsflow-{key}", "utc")
    panels = model["panels"]
    assert [p["title"] for p in panels] == [s.title for s in specs]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for panel, spec in zip(panels, specs):
        assert panel["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": "npsflow-clickhouse"}
        g = panel["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, f"panel {panel['title']} overlaps another"
        cells |= area
        (target,) = panel["targets"]
        assert target == {"refId": "A", "datasource": panel["datasource"], "editorType": "sql",
                          "queryType": "table" if spec.format == bi.TABLE else "timeseries",
                          "format": spec.format, "rawSql": bi.for_grafana(spec.sql)}
        assert "{db}" not in target["rawSql"] and "FROM `npsflow`." in target["rawSql"]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    org = variables["org"]
    assert (org["type"], org["includeAll"], org["allValue"]) == ("query", True, "'__all__'")
    assert org["query"]["rawSql"] == bi.for_grafana(bi.ORG_OPTIONS) and org["datasource"] == panels[0]["datasource"]
    if key == "nps-overview":
        dim = variables["dimension"]
        assert (dim["type"], dim["query"], dim["current"]["value"]) == ("custom", "location,employee,channel",
                                                                         "location")
        gran = variables["granularity"]
        assert (gran["type"], gran["query"], gran["current"]["value"], gran["multi"], gran["includeAll"]) == (
            "custom", "day,week,month", "day", False, False)
        # the trend panels (and only they) use it, and say so in their titles
        trends = [p["title"] for p, s in zip(panels, specs) if "${granularity" in s.sql]
        assert trends == ["NPS per ${granularity} with 95 % interval",
                          "Promoters, passives, detractors (% per ${granularity})"]
        by_segment = panels[[s.key for s in specs].index("nps_by_segment")]
        overrides = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
                     for o in by_segment["fieldConfig"]["overrides"]}
        assert overrides["band"]["mappings"][0]["options"]["world_class"]["color"] == "dark-green"
        assert [s["value"] for s in overrides["nps"]["thresholds"]["steps"]] == [None, 0, 50, 70]
    else:
        assert set(variables) == {"org"}


def test_every_panel_sql_uses_only_renderable_placeholders():
    for spec in bi.panels():
        bi.render(spec.sql, **PERIOD, variables={"org": "nordvik", "dimension": "channel", "granularity": "week"})
    assert {s.key for s in bi.panels() if bi.GRAN in s.sql} == {"nps_daily", "category_share"}


# =============================================================================================== render
def test_render_rules():
    sql = "SELECT 1 WHERE x >= $__fromTime AND x < $__toTime AND ${org:sqlstring} = o AND seg[${dimension:sqlstring}]"
    out = bi.render(sql, time_from=datetime(2024, 5, 1), time_to=datetime(2024, 5, 1, 1, 0, 0, 999000),
                    variables={"org": "nordvik-ror", "dimension": "employee"})
    assert out == ("SELECT 1 WHERE x >= toDateTime(1714521600) AND x < toDateTime(1714525200) "
                   "AND 'nordvik-ror' = o AND seg['employee']")
    for every in (None, "All", "$__all", "__all__"):
        assert "'__all__' = o" in bi.render(sql, **PERIOD, variables={"org": every, "dimension": "location"})
    for bad_org in ("x' OR 1=1 --", "", "a b", "é"):
        with pytest.raises(ValueError, match="invalid org"):
            bi.render(sql, **PERIOD, variables={"org": bad_org, "dimension": "location"})
    for bad_dim in ("Location", "loc'ation", "nps"):
        with pytest.raises(ValueError):
            bi.render(sql, **PERIOD, variables={"org": None, "dimension": bad_dim})
    with pytest.raises(ValueError, match="cannot render"):  # a variable the SQL needs but was not given
        bi.render(sql, **PERIOD, variables={"org": None})
    for unsupported in ("$__timeFilter(at)", "$__interval_s", "${org}", "$org", "[[org]]"):
        with pytest.raises(ValueError, match="cannot render"):
            bi.render(f"SELECT {unsupported}", **PERIOD, variables={"org": None, "dimension": "location"})
    with pytest.raises(ValueError, match="earlier"):
        bi.render("SELECT 1", time_from=T0, time_to=T0, variables={})
    with pytest.raises(ValueError, match="unknown variables"):
        bi.render("SELECT 1", **PERIOD, variables={"interval": "1d"})


def test_render_granularity():
    sql = "SELECT ${granularity:sqlstring} AS g, ${org:sqlstring} AS o"
    for granularity in ("day", "week", "month"):
        assert bi.render(sql, **PERIOD, variables={"granularity": granularity, "org": None}) == (
            f"SELECT '{granularity}' AS g, '__all__' AS o")
    for bad in ("year", "Week", "day'", "", None, "$__all", "week,month"):
        with pytest.raises(ValueError, match="invalid granularity"):
            bi.render(sql, **PERIOD, variables={"granularity": bad, "org": None})
    with pytest.raises(ValueError, match="cannot render '\\$\\{granularity:sqlstring\\}'"):  # needed, not given
        bi.render(bi.NPS_DAILY, **PERIOD, variables={"org": None, "dimension": "location"})
    # panels without the variable render without it, and are unaffected by it
    no_gran = {"org": None, "dimension": "location"}
    for spec in bi.panels():
        if bi.GRAN not in spec.sql:
            assert bi.render(spec.sql, **PERIOD, variables=no_gran) == bi.render(
                spec.sql, **PERIOD, variables={**no_gran, "granularity": "month"})


def test_bucket_starts_over_the_whole_date32_range(ch_store):
    """Monday of the ISO week / first of the month for every day Date32 holds (toStartOfWeek/-Month would clamp
    to 1970–2149); an unexpected granularity (a BI view's parameter) counts as day."""
    days = ["1900-01-01", "1969-12-31", "2024-04-28", "2024-04-29", "2024-05-01", "2024-05-05", "2024-05-06",
            "2024-12-31", "2250-02-28", "2299-12-31"]
    sql = (f"SELECT toString({bi._BUCKET}) AS t FROM (SELECT arrayJoin([{', '.join(f'toDate32({d!r})' for d in days)}])"
           " AS day) ORDER BY day")

    def starts(granularity: str) -> list[str]:
        rendered = sql.replace(bi.GRAN, f"'{granularity}'")
        return [r["t"][:10] for r in ch_store.query(rendered)]

    assert starts("day") == days == starts("year")
    assert starts("week") == ["1900-01-01", "1969-12-29", "2024-04-22", "2024-04-29", "2024-04-29", "2024-04-29",
                              "2024-05-06", "2024-12-30", "2250-02-25", "2299-12-25"]
    assert starts("month") == ["1900-01-01", "1969-12-01", "2024-04-01", "2024-04-01", "2024-05-01", "2024-05-01",
                               "2024-05-01", "2024-12-01", "2250-02-01", "2299-12-01"]
    (row,) = ch_store.query(sql.replace(bi.GRAN, "'week'").replace("toString(", "toTypeName(").replace(
        "ORDER BY day", "LIMIT 1"))
    assert row["t"] == "DateTime64(3, 'UTC')"


# =============================================================================================== panels on chDB
def test_nps_by_segment_equals_the_report(seeded):
    ch_store = seeded
    report = queries.report(ch_store, ["location"], T0, T0 + 3 * D)
    expected = [summary_row(r["location"], r["promoters"], r["passives"], r["detractors"]) for r in report["rows"]]
    # by hand: Espoo e1 e2 e4 e5 P, e3 Pa; Helsinki h2 h3 P, h1 m1 D; Turku a2 P, a1 D; (none) n1 Pa; Bergen b1 D
    assert [(r["value"], r["promoters"], r["passives"], r["detractors"]) for r in expected] == [
        ("Espoo", 4, 1, 0), ("Helsinki", 2, 0, 2), ("Turku", 1, 0, 1), ("(none)", 0, 1, 0), ("Bergen", 0, 0, 1)]
    result = run(ch_store, bi.NPS_BY_SEGMENT)
    assert rounded(result) == expected
    # unrounded, the interval is exactly streams.nps's
    for r in result:
        lo, hi = adjusted_wald_ci(r["promoters"], r["passives"], r["detractors"])
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    # per org: only answers whose invitation belongs to it
    assert rounded(run(ch_store, bi.NPS_BY_SEGMENT, org="nordvik")) == [summary_row("Turku", 1, 0, 1)]
    assert rounded(run(ch_store, bi.NPS_BY_SEGMENT, org="fjord")) == [summary_row("Bergen", 0, 0, 1)]
    assert run(ch_store, bi.NPS_BY_SEGMENT, org="nobody") == []
    # another dimension, and a shorter period: 05-02 only = h1 D, h2 P (channel web), h3 P (sms)
    assert rounded(run(ch_store, bi.NPS_BY_SEGMENT, dimension="channel", time_from=T0 + D, time_to=T0 + 2 * D)) == [
        summary_row("web", 1, 0, 1), summary_row("sms", 1, 0, 0)]


def test_nps_daily_with_interval(seeded):
    ch_store = seeded
    result = run(ch_store, bi.NPS_DAILY)
    days = [(T0, 5, 1, 2), (T0 + D, 2, 0, 1), (T0 + 2 * D, 0, 1, 1)]  # (day, P, Pa, D) from seed's docstring
    assert [(r["time"], r["n"]) for r in result] == [(day, p + pa + d) for day, p, pa, d in days]
    for r, (_, p, pa, d) in zip(result, days):
        lo, hi = adjusted_wald_ci(p, pa, d)
        assert r["nps"] == 100 * (p - d) / (p + pa + d)
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    assert [r["nps"] for r in result] == [37.5, pytest.approx(100 / 3), -50.0]
    assert set(result[0]) == {"time", "nps", "ci_low", "ci_high", "n"}
    assert run(ch_store, bi.NPS_DAILY, granularity="day") == result  # the default of run(), said explicitly
    # half-open period: ending at 05-03 00:00 leaves that day out; org filter
    assert [r["time"] for r in run(ch_store, bi.NPS_DAILY, time_from=T0, time_to=T0 + 2 * D)] == [T0, T0 + D]
    fjord = run(ch_store, bi.NPS_DAILY, org="fjord")
    assert [(r["time"], r["n"], r["nps"]) for r in fjord] == [(T0 + 2 * D, 1, -100.0)]


def _extra_weeks_and_months(store) -> None:
    """Answers around the seed: Sunday 04-28 (the week before, April), Monday 05-06 (the next week), Sunday 06-02
    (the last week of May's last Monday, 05-27, but June)."""
    insert_responses(store, [
        response("x-apr", 10, at=datetime(2024, 4, 28, 23, 59, tzinfo=timezone.utc), segment={"location": "Oulu"}),
        response("x-may", 0, at=datetime(2024, 5, 6, 0, 0, tzinfo=timezone.utc), segment={"location": "Oulu"}),
        response("x-jun", 8, at=datetime(2024, 6, 2, 12, 0, tzinfo=timezone.utc), segment={"location": "Oulu"}),
    ], first_offset=300)


def _check_trend(result: list[dict], buckets: list[tuple[datetime, int, int, int]]) -> None:
    """NPS_DAILY rows against (bucket start, P, Pa, D): exact n and NPS, the interval of streams.nps."""
    assert [(r["time"], r["n"]) for r in result] == [(t, p + pa + d) for t, p, pa, d in buckets]
    for r, (_, p, pa, d) in zip(result, buckets):
        lo, hi = adjusted_wald_ci(p, pa, d)
        assert r["nps"] == 100 * (p - d) / (p + pa + d)
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))


def test_nps_per_week_and_month(seeded):
    ch_store = seeded
    # the seed's three days (Wednesday 05-01 … Friday 05-03) are one ISO week and one month: 5+2+0 P, 1+0+1 Pa,
    # 2+1+1 D = the sum of the day rows
    for granularity, start in (("week", WEEK_START), ("month", T0)):
        result = run(ch_store, bi.NPS_DAILY, granularity=granularity)
        _check_trend(result, [(start, 7, 2, 4)])
        assert result[0]["nps"] == pytest.approx(300 / 13)
        assert [(r["time"], r["n"], r["nps"]) for r in run(ch_store, bi.NPS_DAILY, granularity=granularity,
                                                          org="fjord")] == [(start, 1, -100.0)]
        assert [(r["time"], r["n"], r["nps"]) for r in run(ch_store, bi.NPS_DAILY, granularity=granularity,
                                                          org="nordvik")] == [(start, 2, 0.0)]
        # a range cutting the bucket: only its days inside the range (05-02 and 05-03: h1 D h2 P h3 P, n1 Pa b1 D)
        _check_trend(run(ch_store, bi.NPS_DAILY, granularity=granularity, time_from=T0 + D, time_to=T0 + 3 * D),
                     [(start, 2, 1, 2)])
    # answers in other weeks and months: the boundaries (Sunday -> the Monday before, Monday, the first of a month)
    _extra_weeks_and_months(ch_store)
    wide = WIDE
    _check_trend(run(ch_store, bi.NPS_DAILY, granularity="week", **wide), [
        (datetime(2024, 4, 22, tzinfo=timezone.utc), 1, 0, 0), (WEEK_START, 7, 2, 4),
        (datetime(2024, 5, 6, tzinfo=timezone.utc), 0, 0, 1), (datetime(2024, 5, 27, tzinfo=timezone.utc), 0, 1, 0)])
    _check_trend(run(ch_store, bi.NPS_DAILY, granularity="month", **wide), [
        (datetime(2024, 4, 1, tzinfo=timezone.utc), 1, 0, 0), (T0, 7, 2, 5),
        (datetime(2024, 6, 1, tzinfo=timezone.utc), 0, 1, 0)])
    days = run(ch_store, bi.NPS_DAILY, granularity="day", **wide)
    assert [(r["time"].date().isoformat(), r["n"]) for r in days] == [
        ("2024-04-28", 1), ("2024-05-01", 8), ("2024-05-02", 3), ("2024-05-03", 2), ("2024-05-06", 1),
        ("2024-06-02", 1)]


def test_category_share_per_week_and_month(seeded):
    ch_store = seeded
    for granularity, start in (("week", WEEK_START), ("month", T0)):
        (row,) = run(ch_store, bi.CATEGORY_SHARE, granularity=granularity)
        assert (row["time"], row["promoters"], row["passives"], row["detractors"]) == (
            start, pytest.approx(700 / 13), pytest.approx(200 / 13), pytest.approx(400 / 13))  # 7, 2, 4 of 13
        assert row["promoters"] + row["passives"] + row["detractors"] == pytest.approx(100)
    _extra_weeks_and_months(ch_store)
    months = run(ch_store, bi.CATEGORY_SHARE, granularity="month", time_from=datetime(2024, 4, 1, tzinfo=timezone.utc),
                 time_to=datetime(2024, 7, 1, tzinfo=timezone.utc))
    assert [(r["time"].date().isoformat(), r["promoters"], r["passives"], r["detractors"]) for r in months] == [
        ("2024-04-01", 100.0, 0.0, 0.0),
        ("2024-05-01", pytest.approx(700 / 14), pytest.approx(200 / 14), pytest.approx(500 / 14)),
        ("2024-06-01", 0.0, 100.0, 0.0)]


def test_score_distribution(seeded):
    ch_store = seeded
    result = run(ch_store, bi.SCORE_DISTRIBUTION)
    # latest scores: seed 10,9,8,10,9,0,6,10,9,7 + a1 2 (edited from 3), a2 9 (replayed once), b1 4
    counts = {0: 1, 2: 1, 4: 1, 6: 1, 7: 1, 8: 1, 9: 4, 10: 3}
    assert [r["score"] for r in result] == [str(s) for s in range(11)]
    for r in result:
        s = int(r["score"])
        n = counts.get(s, 0)
        assert (r["detractors"], r["passives"], r["promoters"]) == (
            n if s <= 6 else 0, n if 7 <= s <= 8 else 0, n if s >= 9 else 0)
    nordvik = {r["score"]: r["detractors"] + r["passives"] + r["promoters"]
               for r in run(ch_store, bi.SCORE_DISTRIBUTION, org="nordvik")}
    assert nordvik == {**{str(s): 0 for s in range(11)}, "2": 1, "9": 1}


def test_category_share(seeded):
    ch_store = seeded
    result = run(ch_store, bi.CATEGORY_SHARE)
    assert [(r["time"], r["promoters"], r["passives"], r["detractors"]) for r in result] == [
        (T0, 62.5, 12.5, 25.0),                                                  # 5/8, 1/8, 2/8
        (T0 + D, pytest.approx(200 / 3), 0.0, pytest.approx(100 / 3)),           # 2/3, 0, 1/3
        (T0 + 2 * D, 0.0, 50.0, 50.0)]                                           # n1 Pa, b1 D


def test_detractor_comments(seeded):
    ch_store = seeded
    result = run(ch_store, bi.DETRACTOR_COMMENTS)
    # detractors with a comment, newest first; inv-a1's first comment "slow" was edited away; a2 is a promoter
    assert result == [
        {"responded_at": T0 + 2 * D + 6 * H, "score": 4, "value": "Bergen", "comment": "no show",
         "response_id": "inv-b1"},
        {"responded_at": T0 + 3 * H, "score": 2, "value": "Turku", "comment": "very slow <b>",
         "response_id": "inv-a1"},
    ]
    assert [r["response_id"] for r in run(ch_store, bi.DETRACTOR_COMMENTS, org="nordvik")] == ["inv-a1"]
    assert [r["value"] for r in run(ch_store, bi.DETRACTOR_COMMENTS, dimension="channel")] == ["email", "email"]


def test_funnel_per_channel(seeded):
    ch_store = seeded
    result = {r["channel"]: r for r in run(ch_store, bi.FUNNEL)}
    assert list(result) == ["(none)", "email", "sms"]
    # email: a1 sent (answered 2 h later: 01:00 -> 03:00, the edit's time), b1 sent (answered 48 h later), a4 failed
    #        cost a1 0.1 + its reminder 0.1 + b1 0.1 = 0.3 for 2 responses; inv-old is before the period
    email = result["email"]
    assert (email["triggered"], email["sent"], email["responded"], email["response_rate"]) == (3, 2, 2, 100.0)
    assert email["median_hours_to_respond"] == 25.0  # median of 2 and 48
    assert (email["cost"], email["cost_per_response"]) == (pytest.approx(0.3), pytest.approx(0.15))
    assert email["currency"] == "EUR"
    # sms: a2 scheduled then sent 03:00 (duplicate row), answered 05:00 = 2 h; a3 sent, not answered, reminded
    #      cost 0.5 + 0.5 + a3's reminder 0.5 (a2's reminder was suppressed: free) = 1.5 for 1 response
    sms = result["sms"]
    assert (sms["triggered"], sms["sent"], sms["responded"], sms["response_rate"]) == (2, 2, 1, 50.0)
    assert sms["median_hours_to_respond"] == 2.0
    assert (sms["cost"], sms["cost_per_response"], sms["currency"]) == (pytest.approx(1.5), pytest.approx(1.5), "EUR")
    none = result["(none)"]  # sup-1: suppressed before a channel was chosen
    assert (none["triggered"], none["sent"], none["responded"], none["response_rate"], none["cost"],
            none["cost_per_response"], none["currency"]) == (1, 0, 0, None, 0.0, None, "")
    # per org
    nordvik = {r["channel"]: (r["triggered"], r["sent"], r["responded"]) for r in run(ch_store, bi.FUNNEL, org="nordvik")}
    assert nordvik == {"(none)": (1, 0, 0), "email": (2, 1, 1), "sms": (2, 2, 1)}
    (fjord,) = run(ch_store, bi.FUNNEL, org="fjord")
    assert (fjord["channel"], fjord["triggered"], fjord["sent"], fjord["responded"],
            fjord["median_hours_to_respond"], fjord["cost"]) == ("email", 1, 1, 1, 48.0, pytest.approx(0.1))
    # a period holding only inv-old (2024-04-29)
    (old,) = run(ch_store, bi.FUNNEL, time_from=T0 - 3 * D, time_to=T0)
    assert (old["channel"], old["triggered"], old["sent"], old["responded"]) == ("email", 1, 1, 0)


def test_dead_letters_hourly(ch_store):
    seed(ch_store)
    result = run(ch_store, bi.DEAD_LETTERS_HOURLY)
    # dl1 twice in classify = once (at its first failure, 01:10); dl1 in windows is another dead letter; dl5 later
    assert [(r["time"], r["stage"], r["dead_letters"]) for r in result] == [
        (T0 + H, "classify", 2), (T0 + H, "sink", 1), (T0 + 5 * H, "classify", 1), (T0 + 5 * H, "windows", 1)]


def test_org_variable_options(ch_store):
    seed(ch_store)
    assert [r["org_id"] for r in ch_store.query(bi.ORG_OPTIONS)] == ["fjord", "nordvik"]


# =============================================================================================== push
class GrafanaStandIn:
    """Answers like Grafana's HTTP API for the calls `push` makes; records every request."""

    def __init__(self, token: str = "glsa_good"):
        self.token = token
        self.requests: list[dict] = []
        self.datasources: dict[str, dict] = {}
        self.versions: dict[str, int] = {}
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                stand_in.requests.append({"method": method, "path": self.path, "body": body,
                                          "auth": self.headers.get("Authorization")})
                if self.headers.get("Authorization") != f"Bearer {stand_in.token}":
                    return self._reply(401, {"message": "Unauthorized"})
                if method == "GET" and self.path.startswith("/api/datasources/name/"):
                    ds = stand_in.datasources.get(self.path.rsplit("/", 1)[1])
                    return self._reply(200, ds) if ds else self._reply(404, {"message": "Data source not found"})
                if method == "POST" and self.path == "/api/datasources":
                    ds = {**body, "id": 7}
                    stand_in.datasources[body["name"]] = ds
                    return self._reply(200, {"datasource": ds, "id": 7, "message": "Datasource added",
                                             "name": body["name"]})
                if method == "PUT" and self.path.startswith("/api/datasources/"):
                    return self._reply(200, {"message": "Datasource updated", "id": int(self.path.rsplit("/", 1)[1])})
                if method == "POST" and self.path == "/api/dashboards/db":
                    uid = body["dashboard"]["uid"]
                    stand_in.versions[uid] = stand_in.versions.get(uid, 0) + 1
                    return self._reply(200, {"id": len(stand_in.versions), "uid": uid, "status": "success",
                                             "url": f"/d/{uid}/x", "version": stand_in.versions[uid]})
                return self._reply(404, {"message": "Not found"})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_push_creates_then_updates(tmp_path: Path):
    with GrafanaStandIn() as g:
        args = ["grafana", "push", "--url", g.url,
                "--clickhouse-url", "https://reader:s%40cret@ch.example:8443/npsflow"]
        env = {**CLEAN_ENV, "GRAFANA_TOKEN": "glsa_good"}
        first = CliRunner().invoke(main, args, env=env)
        assert first.exit_code == 0, first.output
        assert first.output.splitlines() == [
            "datasource 'npsflow-clickhouse': created",
            "dashboard npsflow-nps-overview: saved (version 1, /d/npsflow-nps-overview/x)",
            "dashboard npsflow-survey-operations: saved (version 1, /d/npsflow-survey-operations/x)"]
        assert [(r["method"], r["path"]) for r in g.requests] == [
            ("GET", "/api/datasources/name/npsflow-clickhouse"), ("POST", "/api/datasources"),
            ("POST", "/api/dashboards/db"), ("POST", "/api/dashboards/db")]
        assert {r["auth"] for r in g.requests} == {"Bearer glsa_good"}
        assert g.requests[1]["body"] == {
            "name": "npsflow-clickhouse", "uid": "npsflow-clickhouse", "type": "grafana-clickhouse-datasource",
            "access": "proxy", "isDefault": False,
            "jsonData": {"host": "ch.example", "port": 8443, "protocol": "http", "secure": True,
                         "username": "reader", "defaultDatabase": "npsflow"},
            "secureJsonData": {"password": "s@cret"}}
        for request, key in zip(g.requests[2:], ["nps-overview", "survey-operations"]):
            assert request["body"]["overwrite"] is True
            assert request["body"]["dashboard"] == json.loads(
                (REPO / "deploy" / "grafana" / "dashboards" / f"{key}.json").read_text())
        g.requests.clear()
        second = CliRunner().invoke(main, args, env=env)
        assert second.exit_code == 0, second.output
        assert second.output.splitlines()[0] == "datasource 'npsflow-clickhouse': updated"
        assert "version 2" in second.output.splitlines()[1]
        assert [(r["method"], r["path"]) for r in g.requests][:2] == [
            ("GET", "/api/datasources/name/npsflow-clickhouse"), ("PUT", "/api/datasources/7")]

        # another database in the ClickHouse URL: the data source and every panel's SQL read that one
        g.requests.clear()
        other = CliRunner().invoke(main, [*args[:-1], "https://reader:pw@ch.example:8443/analytics"], env=env)
        assert other.exit_code == 0, other.output
        assert g.requests[1]["body"]["jsonData"]["defaultDatabase"] == "analytics"
        sqls = [t["rawSql"] for r in g.requests[2:] for p in r["body"]["dashboard"]["panels"] for t in p["targets"]]
        assert sqls and all("`analytics`." in sql and "`npsflow`." not in sql for sql in sqls)

        # the configured dimensions are the pushed dashboard's options too
        g.requests.clear()
        shops = CliRunner().invoke(main, args, env={**env, "NPSFLOW_DIMENSIONS": "overall,store,region"})
        assert shops.exit_code == 0, shops.output
        (overview,) = [r["body"]["dashboard"] for r in g.requests
                       if r["path"] == "/api/dashboards/db" and r["body"]["dashboard"]["uid"] == "npsflow-nps-overview"]
        variables = {v["name"]: v for v in overview["templating"]["list"]}
        assert (variables["dimension"]["query"], variables["granularity"]["query"]) == ("store,region",
                                                                                        "day,week,month")


def test_push_unauthorized_is_one_line_and_exit_1():
    with GrafanaStandIn() as g:
        result = CliRunner().invoke(main, ["grafana", "push", "--url", g.url], env={"GRAFANA_TOKEN": "wrong"})
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: grafana push to {g.url} failed: HTTP 401")
    assert [(r["method"], r["path"], r["auth"]) for r in g.requests] == [
        ("GET", "/api/datasources/name/npsflow-clickhouse", "Bearer wrong")]  # stopped at the first refusal


def test_push_connection_refused_and_bad_clickhouse_url():
    with GrafanaStandIn() as g:
        url = g.url  # the port is free again after the stand-in stopped
    refused = CliRunner().invoke(main, ["grafana", "push", "--url", url], env={"GRAFANA_TOKEN": "t"})
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert refused.output.startswith(f"Error: grafana push to {url} failed:")
    bad = CliRunner().invoke(main, ["grafana", "push", "--url", url, "--clickhouse-url", "ftp://x"],
                             env={"GRAFANA_TOKEN": "t"})
    on_command_line = CliRunner().invoke(main, ["grafana", "push", "--url", url, "--token", "t"])
    assert on_command_line.exit_code == 2 and "No such option: --token" in on_command_line.output
    assert bad.exit_code == 1 and "--clickhouse-url must be" in bad.output


@pytest.mark.parametrize("org", [None, "acme"])
def test_every_panel_is_also_a_parameterized_sql_view_with_the_same_rows(ch_store, org):
    """The BI views (``SELECT * FROM npsflow.bi_<panel>(since=…, until=…, org=…, dimension=…, granularity=…)``)
    return exactly what the dashboard panels return, on the same seeded data, for every granularity."""
    seed(ch_store)
    _extra_weeks_and_months(ch_store)  # several weeks and months
    assert bi.apply_views(ch_store) == ["nps_cells", "term_cells"] + [f"bi_{p.key}" for p in bi.panels()]
    assert bi.apply_views(ch_store) == ["nps_cells", "term_cells"] + [f"bi_{p.key}" for p in bi.panels()]  # again
    fmt = "%Y-%m-%d %H:%M:%S"
    period = WIDE
    params = {"since": period["time_from"].strftime(fmt), "until": period["time_to"].strftime(fmt),
              "org": org or bi.ALL_ORGS, "dimension": "location"}
    nan_safe = lambda rows: [{k: "NaN" if v != v else v for k, v in r.items()} for r in rows]  # noqa: E731

    def view(panel: bi.Panel, **extra) -> list[dict]:
        values = {**params, **extra}
        args = ", ".join(f"{k} = {{{k}:String}}" for k in values if "{" + k + ":" in bi.view_sql(panel))
        return nan_safe(ch_store.query(f"SELECT * FROM {{db}}.bi_{panel.key}({args})", values))

    compared = 0
    for panel in bi.panels():
        if "{granularity:String}" in bi.view_sql(panel):
            assert panel.key in ("nps_daily", "category_share")
            buckets = {}
            for granularity in bi.GRANULARITIES:
                expected = run(ch_store, panel.sql, org=org, granularity=granularity, **period)
                assert view(panel, granularity=granularity) == nan_safe(expected), (panel.key, granularity)
                buckets[granularity] = len(expected)
                compared += bool(expected)
            if org is None:  # 6 days, 4 weeks, 3 months
                assert buckets == {"day": 6, "week": 4, "month": 3}, panel.key
            # an unexpected value is still valid SQL and counts as day
            assert view(panel, granularity="year") == view(panel, granularity="day")
        else:
            assert "granularity" not in bi.view_sql(panel)
            expected = run(ch_store, panel.sql, org=org, **period)
            assert view(panel) == nan_safe(expected), panel.key
            compared += bool(expected)
    assert compared  # the comparison is over real rows


def test_funnel_never_adds_up_different_currencies(ch_store):
    at = T0 + H
    ch_store.insert("dispatches", [
        rows.dispatch_row(dispatch("x-eur", "o1", "sent", at, inv="x-eur", cost=0.1, channel="email"), 0, 0),
        rows.dispatch_row({**dispatch("x-sek", "o2", "sent", at, inv="x-sek", cost=1.0, channel="email"),
                           "currency": "SEK"}, 0, 1)])
    (email,) = run(ch_store, bi.FUNNEL)
    assert (email["sent"], email["currency"], email["cost"], email["cost_per_response"]) == (2, "EUR,SEK", None, None)
    (only_eur,) = run(ch_store, bi.FUNNEL, org="o1")
    assert (only_eur["currency"], only_eur["cost"]) == ("EUR", pytest.approx(0.1))


@pytest.mark.parametrize("refreshed", [False, True])
def test_top_detractor_terms_panel_against_the_term_statistics(ch_store, refreshed):
    """The complaints panel's lift, interval and impact equal streams.termstats (itself checked against scipy)
    on counts made in Python from the records; the minimum counts hide a single respondent's words; the org
    variable scopes it; the same from the ledger and from the terms rollup."""
    from collections import Counter

    from streams import termstats
    from tests.test_terms_read import answer

    records = [answer(f"d{i}", i % 7, T0 + i * H, ["lasku", "x"] if i < 20 else ["kiitos"], respondent=f"k{i}",
                      org_id="acme") for i in range(40)]
    records += [answer(f"p{i}", 10, T0 + i * H, ["kiitos", "x"] if i % 2 else ["hyvä"], org_id="acme")
                for i in range(60)]
    records += [answer(f"m{i}", 0, T0 + i * H, ["matti"], respondent="k-matti", org_id="acme") for i in range(12)]
    records += [answer(f"o{i}", 0, T0 + i * H, ["jono"], org_id="other") for i in range(12)]
    # Swedish answers of acme, mostly promoters: a population of their own ("tack" is in all of them)
    records += [answer(f"s{i}", 1 if i % 5 == 0 else 10, T0 + i * H, ["tack"], lang="sv", org_id="acme")
                for i in range(30)]
    insert_responses(ch_store, records, inserted_at=datetime.now(timezone.utc) - timedelta(hours=1))
    if refreshed:
        rollup.refresh(ch_store)
    acme = [r for r in records if r["org_id"] == "acme" and r["lang"] == "fi"]  # the population of the fi terms
    totals = Counter(r["category"] for r in acme)
    slice_totals = termstats.SliceTotals(len(acme), totals["promoter"], totals["passive"], totals["detractor"])
    result = run(ch_store, bi.TOP_DETRACTOR_TERMS, org="acme")
    # matti: one respondent; hyvä: no detractor; tack: in every Swedish answer (pooled with the Finnish ones it
    # would look like a word of the happy)
    assert [r["term"] for r in result] == ["lasku", "kiitos", "x"]
    for row in result:
        named = [r for r in acme if row["term"] in r["terms"]]
        cats = Counter(r["category"] for r in named)
        counts = termstats.TermCounts(row["term"], "fi", len(named), cats["promoter"], cats["passive"],
                                      cats["detractor"], len(named))
        lift, (low, high) = termstats.lift_katz(cats["detractor"], len(named) - cats["detractor"],
                                                totals["detractor"] - cats["detractor"],
                                                len(acme) - len(named) - totals["detractor"] + cats["detractor"])
        assert (row["n"], row["detractors"]) == (len(named), cats["detractor"])
        assert row["lift"] == pytest.approx(lift) and row["lift_low"] == pytest.approx(low)
        assert row["lift_high"] == pytest.approx(high)
        assert row["impact"] == pytest.approx(termstats.nps_impact(counts, slice_totals))
    assert run(ch_store, bi.TOP_DETRACTOR_TERMS, org="other") == []  # "jono" is in every answer: no contrast
    assert {r["term"] for r in run(ch_store, bi.TOP_DETRACTOR_TERMS)} >= {"lasku", "jono"}  # All orgs


def test_follow_up_panel_against_the_case_state_machine(ch_store):
    """Cases built by the pure state machine (streams.cases), sunk like the agent's records; the panel's figures
    per owner recomputed here from those cases."""
    from tests.test_casebook import CONFIG, MS, T0 as OPENED, answer, run as cases_run, sink

    hour = 3_600_000
    events = [(answer("r1", 2, "Espoo", "c1"), MS), (answer("r2", 4, "Espoo", "c2"), MS + hour),
              (answer("r3", 6, "Oslo", "c3"), MS + 2 * hour), (answer("r4", 1, "Turku", "c4"), MS + 3 * hour)]
    opened = {r["response_id"]: r for r in cases_run(events)}

    def command(kind, rid, at, **extra):
        return ({"kind": kind, "case_id": opened[rid]["case_id"], "route": opened[rid]["route"], "actor": "a",
                 **extra}, at)
    events += [command("ack", "r1", MS + 2 * hour), command("close", "r1", MS + 10 * hour),
               command("ack", "r2", MS + 7 * hour), command("close", "r2", MS + 60 * hour),
               command("close", "r3", MS + 3 * hour)]
    revisions = cases_run(events)
    sink(ch_store, revisions)
    assert CONFIG.for_org("acme").owner_for({"location": "Turku"}) == "hq"
    period = {"time_from": OPENED - D, "time_to": OPENED + 30 * D}
    rows = {r["owner"]: r for r in run(ch_store, bi.FOLLOW_UP, **period)}
    espoo = rows["espoo-mgr"]  # r1 closed in 10 h (within 48 h), r2 acknowledged after 6 h, closed after 59 h
    assert (espoo["cases"], espoo["open"], espoo["acknowledged"], espoo["closed"]) == (2, 0, 2, 2)
    assert espoo["median_hours_to_contact"] == pytest.approx((2 + 6) / 2)
    assert espoo["closed_within_sla_pct"] == 50.0
    oslo, hq = rows["oslo-mgr"], rows["hq"]
    assert (oslo["closed"], oslo["acknowledged"], oslo["median_hours_to_contact"]) == (1, 0, None)
    assert (hq["open"], hq["overdue"], hq["closed_within_sla_pct"]) == (1, 1, None)  # opened in 2026: overdue now
    assert run(ch_store, bi.FOLLOW_UP, org="other", **period) == []
    assert run(ch_store, bi.FOLLOW_UP, time_from=OPENED + 4 * H, time_to=OPENED + 5 * D) == []  # opened before
