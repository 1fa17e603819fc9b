"""Grafana dashboards as code: ``npsflow grafana build`` and ``npsflow grafana push``.

The dashboards are built with grafana-foundation-sdk; every panel's SQL comes from ``sinks.bi`` (one place).
``build(out_dir, dimensions)`` writes deterministic, pretty JSON and the provisioning files::

    <out_dir>/dashboards/nps-overview.json, survey-operations.json
    <out_dir>/provisioning/datasources/clickhouse.yaml   (grafana-clickhouse-datasource, settings from env)
    <out_dir>/provisioning/dashboards/npsflow.yaml       (file provider for the dashboards directory)

``push(url, token, …)`` uploads the data source and the dashboards through Grafana's HTTP API (grafana-client):
the data source is looked up by name and updated, or created; dashboards are saved with ``overwrite: true``.

The ``dimension`` variable offers the configured segment dimensions (``NPSFLOW_DIMENSIONS`` without ``overall``;
``dimension_options``); the committed files under deploy/grafana are a build with the default settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

from grafana_foundation_sdk.builders import barchart, common as common_b, dashboard as dash_b, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models import common, dashboard as dash_m

from sinks import bi
from sinks.clickhouse import DEFAULT_DATABASE
from sinks.queries import validate_dimension
from streams.windows import OVERALL

PLUGIN = "grafana-clickhouse-datasource"
DATASOURCE_NAME = "npsflow-clickhouse"
DATASOURCE_UID = "npsflow-clickhouse"
DATASOURCE = dash_m.DataSourceRef(type_val=PLUGIN, uid=DATASOURCE_UID)
DASHBOARD_DIR = "/etc/grafana/dashboards/npsflow"  # where the provisioning file expects the JSON files
TAGS = ["npsflow", "nps"]
# The dashboards are Grafana 13 JSON: the schemaVersion of @grafana/schema 13.2.3 (its defaultDashboard; Grafana's
# latest migration, so a Grafana of that version migrates nothing) and none of the keys grafana-foundation-sdk
# 10.1.0 still writes that the 13.2.3 schema no longer has (deploy/grafana/schema, tests/test_grafana_schema.py).
SCHEMA_VERSION = 42
LEGACY_DASHBOARD_KEYS = ("style",)  # dashboard theme: removed from the schema, ignored by Grafana
LEGACY_VARIABLE_KEYS = ("id", "auto", "auto_count", "auto_min")  # the SDK writes them for every variable type
# table fieldConfig.defaults.custom: the keys the 13.2.3 schema requires, with Grafana's own defaults
# (defaultTableFieldOptions; cellOptions "auto" is what a table shows without one)
TABLE_FIELD_DEFAULTS = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False}
ALERTS_ANNOTATION = "NPS alerts"  # the annotation of every dashboard: significant-change alerts (sinks.bi)

BAND_COLORS = {"needs_improvement": "red", "good": "yellow", "excellent": "green", "world_class": "dark-green"}
NPS_STEPS = [dash_m.Threshold(None, "red"), dash_m.Threshold(0, "yellow"), dash_m.Threshold(50, "green"),
             dash_m.Threshold(70, "dark-green")]  # None = -Infinity: the bands of streams.nps.band


class ClickHouseQuery(cogbuilder.Builder[UnknownDataquery]):
    """A target of the ClickHouse plugin (v4 query model: editorType sql, rawSql, queryType; ``format`` for v2/v3)."""

    def __init__(self, ref_id: str, sql: str, fmt: int):
        self.data = {
            "refId": ref_id,
            "datasource": {"type": PLUGIN, "uid": DATASOURCE_UID},
            "editorType": "sql",
            "queryType": "timeseries" if fmt == bi.TIME_SERIES else "table",  # the v4 plugin's spelling
            "format": fmt,
            "rawSql": bi.for_grafana(sql),
        }

    def build(self) -> UnknownDataquery:
        return UnknownDataquery(dict(self.data))


def _legend():
    return (common_b.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM).show_legend(True))


def _tooltip():
    return common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.NONE)


def _prop(name: str, value: Any) -> dash_m.DynamicConfigValue:
    return dash_m.DynamicConfigValue(id_val=name, value=value)


def _base(panel, spec: bi.Panel, grid: tuple[int, int, int, int]):
    x, y, w, h = grid
    return (panel.title(spec.title).description(spec.description).datasource(DATASOURCE)
            .with_target(ClickHouseQuery("A", spec.sql, spec.format))
            .grid_pos(dash_m.GridPos(h=h, w=w, x=x, y=y)))


def _nps_daily(spec: bi.Panel, grid):
    band_edge = [_prop("custom.lineWidth", 0), _prop("custom.fillOpacity", 20), _prop("color", {"mode": "fixed", "fixedColor": "blue"})]
    return (_base(timeseries.Panel(), spec, grid).legend(_legend()).tooltip(_tooltip())
            .unit("none").decimals(1).min(-100).max(100)
            .thresholds(dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(NPS_STEPS))
            .line_width(2).show_points(common.VisibilityMode.ALWAYS).span_nulls(False)
            .override_by_name("nps", [_prop("displayName", "NPS"), _prop("color", {"mode": "fixed", "fixedColor": "blue"})])
            .override_by_name("ci_high", [*band_edge, _prop("custom.fillBelowTo", "ci_low"), _prop("displayName", "95 % CI high")])
            .override_by_name("ci_low", [*band_edge, _prop("custom.fillOpacity", 0), _prop("displayName", "95 % CI low")])
            .override_by_name("n", [_prop("displayName", "responses"),
                                    _prop("custom.hideFrom", {"viz": True, "legend": True, "tooltip": False})]))


def _nps_by_segment(spec: bi.Panel, grid):
    band_map = {"type": "value", "options": {
        band: {"text": band.replace("_", " "), "color": color, "index": i}
        for i, (band, color) in enumerate(BAND_COLORS.items())}}
    colored = _prop("custom.cellOptions", {"type": "color-background", "mode": "basic"})
    return (_base(table.Panel(), spec, grid)
            .decimals(1)
            .sort_by([common_b.TableSortByFieldState().display_name("n").desc(True)])
            .override_by_name("value", [_prop("displayName", "${dimension}")])
            .override_by_name("nps", [_prop("displayName", "NPS"), colored,
                                      _prop("thresholds", {"mode": "absolute", "steps": [
                                          {"value": s.value, "color": s.color} for s in NPS_STEPS]})])
            .override_by_name("ci_low", [_prop("displayName", "CI 95 % low")])
            .override_by_name("ci_high", [_prop("displayName", "CI 95 % high")])
            .override_by_name("band", [colored, _prop("mappings", [band_map])])
            .override_by_regexp("^(n|promoters|passives|detractors)$", [_prop("decimals", 0)]))


def _score_distribution(spec: bi.Panel, grid):
    return (_base(barchart.Panel(), spec, grid).legend(_legend()).tooltip(_tooltip())
            .x_field("score").stacking(common.StackingMode.NORMAL).show_value(common.VisibilityMode.AUTO)
            .decimals(0).fill_opacity(80)
            .override_by_name("detractors", [_prop("color", {"mode": "fixed", "fixedColor": "red"})])
            .override_by_name("passives", [_prop("color", {"mode": "fixed", "fixedColor": "yellow"})])
            .override_by_name("promoters", [_prop("color", {"mode": "fixed", "fixedColor": "green"})]))


def _category_share(spec: bi.Panel, grid):
    return (_base(timeseries.Panel(), spec, grid).legend(_legend()).tooltip(_tooltip())
            .unit("percent").decimals(1).min(0).max(100)
            .stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL).group("A"))
            .fill_opacity(60).line_width(1)
            .override_by_name("detractors", [_prop("color", {"mode": "fixed", "fixedColor": "red"})])
            .override_by_name("passives", [_prop("color", {"mode": "fixed", "fixedColor": "yellow"})])
            .override_by_name("promoters", [_prop("color", {"mode": "fixed", "fixedColor": "green"})]))


def _detractor_comments(spec: bi.Panel, grid):
    return (_base(table.Panel(), spec, grid)
            .cell_height(common.TableCellHeight.LG)
            .override_by_name("value", [_prop("displayName", "${dimension}")])
            .override_by_name("comment", [_prop("custom.inspect", True), _prop("custom.width", 600),
                                          _prop("custom.wrapText", True)])  # not in cellOptions since Grafana 12
            .override_by_name("responded_at", [_prop("unit", "dateTimeAsIso")]))


def _top_detractor_terms(spec: bi.Panel, grid):
    return (_base(barchart.Panel(), spec, grid).legend(_legend()).tooltip(_tooltip())
            .x_field("term").orientation(common.VizOrientation.HORIZONTAL).show_value(common.VisibilityMode.AUTO)
            .decimals(2).fill_opacity(80)
            .override_by_name("lift", [_prop("color", {"mode": "fixed", "fixedColor": "red"})])
            .override_by_name("impact", [_prop("color", {"mode": "fixed", "fixedColor": "purple"}),
                                         _prop("custom.axisPlacement", "right"), _prop("unit", "none")])
            .override_by_regexp("^(lang|n|detractors|lift_low|lift_high)$",
                                [_prop("custom.hideFrom", {"viz": True, "legend": True, "tooltip": False})]))


def _funnel(spec: bi.Panel, grid):
    return (_base(table.Panel(), spec, grid).show_header(True)
            .override_by_name("response_rate", [_prop("unit", "percent"), _prop("decimals", 1),
                                                _prop("displayName", "response rate")])
            .override_by_name("median_hours_to_respond", [_prop("unit", "h"), _prop("decimals", 1),
                                                          _prop("displayName", "median time to respond")])
            .override_by_name("cost", [_prop("decimals", 2)])
            .override_by_name("cost_per_response", [_prop("decimals", 2), _prop("displayName", "cost per response")]))


def _follow_up(spec: bi.Panel, grid):
    return (_base(table.Panel(), spec, grid).show_header(True)
            .override_by_name("overdue", [_prop("color", {"mode": "fixed", "fixedColor": "red"}),
                                          _prop("custom.cellOptions", {"type": "color-text"})])
            .override_by_name("median_hours_to_contact", [_prop("unit", "h"), _prop("decimals", 1),
                                                          _prop("displayName", "median time to first contact")])
            .override_by_name("closed_within_sla_pct", [_prop("unit", "percent"), _prop("decimals", 1),
                                                        _prop("displayName", "closed within SLA")]))


def _dead_letters(spec: bi.Panel, grid):
    return (_base(timeseries.Panel(), spec, grid).legend(_legend()).tooltip(_tooltip())
            .unit("short").decimals(0).min(0).draw_style(common.GraphDrawStyle.BARS).fill_opacity(70)
            .stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL).group("A")))


LAYOUT = {  # panel key -> (builder, (x, y, w, h))
    "nps_daily": (_nps_daily, (0, 0, 24, 9)),
    "nps_by_segment": (_nps_by_segment, (0, 9, 14, 9)),
    "score_distribution": (_score_distribution, (14, 9, 10, 9)),
    "category_share": (_category_share, (0, 18, 12, 9)),
    "detractor_comments": (_detractor_comments, (12, 18, 12, 9)),
    "top_detractor_terms": (_top_detractor_terms, (0, 27, 24, 10)),
    "funnel": (_funnel, (0, 0, 24, 8)),
    "follow_up": (_follow_up, (0, 8, 24, 8)),
    "dead_letters": (_dead_letters, (0, 16, 24, 9)),
}


def _org_variable():
    return (dash_b.QueryVariable("org").label("Organization").datasource(DATASOURCE)
            .query({"refId": "org", "editorType": "sql", "queryType": "table", "format": bi.TABLE,
                    "rawSql": bi.for_grafana(bi.ORG_OPTIONS)})
            .refresh(dash_m.VariableRefresh.ON_DASHBOARD_LOAD).sort(dash_m.VariableSort.ALPHABETICAL_ASC)
            .include_all(True).all_value("'" + bi.ALL_ORGS + "'").multi(False)
            .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
            .description("Responses belong to an org through their invitation; responses without an invitation "
                         "count under All only."))


def dimension_options(dimensions: Iterable[str] | None = None) -> tuple[str, ...]:
    """The ``dimension`` variable's options from the configured dimensions (``Settings.dimensions``): without
    the pseudo-dimension ``overall`` (not a segment key), each validated (``sinks.queries.validate_dimension``,
    ValueError), duplicates dropped; ``sinks.bi.DIMENSIONS`` when none remain (or ``dimensions`` is None)."""
    options: list[str] = []
    for name in dimensions or ():
        if name != OVERALL and validate_dimension(name) not in options:
            options.append(name)
    return tuple(options) or bi.DIMENSIONS


def _custom_variable(name: str, label: str, options: tuple[str, ...], description: str):
    # option values never hold a comma: dimensions pass validate_dimension, granularities are fixed words
    return (dash_b.CustomVariable(name).label(label).values(",".join(options)).multi(False).include_all(False)
            .current(dash_m.VariableOption(selected=True, text=options[0], value=options[0]))
            .description(description))


def _dimension_variable(options: tuple[str, ...]):
    return _custom_variable("dimension", "Segment by", options,
                            "The segment dimension of the segment table and the comments (NPSFLOW_DIMENSIONS).")


def _granularity_variable():
    return _custom_variable("granularity", "Granularity", bi.GRANULARITIES,
                            "Buckets of the trend panels: UTC day, ISO week (from Monday) or calendar month.")


def dashboard_model(key: str, dimensions: Iterable[str] | None = None) -> dict:
    """The dashboard ``key`` of ``sinks.bi.DASHBOARDS`` as Grafana JSON (a dict); ``dimensions``: the configured
    dimensions (``dimension_options``)."""
    title, specs = bi.DASHBOARDS[key]
    board = (dash_b.Dashboard(title).uid(f"npsflow-{key}").tags(TAGS).timezone("utc").editable()
             .time("now-30d", "now").refresh("5m").tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
             .with_variable(_org_variable()))
    if any("${dimension" in s.sql for s in specs):
        board = board.with_variable(_dimension_variable(dimension_options(dimensions)))
    if any("${granularity" in s.sql for s in specs):
        board = board.with_variable(_granularity_variable())
    for number, spec in enumerate(specs, start=1):
        make, grid = LAYOUT[spec.key]
        board = board.with_panel(make(spec, grid).id(number))
    board = board.annotation(dash_b.AnnotationQuery().name(ALERTS_ANNOTATION).datasource(DATASOURCE)
                             .enable(True).hide(False).icon_color("red"))
    model = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for annotation in model["annotations"]["list"]:  # the SDK's target type has no SQL: the plugin's query model
        if annotation["name"] == ALERTS_ANNOTATION:
            annotation["target"] = dict(ClickHouseQuery("Alerts", bi.ALERT_ANNOTATIONS, bi.TABLE).data)
    return _current_schema(model)


def _current_schema(model: dict) -> dict:
    """The SDK's dashboard as Grafana 13 JSON (the same dashboard): ``SCHEMA_VERSION``, without the legacy keys,
    table panels without the SDK's hidden ``options.footer`` (moved to the field config in Grafana 12) and with
    the field defaults the schema requires."""
    model["schemaVersion"] = SCHEMA_VERSION
    for key in LEGACY_DASHBOARD_KEYS:
        model.pop(key, None)
    for variable in model["templating"]["list"]:
        for key in LEGACY_VARIABLE_KEYS:
            variable.pop(key, None)
    for panel in model["panels"]:
        if panel["type"] == "table":
            footer = panel["options"].pop("footer", None)
            if footer and footer.get("show"):
                raise ValueError(f"panel {panel['title']!r}: a table footer belongs in fieldConfig.defaults.custom")
            defaults = panel["fieldConfig"]["defaults"]
            defaults["custom"] = {**TABLE_FIELD_DEFAULTS, **defaults.get("custom", {})}
    return model


def _dump(model: Any) -> str:
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


DATASOURCE_YAML = f"""\
# Generated by `npsflow grafana build` (npsflow/grafana.py): do not edit, regenerate.
# The ClickHouse data source of the npsflow dashboards. Grafana expands $VARIABLES from its environment.
# Needs the plugin: grafana cli plugins install grafana-clickhouse-datasource (v4).
# Set every CLICKHOUSE_* variable (e.g. CLICKHOUSE_PORT=8123, CLICKHOUSE_PROTOCOL=http, CLICKHOUSE_SECURE=false).
# Any Grafana viewer can run SQL through a data source: give it a read-only user, e.g.
#   CREATE USER grafana IDENTIFIED BY '…' SETTINGS readonly = 1; GRANT SELECT ON npsflow.* TO grafana;
apiVersion: 1

datasources:
  - name: {DATASOURCE_NAME}
    uid: {DATASOURCE_UID}
    type: {PLUGIN}
    editable: false
    jsonData:
      host: $CLICKHOUSE_HOST
      port: $CLICKHOUSE_PORT
      protocol: $CLICKHOUSE_PROTOCOL
      secure: $CLICKHOUSE_SECURE
      username: $CLICKHOUSE_USER
      defaultDatabase: {DEFAULT_DATABASE}
    secureJsonData:
      password: $CLICKHOUSE_PASSWORD
"""

DASHBOARDS_YAML = f"""\
# Generated by `npsflow grafana build` (npsflow/grafana.py): do not edit, regenerate.
# Mount deploy/grafana/dashboards at {DASHBOARD_DIR} (or change the path).
apiVersion: 1

providers:
  - name: npsflow
    folder: npsflow
    type: file
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: {DASHBOARD_DIR}
"""


def files(dimensions: Iterable[str] | None = None) -> dict[str, str]:
    """Relative path → content of every generated file."""
    dimensions = dimension_options(dimensions)
    out = {f"dashboards/{key}.json": _dump(dashboard_model(key, dimensions)) for key in bi.DASHBOARDS}
    out["provisioning/datasources/clickhouse.yaml"] = DATASOURCE_YAML
    out["provisioning/dashboards/npsflow.yaml"] = DASHBOARDS_YAML
    return out


def build(out_dir: str | Path, dimensions: Iterable[str] | None = None) -> list[Path]:
    """Write the dashboards and the provisioning files under ``out_dir``; returns the paths written.
    ``dimensions``: the configured dimensions (``Settings.dimensions``; None: the default options)."""
    out = Path(out_dir)
    written = []
    for rel, content in files(dimensions).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------ push
def datasource_payload(clickhouse_url: str, password: str | None = None) -> dict:
    """The data source for Grafana's API from ``http(s)://user:pass@host:port/db`` (the plugin talks HTTP then)
    or ``clickhouse://user:pass@host:9000/db`` / ``clickhouses://…`` (native protocol). ``password`` (e.g. read
    from a file) instead of one in the URL."""
    from npsflow.redact import redact_dsn

    parts = urlsplit(clickhouse_url)
    if password and parts.password:
        raise ValueError("the ClickHouse URL has a password and a password file is given: keep only one")
    schemes = {"http": ("http", False, 8123), "https": ("http", True, 8443),
               "clickhouse": ("native", False, 9000), "clickhouses": ("native", True, 9440)}
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"--clickhouse-url must be http(s)://[user[:password]@]host[:port][/database] or "
                         f"clickhouse(s)://…, not {parts.scheme or redact_dsn(clickhouse_url)!r}")
    protocol, secure, default_port = schemes[parts.scheme]
    database = unquote(parts.path.strip("/")) or DEFAULT_DATABASE
    payload = {
        "name": DATASOURCE_NAME, "uid": DATASOURCE_UID, "type": PLUGIN, "access": "proxy", "isDefault": False,
        "jsonData": {"host": parts.hostname, "port": parts.port or default_port, "protocol": protocol,
                     "secure": secure, "username": unquote(parts.username or "default"),
                     "defaultDatabase": database},
    }
    if parts.password or password:
        payload["secureJsonData"] = {"password": password or unquote(parts.password)}
    return payload


def with_database(model: Any, database: str) -> Any:
    """The dashboard with every query reading ``database`` instead of the default one (the same SQL)."""
    from sinks.clickhouse import quote_ident

    old, new = quote_ident(DEFAULT_DATABASE) + ".", quote_ident(database) + "."
    if isinstance(model, dict):
        return {k: (v.replace(old, new) if k == "rawSql" and isinstance(v, str) else with_database(v, database))
                for k, v in model.items()}
    if isinstance(model, list):
        return [with_database(v, database) for v in model]
    return model


def push(url: str, token: str, clickhouse_url: str = "http://default@localhost:8123/npsflow",
         folder_uid: str | None = None, timeout: float = 10.0, dimensions: Iterable[str] | None = None,
         clickhouse_password: str | None = None) -> list[dict]:
    """Create or update the data source, then save every dashboard (overwrite; ``dimensions`` as in ``build``).
    Returns one entry per action:
    ``{"kind": "datasource", "action": "created"|"updated", "name"}`` and ``{"kind": "dashboard", "uid", "url"}``.
    Raises grafana_client's exceptions (e.g. GrafanaUnauthorizedError) and connection errors."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError

    dimensions = dimension_options(dimensions)  # a bad dimension fails before anything is sent
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    done: list[dict] = []
    ds = datasource_payload(clickhouse_url, clickhouse_password)
    try:
        existing = api.datasource.get_datasource_by_name(ds["name"])
    except GrafanaClientError as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
        existing = None
    if existing:
        api.datasource.update_datasource(existing["id"], ds)
        done.append({"kind": "datasource", "action": "updated", "name": ds["name"]})
    else:
        api.datasource.create_datasource(ds)
        done.append({"kind": "datasource", "action": "created", "name": ds["name"]})
    for key in bi.DASHBOARDS:
        # the panels read the database the data source points at (the URL's path), not always "npsflow"
        model = with_database(dashboard_model(key, dimensions), ds["jsonData"]["defaultDatabase"])
        body: dict[str, Any] = {"dashboard": model, "overwrite": True,
                                "message": "npsflow grafana push"}
        if folder_uid:
            body["folderUid"] = folder_uid
        result = api.dashboard.update_dashboard(body) or {}
        done.append({"kind": "dashboard", "uid": body["dashboard"]["uid"], "url": result.get("url"),
                     "version": result.get("version")})
    return done
