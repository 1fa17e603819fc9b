"""Read side for the CLI: the same query functions, run where the data can be opened.

Embedded chDB locks its directory to one process. While a worker runs on an embedded DSN, the CLI asks the
worker's internal listener (``internal_url`` in worker.json, with ``NPSFLOW_INTERNAL_TOKEN`` as bearer when
set; web.internal runs sinks.queries in-process); otherwise it opens the store itself (a server DSN,
or embedded with no worker running). Both paths return identical dicts.
"""

from __future__ import annotations

from datetime import datetime

import requests

from npsflow.config import Settings


class ReadError(Exception):
    pass


def _via_worker(settings: Settings) -> dict | None:
    if not settings.is_embedded_clickhouse:
        return None
    info = settings.worker_info()
    return info if info and info.get("ready") else None


def internal_headers(settings: Settings) -> dict[str, str]:
    """The Authorization header the worker's internal listener wants (none when no token is configured)."""
    return {"Authorization": f"Bearer {settings.internal_token}"} if settings.internal_token else {}


def _get(settings: Settings, info: dict, path: str, params: dict) -> dict | list:
    return ask_worker(settings, info, "GET", path, params={k: v for k, v in params.items() if v is not None})


def ask_worker(settings: Settings, info: dict, method: str, path: str, *, params: dict | None = None,
               body: dict | None = None, timeout: float = 60, what: str = "query") -> dict | list:
    """One request to the running worker's internal listener (with its token); its JSON, or ReadError in one
    line: no answer, the token missing, or the worker's own refusal (``the worker refused the <what>: …``)."""
    url = f"{info['internal_url']}{path}"
    try:
        resp = requests.request(method, url, params=params, json=body, timeout=timeout,
                                headers=internal_headers(settings))
    except requests.RequestException as exc:
        raise ReadError(f"the worker (pid {info.get('pid')}) did not answer on {url}: {exc}") from None
    if resp.status_code == 401:
        raise ReadError("the worker's internal listener wants its token: set NPSFLOW_INTERNAL_TOKEN (or "
                        "NPSFLOW_INTERNAL_TOKEN_FILE) as the worker has it")
    if resp.status_code != 200:
        try:
            message = resp.json().get("error", resp.text)
        except ValueError:
            message = resp.text
        raise ReadError(f"the worker refused the {what}: {message}")
    return resp.json()


def worker_owns_store(settings: Settings) -> bool:
    """True when a running worker holds the embedded ClickHouse (the CLI cannot open it meanwhile)."""
    return _via_worker(settings) is not None


def open_store(settings: Settings):
    """The migrated store of the settings' DSN (with ``nps_cells``), or ReadError with one line saying why not."""
    import logging
    import re

    from sinks.clickhouse import ClickHouseStore, migrate
    from sinks.rollup import apply_view

    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)  # its own line would break "one line"
    try:
        store = ClickHouseStore(settings.clickhouse_dsn, **settings.clickhouse_options)
        migrate(store)
        apply_view(store)  # nps_cells, which the reports read (the worker creates it too, at its start)
    except Exception as exc:  # chDB lock held by another process, server down, …
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        root = re.search(r"(\[Errno \d+\] [^'\")]+)", text)  # urllib3's wrapping hides the cause at the end
        raise ReadError(f"cannot open ClickHouse at {settings.clickhouse_dsn_shown}: "
                        f"{root.group(1) if root else text[:300]}") from None
    return store


def report(settings: Settings, by: list[str], since: datetime | None, until: datetime | None,
           compare_previous: bool = False) -> dict:
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/report", {"by": ",".join(by) or None,
                                                       "since": since.isoformat() if since else None,
                                                       "until": until.isoformat() if until else None,
                                                       "compare_previous": "1" if compare_previous else None})
    from sinks import queries

    if compare_previous:
        return queries.report_compared(open_store(settings), by, since, until)
    return queries.report(open_store(settings), by, since, until)


def windows(settings: Settings, segment: tuple[str, str] | None) -> list[dict]:
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/windows", {"segment": f"{segment[0]}={segment[1]}" if segment else None})
    from sinks import queries

    return queries.windows(open_store(settings), segment)


def deadletters(settings: Settings) -> dict:
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/deadletters", {})
    from sinks import queries

    return queries.deadletters(open_store(settings))


def dispatches(settings: Settings) -> dict:
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/dispatches", {})
    from sinks import queries

    return queries.dispatches(open_store(settings))


def _term_params(query) -> dict:
    """A sinks.terms.TermQuery as the internal API's query parameters."""
    params = {}
    for name, value in query.__dict__.items():
        if value is not None:
            params[name] = value.isoformat() if isinstance(value, datetime) else value
    return params


def terms(settings: Settings, query) -> dict:
    """``npsflow terms``: sinks.terms.terms, via the worker or on the store."""
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/terms", _term_params(query))
    from sinks import terms as read

    return read.terms(open_store(settings), query)


def themes(settings: Settings, query) -> dict:
    """``npsflow themes``: sinks.terms.themes with the worker's themes (NPSFLOW_THEMES, else the example)."""
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/themes", _term_params(query))
    from sinks import terms as read

    return read.themes(open_store(settings), query, read.load_themes(settings.themes_file))


def cloud_words(settings: Settings, since: datetime, until: datetime) -> list[dict]:
    """The word cloud's words (sinks.terms.cloud_words), via the worker or on the store."""
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/cloud", {"since": since.isoformat(), "until": until.isoformat()})
    from sinks import terms as read

    return read.cloud_words(open_store(settings), since, until)


def cases(settings: Settings, status: str | None = None, owner: str | None = None) -> dict:
    """``npsflow cases``: sinks.casebook.cases, via the worker or on the store."""
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/cases", {"status": status, "owner": owner})
    from sinks import casebook

    return casebook.cases(open_store(settings), status, owner)


def case(settings: Settings, case_id: str) -> dict | None:
    """One case (sinks.casebook.case), via the worker or on the store; None when there is none."""
    info = _via_worker(settings)
    if info:
        found = _get(settings, info, "/api/v1/case", {"id": case_id})
        return found.get("case") if isinstance(found, dict) else None
    from sinks import casebook

    store = open_store(settings)
    try:
        return casebook.case(store, case_id)
    finally:
        store.close()


def case_stats(settings: Settings, by: str) -> list[dict]:
    """``npsflow cases stats``: sinks.casebook.case_stats, via the worker or on the store."""
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/cases/stats", {"by": by})
    from sinks import casebook

    return casebook.case_stats(open_store(settings), by)
def alerts(settings: Settings, status: str | None = None) -> dict:
    """``npsflow alerts``: sinks.queries.alerts (latest event of every alert), via the worker or on the store."""
    info = _via_worker(settings)
    if info:
        return _get(settings, info, "/api/v1/alerts", {"status": status})
    from sinks import queries

    return queries.alerts(open_store(settings), status)
