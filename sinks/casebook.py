"""Reading follow-up cases from ClickHouse (table ``cases``, migration 0007): the list and summary of
``npsflow cases``, one case for a command, and the follow-up statistics (time to first contact, share closed
within the SLA) by owner or segment. The latest revision of a case wins (``FINAL`` on ReplacingMergeTree(rev)).

Status as shown: ``closed``; ``overdue`` (open, now ≥ due_at); ``open`` — the same rule as streams.cases.status_at.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

STATUSES = ("open", "overdue", "closed")
MAX_CASES = 1000
_STATUS_SQL = "if(status = 'closed', 'closed', if(due_at <= {now:DateTime64(3, 'UTC')}, 'overdue', 'open'))"
_DIMENSION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _filters(status: str | None, owner: str | None) -> tuple[str, dict]:
    where, params = [], {}
    if status is not None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        where.append(f"{_STATUS_SQL} = {{status:String}}")
        params["status"] = status
    if owner is not None:
        where.append("owner = {owner:String}")
        params["owner"] = owner
    return (" WHERE " + " AND ".join(where)) if where else "", params


def _case(row: dict) -> dict:
    return {
        "case_id": row["case_id"], "response_id": row["response_id"], "org_id": row["org_id"],
        "owner": row["owner"], "segment": dict(row["segment"]), "score": int(row["score"]),
        "comment": row["comment"] or None, "opened_at": _iso(row["opened_at"]), "due_at": _iso(row["due_at"]),
        "status": row["shown"], "close_reason": row["close_reason"] or None,
        "first_contact_at": _iso(row["first_contact_at"]), "closed_at": _iso(row["closed_at"]),
        "escalated_at": _iso(row["escalated_at"]), "answers": int(row["answers"]),
    }


def cases(store, status: str | None = None, owner: str | None = None, now: datetime | None = None,
          limit: int = MAX_CASES) -> dict:
    """``{"cases": [...newest first, at most limit...], "summary": {"open", "overdue", "closed_within_sla",
    "closed_late"}}``; the summary counts every case of ``owner`` (all owners when None), whatever ``status``."""
    now = now or datetime.now(timezone.utc)
    where, params = _filters(status, owner)
    params.update(now=now, limit=int(limit))
    rows = store.query(
        f"SELECT *, {_STATUS_SQL} AS shown FROM {{db}}.cases FINAL{where} "
        f"ORDER BY opened_at DESC, case_id LIMIT {{limit:UInt32}}", params)
    owner_where, owner_params = _filters(None, owner)
    (counts,) = store.query(
        f"SELECT countIf(status != 'closed' AND due_at > {{now:DateTime64(3, 'UTC')}}) AS open, "
        f"countIf(status != 'closed' AND due_at <= {{now:DateTime64(3, 'UTC')}}) AS overdue, "
        f"countIf(status = 'closed' AND closed_at <= due_at) AS closed_within_sla, "
        f"countIf(status = 'closed' AND closed_at > due_at) AS closed_late FROM {{db}}.cases FINAL{owner_where}",
        {**owner_params, "now": now})
    return {"cases": [_case(r) for r in rows], "summary": {k: int(v) for k, v in counts.items()}}


def case(store, case_id: str, now: datetime | None = None) -> dict | None:
    """One case with what a command needs (``route``, ``command_ids``) and its notes and history."""
    rows = store.query(f"SELECT *, {_STATUS_SQL} AS shown FROM {{db}}.cases FINAL WHERE case_id = {{id:String}}",
                       {"id": case_id, "now": now or datetime.now(timezone.utc)})
    if not rows:
        return None
    row = rows[0]
    return {**_case(row), "route": row["route"], "rev": int(row["rev"]), "command_ids": list(row["command_ids"]),
            "escalated_to": row["escalated_to"] or None, "notes": json.loads(row["notes"] or "[]"),
            "history": json.loads(row["history"] or "[]")}


def case_stats(store, by: str = "owner") -> list[dict]:
    """Follow-up per owner (``by="owner"``) or per value of a segment dimension: cases, open, overdue now,
    acknowledged, median hours to first contact, closed, share of the closed ones closed within the SLA (%)."""
    if by == "owner":
        key = "owner"
    elif _DIMENSION.match(by or ""):
        key = "segment[{dim:String}]"
    else:
        raise ValueError(f"by must be owner or a dimension name, got {by!r}")
    rows = store.query(
        f"SELECT {key} AS value, count() AS cases, countIf(status != 'closed') AS open, "
        f"countIf(status != 'closed' AND due_at <= now64(3)) AS overdue, "
        f"countIf(first_contact_at IS NOT NULL) AS acknowledged, "
        f"quantileExactInclusiveIf(0.5)(dateDiff('second', opened_at, first_contact_at) / 3600.0, "
        f"first_contact_at IS NOT NULL) AS median_hours_to_contact, "
        f"countIf(status = 'closed') AS closed, countIf(status = 'closed' AND closed_at <= due_at) AS within_sla "
        f"FROM {{db}}.cases FINAL GROUP BY value ORDER BY cases DESC, value", {"dim": by})
    out = []
    for r in rows:
        closed = int(r["closed"])
        out.append({by: r["value"], "cases": int(r["cases"]), "open": int(r["open"]), "overdue": int(r["overdue"]),
                    "acknowledged": int(r["acknowledged"]),
                    "median_hours_to_contact": (round(float(r["median_hours_to_contact"]), 2)
                                                if int(r["acknowledged"]) else None),
                    "closed": closed,
                    "closed_within_sla_pct": round(100.0 * int(r["within_sla"]) / closed, 1) if closed else None})
    return out


def open_cases(store, limit: int = 10, now: datetime | None = None) -> dict:
    """What the live dashboard shows: the summary and the ``limit`` most urgent open cases (earliest due first)."""
    now = now or datetime.now(timezone.utc)
    rows = store.query(
        f"SELECT *, {_STATUS_SQL} AS shown FROM {{db}}.cases FINAL WHERE status != 'closed' "
        f"ORDER BY due_at, case_id LIMIT {{limit:UInt32}}", {"now": now, "limit": int(limit)})
    listed = cases(store, now=now, limit=0)
    return {"summary": listed["summary"], "cases": [_case(r) for r in rows]}
