"""AvroCodec: Confluent wire format, errors, schema evolution, registry mode."""
import copy
import io
import json
import struct
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fastavro
import pytest
from fastavro.schema import parse_schema

from schemas import catalog, codec
from schemas.codec import AvroCodec, CodecError
from schemas.examples import examples

UTC = timezone.utc


@pytest.fixture
def c(monkeypatch):
    monkeypatch.delenv("NPSFLOW_SCHEMA_REGISTRY_URL", raising=False)
    return AvroCodec()


@pytest.mark.parametrize("subject", codec.SUBJECTS)
def test_round_trip_per_schema(c, subject):
    rec = examples()[subject]
    data = c.encode(subject, rec)
    assert c.decode(data) == rec
    assert c.decode(data, expected=subject) == rec
    assert c.decode(data, expected=subject.rsplit(".", 1)[1]) == rec  # short record name accepted
    assert c.subject_of(data) == subject


def test_wire_format_header(c):
    data = c.encode(codec.RAW_RESPONSE, examples()[codec.RAW_RESPONSE])
    sid = c.schema_id(codec.RAW_RESPONSE)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == sid
    cat = catalog.load_catalog_json()["subjects"][codec.RAW_RESPONSE]
    assert sid == cat[-1]["id"] == 11 and cat[0]["id"] != sid
    # body is plain Avro binary of the current schema
    body = fastavro.schemaless_reader(io.BytesIO(data[5:]), parse_schema(catalog.read_schema_file("raw_response.avsc")))
    assert body["response_id"] == "r-1"
    ids = {c.schema_id(s) for s in codec.SUBJECTS}
    assert len(ids) == len(codec.SUBJECTS)


def test_timestamps_in_and_out(c):
    rec = examples()[codec.DEAD_LETTER]
    rec["failed_at"] = 1_714_564_800_123                     # int millis accepted
    out = c.decode(c.encode(codec.DEAD_LETTER, rec))
    assert out["failed_at"] == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert out["failed_at"].tzinfo is not None
    naive = dict(rec, failed_at=datetime(2024, 5, 1, 12, 0, 0))  # naive = UTC
    assert c.decode(c.encode(codec.DEAD_LETTER, naive))["failed_at"] == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert naive["failed_at"].tzinfo is None                 # caller's dict not mutated
    micro = dict(rec, failed_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC))
    assert c.decode(c.encode(codec.DEAD_LETTER, micro))["failed_at"].microsecond == 123000  # millis precision


def test_raw_response_score_variants(c):
    for score in (None, 7, "7", "7.5", "[1]"):
        rec = dict(examples()[codec.RAW_RESPONSE], score=score)
        assert c.decode(c.encode(codec.RAW_RESPONSE, rec))["score"] == score
    with pytest.raises(CodecError) as ei:
        c.encode(codec.RAW_RESPONSE, dict(examples()[codec.RAW_RESPONSE], score=7.5))
    assert ei.value.reason == "avro_encode_error"


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00", None, "text", b"\x01\x00\x00\x00\x08abc", b"{\"json\": 1}"])
def test_not_wire_format(c, data):
    with pytest.raises(CodecError) as ei:
        c.decode(data)
    assert ei.value.reason == "not_avro_wire_format"


def test_unknown_schema_id(c):
    with pytest.raises(CodecError) as ei:
        c.decode(b"\x00" + struct.pack(">I", 999_999) + b"\x02")
    assert ei.value.reason == "unknown_schema_id"
    assert "999999" in ei.value.detail


def test_avro_decode_errors(c):
    data = c.encode(codec.CLASSIFIED_RESPONSE, examples()[codec.CLASSIFIED_RESPONSE])
    for bad in (data[:-3], data[:8], data + b"\x00\x01"):   # truncated, very truncated, trailing bytes
        with pytest.raises(CodecError) as ei:
            c.decode(bad)
        assert ei.value.reason == "avro_decode_error", bad
    # enum index out of range
    w = c.encode(codec.ALERT, examples()[codec.ALERT])
    idx = 5 + 1 + len(examples()[codec.ALERT]["alert_id"])  # after header + alert_id (1-byte length, ASCII)
    with pytest.raises(CodecError) as ei:
        c.decode(w[:idx] + b"\x7e" + w[idx + 1:])
    assert ei.value.reason == "avro_decode_error"


def test_unexpected_schema(c):
    data = c.encode(codec.ALERT, examples()[codec.ALERT])
    with pytest.raises(CodecError) as ei:
        c.decode(data, expected=codec.RAW_RESPONSE)
    assert ei.value.reason == "unexpected_schema"
    assert codec.ALERT in ei.value.detail


@pytest.mark.parametrize("mutate", [
    lambda r: r.pop("survey_id"),
    lambda r: r.update(score="7"),
    lambda r: r.update(category="meh"),
    lambda r: r.update(version=2 ** 70),
    lambda r: r.update(segment={"a": 1}),
    lambda r: r.update(responded_at="yesterday"),
])
def test_encode_errors(c, mutate):
    rec = examples()[codec.CLASSIFIED_RESPONSE]
    mutate(rec)
    with pytest.raises(CodecError) as ei:
        c.encode(codec.CLASSIFIED_RESPONSE, rec)
    assert ei.value.reason == "avro_encode_error"
    assert ei.value.detail and "\n" not in ei.value.detail


def test_encode_non_dict_and_unknown_subject(c):
    with pytest.raises(CodecError) as ei:
        c.encode(codec.ALERT, ["not", "a", "dict"])
    assert ei.value.reason == "avro_encode_error"
    with pytest.raises(CodecError) as ei:
        c.encode("io.npsflow.Nope", {})
    assert ei.value.reason == "unknown_subject"


def test_validate_mode_rejects_lossy_coercions(monkeypatch):
    monkeypatch.delenv("NPSFLOW_SCHEMA_REGISTRY_URL", raising=False)
    rec = dict(examples()[codec.CLASSIFIED_RESPONSE], score=7.5)
    assert AvroCodec().decode(AvroCodec().encode(codec.CLASSIFIED_RESPONSE, rec))["score"] == 7  # lenient default
    with pytest.raises(CodecError) as ei:
        AvroCodec(validate=True).encode(codec.CLASSIFIED_RESPONSE, rec)
    assert ei.value.reason == "avro_encode_error" and "score" in ei.value.detail


def _old_raw_response_bytes():
    v1 = next(v for v in catalog.load_versions() if v.subject == codec.RAW_RESPONSE and v.version == 1)
    rec = {"response_id": "r-old", "survey_id": "s-1", "score": "7.5", "comment": "meh",
           "responded_at": "2024-05-01T10:00:00+02:00", "locale": None, "segment": {"location": "lyon"},
           "source": "web", "received_at": datetime(2024, 5, 1, 8, 0, 1, tzinfo=UTC)}
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", v1.id))
    fastavro.schemaless_writer(buf, parse_schema(copy.deepcopy(v1.schema)), rec)
    return v1.id, rec, buf.getvalue()


def test_old_version_bytes_decoded_with_current_reader(c):
    old_id, rec, data = _old_raw_response_bytes()
    assert old_id != c.schema_id(codec.RAW_RESPONSE)
    out = c.decode(data, expected=codec.RAW_RESPONSE)
    assert out == dict(rec, invitation_id=None, unknown_json=None, follow_up=None)
    assert set(out) == {f["name"] for f in catalog.read_schema_file("raw_response.avsc")["fields"]}


def _old_bytes(subject, version, rec):
    """Confluent-wire bytes of rec written with a catalogued older version of subject."""
    old = next(v for v in catalog.load_versions() if v.subject == subject and v.version == version)
    assert not old.current
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", old.id))
    fastavro.schemaless_writer(buf, parse_schema(copy.deepcopy(old.schema)), rec)
    return old.id, buf.getvalue()


def test_raw_response_v2_bytes_decode_with_follow_up_none(c):
    rec = {"response_id": "r-v2", "survey_id": "s-1", "invitation_id": "inv-2", "score": 4, "comment": "late",
           "responded_at": "2024-05-01T10:00:00Z", "locale": "da", "segment": {"location": "Aarhus"},
           "unknown_json": None, "source": "cli", "received_at": datetime(2024, 5, 1, 10, 0, 1, tzinfo=UTC)}
    old_id, data = _old_bytes(codec.RAW_RESPONSE, 2, rec)
    assert (old_id, c.schema_id(codec.RAW_RESPONSE)) == (8, 11)
    assert c.decode(data, expected=codec.RAW_RESPONSE) == dict(rec, follow_up=None)


def test_classified_response_v1_bytes_decode_with_follow_up_none(c):
    rec = {k: v for k, v in examples()[codec.CLASSIFIED_RESPONSE].items()
           if k not in ("follow_up", "earlier_days", "org_id", "lang", "terms", "respondent")}
    old_id, data = _old_bytes(codec.CLASSIFIED_RESPONSE, 1, rec)
    assert (old_id, c.schema_id(codec.CLASSIFIED_RESPONSE)) == (4, 13)
    out = c.decode(data, expected=codec.CLASSIFIED_RESPONSE)
    assert out == dict(rec, follow_up=None, earlier_days=[], org_id=None, lang="", terms=[], respondent="")
    assert set(out) == {f["name"] for f in catalog.read_schema_file("classified_response.avsc")["fields"]}


@pytest.mark.parametrize("subject", [codec.RAW_RESPONSE, codec.CLASSIFIED_RESPONSE])
def test_follow_up_round_trips_and_defaults_to_none(c, subject):
    rec = examples()[subject]
    assert rec["follow_up"] == "The friendly technician"
    assert c.decode(c.encode(subject, rec))["follow_up"] == "The friendly technician"
    without = {k: v for k, v in rec.items() if k != "follow_up"}  # a producer that does not know the field
    assert c.decode(c.encode(subject, without)) == dict(without, follow_up=None)


def _old_dispatched_message_bytes():
    v1 = next(v for v in catalog.load_versions() if v.subject == codec.DISPATCHED_MESSAGE and v.version == 1)
    rec = {"dispatch_id": "d-old", "invitation_id": "inv-old", "event_id": "evt-old", "org_id": "acme",
           "survey_id": "s-1", "contact_key": "hmac:old", "channel": "email", "status": "failed",
           "reason": "smtp_rejected_recipient", "scheduled_for": None,
           "decided_at": datetime(2024, 5, 1, 8, 0, 1, tzinfo=UTC), "cost": None, "currency": None,
           "locale": "fi-FI", "segment": {"location": "Espoo"}}
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", v1.id))
    fastavro.schemaless_writer(buf, parse_schema(copy.deepcopy(v1.schema)), rec)
    return v1.id, rec, buf.getvalue()


def test_old_dispatched_message_decodes_as_an_invitation(c):
    old_id, rec, data = _old_dispatched_message_bytes()
    assert old_id == 2 and c.schema_id(codec.DISPATCHED_MESSAGE) == 9
    out = c.decode(data, expected=codec.DISPATCHED_MESSAGE)
    assert out == dict(rec, kind="invitation", attempts=None, provider_id=None)
    assert set(out) == {f["name"] for f in catalog.read_schema_file("dispatched_message.avsc")["fields"]}
    # a current producer that does not set the new fields writes their defaults
    legacy_shaped = {k: v for k, v in examples()[codec.DISPATCHED_MESSAGE].items()
                     if k not in ("kind", "attempts", "provider_id")}
    assert c.decode(c.encode(codec.DISPATCHED_MESSAGE, legacy_shaped)) == \
        dict(legacy_shaped, kind="invitation", attempts=None, provider_id=None)


# --------------------------------------------------------------------------- registry stand-in

class _Registry:
    """Tiny in-process implementation of the two Confluent endpoints the codec uses."""

    def __init__(self, first_id=100):
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.next_id = first_id
        self.requests: list[tuple[str, str]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self):
                registry.requests.append(("POST", self.path))
                parts = self.path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
                    return self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    canon = json.dumps(json.loads(body["schema"]), sort_keys=True)
                except (KeyError, ValueError):
                    return self._send(422, {"error_code": 42201, "message": "Invalid schema"})
                sid = next((i for i, s in registry.schemas.items() if s == canon), None)
                if sid is None:
                    sid = registry.next_id
                    registry.next_id += 1
                    registry.schemas[sid] = canon
                registry.subjects.setdefault(parts[1], []).append(sid)
                self._send(200, {"id": sid})

            def do_GET(self):
                registry.requests.append(("GET", self.path))
                parts = self.path.strip("/").split("/")
                if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and int(parts[2]) in registry.schemas:
                    return self._send(200, {"schema": registry.schemas[int(parts[2])]})
                self._send(404, {"error_code": 40403, "message": "Schema not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, schema: dict) -> int:
        sid = self.next_id
        self.next_id += 1
        self.schemas[sid] = json.dumps(schema, sort_keys=True)
        return sid


@pytest.fixture
def registry():
    reg = _Registry()
    reg.thread.start()
    yield reg
    reg.server.shutdown()
    reg.server.server_close()


def test_registry_mode_registers_and_uses_returned_ids(registry, monkeypatch):
    monkeypatch.setenv("NPSFLOW_SCHEMA_REGISTRY_URL", registry.url)
    c = AvroCodec()
    assert c.registry is not None
    rec = examples()[codec.CLASSIFIED_RESPONSE]
    data = c.encode(codec.CLASSIFIED_RESPONSE, rec)
    sid = struct.unpack(">I", data[1:5])[0]
    assert sid >= 100 and registry.subjects == {codec.CLASSIFIED_RESPONSE: [sid]}
    assert c.decode(data, expected=codec.CLASSIFIED_RESPONSE) == rec
    c.encode(codec.CLASSIFIED_RESPONSE, rec)
    assert registry.requests == [("POST", f"/subjects/{codec.CLASSIFIED_RESPONSE}/versions")]  # cached
    ids = c.register_all()
    assert set(ids) == set(codec.SUBJECTS) and len(set(ids.values())) == len(codec.SUBJECTS)

    # a second process (fresh codec) resolves the id through GET /schemas/ids/{id}
    other = AvroCodec(registry_url=registry.url)
    assert other.decode(data, expected=codec.CLASSIFIED_RESPONSE) == rec
    assert other.decode(data) == rec
    assert registry.requests.count(("GET", f"/schemas/ids/{sid}")) == 1  # cached after first lookup


def test_registry_mode_old_writer_schema_read_with_current(registry):
    v1 = next(v for v in catalog.load_versions() if v.subject == codec.RAW_RESPONSE and v.version == 1)
    old_id = registry.add(v1.schema)
    _, rec, data = _old_raw_response_bytes()
    data = data[:1] + struct.pack(">I", old_id) + data[5:]
    c = AvroCodec(registry_url=registry.url)
    assert c.decode(data, expected=codec.RAW_RESPONSE) == dict(rec, invitation_id=None, unknown_json=None,
                                                               follow_up=None)


def test_registry_mode_old_dispatched_message_read_with_current(registry):
    v1 = next(v for v in catalog.load_versions() if v.subject == codec.DISPATCHED_MESSAGE and v.version == 1)
    old_id = registry.add(v1.schema)
    _, rec, data = _old_dispatched_message_bytes()
    data = data[:1] + struct.pack(">I", old_id) + data[5:]
    c = AvroCodec(registry_url=registry.url)
    assert c.decode(data, expected=codec.DISPATCHED_MESSAGE) == dict(rec, kind="invitation", attempts=None,
                                                                     provider_id=None)


def test_registry_mode_errors(registry):
    c = AvroCodec(registry_url=registry.url)
    with pytest.raises(CodecError) as ei:
        c.decode(b"\x00" + struct.pack(">I", 4242) + b"\x00")
    assert ei.value.reason == "unknown_schema_id"
    # catalog ids are NOT trusted in registry mode
    with pytest.raises(CodecError) as ei:
        c.decode(AvroCodec(registry_url="").encode(codec.ALERT, examples()[codec.ALERT]))
    assert ei.value.reason == "unknown_schema_id"

    down = AvroCodec(registry_url="http://127.0.0.1:9", timeout=0.5)   # nothing listens on port 9
    with pytest.raises(CodecError) as ei:
        down.encode(codec.ALERT, examples()[codec.ALERT])
    assert ei.value.reason == "schema_registry_error" and "127.0.0.1:9" in ei.value.detail
    with pytest.raises(CodecError) as ei:
        AvroCodec(registry_url="localhost:8081")
    assert ei.value.reason == "schema_registry_error"
