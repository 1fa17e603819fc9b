"""What one alert event (``streams.alerting.evaluate``) becomes on its way out. Pure: no I/O, no clock.

* ``alert_record(event)``: the Avro ``io.npsflow.Alert`` v2 record for ``<ns>.alerts`` (key = the segment).
* ``notification(event)``: ``(key, value)`` of the record for ``<ns>.notifications`` (JSON, key = the id
  ``<alert_id>:<opened|closed>``), the shape the notify agent delivers by webhook / e-mail.

The figures (baseline, current, z, p, cusum) are the ones the alert opened with, on both events: an alert is
identified by what raised it; the closing event says when it recovered (``closed_at``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping

import orjson

from streams.responses import from_ms, iso_ms as iso


def _utc(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


def _side(side: Mapping) -> dict:
    lo, hi = side["ci95"]
    return {"nps": side["nps"], "responses": int(side["responses"]), "ci_low": lo, "ci_high": hi}


def _fmt(nps: float | None) -> str:
    return "—" if nps is None else f"{nps:.1f}"


def detail(event: Mapping) -> str:
    """One line: ``NPS drop in location=Espoo: -12.0 (n=40) vs 35.2 (n=840), z=-3.41``."""
    ((dim, value),) = event["segment"].items()
    cur, base = event["current"], event["baseline"]
    z = "" if event["z"] is None else f", z={event['z']:.2f}"
    what = {"drop": "NPS drop", "rise": "NPS rise", "shift": f"sustained NPS shift {event['direction']}"}[event["kind"]]
    closed = " (recovered)" if event["event"] == "closed" else ""
    return (f"{what} in {dim}={value}{closed}: {_fmt(cur['nps'])} (n={cur['responses']}) vs {_fmt(base['nps'])} "
            f"(n={base['responses']}){z}")


def alert_record(event: Mapping) -> dict:
    """The Avro io.npsflow.Alert v2 record of one event."""
    ((dim, value),) = event["segment"].items()
    at = event["closed_at"] if event["event"] == "closed" else event["opened_at"]
    return {
        "alert_id": event["alert_id"], "kind": event["kind"], "event": event["event"], "status": event["status"],
        "direction": event["direction"], "dimension": dim, "segment_value": value,
        "baseline": _side(event["baseline"]), "current": _side(event["current"]),
        "z": event["z"], "p_value": event["p_value"], "cusum": event.get("cusum"),
        "opened_at": _utc(event["opened_at"]), "closed_at": _utc(event["closed_at"]),
        "detail": detail(event), "created_at": _utc(at),
    }


def notification_id(event: Mapping) -> str:
    return f"{event['alert_id']}:{event['event']}"


def notification(event: Mapping) -> tuple[bytes, bytes]:
    """``(key, value)`` of the notification of one event: JSON ``{"id", "event", "org_id", "to", "data"}``."""
    ident = notification_id(event)
    data = {
        "alert_id": event["alert_id"], "segment": dict(event["segment"]), "kind": event["kind"],
        "direction": event["direction"],
        "baseline": {k: event["baseline"][k] for k in ("nps", "responses", "ci95")},
        "current": {k: event["current"][k] for k in ("nps", "responses", "ci95")},
        "z": event["z"], "p_value": event["p_value"],
        "opened_at": iso(event["opened_at"]), "closed_at": iso(event["closed_at"]), "status": event["status"],
    }
    body = {"id": ident, "event": f"alert.{event['event']}", "org_id": "", "to": None, "data": data}
    return ident.encode(), orjson.dumps(body)
