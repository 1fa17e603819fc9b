"""Schema files, pinned catalog and backward compatibility of every historical version."""
import copy
import io
import json
import os
import shutil

import fastavro
import pytest
from fastavro.schema import parse_schema

from schemas import catalog, codec
from schemas.examples import examples

ALL_FILES = sorted(
    os.path.relpath(os.path.join(d, f), catalog.SCHEMA_DIR)
    for d, _, fs in os.walk(catalog.SCHEMA_DIR) for f in fs if f.endswith(".avsc")
)
VERSIONS = catalog.load_versions()
HISTORICAL = [v for v in VERSIONS if not v.current]


def _fields_missing_doc(schema, where=""):
    missing = []
    if isinstance(schema, list):
        for s in schema:
            missing += _fields_missing_doc(s, where)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            if not schema.get("doc"):
                missing.append(f"{where}{schema['name']} (record)")
            for f in schema["fields"]:
                if not f.get("doc"):
                    missing.append(f"{where}{schema['name']}.{f['name']}")
                missing += _fields_missing_doc(f["type"], f"{where}{schema['name']}.")
        elif isinstance(schema.get("type"), (dict, list)):
            missing += _fields_missing_doc(schema["type"], where)
    return missing


def test_expected_files_exist():
    assert set(ALL_FILES) >= {
        "trigger_event.avsc", "dispatched_message.avsc", "raw_response.avsc", "classified_response.avsc",
        "window_update.avsc", "alert.avsc", "dead_letter.avsc", "history/io.npsflow.RawResponse/v1.avsc",
        "history/io.npsflow.DispatchedMessage/v1.avsc", "history/io.npsflow.RawResponse/v2.avsc",
        "history/io.npsflow.ClassifiedResponse/v1.avsc", "history/io.npsflow.ClassifiedResponse/v2.avsc",
    }


@pytest.mark.parametrize("rel", ALL_FILES)
def test_every_avsc_parses_and_is_documented(rel):
    schema = catalog.read_schema_file(rel)
    parse_schema(copy.deepcopy(schema))
    assert schema["namespace"] == "io.npsflow"
    assert _fields_missing_doc(schema) == []
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, list) and t[0] == "null":
            assert f.get("default", "MISSING") is None, f"{rel}: optional {f['name']} needs default null"
        if isinstance(t, dict) and t.get("type") == "map":
            assert f.get("default") == {}, f"{rel}: map {f['name']} needs default {{}}"


def test_subject_constants_match_catalog():
    assert set(codec.SUBJECTS) == set(catalog.load_catalog_json()["subjects"])
    assert set(examples()) == set(codec.SUBJECTS)
    assert codec.RAW_RESPONSE == "io.npsflow.RawResponse"


def test_catalog_matches_files():
    assert catalog.check_catalog() == []
    data = catalog.load_catalog_json()["subjects"]
    ids = [v["id"] for vs in data.values() for v in vs]
    assert len(ids) == len(set(ids)), "schema ids must be globally unique"
    for subject, versions in data.items():
        assert [v["version"] for v in versions] == list(range(1, len(versions) + 1))
        for v in versions:
            assert v["fingerprint"] == catalog.fingerprint(catalog.read_schema_file(v["file"]))
            assert catalog.full_name(catalog.read_schema_file(v["file"])) == subject
    assert [(v["version"], v["id"]) for v in data["io.npsflow.RawResponse"]] == [(1, 3), (2, 8), (3, 11)]
    assert [(v["version"], v["id"]) for v in data["io.npsflow.DispatchedMessage"]] == [(1, 2), (2, 9)]
    assert [(v["version"], v["id"]) for v in data["io.npsflow.ClassifiedResponse"]] == [(1, 4), (2, 10), (3, 12),
                                                                                           (4, 13)]


def test_raw_response_history_entry_is_real():
    v1 = catalog.read_schema_file("history/io.npsflow.RawResponse/v1.avsc")
    v2 = catalog.read_schema_file("history/io.npsflow.RawResponse/v2.avsc")
    names1 = {f["name"] for f in v1["fields"]}
    names2 = {f["name"] for f in v2["fields"]}
    assert names2 - names1 == {"invitation_id", "unknown_json"}
    assert catalog.fingerprint(v1) != catalog.fingerprint(v2)
    assert catalog.fingerprint(v2) == "504c85069c43bc4fd80b5c986428cb4286d7553c11430bb7bf3209d791077103"


FOLLOW_UP_FIELD = {"name": "follow_up", "type": ["null", "string"], "default": None,
                   "doc": "answer to the category's follow-up question on the survey page"}


@pytest.mark.parametrize("old_file,current_file,old_fingerprint", [
    ("history/io.npsflow.RawResponse/v2.avsc", "raw_response.avsc",
     "504c85069c43bc4fd80b5c986428cb4286d7553c11430bb7bf3209d791077103"),
    ("history/io.npsflow.ClassifiedResponse/v1.avsc", "history/io.npsflow.ClassifiedResponse/v2.avsc",
     "5e5eb491d8ac2950ce4053061fa302264584785c8865ba1d34d41dec351807c8"),
])
def test_follow_up_is_the_only_change_of_the_new_response_versions(old_file, current_file, old_fingerprint):
    old = catalog.read_schema_file(old_file)
    new = catalog.read_schema_file(current_file)
    assert catalog.fingerprint(old) == old_fingerprint  # the archived text is the real previous version
    new_fields = [f for f in new["fields"] if f["name"] != "follow_up"]
    assert new_fields == old["fields"] and {k: v for k, v in new.items() if k != "fields"} == \
        {k: v for k, v in old.items() if k != "fields"}
    (follow_up,) = [f for f in new["fields"] if f["name"] == "follow_up"]
    assert follow_up == FOLLOW_UP_FIELD
    names = [f["name"] for f in new["fields"]]
    assert names.index("follow_up") == names.index("comment") + 1
    assert catalog.check_backward_compatible(old, new) == []
    assert catalog.check_backward_compatible(new, old) == []  # and a not yet upgraded reader drops it


def test_classified_response_v3_adds_only_earlier_days_and_org_id_with_defaults():
    v2 = catalog.read_schema_file("history/io.npsflow.ClassifiedResponse/v2.avsc")
    v3 = catalog.read_schema_file("history/io.npsflow.ClassifiedResponse/v3.avsc")
    assert catalog.fingerprint(v2) == "31e93ff02788616d95437f441ddad12b4d7089f6a0655d834ab2f23ed215c147"
    assert catalog.fingerprint(v3) == "e885fe6c9eed057ad853f5d6e4ab0f0e445f96685ad654546ee213ab985135dc"
    added = {f["name"]: f for f in v3["fields"] if f["name"] not in {g["name"] for g in v2["fields"]}}
    assert [f for f in v3["fields"] if f["name"] not in added] == v2["fields"]
    assert set(added) == {"earlier_days", "org_id"}
    assert added["earlier_days"]["type"] == {"type": "array", "items": {"type": "int", "logicalType": "date"}}
    assert added["earlier_days"]["default"] == [] and added["org_id"]["default"] is None
    assert catalog.check_backward_compatible(v2, v3) == [] and catalog.check_backward_compatible(v3, v2) == []
    rec = {**catalog.example_records(v2)[0]}
    out = _roundtrip(v2, v3, rec)  # an old producer's record: the new fields read as their defaults
    assert out["earlier_days"] == [] and out["org_id"] is None


def test_classified_response_v4_adds_lang_terms_and_respondent_with_defaults():
    v3 = catalog.read_schema_file("history/io.npsflow.ClassifiedResponse/v3.avsc")
    v4 = catalog.read_schema_file("classified_response.avsc")
    old = {f["name"]: f for f in v3["fields"]}
    added = {f["name"]: f for f in v4["fields"] if f["name"] not in old}
    assert list(added) == ["lang", "terms", "respondent"]
    assert [{k: v for k, v in f.items() if k != "doc"} for f in v4["fields"] if f["name"] in old] == \
        [{k: v for k, v in f.items() if k != "doc"} for f in v3["fields"]]  # only the docs changed (masking)
    assert (added["lang"]["default"], added["terms"]["default"], added["respondent"]["default"]) == ("", [], "")
    assert added["terms"]["type"] == {"type": "array", "items": "string"}
    assert catalog.check_backward_compatible(v3, v4) == [] and catalog.check_backward_compatible(v4, v3) == []
    out = _roundtrip(v3, v4, {**catalog.example_records(v3)[0]})  # an old producer's record
    assert (out["lang"], out["terms"], out["respondent"]) == ("", [], "")


def test_dispatched_message_history_entry_is_real():
    v1 = catalog.read_schema_file("history/io.npsflow.DispatchedMessage/v1.avsc")
    v2 = catalog.read_schema_file("dispatched_message.avsc")
    assert {f["name"] for f in v2["fields"]} - {f["name"] for f in v1["fields"]} == {"kind", "attempts", "provider_id"}
    assert [f["name"] for f in v2["fields"]][:len(v1["fields"])] == [f["name"] for f in v1["fields"]]
    new = {f["name"]: f for f in v2["fields"]}
    assert (new["kind"]["type"], new["kind"]["default"], new["kind"]["doc"]) == ("string", "invitation",
                                                                                "invitation or reminder")
    assert (new["attempts"]["type"], new["attempts"]["default"]) == (["null", "int"], None)
    assert (new["provider_id"]["type"], new["provider_id"]["default"]) == (["null", "string"], None)
    assert catalog.fingerprint(v1) == "4d19f0bad85644ab8eaa3ec6f15dd4dc600632822829c6700eaa5ea6a1967baa"
    assert catalog.fingerprint(v1) != catalog.fingerprint(v2)


def test_example_records_are_valid_for_current_schemas():
    current = {v.subject: v for v in VERSIONS if v.current}
    for subject, rec in examples().items():
        assert fastavro.validation.validate(rec, parse_schema(copy.deepcopy(current[subject].schema)))


def _roundtrip(writer_schema, reader_schema, rec):
    w = parse_schema(copy.deepcopy(writer_schema))
    r = parse_schema(copy.deepcopy(reader_schema))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, w, rec)
    buf.seek(0)
    out = fastavro.schemaless_reader(buf, w, r)
    assert buf.read() == b""
    return out


def _millis(value):
    """Nested timestamp-millis come back as datetimes; the generated examples wrote epoch millis."""
    if isinstance(value, list):
        return [_millis(v) for v in value]
    if isinstance(value, dict):
        return {k: _millis(v) for k, v in value.items()}
    if hasattr(value, "timestamp"):
        return round(value.timestamp() * 1000)
    return value


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v.subject}-v{v.version}")
def test_backward_compatibility_every_version_read_by_current(version):
    """Data written with ANY catalogued version is readable with the current reader schema."""
    current = next(v for v in VERSIONS if v.current and v.subject == version.subject)
    for rec in catalog.example_records(version.schema):
        out = _roundtrip(version.schema, current.schema, rec)
        new_fields = {f["name"]: f for f in current.schema["fields"]}
        for name, value in rec.items():
            if name in new_fields and not isinstance(value, int):
                assert _millis(out[name]) == value
        for name, f in new_fields.items():
            if name not in rec:
                assert out[name] == f["default"]
    assert catalog.check_backward_compatible(version.schema, current.schema) == []


def test_raw_response_v1_bytes_get_defaults_for_new_fields():
    v1 = catalog.read_schema_file("history/io.npsflow.RawResponse/v1.avsc")
    v2 = catalog.read_schema_file("raw_response.avsc")
    rec = {"response_id": "r-9", "survey_id": "s-1", "score": 8, "comment": None, "responded_at": None,
           "locale": None, "segment": {"location": "paris"}, "source": "web", "received_at": 1_714_564_800_000}
    out = _roundtrip(v1, v2, rec)
    assert out["invitation_id"] is None and out["unknown_json"] is None and out["follow_up"] is None
    assert out["score"] == 8 and out["segment"] == {"location": "paris"} and out["source"] == "web"


def test_raw_response_v2_bytes_read_with_follow_up_none():
    v2 = catalog.read_schema_file("history/io.npsflow.RawResponse/v2.avsc")
    v3 = catalog.read_schema_file("raw_response.avsc")
    rec = {"response_id": "r-9", "survey_id": "s-1", "invitation_id": "inv-9", "score": 3, "comment": "slow",
           "responded_at": "2024-05-01T12:00:00Z", "locale": "sv", "segment": {"location": "Malmö"},
           "unknown_json": '{"extra": 1}', "source": "web", "received_at": 1_714_564_800_000}
    out = _roundtrip(v2, v3, rec)
    assert out.pop("follow_up") is None
    assert out == dict(rec, received_at=out["received_at"]) and out["received_at"].timestamp() == 1_714_564_800
    # a v3 record with an answer, read by v2 code, loses only the answer
    back = _roundtrip(v3, v2, dict(rec, follow_up="faster booking"))
    assert back == dict(rec, received_at=back["received_at"])


def test_classified_response_v1_bytes_read_with_follow_up_none():
    v1 = catalog.read_schema_file("history/io.npsflow.ClassifiedResponse/v1.avsc")
    v2 = catalog.read_schema_file("classified_response.avsc")
    rec = {"response_id": "r-9", "survey_id": "s-1", "invitation_id": None, "score": 10, "category": "promoter",
           "comment": "great", "locale": "fi", "responded_at": 1_714_564_800_000,
           "received_at": 1_714_564_801_000, "processed_at": 1_714_564_802_000, "segment": {"location": "Espoo"},
           "version": 1_714_564_800_000_000_123, "is_edit": False, "previous_score": None, "source": "cli"}
    out = _roundtrip(v1, v2, rec)
    assert out["follow_up"] is None
    assert {k: out[k] for k in ("response_id", "score", "category", "comment", "segment", "version")} == \
        {k: rec[k] for k in ("response_id", "score", "category", "comment", "segment", "version")}
    back = _roundtrip(v2, v1, dict(out, follow_up="the technician"))
    assert "follow_up" not in back and back["comment"] == "great"


def test_dispatched_message_v1_bytes_read_as_invitations():
    v1 = catalog.read_schema_file("history/io.npsflow.DispatchedMessage/v1.avsc")
    v2 = catalog.read_schema_file("dispatched_message.avsc")
    rec = {"dispatch_id": "d-9", "invitation_id": "inv-9", "event_id": "evt-9", "org_id": "acme", "survey_id": None,
           "contact_key": "hmac:9", "channel": "sms", "status": "sent", "reason": None, "scheduled_for": None,
           "decided_at": 1_714_564_800_000, "cost": 0.15, "currency": "EUR", "locale": "sv",
           "segment": {"location": "Malmö"}}
    out = _roundtrip(v1, v2, rec)
    assert (out["kind"], out["attempts"], out["provider_id"]) == ("invitation", None, None)
    assert out["dispatch_id"] == "d-9" and out["status"] == "sent" and out["cost"] == 0.15
    # and the other direction: a v2 reminder read by v1 code (a not yet upgraded consumer) drops the new fields
    reminder = dict(rec, dispatch_id="d-9:reminder", kind="reminder", attempts=2, provider_id="gw-1")
    back = _roundtrip(v2, v1, reminder)
    assert set(back) == set(rec) and back["dispatch_id"] == "d-9:reminder" and back["invitation_id"] == "inv-9"
    assert catalog.check_backward_compatible(v2, v1) == []


def test_compatibility_check_over_all_pairs():
    by_subject = {}
    for v in VERSIONS:
        by_subject.setdefault(v.subject, []).append(v)
    for subject, versions in by_subject.items():
        for i, old in enumerate(versions):
            for new in versions[i:]:
                assert catalog.check_backward_compatible(old.schema, new.schema) == [], (subject, old.version)


def _with_field(schema, field):
    s = copy.deepcopy(schema)
    s["fields"].append(field)
    return s


def test_incompatible_changes_are_detected():
    base = catalog.read_schema_file("classified_response.avsc")
    # required field without default: structural AND empirical failure
    bad = _with_field(base, {"name": "tenant", "type": "string", "doc": "x"})
    problems = catalog.check_backward_compatible(base, bad)
    assert any("'tenant' has no default" in p for p in problems)
    assert any("unreadable" in p for p in problems)
    # same field with a default is fine
    ok = _with_field(base, {"name": "tenant", "type": "string", "default": "", "doc": "x"})
    assert catalog.check_backward_compatible(base, ok) == []
    # type change that Avro cannot promote (long -> int)
    narrowed = copy.deepcopy(base)
    next(f for f in narrowed["fields"] if f["name"] == "version")["type"] = "int"
    assert catalog.check_backward_compatible(base, narrowed)
    # removing an enum symbol the old writer may emit
    fewer = copy.deepcopy(base)
    next(f for f in fewer["fields"] if f["name"] == "category")["type"]["symbols"] = ["detractor", "promoter"]
    assert any("enum" in p or "unreadable" in p for p in catalog.check_backward_compatible(base, fewer))
    # the other direction of the real history (v2 data read by v1 code) is also fine: fields dropped
    v1 = catalog.read_schema_file("history/io.npsflow.RawResponse/v1.avsc")
    assert catalog.check_backward_compatible(catalog.read_schema_file("raw_response.avsc"), v1) == []


def test_example_records_cover_all_union_branches():
    raw = catalog.read_schema_file("raw_response.avsc")
    scores = [r["score"] for r in catalog.example_records(raw)]
    assert None in scores and any(isinstance(s, int) for s in scores) and any(isinstance(s, str) for s in scores)


@pytest.fixture
def schema_tree(tmp_path):
    d = tmp_path / "schemas"
    shutil.copytree(catalog.SCHEMA_DIR, d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return d


def test_check_detects_stale_catalog_and_bump_fixes_it(schema_tree):
    assert catalog.check_catalog(str(schema_tree)) == []
    path = schema_tree / "classified_response.avsc"
    old_text = path.read_text()
    schema = json.loads(old_text)
    schema["fields"].append({"name": "channel", "type": ["null", "string"], "default": None, "doc": "c"})
    path.write_text(json.dumps(schema, indent=2))
    problems = catalog.check_catalog(str(schema_tree))
    assert any("fingerprint mismatch" in p and "ClassifiedResponse" in p for p in problems)

    prev = schema_tree.parent / "prev.avsc"
    prev.write_text(old_text)
    max_id = max(v.id for v in VERSIONS)
    n = len([v for v in VERSIONS if v.subject == "io.npsflow.ClassifiedResponse"])  # current version number
    changes = catalog.bump(str(schema_tree), previous=str(prev))
    assert changes == [f"io.npsflow.ClassifiedResponse: v{n + 1} id={max_id + 1} (classified_response.avsc)"]
    assert catalog.check_catalog(str(schema_tree)) == []
    data = json.loads((schema_tree / "catalog.json").read_text())["subjects"]["io.npsflow.ClassifiedResponse"]
    assert [v["file"] for v in data] == [f"history/io.npsflow.ClassifiedResponse/v{i}.avsc" for i in range(1, n + 1)] \
        + ["classified_response.avsc"]
    assert json.loads((schema_tree / data[-2]["file"]).read_text()) == json.loads(old_text)
    assert catalog.bump(str(schema_tree)) == []  # idempotent


def test_bump_refuses_incompatible_change(schema_tree):
    path = schema_tree / "alert.avsc"
    old_text = path.read_text()
    schema = json.loads(old_text)
    schema["fields"].append({"name": "severity", "type": "int", "doc": "no default"})
    path.write_text(json.dumps(schema))
    prev = schema_tree.parent / "prev.avsc"
    prev.write_text(old_text)
    before = (schema_tree / "catalog.json").read_text()
    with pytest.raises(ValueError, match="not backward compatible"):
        catalog.bump(str(schema_tree), previous=str(prev))
    assert (schema_tree / "catalog.json").read_text() == before
    assert catalog.main(["--check", "--dir", str(schema_tree)]) == 1


def test_cli_check_ok(capsys):
    assert catalog.main(["--check"]) == 0
    assert "catalog OK" in capsys.readouterr().out
