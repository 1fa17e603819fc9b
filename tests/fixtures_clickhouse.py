"""Real embedded ClickHouse (chDB) for the test-suite (plugged in from tests/conftest.py). Never mocked.

Fixtures:
  ch_dsn     function: "chdb:///<tmp_path>/clickhouse" — a fresh, empty chDB directory for this test
  ch_store   function: a migrated ``ClickHouseStore`` (database ``npsflow``, with the view ``nps_cells``) on
             ``ch_dsn``; closed afterwards

chDB hosts ONE engine path per process at a time (opening a second path while one is open fails) and
locks the directory against other processes while open. Closing every client frees both, after which
another path can be opened (verified with chdb 4.4.0; ~50 ms per open/close). So each test gets its own
directory and its store is closed at teardown. Before opening, stores/clients leaked on another chDB path
in this process (e.g. by code under test) are closed, so one leaky test cannot break the rest.

A test that needs a worker *subprocess* on the same directory must close its store first (the lock).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks import clickhouse as ch
from sinks.rollup import apply_view


def _close_leaked_embedded(keep: str | None = None) -> None:
    leaked = [k for k in ch.open_engines() if k.startswith("chdb://") and k != keep]
    if leaked:
        warnings.warn(f"closing chDB clients leaked by an earlier test: {leaked}", stacklevel=2)
        ch.close_all()


@pytest.fixture
def ch_dsn(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'clickhouse'}"


@pytest.fixture
def ch_store(ch_dsn: str) -> Iterator[ch.ClickHouseStore]:
    _close_leaked_embedded()
    store = ch.ClickHouseStore(ch_dsn)
    try:
        ch.migrate(store)
        apply_view(store)  # nps_cells: the worker creates it at start (it follows the code, like the BI views)
        yield store
    finally:
        store.close()
