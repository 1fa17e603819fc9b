"""Erasure and access for one contact in ClickHouse (GDPR articles 17 and 15): ``npsflow forget`` / ``export-contact``.

A contact is known to ClickHouse only by its keyed pseudonym ``streams.contact_rules.contact_key(org, contact_id,
NPSFLOW_SECRET)`` (32 hex characters; the CLI computes it, ClickHouse never sees the contact id or an address):

* ``respondent`` — ``responses`` and the day ledgers ``responses_by_day`` / ``comments_by_day`` (rows written from
  migration 0006 on; older answers are found through their invitation: ``invitation_id`` of the contact's
  dispatches);
* ``contact_key`` — ``dispatches`` (every decision: sent, scheduled, suppressed, failed, reminders, promoter
  actions);
* ``route`` = ``<org>|<pseudonym>`` — ``cases`` (an anonymous answer's case has ``<org>|r:<response_id>``: found
  through the contact's response ids);
* ``dead_letters`` by their Kafka ``key`` ``<org>|<contact_id>`` (a trigger refused by the dispatch stage; the
  payload is redacted, the contact id is in it).

The tables are discovered from ``system.columns`` (every MergeTree-family table with one of the columns above),
so a future table with such a column is erased without a change here. Not per contact, kept: ``nps_daily``,
``terms_daily`` (recomputed for the days the contact's answers lay on: the erase marks those days as arrived
now, the worker's refresher recomputes them from the ledger within a minute — ``terms_daily.respondents`` holds
hashes of pseudonyms until then), ``window_updates`` and ``alerts`` (counts per segment and hour, no contact).

On a ClickHouse cluster (the DDL of ``npsflow clickhouse ddl --cluster``) the Distributed fronts are read and counted,
and the rows are deleted on every shard's ``_local`` table ``ON CLUSTER`` (a Distributed table takes no mutation;
statement text and parsing tested, never run on a cluster here).

Rows are deleted with ``ALTER TABLE … DELETE WHERE … SETTINGS mutations_sync = 2``: the mutation rewrites the
parts holding them, so the data is physically gone when the call returns (a lightweight ``DELETE FROM`` — chDB
26.9 supports both — only masks rows until a later merge). Erasing twice deletes nothing the second time.
Every request leaves one row in ``erasures`` (migration 0009): request id, org, pseudonym, counts per table, who
and when — never the contact id, an address or an answer.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

AUDIT_TABLE = "erasures"
#: column → what it holds: the pseudonym itself, or the route <org>|<pseudonym>
PSEUDONYM_COLUMNS = {"respondent": "pseudonym", "contact_key": "pseudonym", "route": "route"}
MUTATION = "SETTINGS mutations_sync = 2"


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_iso(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


_Q = "[`'\"]?"  # ClickHouse shows the arguments as literals ('npsflow') or identifiers (npsflow, `npsflow`)
_DISTRIBUTED = re.compile(rf"Distributed\(\s*{_Q}([^`'\",\s]+){_Q}\s*,\s*{_Q}([^`'\",\s]+){_Q}\s*,\s*"
                          rf"{_Q}([^`'\",\s)]+){_Q}")


def distributed_target(engine_full: str) -> tuple[str, str, str] | None:
    """(cluster, database, local table) of a ``Distributed(…)`` engine definition, else None."""
    found = _DISTRIBUTED.match(engine_full or "")
    return (found[1], found[2], found[3]) if found else None


def select_tables(rows: list[dict]) -> dict[str, tuple[set[str], str]]:
    """Pure part of ``contact_tables``: ``rows`` = {"t", "cols", "engine", "engine_full"} per table → table →
    (its contact columns, the ``ALTER TABLE`` target that deletes its rows). On a single server the target is the
    table; on a cluster (``npsflow clickhouse ddl --cluster``) the Distributed front is what is read and counted,
    and its rows are deleted on every shard's local table ``ON CLUSTER`` (a Distributed table takes no mutation);
    the local tables behind a front are not listed themselves."""
    fronts = {r["t"]: distributed_target(r["engine_full"]) for r in rows if r["engine"] == "Distributed"}
    behind = {local for target in fronts.values() if target for _, _, local in [target]}
    found = {}
    for r in rows:
        cols = set(r["cols"])
        if r["t"] == AUDIT_TABLE or r["t"] in behind or not cols & set(PSEUDONYM_COLUMNS):
            continue
        if r["engine"] == "Distributed":
            if fronts[r["t"]] is None:
                continue
            cluster, database, local = fronts[r["t"]]
            target = f"`{database}`.`{local}` ON CLUSTER '{cluster}'"
        elif "MergeTree" in r["engine"]:
            target = f"{{db}}.`{r['t']}`"
        else:
            continue
        found[r["t"]] = (cols & {*PSEUDONYM_COLUMNS, "invitation_id", "response_id"}, target)
    return found


def _tables(store) -> dict[str, tuple[set[str], str]]:
    rows = store.query(
        "SELECT c.table AS t, groupArray(c.name) AS cols, any(s.engine) AS engine, any(s.engine_full) AS engine_full "
        "FROM system.columns AS c INNER JOIN system.tables AS s ON s.database = c.database AND s.name = c.table "
        "WHERE c.database = {d:String} AND (s.engine LIKE '%MergeTree%' OR s.engine = 'Distributed') "
        "GROUP BY c.table", {"d": store.database})
    return select_tables(rows)


def contact_tables(store) -> dict[str, set[str]]:
    """Every table of the store's database with a column naming a contact → those columns (``invitation_id`` /
    ``response_id`` listed too where a table has them: the other ways to a contact's rows): MergeTree tables on a
    single server, the Distributed fronts on a cluster. The audit table is never one of them."""
    return {table: columns for table, (columns, _) in _tables(store).items()}


def delete_statement(target: str, where: str) -> str:
    """The synchronous mutation deleting ``where`` from ``target`` (a table, or ``local ON CLUSTER 'c'``)."""
    return f"ALTER TABLE {target} DELETE WHERE {where} {MUTATION}"


def _predicate(columns: set[str], invitations: list[str], responses: list[str]) -> str:
    parts = [f"{c} = {{{PSEUDONYM_COLUMNS[c]}:String}}" for c in sorted(columns & set(PSEUDONYM_COLUMNS))]
    if "invitation_id" in columns and invitations:
        parts.append("invitation_id IN {invitations:Array(String)}")
    if "response_id" in columns and responses:
        parts.append("response_id IN {responses:Array(String)}")
    return " OR ".join(f"({p})" for p in parts)


def _links(store, org: str, pseudonym: str) -> tuple[list[str], list[str]]:
    """The contact's invitation ids (from its dispatches) and response ids (by pseudonym or invitation)."""
    invitations = [r["i"] for r in store.query(
        "SELECT DISTINCT invitation_id AS i FROM {db}.dispatches WHERE contact_key = {p:String} AND "
        "org_id = {o:String} AND invitation_id != '' ORDER BY i", {"p": pseudonym, "o": org})]
    responses = [r["r"] for r in store.query(
        "SELECT DISTINCT response_id AS r FROM {db}.responses WHERE respondent = {p:String} OR "
        "(invitation_id != '' AND invitation_id IN {inv:Array(String)}) ORDER BY r",
        {"p": pseudonym, "inv": invitations})]
    return invitations, responses


def _params(org: str, pseudonym: str, invitations: list[str], responses: list[str]) -> dict:
    return {"pseudonym": pseudonym, "route": f"{org}|{pseudonym}", "invitations": invitations,
            "responses": responses}


def plan(store, org: str, pseudonym: str, trigger_route: str | None = None) -> dict:
    """What an erasure would delete: rows per table (every row version counts), the invitation ids (the outbox
    files are named by them) and event ids (the dispatch stage's memos), without deleting anything."""
    invitations, responses = _links(store, org, pseudonym)
    params = _params(org, pseudonym, invitations, responses)
    counts = {}
    for table, columns in sorted(contact_tables(store).items()):
        where = _predicate(columns, invitations, responses)
        counts[table] = int(store.query(f"SELECT count() AS n FROM {{db}}.`{table}` WHERE {where}", params)[0]["n"])
    if trigger_route:
        counts["dead_letters"] = int(store.query("SELECT count() AS n FROM {db}.dead_letters WHERE key = {k:String}",
                                                 {"k": trigger_route})[0]["n"])
    events = [r["e"] for r in store.query(
        "SELECT DISTINCT event_id AS e FROM {db}.dispatches WHERE contact_key = {p:String} AND org_id = {o:String} "
        "ORDER BY e", {"p": pseudonym, "o": org})]
    cases = store.query(
        "SELECT DISTINCT case_id, route FROM {db}.cases WHERE route = {route:String} OR "
        "response_id IN {responses:Array(String)} ORDER BY route, case_id", params) if "cases" in counts else []
    return {"org": org, "pseudonym": pseudonym, "rows": counts, "invitations": invitations, "responses": responses,
            "events": events, "cases": [{"case_id": c["case_id"], "route": c["route"]} for c in cases]}


def _target_of(store, table: str) -> str:
    """The ALTER target of ``table`` (its shards' local table ON CLUSTER when it is a Distributed front)."""
    row = store.query("SELECT engine, engine_full FROM system.tables WHERE database = {d:String} AND name = {t:String}",
                      {"d": store.database, "t": table})
    target = distributed_target(row[0]["engine_full"]) if row and row[0]["engine"] == "Distributed" else None
    return f"`{target[1]}`.`{target[2]}` ON CLUSTER '{target[0]}'" if target else f"{{db}}.`{table}`"


def delete_rows(store, org: str, pseudonym: str, trigger_route: str | None = None) -> tuple[dict, list]:
    """Delete every row of the contact (see the module docstring) and mark the days its answers lay on for
    recomputation. Returns (``plan`` as found before, the days marked). Erasing twice deletes nothing."""
    found = plan(store, org, pseudonym, trigger_route)
    params = _params(org, pseudonym, found["invitations"], found["responses"])
    days = [r["day"] for r in store.query(
        "SELECT DISTINCT day FROM {db}.responses_by_day WHERE respondent = {pseudonym:String} OR "
        "response_id IN {responses:Array(String)}", params)] if "responses_by_day" in found["rows"] else []
    tables = _tables(store)
    for table, n in found["rows"].items():
        if not n:
            continue
        if table == "dead_letters" and table not in tables:
            store.command(delete_statement(_target_of(store, "dead_letters"), "key = {k:String}"),
                          {"k": trigger_route})
            continue
        columns, target = tables[table]
        store.command(delete_statement(target, _predicate(columns, found["invitations"], found["responses"])),
                      params)
    if days:  # the rollups of those days are recomputed from the ledger (sinks.rollup: dirty days)
        now = store.query("SELECT now64(3, 'UTC') AS now")[0]["now"]
        store.insert("nps_daily_touched", [{"day": d, "last_insert": now} for d in days])
    return found, days


def erase(store, org: str, pseudonym: str, *, request_id: str, by: str, trigger_route: str | None = None,
          other: dict[str, int] | None = None) -> dict:
    """Delete every row of the contact (``delete_rows``) and record the request in ``erasures``. ``other``:
    counts erased elsewhere (outbox files, state keys) for the audit row. Returns the audit record."""
    found, days = delete_rows(store, org, pseudonym, trigger_route)
    record = {"request_id": request_id, "org_id": org, "pseudonym": pseudonym, "by": by,
              "erased_at": datetime.now(timezone.utc),
              "erased": {**{t: n for t, n in found["rows"].items()}, **(other or {})},
              "days_recomputed": len(days)}
    store.insert(AUDIT_TABLE, [{**record, "erased": json.dumps(record["erased"], sort_keys=True)}])
    return _iso(record)


def erased_contacts(store) -> list[tuple[str, str]]:
    """(org, pseudonym) of every erasure recorded in ``erasures``, once each."""
    return [(r["o"], r["p"]) for r in store.query(
        f"SELECT DISTINCT org_id AS o, pseudonym AS p FROM {{db}}.{AUDIT_TABLE} ORDER BY o, p")]


def refused_routes(store, erased: set[tuple[str, str]], pseudonym_of) -> dict[tuple[str, str], str]:
    """The trigger routes ``<org>|<contact id>`` of ``dead_letters`` whose pseudonym (``pseudonym_of(org,
    contact_id)``: the keyed HMAC, computed outside ClickHouse — it never holds the secret) is an erased one."""
    found = {}
    for r in store.query("SELECT DISTINCT key AS k FROM {db}.dead_letters WHERE position(key, '|') > 0"):
        org, _, contact_id = r["k"].partition("|")
        if contact_id and (org, pseudonym_of(org, contact_id)) in erased:
            found[(org, pseudonym_of(org, contact_id))] = r["k"]
    return found


def reapply(store, secret: str | None = None) -> dict:
    """Apply every recorded erasure again (``npsflow replay`` re-sinks the topics, erased contacts included):
    the same deletion as ``erase`` (``delete_rows``), no new audit row. ``secret`` (NPSFLOW_SECRET): also the
    dead letters of refused triggers, keyed by the contact id, which only the secret links to a pseudonym.
    Returns {"contacts": erasures re-applied, "rows": rows deleted per table} — counts only, no pseudonym."""
    contacts = erased_contacts(store)
    routes = {}
    if secret and contacts and "dead_letters" in {r["name"] for r in store.query(
            "SELECT name FROM system.tables WHERE database = {d:String}", {"d": store.database})}:
        from streams.contact_rules import contact_key

        routes = refused_routes(store, set(contacts), lambda o, c: contact_key(o, c, secret))
    rows: dict[str, int] = {}
    for org, pseudonym in contacts:
        found, _ = delete_rows(store, org, pseudonym, routes.get((org, pseudonym)))
        for table, n in found["rows"].items():
            rows[table] = rows.get(table, 0) + n
    return {"contacts": len(contacts), "rows": {t: n for t, n in sorted(rows.items()) if n}}


def export(store, org: str, pseudonym: str, trigger_route: str | None = None) -> dict:
    """Everything ClickHouse holds of the contact (article 15): every version of its answers as stored (comments
    and follow-ups masked by classify from migration 0006 on), its dispatch decisions, its cases (with the
    owners' notes, masked by the sink), refused triggers (redacted payloads). JSON-ready."""
    invitations, responses = _links(store, org, pseudonym)
    params = _params(org, pseudonym, invitations, responses)
    answers = store.query(
        "SELECT response_id, version, survey_id, org_id, invitation_id, score, toString(category) AS category, "
        "comment, follow_up, locale, lang, terms, segment, responded_at, received_at, is_edit, source "
        "FROM {db}.responses FINAL WHERE respondent = {pseudonym:String} OR response_id IN {responses:Array(String)} "
        "ORDER BY responded_at, response_id", params)
    dispatched = store.query(
        "SELECT dispatch_id, kind, invitation_id, event_id, survey_id, channel, toString(status) AS status, reason, "
        "scheduled_for, decided_at, cost, currency, locale, segment FROM {db}.dispatches FINAL "
        "WHERE contact_key = {pseudonym:String} AND org_id = {o:String} ORDER BY decided_at, dispatch_id",
        {**params, "o": org})
    case_rows = store.query(
        "SELECT case_id, response_id, owner, score, category, comment, segment, opened_at, due_at, status, "
        "close_reason, first_contact_at, closed_at, notes, history FROM {db}.cases FINAL "
        "WHERE route = {route:String} OR response_id IN {responses:Array(String)} ORDER BY opened_at, case_id",
        params)
    for row in case_rows:
        for name in ("notes", "history"):
            try:
                row[name] = json.loads(row[name])
            except (TypeError, ValueError):
                pass
    refused = store.query(
        "SELECT dead_letter_id, stage, reason, detail, payload_json, failed_at FROM {db}.dead_letters FINAL "
        "WHERE key = {k:String} ORDER BY failed_at", {"k": trigger_route}) if trigger_route else []
    return _iso({"org": org, "pseudonym": pseudonym, "responses": answers, "dispatches": dispatched,
                 "cases": case_rows, "dead_letters": refused})


def audit(store, org: str | None = None) -> list[dict]:
    """The erasure requests recorded (newest first)."""
    where = "WHERE org_id = {o:String}" if org else ""
    rows = store.query(f"SELECT request_id, org_id, pseudonym, by, erased_at, erased, days_recomputed "
                       f"FROM {{db}}.{AUDIT_TABLE} FINAL {where} ORDER BY erased_at DESC", {"o": org} if org else None)
    for row in rows:
        row["erased"] = json.loads(row["erased"])
    return _iso(rows)
