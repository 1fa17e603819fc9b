"""The Grafana files against Grafana's own schema, offline (no Grafana server, no npm, no network).

deploy/grafana/schema holds JSON schemas generated from the npm package @grafana/schema 13.2.3 (the TypeScript
Grafana generates from its CUE kinds) by ``generate.sh``: the classic dashboard JSON (``Dashboard``) and the
``Options``/``FieldConfig`` of the panel plugins npsflow uses. Both are strict (``additionalProperties: false``
wherever Grafana's types are closed), so an unknown or removed key fails. On top of the schema, ``legacy_keys``
finds what Grafana's dashboard migrations (apps/dashboard/pkg/migration/schemaversion, V2…V43) would still rewrite,
also inside the parts the schema leaves open (panel options, field config values, queries).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import yaml

from npsflow import grafana
from sinks import bi

REPO = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO / "deploy" / "grafana" / "schema"
GRAFANA_SCHEMA_VERSION = "13.2.3"
DASHBOARD_SCHEMA = json.loads((SCHEMA_DIR / f"dashboard-{GRAFANA_SCHEMA_VERSION}.schema.json").read_text())
PANELS_SCHEMA = json.loads((SCHEMA_DIR / f"panels-{GRAFANA_SCHEMA_VERSION}.schema.json").read_text())
STANDARD_FIELD_CONFIG = DASHBOARD_SCHEMA["definitions"]["FieldConfig"]["properties"]  # override ids without "custom."

# Keys and values a Grafana 13 dashboard no longer has; each is removed or rewritten by a migration or dropped
# from the schema. The schema already refuses most of them where it is closed; this list also covers the open
# parts and says why.
LEGACY_DASHBOARD_KEYS = {
    "style": "dashboard theme, removed from the schema (the SDK still writes it)",
    "rows": "pre-schemaVersion 16 row layout (V16 turns rows into panels with gridPos)",
    "services": "schemaVersion < 2 filter structure (V2 moves it to time and templating)",
    "sharedCrosshair": "V14 turns it into graphTooltip",
    "nav": "the pre-timepicker time picker settings, not in the schema",
    "hideControls": "not in the schema (Grafana 4 era)",
}
LEGACY_TIMEPICKER_KEYS = {"time_options": "V41 deletes it", "collapse": "not in the schema", "enable": "not in the schema"}
LEGACY_VARIABLE_KEYS = {
    "id": "the SDK writes a zero UUID; not in the 13.2.3 schema",
    "auto": "interval variables only, and gone from the 13.2.3 schema", "auto_count": "as auto", "auto_min": "as auto",
    "global": "frontend state", "index": "frontend state", "state": "frontend state", "rootStateKey": "frontend state",
    "error": "frontend state", "tags": "tag-based query variables, not in the schema", "tagsQuery": "as tags",
    "tagValuesQuery": "as tags", "useTags": "as tags",
}
LEGACY_PANEL_TYPES = {"graph", "singlestat", "table-old", "grafana-singlestat-panel", "grafana-piechart-panel",
                      "grafana-worldmap-panel"}  # Angular panels: auto-migrated or gone in Grafana 12+
REMOVED_TRANSFORMATIONS = {"formatTime": "V43 turns it into convertFieldType"}


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")


def legacy_keys(model: dict) -> list[str]:
    """Every legacy key or value in the dashboard ``model`` (empty for a current Grafana 13 dashboard)."""
    found = []
    if model.get("schemaVersion") != grafana.SCHEMA_VERSION:
        found.append(f"schemaVersion {model.get('schemaVersion')} (Grafana migrates it to {grafana.SCHEMA_VERSION})")
    found += [f"{key}: {why}" for key, why in LEGACY_DASHBOARD_KEYS.items() if key in model]
    found += [f"timepicker.{key}: {why}" for key, why in LEGACY_TIMEPICKER_KEYS.items()
              if key in (model.get("timepicker") or {})]
    for variable in (model.get("templating") or {}).get("list", []):
        found += [f"variable {variable.get('name')}.{key}: {why}" for key, why in LEGACY_VARIABLE_KEYS.items()
                  if key in variable]
    for path, value in _walk(model):
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("datasource"), str):
            found.append(f"{path}.datasource: a name string (V33/V36 turn it into a {{type, uid}} reference)")
        if value.get("type") in LEGACY_PANEL_TYPES and "gridPos" in value:
            found.append(f"{path}: Angular panel type {value['type']!r}")
        legend = (value.get("options") or {}).get("legend") if "gridPos" in value else None
        if isinstance(legend, bool) or (isinstance(legend, dict) and legend.get("displayMode") == "hidden"):
            found.append(f"{path}.options.legend: V37 rewrites a boolean or 'hidden' legend")
        if "gridPos" in value and value.get("type") == "table" and "footer" in (value.get("options") or {}):
            found.append(f"{path}.options.footer: the table footer is fieldConfig.defaults.custom.footer since 12")
        if "displayMode" in ((value.get("defaults") or {}).get("custom") or {}):
            found.append(f"{path}.defaults.custom.displayMode: V38 turns it into cellOptions")
        if value.get("id") == "custom.displayMode" and "value" in value:
            found.append(f"{path}: override custom.displayMode (V38 turns it into custom.cellOptions)")
        if value.get("id") == "custom.cellOptions" and isinstance(value.get("value"), dict) and (
                "wrapText" in value["value"]):
            found.append(f"{path}: cellOptions.wrapText is custom.wrapText since Grafana 12")
        if "wrapText" in (value.get("cellOptions") or {}):
            found.append(f"{path}.cellOptions.wrapText: custom.wrapText since Grafana 12")
        if value.get("id") in REMOVED_TRANSFORMATIONS and "options" in value and path.rsplit(".", 1)[-1].startswith(
                "transformations"):
            found.append(f"{path}: transformation {value['id']}: {REMOVED_TRANSFORMATIONS[value['id']]}")
    return found


def _errors(schema: dict, instance: Any, definitions: dict, where: str) -> list[str]:
    validator = jsonschema.Draft7Validator({**schema, "definitions": definitions})
    return [f"{where}{'.' if e.absolute_path else ''}{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in _leaves(validator.iter_errors(instance))]


def _leaves(errors) -> Iterator[jsonschema.ValidationError]:
    """The errors, an anyOf (a panel is Panel | RowPanel) replaced by the errors of the branch its ``type`` fits."""
    for error in errors:
        if not error.context:
            yield error
            continue
        branches: dict[Any, list] = {}
        for sub in error.context:
            branches.setdefault(sub.schema_path[0], []).append(sub)
        fitting = [b for b in branches.values() if not any(list(e.relative_path) == ["type"] for e in b)]
        yield from (_leaves(fitting[0]) if len(fitting) == 1 else [error])


def schema_errors(model: dict) -> list[str]:
    """The dashboard against the dashboard schema, and each panel's options, custom field defaults and override
    values against its panel plugin's schema (or the standard field config)."""
    errors = _errors({"$ref": DASHBOARD_SCHEMA["$ref"]}, model, DASHBOARD_SCHEMA["definitions"], "dashboard")
    panel_defs = PANELS_SCHEMA["definitions"]
    for i, panel in enumerate(model.get("panels") or []):
        if not isinstance(panel, dict):
            continue
        kind, where = panel.get("type"), f"panels[{i}]"
        if f"{kind}.Options" not in panel_defs:
            errors.append(f"{where}: panel type {kind!r} has no vendored panel schema (add it to generate.sh)")
            continue
        custom_schema = panel_defs[f"{kind}.FieldConfig"]
        errors += _errors({"$ref": f"#/definitions/{kind}.Options"}, panel.get("options", {}), panel_defs,
                          f"{where}.options")
        field_config = panel.get("fieldConfig") or {}
        errors += _errors({"$ref": f"#/definitions/{kind}.FieldConfig"},
                          (field_config.get("defaults") or {}).get("custom", {}), panel_defs,
                          f"{where}.fieldConfig.defaults.custom")
        for j, override in enumerate(field_config.get("overrides") or []):
            for k, prop in enumerate(override.get("properties") or []):
                pid, at = prop.get("id", ""), f"{where}.fieldConfig.overrides[{j}].properties[{k}]"
                if pid.startswith("custom."):
                    sub, defs = custom_schema["properties"].get(pid[len("custom."):]), panel_defs
                else:
                    sub, defs = STANDARD_FIELD_CONFIG.get(pid), DASHBOARD_SCHEMA["definitions"]
                if sub is None:
                    errors.append(f"{at}: {pid!r} is no field config property of a {kind} panel")
                else:
                    errors += _errors(sub, prop.get("value"), defs, f"{at} ({pid})")
    return errors


def _built() -> dict[str, dict]:
    return {rel: json.loads(text) for rel, text in grafana.files().items() if rel.endswith(".json")}


def _committed() -> dict[str, dict]:
    return {f"dashboards/{p.name}": json.loads(p.read_text())
            for p in sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))}


# ============================================================================================== the vendored schema
def test_vendored_schemas_name_their_source_and_are_valid_json_schemas():
    package = json.loads((SCHEMA_DIR / "package.json").read_text())
    lock = json.loads((SCHEMA_DIR / "package-lock.json").read_text())["packages"]
    assert package["dependencies"] == {"@grafana/schema": GRAFANA_SCHEMA_VERSION, "ts-json-schema-generator": "2.10.0"}
    for name, version in package["dependencies"].items():  # exact pins, the lock agrees
        assert re.fullmatch(r"\d+\.\d+\.\d+", version) and lock[f"node_modules/{name}"]["version"] == version
    for schema in (DASHBOARD_SCHEMA, PANELS_SCHEMA):
        jsonschema.Draft7Validator.check_schema(schema)
        source = schema["x-source"]
        assert (source["package"], source["version"]) == ("@grafana/schema", GRAFANA_SCHEMA_VERSION)
        assert source["generator"] == "ts-json-schema-generator@2.10.0"
        assert source["defaultSchemaVersion"] == grafana.SCHEMA_VERSION == 42
    assert DASHBOARD_SCHEMA["$ref"] == "#/definitions/Dashboard"
    # strict where Grafana's types are closed; the one opened definition is the one Grafana's CUE leaves open
    closed = {n for n, d in DASHBOARD_SCHEMA["definitions"].items() if d.get("additionalProperties") is False}
    assert {"Dashboard", "Panel", "VariableModel", "GridPos", "AnnotationQuery", "FieldConfig"} <= closed
    assert DASHBOARD_SCHEMA["definitions"]["AnnotationTarget"]["additionalProperties"] is True
    assert {f"{p}.{t}" for p in ("timeseries", "table", "barchart") for t in ("Options", "FieldConfig")} <= set(
        PANELS_SCHEMA["definitions"])
    assert (SCHEMA_DIR / "generate.sh").stat().st_mode & 0o111  # executable


# ============================================================================================== the dashboards
@pytest.mark.parametrize("source", ["built", "committed", "configured"])
def test_every_dashboard_validates_against_grafana_13_and_has_no_legacy_key(source):
    boards = {"built": _built, "committed": _committed,
              "configured": lambda: {rel: json.loads(text) for rel, text in
                                     grafana.files(("overall", "store", "region")).items() if rel.endswith(".json")},
              }[source]()
    assert sorted(boards) == sorted(f"dashboards/{key}.json" for key in bi.DASHBOARDS)
    for rel, model in boards.items():
        assert schema_errors(model) == [], rel
        assert legacy_keys(model) == [], rel
        assert model["schemaVersion"] == DASHBOARD_SCHEMA["x-source"]["defaultSchemaVersion"]
    if source == "committed":  # the committed files are the default build (as in test_grafana.py)
        assert boards == _built()


def test_pushed_dashboards_are_the_validated_ones():
    # push sends dashboard_model with another database's name in the SQL: the same keys
    for key in bi.DASHBOARDS:
        model = grafana.with_database(grafana.dashboard_model(key), "analytics")
        assert schema_errors(model) == [] and legacy_keys(model) == []


def _set(path: list, value: Any):
    def change(model: dict) -> None:
        target = model
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return change


def _first_table(model: dict) -> dict:
    return next(p for p in model["panels"] if p["type"] == "table")


BROKEN = {  # name -> (change, caught by the schema, caught by legacy_keys)
    "gridPos as a string": (_set(["panels", 0, "gridPos"], "0,0,24,9"), True, False),
    "gridPos without w": (lambda m: m["panels"][0]["gridPos"].pop("w"), True, False),
    "unknown top-level key": (_set(["refreshInterval"], "5m"), True, False),
    "panel title a number": (_set(["panels", 0, "title"], 7), True, False),
    "legacy style": (_set(["style"], "dark"), True, True),
    "legacy rows": (_set(["rows"], []), True, True),
    "variable with SDK id/auto keys": (lambda m: m["templating"]["list"][0].update(
        id="00000000-0000-0000-0000-000000000000", auto=False, auto_count=30, auto_min="10s"), True, True),
    "variable of an unknown type": (_set(["templating", "list", 0, "type"], "tags"), True, False),
    "timepicker.time_options": (_set(["timepicker"], {"time_options": ["5m"]}), True, True),
    "old schemaVersion": (_set(["schemaVersion"], 36), False, True),
    "datasource as a name": (_set(["panels", 0, "datasource"], "ClickHouse"), True, True),
    "Angular graph panel": (_set(["panels", 0, "type"], "graph"), True, True),
    "unknown panel option": (lambda m: m["panels"][0]["options"].update(showTitle=True), True, False),
    "table footer in options": (lambda m: _first_table(m)["options"].update(
        footer={"show": False, "reducer": [], "countRows": False}), True, True),
    "cellOptions.wrapText": (lambda m: _first_table(m)["fieldConfig"]["defaults"]["custom"].update(
        cellOptions={"type": "auto", "wrapText": True}), True, True),
    "custom.displayMode override": (lambda m: _first_table(m)["fieldConfig"]["overrides"][0]["properties"].append(
        {"id": "custom.displayMode", "value": "color-background"}), False, True),
    "override of an unknown property": (lambda m: m["panels"][0]["fieldConfig"]["overrides"][0]["properties"].append(
        {"id": "custom.lineWidht", "value": 1}), True, False),
    "override value of the wrong type": (lambda m: m["panels"][0]["fieldConfig"]["overrides"][0]["properties"].append(
        {"id": "decimals", "value": "one"}), True, False),
    "threshold with an old index": (_set(["panels", 0, "fieldConfig", "defaults", "thresholds"], {
        "mode": "absolute", "steps": [{"color": "red", "value": None, "index": 0}]}), True, False),
    "annotation without iconColor": (lambda m: m["annotations"]["list"][0].pop("iconColor"), True, False),
    "formatTime transformation": (_set(["panels", 0, "transformations"],
                                       [{"id": "formatTime", "options": {"timeField": "time"}}]), False, True),
}


@pytest.mark.parametrize("key", sorted(bi.DASHBOARDS))
@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_broken_copy_of_each_dashboard_fails(key, broken):
    committed = json.loads((REPO / "deploy" / "grafana" / "dashboards" / f"{key}.json").read_text())
    change, by_schema, by_legacy = BROKEN[broken]
    copy_ = copy.deepcopy(committed)
    change(copy_)
    assert copy_ != committed
    assert bool(schema_errors(copy_)) is by_schema, schema_errors(copy_)
    assert bool(legacy_keys(copy_)) is by_legacy, legacy_keys(copy_)


def test_the_sdk_alone_writes_legacy_keys_that_npsflow_removes():
    """What grafana-foundation-sdk 10.1.0 writes and ``grafana._current_schema`` fixes (if the SDK stops writing
    them, this test says so and the clean-up can go)."""
    from grafana_foundation_sdk.builders import dashboard as dash_b
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    raw = json.loads(json.dumps(dash_b.Dashboard("t").with_variable(dash_b.CustomVariable("v").values("a,b"))
                                .build(), cls=JSONEncoder))
    assert raw["schemaVersion"] == 36 and "style" in raw
    assert {"id", "auto", "auto_count", "auto_min"} <= set(raw["templating"]["list"][0])
    assert legacy_keys(raw) and schema_errors(raw)


# ============================================================================================== provisioning
# the keys Grafana's file provisioning reads (pkg/services/provisioning/{datasources,dashboards}, apiVersion 1)
DATASOURCE_KEYS = {"name", "type", "uid", "access", "orgId", "url", "user", "database", "basicAuth", "basicAuthUser",
                   "withCredentials", "isDefault", "jsonData", "secureJsonData", "version", "editable"}
CLICKHOUSE_JSON_DATA = {"host", "port", "protocol", "secure", "username", "defaultDatabase", "tlsSkipVerify",
                        "tlsAuth", "tlsAuthWithCACert", "path", "dialTimeout", "queryTimeout", "validateSql"}
PROVIDER_KEYS = {"name", "orgId", "folder", "folderUid", "type", "disableDeletion", "updateIntervalSeconds",
                 "allowUiUpdates", "options"}
SECRET_WORDS = re.compile(r"pass(word)?|secret|token|api_?key|credential|private", re.I)
ENV_OR_FILE = re.compile(r"\$(\{[A-Z_][A-Z0-9_]*\}|[A-Z_][A-Z0-9_]*)|\$__(file|env)\{[^}]+\}")


def provisioning_errors(datasources: dict, providers: dict) -> list[str]:
    errors = []
    if datasources.get("apiVersion") != 1 or not isinstance(datasources.get("datasources"), list):
        errors.append("datasources: apiVersion 1 and a list of datasources")
    for ds in datasources.get("datasources") or []:
        errors += [f"datasource key {k!r} unknown to provisioning" for k in set(ds) - DATASOURCE_KEYS]
        errors += [f"datasource needs {k}" for k in ("name", "type", "uid") if not ds.get(k)]
        if ds.get("type") == grafana.PLUGIN:
            errors += [f"jsonData key {k!r} unknown to {grafana.PLUGIN}"
                       for k in set(ds.get("jsonData") or {}) - CLICKHOUSE_JSON_DATA]
            errors += [f"jsonData needs {k}" for k in ("host", "port", "protocol", "username")
                       if k not in (ds.get("jsonData") or {})]
        for key, value in (ds.get("secureJsonData") or {}).items():
            if not (isinstance(value, str) and ENV_OR_FILE.fullmatch(value)):
                errors.append(f"secureJsonData.{key} is a literal: use $VARIABLE or $__file{{path}}")
        for section in ("jsonData", None):
            holder = ds.get(section) or {} if section else ds
            errors += [f"{section or 'datasource'}.{k} looks like a secret outside secureJsonData"
                       for k in holder if SECRET_WORDS.search(k)]
    if providers.get("apiVersion") != 1 or not isinstance(providers.get("providers"), list):
        errors.append("dashboards: apiVersion 1 and a list of providers")
    for provider in providers.get("providers") or []:
        errors += [f"provider key {k!r} unknown to provisioning" for k in set(provider) - PROVIDER_KEYS]
        if not provider.get("name") or provider.get("type") != "file":
            errors.append("provider needs a name and type: file")
        if not str((provider.get("options") or {}).get("path") or "").startswith("/"):
            errors.append("provider needs options.path (absolute, inside the Grafana container)")
    return errors


def _provisioning() -> tuple[dict, dict]:
    base = REPO / "deploy" / "grafana" / "provisioning"
    return (yaml.safe_load((base / "datasources" / "clickhouse.yaml").read_text()),
            yaml.safe_load((base / "dashboards" / "npsflow.yaml").read_text()))


def test_provisioning_files_have_the_keys_grafana_reads_and_no_secret():
    datasources, providers = _provisioning()
    assert provisioning_errors(datasources, providers) == []
    (ds,) = datasources["datasources"]
    assert ds["secureJsonData"] == {"password": "$CLICKHOUSE_PASSWORD"}  # from Grafana's environment
    assert providers["providers"][0]["options"]["path"] == grafana.DASHBOARD_DIR


BROKEN_PROVISIONING = {
    "literal password": lambda d, p: d["datasources"][0]["secureJsonData"].update(password="hunter2"),
    "password in jsonData": lambda d, p: d["datasources"][0]["jsonData"].update(password="$CLICKHOUSE_PASSWORD"),
    "unknown datasource key": lambda d, p: d["datasources"][0].update(pluginVersion="4"),
    "datasource without type": lambda d, p: d["datasources"][0].pop("type"),
    "unknown jsonData key": lambda d, p: d["datasources"][0]["jsonData"].update(server="ch"),
    "apiVersion 2": lambda d, p: d.update(apiVersion=2),
    "provider without path": lambda d, p: p["providers"][0]["options"].pop("path"),
    "provider of another type": lambda d, p: p["providers"][0].update(type="git"),
    "misspelt provider key": lambda d, p: p["providers"][0].update(updateIntervalSecond=10),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_PROVISIONING))
def test_a_broken_provisioning_file_fails(broken):
    datasources, providers = _provisioning()
    BROKEN_PROVISIONING[broken](datasources, providers)
    assert provisioning_errors(datasources, providers)


def test_no_secret_in_any_grafana_file():
    """Nothing under deploy/grafana holds a credential: every secret-looking key's value is an environment
    reference, and no string looks like a key or a DSN with a password."""
    looks_secret = re.compile(r"://[^/\s:@]+:[^/\s@]+@|-----BEGIN|\bglsa_|\beyJ[A-Za-z0-9_-]{20,}")
    checked = 0
    for path in sorted((REPO / "deploy" / "grafana").rglob("*")):
        if path.suffix not in (".json", ".yaml", ".yml") or path.parent == SCHEMA_DIR:
            continue
        text = path.read_text()
        assert not looks_secret.search(text), path
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        for where, value in _walk(data):
            key = where.rsplit(".", 1)[-1]
            if SECRET_WORDS.search(key) and isinstance(value, str):
                assert ENV_OR_FILE.fullmatch(value), f"{path}: {where}"
        checked += 1
    assert checked == 4
