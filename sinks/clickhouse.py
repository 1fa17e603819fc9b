"""ClickHouse access for npsflow: one client per DSN per process, one thread per client, numbered migrations.

DSNs
    chdb:///abs/dir                       embedded chDB (ClickHouse in-process), data kept in /abs/dir
    http(s)://user:pass@host:port/db      a ClickHouse server; ``db`` defaults to ``npsflow``; or without
                                          ``:pass`` and ``password_file=`` (NPSFLOW_CLICKHOUSE_PASSWORD_FILE),
                                          ``ca_file=`` (NPSFLOW_CLICKHOUSE_CA_FILE) for https

The same code, the same DDL and the same queries run on both.

chDB facts this module is built around (chdb 4.4.0 / clickhouse-connect 1.12.0, verified):

* one process hosts at most ONE chDB engine path at a time. Several clients on the same path share it;
  opening a different path while a client is open fails ("EmbeddedServer already initialized with path …").
  Once every client on that path is closed, another path (or the same one again) can be opened.
* the directory is locked to its process while open: a second process cannot open it until the first closes
  all its clients ("Error initializing EmbeddedServer").
* calls block the calling thread (no GIL-free async). All calls on a DSN therefore go through one
  single-thread executor shared by every ``ClickHouseStore`` on that DSN in this process.

Stores are reference-counted per DSN: the client and its thread are closed when the last store on the DSN
closes (``close_all()`` closes everything, e.g. in tests).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import unquote, urlparse, urlunparse

import clickhouse_connect

log = logging.getLogger("npsflow.clickhouse")

DEFAULT_DATABASE = "npsflow"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
T = TypeVar("T")


class ClickHouseError(RuntimeError):
    """Opening or using the store failed in a way the user has to act on (message says how)."""


class MigrationError(ClickHouseError):
    pass


def quote_ident(name: str) -> str:
    """Backquote a database/table identifier after validating it (identifiers are never user free text)."""
    if not _IDENT.match(name or ""):
        raise ValueError(f"invalid ClickHouse identifier {name!r}")
    return f"`{name}`"


# ------------------------------------------------------------------------------------------------ DSN parsing
@dataclass(frozen=True)
class Target:
    kind: str  # "chdb" or "http"
    key: str  # cache key: the normalised chDB path, or the server DSN without its database
    path: str | None  # chDB directory
    server_dsn: str | None  # http(s) DSN without the database path
    database: str
    password_file: Path | None = None  # the server password is read from it when the client opens
    ca_file: Path | None = None  # PEM CA for an https server's certificate


def parse_dsn(dsn: str, database: str | None = None, *, password_file: Path | str | None = None,
              ca_file: Path | str | None = None) -> Target:
    """Where ``dsn`` points. For a server: ``password_file`` holds the password (the DSN then carries none) and
    ``ca_file`` the CA of an https server's certificate (default: the system's / certifi's trust store)."""
    if not isinstance(dsn, str) or not dsn:
        raise ValueError("empty ClickHouse DSN")
    parsed = urlparse(dsn)
    if parsed.scheme == "chdb":
        path = unquote(parsed.path)
        if parsed.netloc or not path or not os.path.isabs(path):  # chdb://memory, chdb://relative/x
            raise ValueError(f"chdb DSN must be chdb:///absolute/dir, got {dsn!r}")
        path = os.path.realpath(path)  # chDB compares engine paths literally
        db = database or DEFAULT_DATABASE
        quote_ident(db)
        if password_file or ca_file:
            raise ValueError("a password or CA file is for a ClickHouse server, not embedded chDB")
        return Target("chdb", f"chdb://{path}", path, None, db)
    if parsed.scheme in ("http", "https"):
        db = database or unquote(parsed.path.strip("/").split("/")[0]) or DEFAULT_DATABASE
        quote_ident(db)
        server = urlunparse(parsed._replace(path="", params="", fragment=""))
        if password_file and parsed.password:
            raise ValueError("the ClickHouse DSN has a password and a password file is given: keep only one")
        if ca_file and parsed.scheme != "https":
            raise ValueError("a ClickHouse CA file needs an https:// DSN")
        pw, ca = (Path(p).resolve() if p else None for p in (password_file, ca_file))
        key = server + (f"#password_file={pw}" if pw else "") + (f"#ca_file={ca}" if ca else "")
        return Target("http", key, None, server, db, pw, ca)
    raise ValueError(f"ClickHouse DSN must start with chdb://, http:// or https://, got {dsn!r}")


def _redact(dsn: str) -> str:
    from npsflow.redact import redact_dsn

    return redact_dsn(dsn)


# ------------------------------------------------------------------------------------------------ engines
class _Engine:
    """One clickhouse-connect client + the single thread every call on it runs in."""

    def __init__(self, target: Target):
        self.target = target
        self.refs = 0
        self.closed = False
        self.thread_ident: int | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse",
                                           initializer=self._mark_thread)
        try:
            self.client = self.executor.submit(self._open).result()
        except BaseException:
            self.executor.shutdown(wait=False)
            raise
        self.databases: set[str] = set()

    def _mark_thread(self) -> None:
        self.thread_ident = threading.get_ident()

    def _open(self):
        t = self.target
        if t.kind == "chdb":
            os.makedirs(t.path, exist_ok=True)
            try:
                return clickhouse_connect.get_client(dsn=f"chdb://{t.path}", tz_mode="aware")
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else repr(exc)
                if "already initialized with path" in first:
                    raise ClickHouseError(
                        f"cannot open chDB at {t.path}: this process already hosts chDB at another path "
                        f"(chDB allows one engine path per process; close stores on it first): {first}") from exc
                raise ClickHouseError(
                    f"cannot open chDB at {t.path} (is another process, e.g. a running npsflow worker, "
                    f"using it? chDB locks its directory to one process): {first}") from exc
        options: dict = {}
        if t.password_file:
            try:
                options["password"] = t.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise ClickHouseError(f"cannot read the ClickHouse password file {t.password_file}: "
                                      f"{type(exc).__name__}") from None
            if not urlparse(t.server_dsn).username:
                options["username"] = "default"
        if t.ca_file:
            options["ca_cert"] = str(t.ca_file)
        return clickhouse_connect.get_client(dsn=t.server_dsn, tz_mode="aware", autogenerate_session_id=False,
                                             **options)

    def in_thread(self) -> bool:
        return threading.get_ident() == self.thread_ident

    def call(self, fn: Callable[[], T]) -> T:
        if self.in_thread():
            return fn()
        return self.executor.submit(fn).result()

    def ensure_database(self, database: str) -> None:
        if database not in self.databases:
            self.call(lambda: self.client.command(f"CREATE DATABASE IF NOT EXISTS {quote_ident(database)}"))
            self.databases.add(database)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True

        def _close():
            try:
                self.client.close()
            except Exception:  # closing must not mask the caller's own error
                log.warning("closing ClickHouse client for %s failed", _redact(self.target.key), exc_info=True)

        if self.in_thread():
            _close()
            self.executor.shutdown(wait=False)
        else:
            self.executor.submit(_close).result()
            self.executor.shutdown(wait=True)


_engines: dict[str, _Engine] = {}
_engines_lock = threading.RLock()


def _engine(target: Target) -> _Engine:
    with _engines_lock:
        engine = _engines.get(target.key)
        if engine is None:
            if target.kind == "chdb":
                other = [k for k, e in _engines.items() if e.target.kind == "chdb"]
                if other:
                    raise ClickHouseError(
                        f"cannot open chDB at {target.path}: this process already has chDB open at "
                        f"{other[0][len('chdb://'):]} (chDB allows one engine path per process; close those "
                        f"stores first)")
            engine = _Engine(target)
            _engines[target.key] = engine
        return engine


def connect(dsn: str, database: str | None = None):
    """The process-wide clickhouse-connect client for ``dsn`` (created on first use; database created).

    The client is shared: do not close it yourself, and call it from the store's thread (prefer
    ``ClickHouseStore``). It lives until ``close_all()`` or until the last store on the DSN closes.
    """
    target = parse_dsn(dsn, database)
    engine = _engine(target)
    engine.ensure_database(target.database)
    return engine.client


def open_engines() -> list[str]:
    """Cache keys (``chdb:///path`` or server DSN) of the clients currently open in this process."""
    with _engines_lock:
        return [_redact(k) for k in _engines]


def close_all() -> None:
    """Close every cached client in this process (stores on them become unusable)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.close()


# ------------------------------------------------------------------------------------------------ store
class ClickHouseStore:
    """A database on a ClickHouse (embedded or server), with sync and async access through one thread.

    ``database`` defaults to the DSN's (server) or ``npsflow``. Several stores on one DSN share its client
    and thread; each may use its own database (tests use this for isolation inside one chDB engine).
    """

    def __init__(self, dsn: str, database: str | None = None, *, password_file: Path | str | None = None,
                 ca_file: Path | str | None = None):
        self.target = parse_dsn(dsn, database, password_file=password_file, ca_file=ca_file)
        self.dsn = dsn
        self.database = self.target.database
        with _engines_lock:
            self._engine = _engine(self.target)
            self._engine.refs += 1
        self._closed = False
        try:
            self._engine.ensure_database(self.database)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"ClickHouseStore({_redact(self.dsn)!r}, database={self.database!r})"

    @property
    def is_embedded(self) -> bool:
        return self.target.kind == "chdb"

    @property
    def client(self):
        return self._engine.client

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._engine.executor

    def table(self, name: str) -> str:
        """Fully qualified, quoted name of a table in this store's database."""
        return f"{quote_ident(self.database)}.{quote_ident(name)}"

    def _check(self) -> _Engine:
        if self._closed or self._engine.closed:
            raise ClickHouseError(f"{self!r} is closed")
        return self._engine

    # -- sync API (safe from any thread; runs on the store's thread)
    def insert(self, table: str, rows: list[dict], dedup_token: str | None = None) -> int:
        """Insert rows (dicts with identical keys; omitted columns take their DEFAULT). Returns rows written.

        ``dedup_token`` becomes ``insert_deduplication_token``: a repeated insert with the same token into the
        same table is dropped by ClickHouse (MergeTree tables need non_replicated_deduplication_window > 0).
        """
        if not rows:
            return 0
        columns = list(rows[0].keys())
        data = [[row[c] for c in columns] for row in rows]
        # on a cluster (Distributed tables) the insert returns only once the rows are on the shards: the caller
        # acks Kafka offsets after it; a single server ignores the setting
        settings = {"insert_deduplicate": 1, "distributed_foreground_insert": 1}
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        engine = self._check()
        quote_ident(table)
        summary = engine.call(lambda: engine.client.insert(table, data, column_names=columns,
                                                           database=self.database, settings=settings))
        return int(getattr(summary, "written_rows", len(rows)) or 0)

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        """Run a SELECT; ``{name:Type}`` placeholders are bound server-side from ``params``. Rows as dicts.

        ``{db}`` in the SQL is replaced by this store's quoted database name.
        """
        engine = self._check()
        sql = sql.replace("{db}", quote_ident(self.database))
        return engine.call(lambda: list(engine.client.query(sql, parameters=params or None).named_results()))

    def command(self, sql: str, params: dict | None = None) -> Any:
        engine = self._check()
        sql = sql.replace("{db}", quote_ident(self.database))
        return engine.call(lambda: engine.client.command(sql, parameters=params or None))

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(self, *args, **kwargs)`` on the store's thread (its own store calls run inline)."""
        engine = self._check()
        return engine.call(lambda: fn(self, *args, **kwargs))

    # -- async API (never blocks the event loop)
    async def _async(self, fn: Callable[[], T]) -> T:
        engine = self._check()
        if engine.in_thread():
            return fn()
        return await asyncio.get_running_loop().run_in_executor(engine.executor, fn)

    async def ainsert(self, table: str, rows: list[dict], dedup_token: str | None = None) -> int:
        return await self._async(functools.partial(self.insert, table, rows, dedup_token))

    async def aquery(self, sql: str, params: dict | None = None) -> list[dict]:
        return await self._async(functools.partial(self.query, sql, params))

    async def acommand(self, sql: str, params: dict | None = None) -> Any:
        return await self._async(functools.partial(self.command, sql, params))

    async def arun(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await ``fn(self, *args, **kwargs)`` run on the store's thread, e.g. ``arun(queries.report, by, …)``."""
        return await self._async(functools.partial(fn, self, *args, **kwargs))

    def close(self) -> None:
        """Release this store; the shared client/thread close when the last store on the DSN closes."""
        if self._closed:
            return
        self._closed = True
        with _engines_lock:
            engine = self._engine
            engine.refs -= 1
            if engine.refs > 0 or _engines.get(self.target.key) is not engine:
                return
            del _engines[self.target.key]
        engine.close()

    def __enter__(self) -> "ClickHouseStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ migrations
MIGRATIONS_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS {db}.schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # file name, e.g. 0001_init.sql
    sql: str
    checksum: str = field(repr=False)

    def statements(self, database: str) -> list[str]:
        return split_statements(self.sql.replace("{db}", quote_ident(database)))


def checksum(text: str) -> str:
    """sha256 of the file text with line endings normalised (a CRLF checkout is not a change)."""
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` at end of line, dropping ``--`` comment lines. Migrations keep one statement per `;`."""
    lines = [line for line in sql.replace("\r\n", "\n").split("\n") if not line.lstrip().startswith("--")]
    parts = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return [p.strip() for p in parts if p.strip()]


def load_migrations(directory: Path | str | None = None) -> list[Migration]:
    directory = Path(directory) if directory else MIGRATIONS_DIR
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path.name!r} must be named NNNN_lowercase_name.sql")
        text = path.read_text(encoding="utf-8")
        found.append(Migration(int(match.group(1)), path.name, text, checksum(text)))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}: {versions}")
    return found


def applied_migrations(store: ClickHouseStore) -> dict[int, dict]:
    store.command(MIGRATIONS_TABLE_DDL)
    rows = store.query(
        "SELECT version, argMax(name, applied_at) AS n, argMax(checksum, applied_at) AS c, "
        "max(applied_at) AS t FROM {db}.schema_migrations GROUP BY version ORDER BY version")
    # (aliases must not shadow column names: ClickHouse would see nested aggregates)
    return {int(r["version"]): {"version": int(r["version"]), "name": r["n"], "checksum": r["c"], "applied_at": r["t"]}
            for r in rows}


def migrate(store: ClickHouseStore, directory: Path | str | None = None) -> list[str]:
    """Apply pending migrations in version order; returns the file names applied (empty when up to date).

    Raises MigrationError if an applied migration's file changed (checksum differs) or disappeared.
    """
    migrations = load_migrations(directory)
    done = applied_migrations(store)
    by_version = {m.version: m for m in migrations}
    for version, row in done.items():
        mig = by_version.get(version)
        if mig is None:
            raise MigrationError(f"migration {row['name']} (version {version}) was applied to "
                                 f"{store.database} but its file is missing")
        if mig.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {mig.name} was changed after it was applied to database {store.database} "
                f"(recorded checksum {row['checksum'][:12]}…, file now {mig.checksum[:12]}…). Applied migrations "
                f"are immutable: revert the edit and add a new numbered migration instead.")
    applied: list[str] = []
    for mig in migrations:
        if mig.version in done:
            continue
        for statement in mig.statements(store.database):
            try:
                store.command(statement)
            except Exception as exc:
                raise MigrationError(f"migration {mig.name} failed on: {statement.splitlines()[0][:120]} … "
                                     f"-> {str(exc).splitlines()[0] if str(exc) else repr(exc)}") from exc
        store.insert("schema_migrations", [{"version": mig.version, "name": mig.name, "checksum": mig.checksum,
                                             "applied_at": datetime.now(timezone.utc)}])
        log.info("applied migration %s to %s", mig.name, store.database)
        applied.append(mig.name)
    return applied


# Retention (NPSFLOW_RETENTION): how long analytics rows are kept, as a TTL on their event time. Applied at every
# worker start as a desired state (set, changed or removed), not as a migration: it is configuration.
RETENTION_COLUMNS = {"responses": "responded_at", "dispatches": "decided_at", "dead_letters": "failed_at",
                     "alerts": "created_at", "responses_by_day": "day", "comments_by_day": "day", "nps_daily": "day",
                     "terms_daily": "day", "nps_daily_touched": "day", "nps_daily_state": "day",
                     "terms_daily_state": "day", "cases": "opened_at"}
MAX_RETENTION_DAYS = 36_500


def apply_retention(store: ClickHouseStore, days: int | None, dispatch_extra_days: int = 0) -> dict[str, str]:
    """Make each table's TTL ``<event time> + days`` (None: keep rows forever). Rows past it disappear at the
    next merge (ClickHouse TTL), reads in between still see them. Returns table → "set"/"removed"/"unchanged".
    Changing it rewrites the table's parts in the background (ClickHouse materializes a modified TTL).
    ``dispatch_extra_days``: dispatches are kept that much longer (a response comes up to a link lifetime after
    its invitation, and finds its organization through it)."""
    if days is not None and not 1 <= int(days) <= MAX_RETENTION_DAYS:
        raise ValueError(f"retention must be 1–{MAX_RETENTION_DAYS} days, got {days}")
    done = {}
    for table, column in RETENTION_COLUMNS.items():
        table_days = None if days is None else days + (dispatch_extra_days if table == "dispatches" else 0)
        create = store.query("SELECT create_table_query AS q FROM system.tables WHERE database = {d:String} "
                             "AND name = {t:String}", {"d": store.database, "t": table})
        current = create[0]["q"] if create else ""
        # on the DateTime64 column itself: toDateTime() of a date past 2106 wraps around (and would expire it)
        wanted = None if table_days is None else f"TTL {column} + toIntervalDay({int(table_days)})"
        if wanted is None:
            if " TTL " in current:
                store.command(f"ALTER TABLE {{db}}.{table} REMOVE TTL")
                done[table] = "removed"
            else:
                done[table] = "unchanged"
        elif f"toIntervalDay({int(table_days)})" in current and " TTL " in current:
            done[table] = "unchanged"
        else:
            store.command(f"ALTER TABLE {{db}}.{table} MODIFY TTL {column} + toIntervalDay({int(table_days)})")
            done[table] = "set"
    return done


class DeferredStore:
    """A ClickHouseStore on a server opened at first use, not at construction: a worker that only reads (role
    web) starts while the server is down and says so in /readyz instead of exiting. A failed open is tried again
    at most every ``retry_seconds``; until then every call raises ClickHouseError with the first line of why.
    Only the async methods (``aquery``, ``arun``) are offered: the open runs off the event loop."""

    def __init__(self, opener: Callable[[], "ClickHouseStore"], retry_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.opener, self.retry_seconds, self.clock = opener, retry_seconds, clock
        self.store: ClickHouseStore | None = None
        self.failed: tuple[float, str] | None = None
        self._lock = asyncio.Lock()

    async def opened(self) -> "ClickHouseStore":
        if self.store is not None:
            return self.store
        async with self._lock:
            if self.store is None:
                if self.failed is not None and self.clock() - self.failed[0] < self.retry_seconds:
                    raise ClickHouseError(self.failed[1])
                try:
                    self.store = await asyncio.to_thread(self.opener)
                except Exception as exc:
                    first = (str(exc).strip().splitlines() or [""])[0][:200]
                    first = re.sub(r"://[^/@\s]*@", "://***@", first)  # never a user:password@ of a URL
                    self.failed = (self.clock(), f"cannot open ClickHouse: {type(exc).__name__}: {first}")
                    raise ClickHouseError(self.failed[1]) from None
                self.failed = None
        return self.store

    async def aquery(self, sql: str, params: dict | None = None) -> list[dict]:
        return await (await self.opened()).aquery(sql, params)

    async def arun(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await (await self.opened()).arun(fn, *args, **kwargs)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
