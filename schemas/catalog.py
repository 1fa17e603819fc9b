"""Pinned schema catalog: subjects, versions, globally unique ids and fingerprints.

Layout (all paths relative to the ``schemas`` package directory)::

    <name>.avsc                          current version of a subject
    history/<subject>/v<N>.avsc          older versions (N < current)
    catalog.json                         {"subjects": {subject: [{version, id, file, fingerprint}, ...]}}

A *subject* is the record full name (``io.npsflow.RawResponse``).  Ids are
globally unique across subjects and never reused; they are the ids written into
the Confluent wire-format header when no schema registry is configured.  The
fingerprint is the SHA-256 of the Avro Parsing Canonical Form, so doc/default-only
edits do not make a new version (they do not change the binary encoding).

CLI::

    python -m schemas.catalog --check            # exit 1 and list problems if the catalog is stale
    python -m schemas.catalog --bump             # new subjects -> v1, changed schemas -> v<N+1>
    python -m schemas.catalog --bump --previous old.avsc   # when git HEAD lacks the previous file

``--bump`` needs the previous text of a changed schema to archive it in
``history/``: it takes it from ``git show HEAD:schemas/<file>`` (checked against the
catalog fingerprint) or from ``--previous``.  It refuses a change that is not
backward compatible (see :func:`check_backward_compatible`) unless ``--force``.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Iterator

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

SCHEMA_DIR = os.path.dirname(os.path.abspath(__file__))
CATALOG_FILE = os.path.join(SCHEMA_DIR, "catalog.json")
HISTORY_DIR = "history"


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    id: int
    file: str            # relative to SCHEMA_DIR
    fingerprint: str
    schema: dict         # raw JSON (unparsed) of the .avsc
    current: bool        # True for the subject's latest version

    @property
    def schema_str(self) -> str:
        return json.dumps(self.schema, separators=(",", ":"))


# --------------------------------------------------------------------------- basics

def read_schema_file(path: str) -> dict:
    """Load one .avsc (path absolute or relative to SCHEMA_DIR) as plain JSON."""
    if not os.path.isabs(path):
        path = os.path.join(SCHEMA_DIR, path)
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def full_name(schema: dict) -> str:
    name = schema["name"]
    ns = schema.get("namespace")
    return name if "." in name or not ns else f"{ns}.{name}"


def canonical_form(schema: dict) -> str:
    return to_parsing_canonical_form(parse_schema(copy.deepcopy(schema), _write_hint=False))


def fingerprint(schema: dict) -> str:
    """SHA-256 (hex) of the Parsing Canonical Form."""
    return _fastavro_fingerprint(canonical_form(schema), "SHA-256")


def top_level_files(schema_dir: str = SCHEMA_DIR) -> dict[str, str]:
    """{subject: file name} of the current .avsc files in the package directory."""
    out = {}
    for name in sorted(os.listdir(schema_dir)):
        if name.endswith(".avsc"):
            out[full_name(read_schema_file(os.path.join(schema_dir, name)))] = name
    return out


def history_file(subject: str, version: int) -> str:
    return f"{HISTORY_DIR}/{subject}/v{version}.avsc"


def load_catalog_json(path: str = CATALOG_FILE) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_catalog_json(data: dict, path: str = CATALOG_FILE) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


@lru_cache(maxsize=None)
def load_versions() -> tuple[SchemaVersion, ...]:
    """All catalogued versions of all subjects (cached; the codec's source of truth)."""
    out = []
    for subject, versions in load_catalog_json()["subjects"].items():
        last = len(versions) - 1
        for i, v in enumerate(versions):
            out.append(SchemaVersion(subject, v["version"], v["id"], v["file"], v["fingerprint"],
                                     read_schema_file(v["file"]), i == last))
    return tuple(out)


# --------------------------------------------------------------------------- example records

def _branching(schema: Any, seen: frozenset = frozenset()) -> int:
    """Largest number of alternatives (union branches / enum symbols) anywhere in schema."""
    if isinstance(schema, list):
        return max([len(schema)] + [_branching(s, seen) for s in schema])
    if isinstance(schema, dict):
        t = schema.get("type")
        if t == "enum":
            return len(schema["symbols"])
        if t == "record":
            name = schema.get("name")
            if name in seen:
                return 1
            return max([1] + [_branching(f["type"], seen | {name}) for f in schema["fields"]])
        if t == "array":
            return _branching(schema["items"], seen)
        if t == "map":
            return _branching(schema["values"], seen)
        if isinstance(t, (dict, list)):
            return _branching(t, seen)
    return 1


_PRIMITIVE_EXAMPLES = {
    "null": None, "boolean": True, "int": 7, "long": 1_700_000_000_000, "float": 1.5,
    "double": 2.25, "bytes": b"\x00\x01", "string": "x",
}


_EXAMPLE_DATE = date(2024, 5, 1)


def _example(schema: Any, variant: int, named: dict) -> Any:
    if isinstance(schema, str):
        if schema in _PRIMITIVE_EXAMPLES:
            return _PRIMITIVE_EXAMPLES[schema]
        return _example(named[schema], variant, named)
    if isinstance(schema, list):
        return _example(schema[variant % len(schema)], variant, named)
    t = schema["type"]
    if isinstance(t, (dict, list)):
        return _example(t, variant, named)
    if schema.get("logicalType") == "date":  # fastavro reads a date back as datetime.date
        return _EXAMPLE_DATE
    if t in ("record", "enum", "fixed"):
        named[full_name(schema) if "namespace" in schema else schema["name"]] = schema
        named[schema["name"]] = schema
    if t == "record":
        return {f["name"]: _example(f["type"], variant, named) for f in schema["fields"]}
    if t == "enum":
        return schema["symbols"][variant % len(schema["symbols"])]
    if t == "fixed":
        return b"\x00" * schema["size"]
    if t == "array":
        return [_example(schema["items"], variant, named)]
    if t == "map":
        return {"k": _example(schema["values"], variant, named)}
    return _PRIMITIVE_EXAMPLES[t]


def example_records(schema: dict) -> list[dict]:
    """Synthetic records covering every union branch and enum symbol of *schema* (>= 2 records)."""
    return [_example(schema, v, {}) for v in range(max(2, _branching(schema)))]


# --------------------------------------------------------------------------- compatibility

def _named_types(schema: Any, out: dict | None = None, ns: str | None = None) -> dict:
    """{full name: schema} of every named type (records/enums/fixed) in schema."""
    out = {} if out is None else out
    if isinstance(schema, list):
        for s in schema:
            _named_types(s, out, ns)
    elif isinstance(schema, dict):
        t = schema.get("type")
        if t in ("record", "enum", "fixed"):
            name = schema["name"]
            ns = schema.get("namespace", ns)
            fn = name if "." in name or not ns else f"{ns}.{name}"
            out[fn] = schema
            if t == "record":
                for f in schema["fields"]:
                    _named_types(f["type"], out, ns)
        elif t == "array":
            _named_types(schema["items"], out, ns)
        elif t == "map":
            _named_types(schema["values"], out, ns)
        elif isinstance(t, (dict, list)):
            _named_types(t, out, ns)
    return out


def _structural_problems(old: dict, new: dict) -> list[str]:
    problems = []
    old_named, new_named = _named_types(old), _named_types(new)
    for name, nt in new_named.items():
        ot = old_named.get(name)
        if ot is None:
            aliases = nt.get("aliases", [])
            ot = next((old_named[a] for a in aliases if a in old_named), None)
        if ot is None or ot.get("type") != nt.get("type"):
            continue
        if nt["type"] == "record":
            old_fields = {f["name"] for f in ot["fields"]}
            for f in nt["fields"]:
                names = {f["name"], *f.get("aliases", [])}
                if not names & old_fields and "default" not in f:
                    problems.append(f"{name}: new field '{f['name']}' has no default "
                                    "(data written with the old schema cannot be read)")
        elif nt["type"] == "enum":
            removed = [s for s in ot["symbols"] if s not in nt["symbols"]]
            if removed and "default" not in nt:
                problems.append(f"{name}: enum symbols {removed} removed without an enum default")
    return problems


def check_backward_compatible(old_schema: dict, new_schema: dict) -> list[str]:
    """Problems preventing *new_schema* (reader) from reading data written with *old_schema*.

    Empty list == backward compatible.  Two checks: a structural one (new record
    fields without default, enum symbols removed without default) and an
    empirical one: every synthetic example of the old schema (all union branches,
    all enum symbols) is written with the old schema and read with the new one.
    """
    problems = _structural_problems(old_schema, new_schema)
    try:
        writer = parse_schema(copy.deepcopy(old_schema))
        reader = parse_schema(copy.deepcopy(new_schema))
    except Exception as exc:  # noqa: BLE001 - report anything as a problem
        return problems + [f"schema does not parse: {exc}"]
    for i, rec in enumerate(example_records(old_schema)):
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, writer, rec)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"example {i}: cannot be written with the old schema: {exc}")
            continue
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"example {i}: old data unreadable with new schema: "
                            f"{type(exc).__name__}: {exc}")
    return problems


# --------------------------------------------------------------------------- check / bump

def check_catalog(schema_dir: str = SCHEMA_DIR, catalog_path: str | None = None) -> list[str]:
    """Problems with the catalog versus the files on disk (empty list == consistent)."""
    problems: list[str] = []
    data = load_catalog_json(catalog_path or os.path.join(schema_dir, "catalog.json"))
    subjects = data.get("subjects", {})
    files = top_level_files(schema_dir)
    seen_ids: dict[int, str] = {}
    for subject in sorted(set(files) - set(subjects)):
        problems.append(f"{subject}: {files[subject]} is not in the catalog (run --bump)")
    for subject, versions in subjects.items():
        if not versions:
            problems.append(f"{subject}: no versions")
            continue
        for i, v in enumerate(versions):
            where = f"{subject} v{v.get('version')}"
            if v.get("version") != i + 1:
                problems.append(f"{where}: versions must be 1..N in order")
            if v["id"] in seen_ids:
                problems.append(f"{where}: id {v['id']} already used by {seen_ids[v['id']]}")
            seen_ids[v["id"]] = where
            current = i == len(versions) - 1
            expected_file = files.get(subject) if current else history_file(subject, i + 1)
            if v["file"] != expected_file:
                problems.append(f"{where}: file is {v['file']!r}, expected {expected_file!r}")
            path = os.path.join(schema_dir, v["file"])
            if not os.path.exists(path):
                problems.append(f"{where}: missing file {v['file']}")
                continue
            schema = read_schema_file(path)
            if full_name(schema) != subject:
                problems.append(f"{where}: {v['file']} defines {full_name(schema)}")
            fp = fingerprint(schema)
            if fp != v["fingerprint"]:
                hint = " (schema changed: run python -m schemas.catalog --bump)" if current else ""
                problems.append(f"{where}: fingerprint mismatch for {v['file']}{hint}")
        current_schema = read_schema_file(os.path.join(schema_dir, versions[-1]["file"])) \
            if os.path.exists(os.path.join(schema_dir, versions[-1]["file"])) else None
        for v in versions[:-1]:
            p = os.path.join(schema_dir, v["file"])
            if current_schema is not None and os.path.exists(p):
                for prob in check_backward_compatible(read_schema_file(p), current_schema):
                    problems.append(f"{subject} v{v['version']} -> current: {prob}")
    return problems


def _previous_from_git(rel_file: str, schema_dir: str) -> dict | None:
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=schema_dir,
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        rel = os.path.relpath(os.path.join(schema_dir, rel_file), top)
        out = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=top, capture_output=True,
                             text=True, timeout=10, check=True).stdout
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def bump(schema_dir: str = SCHEMA_DIR, previous: str | None = None, force: bool = False) -> list[str]:
    """Append versions for new/changed top-level schemas; returns a description of changes.

    Raises ValueError (nothing written) when the previous text of a changed schema
    cannot be found or the change is not backward compatible (unless force).
    """
    catalog_path = os.path.join(schema_dir, "catalog.json")
    data = load_catalog_json(catalog_path) if os.path.exists(catalog_path) else {"subjects": {}}
    subjects = data.setdefault("subjects", {})
    next_id = 1 + max((v["id"] for vs in subjects.values() for v in vs), default=0)
    changes, archive = [], []
    for subject, fname in top_level_files(schema_dir).items():
        new_schema = read_schema_file(os.path.join(schema_dir, fname))
        fp = fingerprint(new_schema)
        versions = subjects.setdefault(subject, [])
        if versions and versions[-1]["fingerprint"] == fp:
            if versions[-1]["file"] != fname:
                versions[-1]["file"] = fname
                changes.append(f"{subject}: file renamed to {fname}")
            continue
        if versions:
            prev_entry = versions[-1]
            candidates = []
            if previous:
                candidates.append(read_schema_file(os.path.abspath(previous)))
            candidates.append(_previous_from_git(prev_entry["file"], schema_dir))
            old = next((c for c in candidates if c is not None and full_name(c) == subject
                        and fingerprint(c) == prev_entry["fingerprint"]), None)
            if old is None:
                raise ValueError(f"{subject}: cannot find the text of v{prev_entry['version']} "
                                 "(not in git HEAD); pass --previous <old .avsc>")
            problems = check_backward_compatible(old, new_schema)
            if problems and not force:
                raise ValueError(f"{subject}: change is not backward compatible: "
                                 + "; ".join(problems))
            hist = history_file(subject, prev_entry["version"])
            archive.append((hist, old))
            prev_entry["file"] = hist
        versions.append({"version": len(versions) + 1, "id": next_id, "file": fname, "fingerprint": fp})
        changes.append(f"{subject}: v{len(versions)} id={next_id} ({fname})")
        next_id += 1
    for hist, old in archive:
        path = os.path.join(schema_dir, hist)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(old, fh, indent=2)
            fh.write("\n")
    if changes:
        _write_catalog_json(data, catalog_path)
        load_versions.cache_clear()
    return changes


def iter_subjects() -> Iterator[str]:
    return iter(load_catalog_json()["subjects"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m schemas.catalog", description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true", help="verify catalog.json against the .avsc files")
    g.add_argument("--bump", action="store_true", help="add versions for new/changed schemas")
    ap.add_argument("--previous", help="previous text of the (single) changed schema, if not in git HEAD")
    ap.add_argument("--force", action="store_true", help="bump even if not backward compatible")
    ap.add_argument("--dir", default=SCHEMA_DIR, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.check:
        problems = check_catalog(args.dir)
        for p in problems:
            print(p, file=sys.stderr)
        if not problems:
            print("catalog OK")
        return 1 if problems else 0
    try:
        changes = bump(args.dir, previous=args.previous, force=args.force)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(changes) if changes else "nothing to bump")
    return 0


if __name__ == "__main__":
    sys.exit(main())
