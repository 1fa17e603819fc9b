"""Avro codec in the Confluent wire format.

Wire format: byte 0 = 0 (magic), bytes 1-4 = big-endian schema id, then the
Avro binary encoding of the record (no container header).

* Without a registry, ids come from the pinned ``schemas/catalog.json``: ``encode``
  uses the subject's current version id, ``decode`` accepts the id of ANY
  catalogued version and reads it with the subject's CURRENT schema as reader
  schema (Avro schema resolution), so old data is readable by new code.
* With a registry (``registry_url=`` or env ``NPSFLOW_SCHEMA_REGISTRY_URL``), the
  current schemas are registered lazily on first encode per subject (or eagerly
  via :meth:`AvroCodec.register_all`) under the record full name as subject, the
  returned ids are used, and unknown ids are resolved with
  ``GET /schemas/ids/{id}`` (see ``schemas/registry.py``).

Timestamps (``timestamp-millis``): on the way in, ``datetime`` objects or int epoch
millis are accepted; naive datetimes are taken as UTC (top-level fields; fastavro
itself would take them as local time).  On the way out, fastavro returns
timezone-aware UTC ``datetime`` objects.  Enums are plain strings, maps dicts.

All failures raise :class:`CodecError` with a machine-readable ``reason``.

Records of plain schemas are encoded and decoded by a writer / reader prepared once per schema
(``schemas/compiled.py``: fastavro's bytes and fastavro's dicts, in less time); fastavro handles every other
record, every record written with an older schema version, and every unusual input (and raises on bad ones).
"""
from __future__ import annotations

import json
import os
import struct
from datetime import datetime, timezone
from io import BytesIO
from typing import Callable

import fastavro
from fastavro.schema import parse_schema
from fastavro.validation import validate as _validate

from . import catalog as _catalog
from .compiled import record_reader, record_writer
from .registry import ENV_REGISTRY_URL, RegistryError, SchemaRegistryClient

TRIGGER_EVENT = "io.npsflow.TriggerEvent"
DISPATCHED_MESSAGE = "io.npsflow.DispatchedMessage"
RAW_RESPONSE = "io.npsflow.RawResponse"
CLASSIFIED_RESPONSE = "io.npsflow.ClassifiedResponse"
WINDOW_UPDATE = "io.npsflow.WindowUpdate"
ALERT = "io.npsflow.Alert"
DEAD_LETTER = "io.npsflow.DeadLetter"
CASE = "io.npsflow.Case"
SUBJECTS = (TRIGGER_EVENT, DISPATCHED_MESSAGE, RAW_RESPONSE, CLASSIFIED_RESPONSE,
            WINDOW_UPDATE, ALERT, DEAD_LETTER, CASE)

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
_UTC = timezone.utc

# CodecError reasons
NOT_AVRO_WIRE_FORMAT = "not_avro_wire_format"
UNKNOWN_SCHEMA_ID = "unknown_schema_id"
AVRO_DECODE_ERROR = "avro_decode_error"
AVRO_ENCODE_ERROR = "avro_encode_error"
UNEXPECTED_SCHEMA = "unexpected_schema"
UNKNOWN_SUBJECT = "unknown_subject"
SCHEMA_REGISTRY_ERROR = "schema_registry_error"


class CodecError(Exception):
    """Encoding/decoding failure. ``reason``: machine-readable code; ``detail``: one line."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Writer:
    __slots__ = ("subject", "schema_id", "header", "parsed", "ts_fields", "fast")

    def __init__(self, subject, schema_id, parsed, ts_fields, fast=None):
        self.subject = subject
        self.schema_id = schema_id
        self.header = _HEADER.pack(MAGIC_BYTE, schema_id)
        self.parsed = parsed
        self.ts_fields = ts_fields
        self.fast = fast          # schemas.compiled.record_writer of the schema, or None


class _Reader:
    __slots__ = ("subject", "writer", "reader", "fast")

    def __init__(self, subject, writer, reader, fast=None):
        self.subject = subject    # record full name of the writer schema (None if not a record)
        self.writer = writer      # parsed writer schema
        self.reader = reader      # parsed current reader schema, or None when identical to writer
        self.fast = fast          # schemas.compiled.record_reader of the writer (= current) schema, or None


def _parse(schema: dict):
    return parse_schema(json.loads(json.dumps(schema)))


def _ts_fields(schema: dict) -> tuple[str, ...]:
    out = []
    for f in schema.get("fields", ()):
        types = f["type"] if isinstance(f["type"], list) else [f["type"]]
        if any(isinstance(t, dict) and t.get("logicalType") in ("timestamp-millis", "timestamp-micros")
               for t in types):
            out.append(f["name"])
    return tuple(out)


class AvroCodec:
    """Confluent-wire-format Avro encoder/decoder over the npsflow schema catalog.

    ``AvroCodec()`` uses the pinned catalog, or a registry when
    ``NPSFLOW_SCHEMA_REGISTRY_URL`` is set; ``AvroCodec(registry_url="")`` forces
    catalog mode.  ``subject_name_strategy`` maps a record full name to the
    registry subject (default: identity, i.e. RecordNameStrategy).

    fastavro's binary writer is lenient for non-union fields (7.5 written to an
    ``int`` field becomes 7, ``True`` becomes 1); ``validate=True`` runs fastavro's
    validator first and rejects such records (about 3-6x slower encode).
    Union fields (e.g. ``RawResponse.score``) are always type-checked.
    """

    def __init__(self, registry_url: str | None = None, *, timeout: float = 5.0,
                 subject_name_strategy: Callable[[str], str] | None = None,
                 registry: SchemaRegistryClient | None = None, validate: bool = False):
        self.validate = validate
        if registry_url is None:
            registry_url = os.environ.get(ENV_REGISTRY_URL, "")
        if registry is None and registry_url:
            try:
                registry = SchemaRegistryClient(registry_url, timeout=timeout)
            except RegistryError as exc:
                raise CodecError(SCHEMA_REGISTRY_ERROR, str(exc)) from exc
        self.registry = registry
        self._strategy = subject_name_strategy or (lambda name: name)
        versions = _catalog.load_versions()
        self._current = {v.subject: v for v in versions if v.current}
        self._by_catalog_id = {v.id: v for v in versions}
        self._names = {}
        for s in self._current:
            self._names[s] = s
            self._names[s.rsplit(".", 1)[-1]] = s
        self._reader_schemas: dict[str, object] = {}      # subject -> parsed current schema
        self._writers: dict[str, _Writer] = {}              # subject or alias -> writer
        self._readers: dict[int, _Reader] = {}              # schema id -> reader

    # ------------------------------------------------------------------ lookups
    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self._current)

    def _subject(self, name: str) -> str:
        try:
            return self._names[name]
        except (KeyError, TypeError):
            raise CodecError(UNKNOWN_SUBJECT, f"no schema for subject/record {name!r}") from None

    def _reader_schema(self, subject: str):
        parsed = self._reader_schemas.get(subject)
        if parsed is None:
            parsed = self._reader_schemas[subject] = _parse(self._current[subject].schema)
        return parsed

    def _writer(self, name: str) -> _Writer:
        w = self._writers.get(name)
        if w is not None:
            return w
        subject = self._subject(name)
        cur = self._current[subject]
        if self.registry is not None:
            try:
                sid = self.registry.register(self._strategy(subject), cur.schema_str)
            except RegistryError as exc:
                raise CodecError(SCHEMA_REGISTRY_ERROR, str(exc)) from exc
        else:
            sid = cur.id
        parsed = self._reader_schema(subject)
        w = _Writer(subject, sid, parsed, _ts_fields(cur.schema), record_writer(cur.schema))
        self._readers.setdefault(sid, self._current_reader(subject))
        self._writers[name] = self._writers[subject] = w
        return w

    def _current_reader(self, subject: str) -> _Reader:
        """The reader of data written with the subject's current schema (no resolution needed)."""
        return _Reader(subject, self._reader_schema(subject), None, record_reader(self._current[subject].schema))

    def schema_id(self, subject: str) -> int:
        """Id written by :meth:`encode` for *subject* (registers it in registry mode)."""
        return self._writer(subject).schema_id

    def register_all(self) -> dict[str, int]:
        """Resolve (and in registry mode register) every current schema; {subject: id}."""
        return {s: self._writer(s).schema_id for s in self._current}

    def _resolve_reader(self, sid: int) -> _Reader:
        if self.registry is not None:
            try:
                text = self.registry.get_schema(sid)
            except RegistryError as exc:
                if exc.not_found:
                    raise CodecError(UNKNOWN_SCHEMA_ID, f"schema id {sid} not found in registry") from exc
                raise CodecError(SCHEMA_REGISTRY_ERROR, str(exc)) from exc
            try:
                writer_json = json.loads(text)
                writer = _parse(writer_json)
            except Exception as exc:  # noqa: BLE001
                raise CodecError(UNKNOWN_SCHEMA_ID, f"schema id {sid}: unparseable schema: {exc}") from exc
            subject = _catalog.full_name(writer_json) if isinstance(writer_json, dict) and "name" in writer_json else None
            fp = _catalog.fingerprint(writer_json) if subject else None
        else:
            v = self._by_catalog_id.get(sid)
            if v is None:
                raise CodecError(UNKNOWN_SCHEMA_ID, f"schema id {sid} is not in the catalog")
            subject, fp, writer = v.subject, v.fingerprint, None
        cur = self._current.get(subject)
        if cur is not None and fp == cur.fingerprint:
            r = self._current_reader(subject)
        else:
            if writer is None:
                writer = _parse(self._by_catalog_id[sid].schema)
            r = _Reader(subject, writer, self._reader_schema(subject) if cur is not None else None)
        self._readers[sid] = r
        return r

    # ------------------------------------------------------------------ encode / decode
    def encode(self, subject: str, record: dict) -> bytes:
        """Encode *record* with the current schema of *subject* (full or short record name)."""
        w = self._writers.get(subject) or self._writer(subject)
        if w.fast is not None and not self.validate:
            body = w.fast(record)  # None: a record outside its exact-type path, encoded by fastavro below
            if body is not None:
                return w.header + body
        rec = record
        try:
            for f in w.ts_fields:
                v = rec.get(f)
                if v.__class__ is datetime and v.tzinfo is None:
                    if rec is record:
                        rec = dict(record)
                    rec[f] = v.replace(tzinfo=_UTC)
            if self.validate:
                _validate(rec, w.parsed, raise_errors=True)
            buf = BytesIO()
            buf.write(w.header)
            fastavro.schemaless_writer(buf, w.parsed, rec)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types
            raise CodecError(AVRO_ENCODE_ERROR, f"{w.subject}: {self._encode_detail(w, rec, exc)}") from exc
        return buf.getvalue()

    @staticmethod
    def _encode_detail(w: _Writer, rec, exc: Exception) -> str:
        if not isinstance(rec, dict):
            return f"record must be a dict, got {type(rec).__name__}"
        try:
            _validate(rec, w.parsed, raise_errors=True)
        except Exception as vexc:  # noqa: BLE001
            return " ".join(str(vexc).split())[:500]
        return f"{type(exc).__name__}: {exc}"[:500]

    def decode(self, data: bytes, expected: str | None = None) -> dict:
        """Decode Confluent-framed Avro bytes; *expected* (subject or short name) is enforced."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 5:
            raise CodecError(NOT_AVRO_WIRE_FORMAT,
                             f"need >= 5 bytes, got {type(data).__name__} of length "
                             f"{len(data) if hasattr(data, '__len__') else 'n/a'}")
        magic, sid = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise CodecError(NOT_AVRO_WIRE_FORMAT, f"bad magic byte {data[0]:#04x} (expected 0x00)")
        r = self._readers.get(sid) or self._resolve_reader(sid)
        if expected is not None and r.subject != expected and r.subject != self._names.get(expected):
            raise CodecError(UNEXPECTED_SCHEMA, f"expected {expected}, got {r.subject} (schema id {sid})")
        if r.fast is not None:
            rec = r.fast(data, 5)  # None: anything unusual, read (or refused) by fastavro below
            if rec is not None:
                return rec
        fo = BytesIO(data)
        fo.seek(5)
        try:
            rec = fastavro.schemaless_reader(fo, r.writer, r.reader)
        except Exception as exc:  # noqa: BLE001
            raise CodecError(AVRO_DECODE_ERROR,
                             f"{r.subject} (schema id {sid}): {type(exc).__name__}: {exc}"[:500]) from exc
        if fo.tell() != len(data):
            raise CodecError(AVRO_DECODE_ERROR,
                             f"{r.subject} (schema id {sid}): {len(data) - fo.tell()} trailing bytes")
        return rec

    def subject_of(self, data: bytes) -> str | None:
        """Subject (record full name) of framed bytes without decoding the body."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 5 or data[0] != MAGIC_BYTE:
            raise CodecError(NOT_AVRO_WIRE_FORMAT, "not Confluent Avro wire format")
        sid = _HEADER.unpack_from(data)[1]
        return (self._readers.get(sid) or self._resolve_reader(sid)).subject
