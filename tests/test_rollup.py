"""The exact daily rollup (sinks.rollup, migration 0005) on real embedded ClickHouse (chDB).

The property everything here checks: ``nps_cells(since, until)`` — whatever mix of rollup and ledger it reads —
returns exactly the counts of the latest version of every answer in the period, per (day, org, segment), as a
plain Python computation over the records says; through edits that move answers between days and segments,
replays, versions arriving out of order, refreshes half-way and new answers after a refresh.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from sinks import bi, clickhouse as ch, rollup, rows
from tests.test_clickhouse import D, H, T0, insert_responses, response

UTC = timezone.utc
HOUR_AGO = lambda: datetime.now(UTC) - timedelta(hours=1)  # noqa: E731 (rows that arrived an hour ago)


def cell_key(segment: dict) -> str:
    return json.dumps(dict(sorted(segment.items())), separators=(",", ":"), ensure_ascii=False)


def expected_cells(records: list[dict], lo: datetime, hi: datetime) -> dict[tuple, Counter]:
    """(day, org, segment) → Counter(score) of the latest version of every answer answered in [lo, hi)."""
    latest: dict[str, dict] = {}
    for r in records:
        if r["response_id"] not in latest or r["version"] > latest[r["response_id"]]["version"]:
            latest[r["response_id"]] = r
    out: dict[tuple, Counter] = defaultdict(Counter)
    for r in latest.values():
        if lo <= r["responded_at"] < hi:
            out[(r["responded_at"].date(), r.get("org_id") or "", cell_key(r["segment"]))][r["score"]] += 1
    return dict(out)


def read_cells(store, lo: datetime, hi: datetime) -> tuple[dict[tuple, Counter], set[str]]:
    result = store.query(
        "SELECT day, org_id, toJSONString(mapSort(segment)) AS cell, sum(responses) AS n, sum(promoters) AS p, "
        "sum(passives) AS pa, sum(detractors) AS d, sumForEach(scores) AS scores, groupUniqArray(source) AS src "
        "FROM {db}.nps_cells(since = {lo:DateTime64(3, 'UTC')}, until = {hi:DateTime64(3, 'UTC')}) "
        "GROUP BY day, org_id, cell", {"lo": lo, "hi": hi})
    cells, sources = {}, set()
    for r in result:
        counts = Counter({score: n for score, n in enumerate(r["scores"]) if n})
        # the category columns agree with the score counts
        assert (r["n"], r["p"], r["pa"], r["d"]) == (
            sum(counts.values()), counts[9] + counts[10], counts[7] + counts[8],
            sum(counts[s] for s in range(7)))
        if counts:
            cells[(r["day"], r["org_id"], r["cell"])] = counts
        sources |= set(r["src"])
    return cells, sources


def expected_comments(records: list[dict]) -> set[tuple]:
    """(response_id, day, score, comment) of every answer whose latest version has a comment."""
    latest: dict[str, dict] = {}
    for r in records:
        if r["response_id"] not in latest or r["version"] > latest[r["response_id"]]["version"]:
            latest[r["response_id"]] = r
    return {(r["response_id"], r["responded_at"].date(), r["score"], r["comment"])
            for r in latest.values() if r.get("comment")}


def read_comments(store) -> set[tuple]:
    """The same from the comments ledger, as the comment panels read it (FINAL, conditions outside)."""
    rows = store.query("SELECT response_id, day, score, comment FROM (SELECT * FROM {db}.comments_by_day FINAL) "
                       "WHERE gone = 0 AND comment != ''")
    return {(r["response_id"], r["day"], r["score"], r["comment"]) for r in rows}


def expected_terms(records: list[dict], lo: datetime, hi: datetime) -> dict[tuple, tuple]:
    """(day, org, segment, lang, term) → (responses, promoters, passives, detractors, respondents) over the latest
    version of every answer answered in [lo, hi) — one answer counts once per term it has, and once under the
    term '' when it has any."""
    latest: dict[str, dict] = {}
    for r in records:
        if r["response_id"] not in latest or r["version"] > latest[r["response_id"]]["version"]:
            latest[r["response_id"]] = r
    counts: dict[tuple, Counter] = defaultdict(Counter)
    people: dict[tuple, set] = defaultdict(set)
    for r in latest.values():
        if lo <= r["responded_at"] < hi:
            terms = set(r.get("terms") or ())
            for term in terms | ({""} if terms else set()):  # '': every answer with text
                key = (r["responded_at"].date(), r.get("org_id") or "", cell_key(r["segment"]), r.get("lang") or "",
                       term)
                counts[key][r["category"]] += 1
                people[key].add(r.get("respondent") or r["response_id"])
    return {k: (sum(c.values()), c["promoter"], c["passive"], c["detractor"], len(people[k]))
            for k, c in counts.items()}


def read_terms(store, lo: datetime, hi: datetime) -> dict[tuple, tuple]:
    result = store.query(
        "SELECT day, org_id, toJSONString(mapSort(segment)) AS cell, lang, term, sum(responses) AS n, "
        "sum(promoters) AS p, sum(passives) AS pa, sum(detractors) AS d, uniqExactMerge(respondents) AS people "
        "FROM {db}.term_cells(since = {lo:DateTime64(3, 'UTC')}, until = {hi:DateTime64(3, 'UTC')}) "
        "GROUP BY day, org_id, cell, lang, term", {"lo": lo, "hi": hi})
    return {(r["day"], r["org_id"], r["cell"], r["lang"], r["term"]): (r["n"], r["p"], r["pa"], r["d"], r["people"])
            for r in result if r["n"]}


def insert(store, records: list[dict], inserted_at: datetime | None = None, offset: int = 0) -> None:
    insert_responses(store, records, first_offset=offset, inserted_at=inserted_at)


def edit(first: dict, score: int, at: datetime, **changes) -> dict:
    """The next version of an answer as classify emits it: a newer version carrying the other days its earlier
    versions had."""
    category = "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
    days = {*first.get("earlier_days", ()), first["responded_at"].date()} - {at.date()}
    return {**first, "score": score, "category": category, "responded_at": at, "version": first["version"] + 1,
            "is_edit": True, "previous_score": first["score"], "earlier_days": sorted(days), **changes}


# ================================================================================================ fixed cases
def test_an_edit_moving_an_answer_to_another_day_and_back(ch_store):
    v1 = response("r1", 3, at=T0 + 2 * H, segment={"location": "Espoo"}, org_id="acme")
    v2 = edit(v1, 10, T0 + D + H)                                   # next day, now a promoter
    v3 = edit(v2, 8, T0 + 20 * H, segment={"location": "Turku"})    # back to the first day, another location
    other = response("r2", 9, at=T0 + 3 * H, segment={"location": "Espoo"}, org_id="acme")
    insert(ch_store, [v1, other])
    insert(ch_store, [v2])
    period = (T0, T0 + 2 * D)
    assert read_cells(ch_store, *period)[0] == expected_cells([v1, other, v2], *period) == {
        (T0.date(), "acme", '{"location":"Espoo"}'): Counter({9: 1}),
        ((T0 + D).date(), "acme", '{"location":"Espoo"}'): Counter({10: 1})}
    insert(ch_store, [v3])
    assert read_cells(ch_store, *period)[0] == expected_cells([v1, other, v2, v3], *period) == {
        (T0.date(), "acme", '{"location":"Espoo"}'): Counter({9: 1}),
        (T0.date(), "acme", '{"location":"Turku"}'): Counter({8: 1})}
    # the ledger: a tombstone under the day the answer left, in both directions
    ledger = ch_store.query("SELECT day, version, gone FROM {db}.responses_by_day FINAL WHERE response_id = 'r1' "
                            "ORDER BY day")
    assert [(r["day"], r["version"], r["gone"]) for r in ledger] == [(T0.date(), 3, 0), ((T0 + D).date(), 3, 1)]


def test_versions_arriving_out_of_order_and_replays_count_once(ch_store):
    v1 = response("r1", 2, at=T0 + H, segment={"location": "Espoo"})
    v2 = edit(v1, 9, T0 + D + H)
    v3 = edit(v2, 6, T0 + 2 * D + H)
    insert(ch_store, [v3])           # any order (e.g. a version dead-lettered by the sink and replayed later)
    insert(ch_store, [v1, v1])       # …and a replay
    insert(ch_store, [v2, v3, v1])
    period = (T0 - D, T0 + 4 * D)
    assert read_cells(ch_store, *period)[0] == expected_cells([v1, v2, v3], *period) == {
        ((T0 + 2 * D).date(), "", '{"location":"Espoo"}'): Counter({6: 1})}


def test_a_filter_never_lets_an_older_version_replace_a_newer_one(ch_store):
    """The ledger is read with FINAL: a condition on the answer's time or tombstone must apply to the latest
    version only. v1 at 10:00 lies in the period, its edit v2 at 15:00 (same day) does not: nothing counts."""
    v1 = response("r1", 9, at=T0 + 10 * H)
    v2 = edit(v1, 0, T0 + 15 * H)
    moved = response("r2", 9, at=T0 + 11 * H)
    gone = edit(moved, 9, T0 + D + H)  # its tombstone on T0's day has the newer version
    insert(ch_store, [v1, moved])
    insert(ch_store, [v2, gone])
    for lo, hi in ((T0, T0 + 12 * H), (T0, T0 + D), (T0 + 14 * H, T0 + 2 * D)):
        assert read_cells(ch_store, lo, hi)[0] == expected_cells([v1, v2, moved, gone], lo, hi)
    assert read_cells(ch_store, T0, T0 + 12 * H)[0] == {}


def test_clean_days_come_from_the_rollup_and_edges_from_the_ledger(ch_store):
    records = [response(f"r{i}", i % 11, at=T0 + i * 5 * H, segment={"location": "Espoo" if i % 2 else "Oulu"})
               for i in range(20)]  # 05-01 .. 05-04
    insert(ch_store, records, inserted_at=HOUR_AGO())
    result = rollup.refresh(ch_store)
    assert sorted(result.days) == sorted({r["responded_at"].date() for r in records}) and result.pending == 0
    assert "refreshed 4 days" in result.summary()
    # whole days only: from the rollup
    cells, sources = read_cells(ch_store, T0, T0 + 4 * D)
    assert cells == expected_cells(records, T0, T0 + 4 * D) and sources == {"rollup"}
    # a period with partial days at both ends: the edges from the ledger, the middle from the rollup
    lo, hi = T0 + 7 * H + timedelta(minutes=30), T0 + 3 * D + 4 * H
    cells, sources = read_cells(ch_store, lo, hi)
    assert cells == expected_cells(records, lo, hi) and sources == {"rollup", "ledger"}
    by_source = ch_store.query("SELECT source, groupUniqArray(day) AS days FROM {db}.nps_cells(since = {lo:DateTime64"
                               "(3, 'UTC')}, until = {hi:DateTime64(3, 'UTC')}) GROUP BY source ORDER BY source",
                               {"lo": lo, "hi": hi})
    assert {r["source"]: sorted(r["days"]) for r in by_source} == {
        "ledger": [T0.date(), (T0 + 3 * D).date()], "rollup": [(T0 + D).date(), (T0 + 2 * D).date()]}
    # nothing left to do: a second refresh recomputes nothing
    assert rollup.refresh(ch_store).days == []


def test_an_answer_arriving_after_the_refresh_makes_its_day_read_from_the_ledger(ch_store):
    first = [response("a", 10, at=T0 + H), response("b", 0, at=T0 + 2 * H), response("c", 8, at=T0 + D + H)]
    insert(ch_store, first, inserted_at=HOUR_AGO())
    rollup.refresh(ch_store)
    late = [response("d", 9, at=T0 + 3 * H), edit(first[1], 9, T0 + 4 * H)]  # a late answer and an edit, now
    insert(ch_store, late)
    period = (T0, T0 + 2 * D)
    cells, sources = read_cells(ch_store, *period)
    assert cells == expected_cells(first + late, *period) and sources == {"rollup", "ledger"}
    assert ch_store.query("SELECT DISTINCT day FROM {db}.nps_cells(since = {lo:DateTime64(3, 'UTC')}, "
                          "until = {hi:DateTime64(3, 'UTC')}) WHERE source = 'ledger'",
                          {"lo": T0, "hi": T0 + 2 * D}) == [{"day": T0.date()}]
    # not quiet yet: the refresher leaves the day alone; once recomputed it still reads from the ledger until the
    # margin has passed after the last arrival — and the numbers are the same throughout
    assert rollup.refresh(ch_store).days == []
    assert rollup.refresh(ch_store, quiet_seconds=0).days == [T0.date()]
    assert read_cells(ch_store, *period)[0] == expected_cells(first + late, *period)


def test_cells_that_empty_out_are_deleted_and_refresh_is_idempotent(ch_store):
    v1 = response("r1", 9, at=T0 + H, segment={"location": "Espoo"})
    insert(ch_store, [v1], inserted_at=HOUR_AGO())
    rollup.refresh(ch_store)
    insert(ch_store, [edit(v1, 9, T0 + 2 * H, segment={"location": "Turku"})], inserted_at=HOUR_AGO())
    for _ in range(2):  # twice: the same result
        rollup.refresh_day(ch_store, T0.date())
        final = ch_store.query("SELECT cell, responses FROM {db}.nps_daily FINAL ORDER BY cell")
        assert final == [{"cell": '{"location":"Turku"}', "responses": 1}]
    # the Espoo cell is still there physically, as a deleted row (FINAL drops it)
    assert ch_store.query("SELECT cell, deleted FROM {db}.nps_daily WHERE cell LIKE '%Espoo%' AND deleted = 1")


def test_rebuild_recomputes_every_day(ch_store):
    records = [response(f"r{i}", 9, at=T0 + i * D) for i in range(3)]
    insert(ch_store, records, inserted_at=HOUR_AGO())
    assert len(rollup.refresh(ch_store).days) == 3
    assert len(rollup.rebuild(ch_store).days) == 3
    assert rollup.refresh(ch_store, limit=1).days == []
    cells, sources = read_cells(ch_store, T0, T0 + 3 * D)
    assert cells == expected_cells(records, T0, T0 + 3 * D) and sources == {"rollup"}


def test_refresh_limit_takes_the_newest_days_first(ch_store):
    insert(ch_store, [response(f"r{i}", 9, at=T0 + i * D) for i in range(4)], inserted_at=HOUR_AGO())
    first = rollup.refresh(ch_store, limit=3)
    assert first.days == [(T0 + i * D).date() for i in (3, 2, 1)] and first.pending == 1
    assert "1 days pending" in first.summary()
    assert rollup.refresh(ch_store, limit=3).days == [T0.date()]


def test_migration_backfills_the_ledger_from_existing_responses(ch_dsn, tmp_path):
    """A database with answers from before migration 0005 (no earlier_days): the backfill writes every
    answer under its day and a tombstone under the other days its versions had."""
    older = tmp_path / "older"
    older.mkdir()
    for mig in ch.load_migrations():
        if mig.version < 5:
            (older / mig.name).write_text(mig.sql)
    store = ch.ClickHouseStore(ch_dsn)
    try:
        ch.migrate(store, older)
        v1 = response("r1", 2, at=T0 + H, segment={"location": "Espoo"})
        v2 = {**v1, "score": 10, "category": "promoter", "version": 2, "responded_at": T0 + D + H}
        plain = [response("r2", 7, at=T0 + 2 * H), response("r3", 9, at=T0 + D)]
        legacy = [rows.response_row(r, 0, i) for i, r in enumerate([v1, v2, *plain])]
        for row in legacy:  # the columns of migrations 0005 and 0006 do not exist yet
            for column in ("earlier_days", "org_id", "lang", "terms", "respondent"):
                row.pop(column)
        store.insert("responses", legacy)
        assert [m.split("_")[0] for m in ch.migrate(store)] == ["0005", "0006", "0007", "0008", "0009"]
        rollup.apply_view(store)
        period = (T0, T0 + 2 * D)
        assert read_cells(store, *period)[0] == expected_cells([v1, v2, *plain], *period)
        assert bi.apply_views(store)[0] == "nps_cells"
    finally:
        store.close()


def test_repair_rewrites_the_ledger_after_edits_that_came_without_earlier_days(ch_store):
    """Records classified by a version before migration 0005 (in flight at the upgrade) carry no earlier_days: the
    ledger would count such an edited answer on its old day too. ``repair`` rewrites the ledger from responses, and
    takes an answer's organization from its invitation's dispatch when the answer has none."""
    rollup.apply_view(ch_store, margin_seconds=0)
    v1 = response("r1", 2, at=T0 + H, invitation_id="inv-1")
    v2 = {**v1, "score": 10, "category": "promoter", "version": 2, "responded_at": T0 + D + H}  # no earlier_days
    insert(ch_store, [v1])
    insert(ch_store, [v2], offset=1)
    ch_store.insert("dispatches", [rows.dispatch_row({
        "dispatch_id": "inv-1", "invitation_id": "inv-1", "event_id": "e1", "org_id": "acme", "contact_key": "c",
        "channel": "email", "status": "sent", "decided_at": T0, "segment": {}}, 0, 0)])
    period = (T0, T0 + 2 * D)
    assert read_cells(ch_store, *period)[0] == {  # counted twice: the limit the repair is for
        (T0.date(), "", "{}"): Counter({2: 1}), ((T0 + D).date(), "", "{}"): Counter({10: 1})}
    assert rollup.repair(ch_store) == 2  # r1's latest version under 05-02, its tombstone under 05-01
    assert read_cells(ch_store, *period)[0] == {((T0 + D).date(), "acme", "{}"): Counter({10: 1})}
    assert rollup.repair(ch_store) == 2  # again: the same rows once more, the same numbers
    assert read_cells(ch_store, *period)[0] == {((T0 + D).date(), "acme", "{}"): Counter({10: 1})}
    # the repaired days are dirty now: recomputed once quiet, from the repaired ledger
    assert sorted(refresh_now(ch_store).days) == [T0.date(), (T0 + D).date()]
    assert read_cells(ch_store, *period) == ({((T0 + D).date(), "acme", "{}"): Counter({10: 1})}, {"rollup"})


def test_refresh_stops_taking_days_after_its_time_budget(ch_store):
    insert(ch_store, [response(f"r{i}", 9, at=T0 + i * D) for i in range(4)], inserted_at=HOUR_AGO())
    first = rollup.refresh(ch_store, budget_seconds=0)  # at least one day, then no new one
    assert (first.days, first.pending) == ([(T0 + 3 * D).date()], 3)
    assert len(rollup.refresh(ch_store, budget_seconds=3600).days) == 3


# ================================================================================================ property test
def refresh_now(store, limit: int | None = None) -> rollup.RefreshResult:
    """Refresh with no quiet time and no margin (an embedded store: an insert is visible when it returns), once
    the server clock has moved past the last arrival (a day is only taken when it was quiet "before now")."""
    last = store.query("SELECT max(last_insert) AS t FROM {db}.nps_daily_touched")[0]["t"]
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while rollup.server_now(store) <= last and datetime.now(UTC) < deadline:
        pass  # at most a millisecond: DateTime64(3)
    return rollup.refresh(store, quiet_seconds=0, margin_seconds=0, limit=limit)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_edits_replays_and_refreshes_always_read_exactly(ch_store, seed):
    """Random answers over 6 days (orgs, locations, channels); edits that change score, segment and day; replays;
    all versions in random order (gaps included); refreshes of some days in between, new rows after them. After
    every step, ``nps_cells`` equals the Python reference for whole-day and ragged periods; at the end, with
    every day recomputed, from the rollup."""
    rollup.apply_view(ch_store, margin_seconds=0)
    rng = random.Random(seed)
    emitted: list[dict] = []
    for i in range(120):
        at = T0 + timedelta(minutes=rng.randrange(6 * 24 * 60))
        version = response(f"r{i}", rng.randrange(11), at=at, org_id=rng.choice(["acme", "bolt", None]),
                           segment={k: rng.choice(vals) for k, vals in
                                    (("location", ["Espoo", "Oulu"]), ("channel", ["sms", "email"]))
                                    if rng.random() < 0.8},
                           comment=f"c{i}" if rng.random() < 0.3 else None,
                           lang=rng.choice(["sv", "fi"]), terms=rng.sample(["lasku", "kallt", "inte bra", "kö"],
                                                                           rng.randrange(3)),
                           respondent=rng.choice(["", "k1", "k2", "k3"]))
        emitted.append(version)
        while rng.random() < 0.35:  # edits, sometimes a day or two later, sometimes in another segment
            later = version["responded_at"] + timedelta(minutes=rng.randrange(1, 3 * 24 * 60))
            changes = {"segment": {"location": rng.choice(["Espoo", "Turku"])}} if rng.random() < 0.3 else {}
            if rng.random() < 0.5:  # the edit writes, changes or removes the comment
                changes["comment"] = rng.choice([None, f"c{i}-{version['version'] + 1}"])
                changes["terms"] = rng.sample(["lasku", "kallt", "inte bra", "kö"], rng.randrange(3))
            version = edit(version, rng.randrange(11), later, **changes)
            emitted.append(version)
    deliveries = emitted + rng.sample(emitted, 40)  # replays
    rng.shuffle(deliveries)
    periods = [(T0, T0 + 3 * D), (T0 + D, T0 + 9 * D), (T0 + 5 * H, T0 + 4 * D + 17 * H),
               (T0 + D + 30 * timedelta(minutes=1), T0 + D + 2 * H), (T0 - D, T0 + 10 * D)]
    sent: list[dict] = []
    used: set[str] = set()
    for step, start in enumerate(range(0, len(deliveries), 23)):
        batch = deliveries[start:start + 23]
        insert(ch_store, batch, offset=start)
        sent += batch
        if step % 2:
            refresh_now(ch_store, limit=rng.choice([None, 2]))
        for lo, hi in periods:
            cells, sources = read_cells(ch_store, lo, hi)
            assert cells == expected_cells(sent, lo, hi), (step, lo, hi)
            assert read_terms(ch_store, lo, hi) == expected_terms(sent, lo, hi), (step, lo, hi)
            used |= sources
        assert read_comments(ch_store) == expected_comments(sent), step
    assert used == {"rollup", "ledger"}
    refresh_now(ch_store)
    for lo, hi in periods[:2]:  # whole days: every one recomputed after its last row
        assert read_cells(ch_store, lo, hi) == (expected_cells(sent, lo, hi), {"rollup"})
        assert read_terms(ch_store, lo, hi) == expected_terms(sent, lo, hi)
    assert ch_store.query("SELECT DISTINCT source FROM {db}.term_cells(since = {lo:DateTime64(3, 'UTC')}, "
                          "until = {hi:DateTime64(3, 'UTC')})", {"lo": T0, "hi": T0 + 3 * D}) == [{"source": "rollup"}]


# ================================================================================================ in the worker
async def test_the_worker_timer_refreshes_quiet_days(tmp_path, ch_store):
    """The sink installs the ``refresh_rollups`` timer (every 30 s in a worker): one run recomputes the days
    that went quiet and counts them."""
    from tests.test_agents import Harness

    harness = Harness(tmp_path, store_factory=lambda: ch_store)
    records = [response(f"r{i}", 9 - i, at=T0 + i * D) for i in range(3)]
    insert(ch_store, records, inserted_at=HOUR_AGO())
    await harness.pipeline.timers["refresh_rollups"]()
    assert harness.pipeline.stats.as_dict()["rollup.days_refreshed"] == 3
    assert read_cells(ch_store, T0, T0 + 3 * D) == (expected_cells(records, T0, T0 + 3 * D), {"rollup"})
    await harness.pipeline.timers["refresh_rollups"]()  # nothing new: nothing recomputed
    assert harness.pipeline.stats.as_dict()["rollup.days_refreshed"] == 3


def test_a_refresher_of_an_older_version_never_makes_the_terms_look_clean(ch_store):
    """A rolling upgrade: a sink of the previous version recomputes a day's nps_daily and records it in
    nps_daily_state, never terms_daily. The day's terms keep coming from the ledger (exact), and the day stays
    dirty for the new refresher, which then recomputes both."""
    rollup.apply_view(ch_store, margin_seconds=0)
    records = [response(f"r{i}", i % 11, at=T0 + i * H, lang="fi", terms=["lasku"] if i % 2 else ["jono"])
               for i in range(10)]
    insert(ch_store, records, inserted_at=HOUR_AGO())
    old_refresher = rollup._RECOMPUTE.replace("{day:Date32}", "toDate32('2024-05-01')")
    ch_store.command(old_refresher, {"gen": rollup.server_now(ch_store)})
    ch_store.insert("nps_daily_state", [{"day": T0.date(), "computed_at": rollup.server_now(ch_store)}])
    period = (T0, T0 + D)
    assert read_cells(ch_store, *period) == (expected_cells(records, *period), {"rollup"})  # the old one's work
    assert read_terms(ch_store, *period) == expected_terms(records, *period)
    sources = ch_store.query("SELECT DISTINCT source FROM {db}.term_cells(since = {lo:DateTime64(3, 'UTC')}, "
                             "until = {hi:DateTime64(3, 'UTC')})", {"lo": T0, "hi": T0 + D})
    assert sources == [{"source": "ledger"}]
    assert rollup.dirty_days(ch_store) == [T0.date()]
    assert refresh_now(ch_store).days == [T0.date()]
    assert read_terms(ch_store, *period) == expected_terms(records, *period)
    assert ch_store.query("SELECT DISTINCT source FROM {db}.term_cells(since = {lo:DateTime64(3, 'UTC')}, "
                          "until = {hi:DateTime64(3, 'UTC')})", {"lo": T0, "hi": T0 + D}) == [{"source": "rollup"}]
