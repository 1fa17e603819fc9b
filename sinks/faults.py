"""Fault injection at the sinks' ClickHouse client boundary — FOR TESTING ONLY (tests/test_faults.py).

``NPSFLOW_FAULTS_FILE=/path/plan.json`` makes the worker wrap its ClickHouse store (``npsflow.worker.worker_store``)
in ``FaultyStore``; unset (the default, and always in production) nothing is wrapped: no code of this module runs
on any insert. The plan is a local file named by the worker's environment: nothing reachable from the network
reads or changes it (no HTTP endpoint, no Kafka topic). The worker logs a warning at start when it is set.

The plan file (JSON; re-read whenever its modification time changes, so a test edits it while the worker runs)::

    {"clickhouse_insert": [
        {"kind": "error",   "from": 1765000000.0, "until": 1765000020.0},
        {"kind": "timeout", "from": 1765000020.0, "until": 1765000040.0, "seconds": 4},
        {"kind": "partial", "from": 1765000040.0, "until": 1765000060.0, "tables": ["responses"]}
    ]}

Times are Unix seconds (``time.time()``); ``from`` defaults to 0, ``tables`` to every table. The first phase whose
window holds the moment of an insert applies:

* ``error``: the insert raises at once, as clickhouse-connect does when the server refuses the connection
  (``OperationalError``); nothing is written.
* ``timeout``: the store's thread hangs ``seconds`` (default 5; every call on that store queues behind it, as
  behind a hung HTTP request), then the insert raises ``OperationalError`` (read timed out); nothing is written.
* ``partial``: the first half of the rows IS written (a real insert, under its own deduplication token — as when
  some shards or blocks took their part before the connection broke), then the insert raises
  ``OperationalError``: the caller does not know what landed and must retry the whole batch.

A missing, unreadable or malformed plan file means no fault (and is logged once per change).
Every injected fault is logged (logger ``npsflow.faults``, level WARNING) as ``fault injected: <kind> …``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("npsflow.faults")

KINDS = ("error", "timeout", "partial")


def _operational_error(text: str) -> Exception:
    from clickhouse_connect.driver.exceptions import OperationalError

    return OperationalError(f"{text} (injected by NPSFLOW_FAULTS_FILE)")


class FaultPlan:
    """The phases of ``path``'s ``clickhouse_insert`` list, re-read when the file changes."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.path, self.clock = Path(path), clock
        self._mtime: float | None = None
        self._phases: list[dict] = []

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime, self._phases = mtime, []
        if mtime is None:
            return
        try:
            phases = json.loads(self.path.read_text()).get("clickhouse_insert") or []
            self._phases = [p for p in phases if isinstance(p, dict) and p.get("kind") in KINDS]
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("NPSFLOW_FAULTS_FILE %s unreadable, no fault: %s", self.path, exc)

    def fault_for(self, table: str) -> dict | None:
        self._load()
        now = self.clock()
        for phase in self._phases:
            tables = phase.get("tables")
            if float(phase.get("from", 0)) <= now < float(phase.get("until", 0)) and (
                    not tables or table in tables):
                return phase
        return None


class FaultyStore:
    """A ClickHouseStore whose inserts obey a FaultPlan; everything else is the store's own."""

    def __init__(self, store: Any, plan: FaultPlan) -> None:
        self._store, self._plan = store, plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def __repr__(self) -> str:
        return f"FaultyStore({self._store!r})"

    async def ainsert(self, table: str, rows: list[dict], dedup_token: str | None = None) -> int:
        fault = self._plan.fault_for(table) if rows else None
        if fault is None:
            return await self._store.ainsert(table, rows, dedup_token=dedup_token)
        kind = fault["kind"]
        if kind == "error":
            log.warning("fault injected: error on an insert of %d rows into %s", len(rows), table)
            raise _operational_error("HTTPConnectionPool(host='clickhouse', port=8123): Max retries exceeded "
                                     "(Caused by NewConnectionError: [Errno 111] Connection refused)")
        if kind == "timeout":
            seconds = float(fault.get("seconds", 5))
            log.warning("fault injected: timeout (%.1f s) on an insert of %d rows into %s", seconds, len(rows), table)
            await self._store.arun(lambda _store: time.sleep(seconds))  # the store's thread hangs, like a hung request
            raise _operational_error(f"HTTPConnectionPool(host='clickhouse', port=8123): Read timed out. "
                                     f"(read timeout={seconds:g})")
        half = rows[: max(1, len(rows) // 2)]
        token = f"{dedup_token}/injected-partial" if dedup_token else None
        await self._store.ainsert(table, half, dedup_token=token)
        log.warning("fault injected: partial insert into %s (%d of %d rows written, then the connection broke)",
                    table, len(half), len(rows))
        raise _operational_error("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))")


def wrap(store: Any, faults_file: Path | str | None) -> Any:
    """``store`` itself when ``faults_file`` is None (production), else a FaultyStore following the plan."""
    if store is None or not faults_file:
        return store
    log.warning("NPSFLOW_FAULTS_FILE=%s: ClickHouse insert faults will be injected (testing only)", faults_file)
    return FaultyStore(store, FaultPlan(faults_file))
