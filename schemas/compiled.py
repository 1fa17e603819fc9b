"""A writer and a reader for the common case of one record schema, in plain Python: the quicker path of
``AvroCodec.encode`` / ``decode``.

fastavro's generic code walks the schema for every record (unions resolved by trying branches, logical types
looked up by name): ~11 µs to write a ClassifiedResponse, ~10 µs to read a RawResponse. ``record_writer`` and
``record_reader`` prepare, once per schema, one small function per field for schemas made only of strings,
ints, longs, booleans, enums, unions of null and those, maps and arrays of them, and ``timestamp-millis`` /
``date`` (the reader: the RawResponse's types); they return None for any other schema.

The writer encodes a record whose values have exactly the Python types validate and classify produce (str, int
in range, bool, aware datetime, date, dict, list) and returns None for anything else — a missing field, a
subclass, a naive datetime, a string that is not UTF-8-encodable. The reader returns None for any unusual
input. Either way the caller then lets fastavro do it, and raise what fastavro raises. Their bytes and dicts are
fastavro's (tests/test_compiled_avro.py compares them on generated and damaged records).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Callable

Writer = Callable[[object, bytearray], None]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
INT_RANGE = (-(1 << 31), (1 << 31) - 1)
LONG_RANGE = (-(1 << 63), (1 << 63) - 1)


class _Other(Exception):
    """A value outside the fast path (fastavro decides what to do with the record)."""


def record_writer(schema: dict) -> Callable[[dict], bytes | None] | None:
    """The fast writer of a record schema (the JSON form), or None when it uses a type not handled here."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    try:
        fields = [(f["name"], _writer(f["type"])) for f in schema["fields"]]
    except _Other:
        return None

    def write(record: dict) -> bytes | None:
        if type(record) is not dict:
            return None
        out = bytearray()
        try:
            for name, write_field in fields:
                write_field(record[name], out)
        except Exception:  # noqa: BLE001 - KeyError, _Other, UnicodeEncodeError: fastavro's turn
            return None
        return bytes(out)

    return write


def _writer(schema) -> Writer:
    if isinstance(schema, list):
        return _union(schema)
    if isinstance(schema, str):
        return _primitive(schema, None)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "enum":
            return _enum(schema["symbols"])
        if kind == "map":
            return _map(_writer(schema["values"]))
        if kind == "array":
            return _array(_writer(schema["items"]))
        if isinstance(kind, str):
            return _primitive(kind, schema.get("logicalType"))
    raise _Other(schema)


def write_long(n: int, out: bytearray) -> None:
    """Avro's zig-zag varint of a 64-bit integer."""
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _integer(low: int, high: int) -> Writer:
    def write(value, out: bytearray) -> None:
        if type(value) is not int or not low <= value <= high:
            raise _Other
        write_long(value, out)
    return write


def _string(value, out: bytearray) -> None:
    if type(value) is not str:
        raise _Other
    data = value.encode()
    size = len(data)
    if size < 64:  # the zig-zag varint of a length below 64 is one byte
        out.append(size << 1)
    else:
        write_long(size, out)
    out += data


def _optional_string(value, out: bytearray) -> None:
    """["null", "string"], the most common field: one call instead of two."""
    if value is None:
        out.append(0)
    else:
        out.append(2)
        _string(value, out)


def _boolean(value, out: bytearray) -> None:
    if type(value) is not bool:
        raise _Other
    out.append(value)


def _timestamp_millis(value, out: bytearray) -> None:
    """fastavro's prepare_timestamp_millis for an aware datetime; an int is written as it is (as fastavro)."""
    if type(value) is datetime and value.tzinfo is not None:
        delta = value - EPOCH
        write_long((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000, out)
    else:
        _LONG(value, out)


def _date(value, out: bytearray) -> None:
    """fastavro's prepare_date for a date (not a datetime); an int is written as it is."""
    if type(value) is date:
        value = value.toordinal() - EPOCH_ORDINAL
    _INT(value, out)


_INT = _integer(*INT_RANGE)
_LONG = _integer(*LONG_RANGE)
_PRIMITIVES = {("string", None): _string, ("int", None): _INT, ("long", None): _LONG, ("boolean", None): _boolean,
               ("long", "timestamp-millis"): _timestamp_millis, ("int", "date"): _date}


def _primitive(kind: str, logical: str | None) -> Writer:
    try:
        return _PRIMITIVES[(kind, logical)]
    except KeyError:
        raise _Other(kind, logical) from None


def _enum(symbols: list[str]) -> Writer:
    index = {symbol: i for i, symbol in enumerate(symbols)}

    def write(value, out: bytearray) -> None:
        if type(value) is not str or value not in index:
            raise _Other
        write_long(index[value], out)
    return write


def _union(branches: list) -> Writer:
    """Only ``null`` + one other type (in either order), the optional fields of the npsflow schemas."""
    if len(branches) != 2 or "null" not in branches:
        raise _Other(branches)
    if branches == ["null", "string"]:
        return _optional_string
    null = branches.index("null")
    write_other = _writer(branches[1 - null])
    null_tag, other_tag = null << 1, (1 - null) << 1  # the branch index, zig-zag encoded

    def write(value, out: bytearray) -> None:
        if value is None:
            out.append(null_tag)
        else:
            out.append(other_tag)
            write_other(value, out)
    return write


def _map(write_value: Writer) -> Writer:
    def write(value, out: bytearray) -> None:
        if type(value) is not dict:
            raise _Other
        if value:
            write_long(len(value), out)
            for key, item in value.items():
                _string(key, out)
                write_value(item, out)
        out.append(0)
    return write


def _array(write_item: Writer) -> Writer:
    def write(value, out: bytearray) -> None:
        if type(value) is not list:
            raise _Other
        if value:
            write_long(len(value), out)
            for item in value:
                write_item(item, out)
        out.append(0)
    return write


# ------------------------------------------------------------------------------------------- reading
Reader = Callable[[bytes, int], tuple]  # (data, position) → (value, next position)
LONGEST_VARINT = 9  # bytes of a varint read here: 63 bits; a longer one is fastavro's (it wraps at 64 bits)


def record_reader(schema: dict) -> Callable[[bytes, int], dict | None] | None:
    """The fast reader of a record schema (the JSON form), or None when it uses a type not handled here.

    ``read(data, start)`` decodes the record written from ``start`` to the very end of ``data`` into what
    fastavro's schemaless_reader returns for it (the same dict, field order included), or returns None when
    anything is unusual — bad UTF-8, a union index out of range, a map written in sized blocks, a varint over 9
    bytes, bytes missing or left over — so that the caller lets fastavro read it (and raise what it raises).
    """
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    try:
        fields = [(f["name"], _reader(f["type"])) for f in schema["fields"]]
    except _Other:
        return None

    def read(data: bytes, start: int) -> dict | None:
        record, pos = {}, start
        try:
            for name, read_field in fields:
                record[name], pos = read_field(data, pos)
        except Exception:  # noqa: BLE001 - IndexError, _Other, UnicodeDecodeError: fastavro's turn
            return None
        return record if pos == len(data) else None

    return read


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """Avro's zig-zag varint at ``pos`` → (value, next position)."""
    byte = data[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    n, shift, end = byte & 0x7F, 7, pos + LONGEST_VARINT
    pos += 1
    while True:
        if pos >= end:
            raise _Other
        byte = data[pos]
        n |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    size = data[pos]
    if size < 0x80 and not size & 1:  # a length below 64: one byte, even (odd would be negative)
        pos += 1
        end = pos + (size >> 1)
    else:
        size, pos = read_long(data, pos)
        end = pos + size
        if size < 0:
            raise _Other
    if end > len(data):
        raise _Other
    return data[pos:end].decode(), end


def _read_optional_string(data: bytes, pos: int) -> tuple[str | None, int]:
    """["null", "string"], the most common field: one call."""
    tag = data[pos]
    if tag == 0:
        return None, pos + 1
    if tag != 2:
        raise _Other
    size = data[pos + 1]
    if size < 0x80 and not size & 1:  # as _read_string
        pos += 2
        end = pos + (size >> 1)
        if end > len(data):
            raise _Other
        return data[pos:end].decode(), end
    return _read_string(data, pos + 1)


def _read_timestamp_millis(data: bytes, pos: int) -> tuple[datetime, int]:
    """fastavro's read_timestamp_millis: the epoch (UTC) + the milliseconds, an aware datetime."""
    ms, pos = read_long(data, pos)
    return EPOCH + timedelta(microseconds=ms * 1000), pos


def _read_null(data: bytes, pos: int) -> tuple[None, int]:
    return None, pos


_READERS = {("string", None): _read_string, ("long", None): read_long, ("null", None): _read_null,
            ("long", "timestamp-millis"): _read_timestamp_millis}


def _reader(schema) -> Reader:
    if isinstance(schema, list):
        return _read_union(schema)
    if isinstance(schema, dict) and schema.get("type") == "map":
        return _read_map(_reader(schema["values"]))
    kind, logical = (schema, None) if isinstance(schema, str) else (schema.get("type"), schema.get("logicalType"))
    try:
        return _READERS[(kind, logical)]
    except (KeyError, TypeError):
        raise _Other(schema) from None


def _read_union(branches: list) -> Reader:
    if branches == ["null", "string"]:
        return _read_optional_string
    readers = [_reader(branch) for branch in branches]

    def read(data: bytes, pos: int) -> tuple:
        index, pos = read_long(data, pos)
        if not 0 <= index < len(readers):
            raise _Other
        return readers[index](data, pos)
    return read


def _read_map(read_value: Reader) -> Reader:
    def read(data: bytes, pos: int) -> tuple[dict, int]:
        out = {}
        count, pos = read_long(data, pos)
        while count:
            if count < 0:  # a block with its size in bytes: rare, fastavro's
                raise _Other
            for _ in range(count):
                key, pos = _read_string(data, pos)
                out[key], pos = read_value(data, pos)
            count, pos = read_long(data, pos)
        return out, pos
    return read
