"""GDPR end to end on the real broker and real chDB: two contacts of one organization, each with a trigger → an
invitation (outbox e-mail) → a detractor answer with a comment → a case; ``npsflow forget`` for one of them.

Expected values come from the input: each contact made exactly one invitation, one answer (one version), one
case, so every table that names a contact holds exactly one latest row of the kept contact, and none of the
forgotten one — checked in every table of the database (found in system.tables / system.columns, so a table
added later is covered or makes this test fail), by searching every column's text for the pseudonym, the
contact id and the address."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import requests

from npsflow.reader import open_store
from schemas import codec as avro
from streams import links
from streams.contact_rules import contact_key
from streams.dispatch import link_key
from tests.e2e_helpers import Env, make_env, read_topic, wait_for, write_jsonl
from tests.programs import acme, programs_yaml, service

pytestmark = pytest.mark.kafka

SECRET = "forget-e2e-secret-0123456789"
PROGRAMS = programs_yaml(acme(service(), locale="en"))
GONE = {"id": "cust-gone-4711", "email": "vanish.me@kunde.fi", "event": "ev-gone", "comment": "Zyxgone never again"}
KEPT = {"id": "cust-kept-0815", "email": "stay.here@kunde.fi", "event": "ev-kept", "comment": "Qwkept too slow"}
# every table that names a contact, and the latest rows the kept contact has there (from the input: one
# invitation, one answer, one case)
KEPT_ROWS = {"responses": 1, "responses_by_day": 1, "comments_by_day": 1, "dispatches": 1, "cases": 1}
CONTACT_COLUMNS = {"respondent", "contact_key", "route"}


def texts_of(store, needle: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Latest rows (FINAL where the engine has it) per table whose any column, as text, contains ``needle``."""
    found = {}
    tables = store.query("SELECT name, engine FROM system.tables WHERE database = {d:String} AND "
                         "engine LIKE '%MergeTree%'", {"d": store.database})
    for t in tables:
        if t["name"] in skip:
            continue
        cols = [r["name"] for r in store.query("SELECT name FROM system.columns WHERE database = {d:String} AND "
                                                 "table = {t:String}", {"d": store.database, "t": t["name"]})]
        text = " OR ".join(f"position(toString(`{c}`), {{n:String}}) > 0" for c in cols)
        final = " FINAL" if "Replacing" in t["engine"] else ""
        n = store.query(f"SELECT count() AS n FROM {{db}}.`{t['name']}`{final} WHERE {text}", {"n": needle})[0]["n"]
        if n:
            found[t["name"]] = int(n)
    return found


def latest_values(bootstrap: str, topic: str, json_keys: bool = True) -> dict:
    """The latest value (None: a tombstone) per key of a changelog or compacted topic, keys decoded (JSON
    strings as text — else plain text —; the tables' NUL-prefixed internal keys as bytes)."""
    latest = {}
    for m in read_topic(bootstrap, topic, 1, until_idle=True):
        try:
            key = json.loads(m.key) if json_keys else m.key.decode()
        except ValueError:
            key = m.key
        latest[key] = m.value
    return latest


def survey_link(env: Env, inv: str) -> str:
    token = links.sign_token(inv, datetime.now(timezone.utc) + timedelta(days=1), link_key(SECRET.encode()), "k1")
    return f"{env.public_url}/s/{token}"


def outbox_mail(env: Env) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in (env.home / "outbox" / "email").glob("*.eml")}


def test_forget_erases_every_row_of_one_contact_and_nothing_of_the_other(tmp_path, kafka_bootstrap):
    programs = tmp_path / "programs.yaml"
    programs.write_text(PROGRAMS)
    env = make_env(tmp_path, kafka_bootstrap, NPSFLOW_PROGRAMS=str(programs), NPSFLOW_SECRET=SECRET)
    now = datetime.now(timezone.utc)
    env.start_worker()
    try:
        triggers = [{"event_id": c["event"], "org_id": "acme", "event_type": "job.completed",
                     "occurred_at": now.isoformat(), "contact": {"contact_id": c["id"], "email": c["email"]},
                     "location": "Espoo"} for c in (GONE, KEPT)]
        env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "t.jsonl", triggers)))
        wait_for(lambda: env.stats().get("deliver.invitation.sent", 0) >= 2, what="two invitations sent")
        records = [avro.AvroCodec().decode(m.value) for m in
                   read_topic(kafka_bootstrap, env.settings.topics.dispatches, 2, until_idle=True)]
        by_event = {r["event_id"]: r for r in records}
        for c in (GONE, KEPT):
            c["inv"], c["key"] = by_event[c["event"]]["invitation_id"], by_event[c["event"]]["contact_key"]
            assert c["key"] == contact_key("acme", c["id"], SECRET)  # the pipeline's pseudonym is the keyed one
        mail = outbox_mail(env)
        assert any(GONE["email"] in text for text in mail.values()) and any(KEPT["email"] in t for t in mail.values())

        at = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        answers = [{"response_id": c["inv"], "invitation_id": c["inv"], "score": 2, "responded_at": at,
                    "comment": c["comment"]} for c in (GONE, KEPT)]
        env.cli("ingest", "responses", str(write_jsonl(tmp_path / "a.jsonl", answers)))
        wait_for(lambda: len(env.cli_json("cases")["cases"]) == 2, what="two cases")

        exported = {c["id"]: env.cli_json("export-contact", "--org", "acme", "--contact", c["id"]) for c in (GONE, KEPT)}
        for c in (GONE, KEPT):
            e = exported[c["id"]]
            assert [(r["response_id"], r["score"], r["comment"]) for r in e["responses"]] == [(c["inv"], 2, c["comment"])]
            assert [(d["invitation_id"], d["status"]) for d in e["dispatches"]] == [(c["inv"], "sent")]
            assert [k["response_id"] for k in e["cases"]] == [c["inv"]] and e["pseudonym"] == c["key"]
            assert c["email"] not in json.dumps(e)  # ClickHouse never held the address

        first = json.loads(env.cli("forget", "--org", "acme", "--contact", GONE["id"], "--by", "dpo-anna",
                                   "--format", "json").stdout)
        assert first["erased"]["outbox_files"] == 1
        assert all(first["erased"][t] >= 1 for t in KEPT_ROWS)  # at least the one latest row each (+ versions)
        again = json.loads(env.cli("forget", "--org", "acme", "--contact", GONE["id"], "--format", "json").stdout)
        # erase notes: dispatch (1), deliver (one per invitation: 1), cases (one per route: 1); again: the
        # invitation ids are gone from ClickHouse, dispatch and the contact's own route are always asked
        assert (first["erased"]["state_requests"], again["erased"]["state_requests"]) == (3, 2)
        assert {v for k, v in again["erased"].items() if k != "state_requests"} == {0}  # nothing left to erase

        after = env.cli_json("export-contact", "--org", "acme", "--contact", GONE["id"])
        assert (after["responses"], after["dispatches"], after["cases"], after["dead_letters"]) == ([], [], [], [])
        kept = env.cli_json("export-contact", "--org", "acme", "--contact", KEPT["id"])
        assert kept == exported[KEPT["id"]]  # the other contact's rows untouched
        assert [k["response_id"] for k in env.cli_json("cases")["cases"]] == [KEPT["inv"]]

        mail = outbox_mail(env)
        assert not any(GONE["email"] in t or GONE["inv"] in name for name, t in mail.items())
        assert [name for name, t in mail.items() if KEPT["email"] in t] == [f"{KEPT['inv']}.eml"]

        # the dispatch stage's state: the forgotten contact's keys tombstoned on the changelog, the other's kept
        wait_for(lambda: env.stats().get("erasure.requests", 0) >= 2, what="the two erase requests applied")
        latest = {}
        for m in read_topic(kafka_bootstrap, f"{env.vars['NPSFLOW_NAMESPACE']}-dispatch-state-changelog", 1,
                            until_idle=True):
            latest[json.loads(m.key)] = m.value
        for c, present in ((GONE, False), (KEPT, True)):
            for k in (f"C|acme|{c['key']}", f"E|acme|{c['event']}"):
                assert k in latest and (latest[k] is not None) is present, (k, present)
        assert GONE["email"].encode() not in b"".join(v for v in latest.values() if v)
        assert latest[f"X|acme|{GONE['key']}"] is not None and f"X|acme|{KEPT['key']}" not in latest

        # the other state tables: invitations, the classify memos, the cases (state and compacted topic)
        ns = env.vars["NPSFLOW_NAMESPACE"]
        wait_for(lambda: env.stats().get("deliver.erased", 0) >= 1 and env.stats().get("cases.erased", 0) >= 2
                 and env.stats().get("classify.memos_erased", 0) >= 1, what="the invitation, memo and cases erased")
        invitations = latest_values(kafka_bootstrap, f"{ns}-invitations-changelog")
        assert invitations[f"I|{GONE['inv']}"] is None and invitations[f"I|{KEPT['inv']}"] is not None
        marker = json.loads(invitations[f"Z|{GONE['inv']}"])
        assert set(marker) == {"t", "p"} and f"Z|{KEPT['inv']}" not in invitations
        seen = latest_values(kafka_bootstrap, f"{ns}-responses-seen-changelog")
        gone_memo, kept_memo = json.loads(seen[GONE["inv"]]), json.loads(seen[KEPT["inv"]])
        versions = {c["id"]: exported[c["id"]]["responses"][0]["version"] for c in (GONE, KEPT)}
        assert gone_memo["x"] == marker["t"] and gone_memo["v"] == versions[GONE["id"]]  # still deduplicates
        assert kept_memo["v"] == versions[KEPT["id"]]
        assert not {"k", "seg", "pseg", "h", "s", "ps"} & set(gone_memo) and kept_memo["k"] == KEPT["key"]
        case_ids = {c["id"]: [k["case_id"] for k in exported[c["id"]]["cases"]] for c in (GONE, KEPT)}
        cases_state = latest_values(kafka_bootstrap, f"{ns}-cases-changelog")
        for c, present in ((GONE, False), (KEPT, True)):
            for k in (f"C|{case_ids[c['id']][0]}", f"K|acme|{c['key']}", f"R|acme|{c['inv']}"):
                assert k in cases_state and (cases_state[k] is not None) is present, (k, present)
        case_records = latest_values(kafka_bootstrap, env.settings.topics.cases, json_keys=False)
        assert case_records[case_ids[GONE["id"]][0]] is None and case_records[case_ids[KEPT["id"]][0]] is not None
        everything = b"".join(v for t in (invitations, seen, cases_state, case_records) for v in t.values() if v)
        for needle in (GONE["key"], GONE["email"], GONE["comment"].split()[0]):
            assert needle.encode() not in everything, needle
        assert KEPT["comment"].split()[0].encode() in everything  # the kept contact's are there
        # the running worker: the forgotten contact's link is invalid, the kept one's is not; a re-sent answer of
        # the forgotten contact is dropped by classify (nothing written: checked in ClickHouse below)
        assert requests.get(survey_link(env, GONE["inv"]), timeout=30).status_code == 404
        assert requests.get(survey_link(env, KEPT["inv"]), timeout=30).status_code in (200, 409)
        resent = [{**answers[0], "score": 9}]  # an edit of the erased answer (another version)
        env.cli("ingest", "responses", str(write_jsonl(tmp_path / "resent.jsonl", resent)))
        wait_for(lambda: env.stats().get("classify.erased", 0) >= 1, what="the re-sent answer dropped")

        # a replay of the forgotten contact's trigger surveys nobody and names nobody
        env.cli("ingest", "triggers", str(write_jsonl(tmp_path / "replay.jsonl", triggers[:1])))
        wait_for(lambda: env.stats().get("dispatch.suppressed.erased", 0) >= 1, what="the replay suppressed")
        replayed = [r for r in (avro.AvroCodec().decode(m.value) for m in read_topic(
            kafka_bootstrap, env.settings.topics.dispatches, 3, until_idle=True)) if r["reason"] == "erased"]
        assert [(r["event_id"], r["contact_key"], r["status"]) for r in replayed] == [(GONE["event"], "", "suppressed")]
        wait_for(lambda: env.cli_json("dispatches")["total"] == 2, what="the erased record in ClickHouse")
        assert not any(GONE["email"] in t for t in outbox_mail(env).values())
    finally:
        env.stop_worker()

    store = open_store(env.settings)  # the worker is gone: the embedded store opens here
    try:
        named = {r["table"] for r in store.query(
            "SELECT c.table AS table FROM system.columns AS c INNER JOIN system.tables AS t ON t.database = c.database "
            "AND t.name = c.table WHERE c.database = {d:String} AND t.engine LIKE '%MergeTree%' AND c.name IN "
            "{cols:Array(String)}", {"d": store.database, "cols": sorted(CONTACT_COLUMNS)})}
        assert named == set(KEPT_ROWS)  # a new table naming contacts must be added here (and is erased by forget)
        for needle in (GONE["key"], GONE["id"], GONE["email"], GONE["comment"]):
            assert texts_of(store, needle, skip=("erasures",)) == {}, needle
        # the replay's record: the dispatch id is the event's invitation id, the contact is named by nobody
        assert texts_of(store, GONE["inv"], skip=("erasures",)) == {"dispatches": 1}
        assert store.query("SELECT contact_key, reason FROM {db}.dispatches FINAL WHERE dispatch_id = {i:String}",
                           {"i": GONE["inv"]}) == [{"contact_key": "", "reason": "erased"}]
        assert texts_of(store, KEPT["key"]) == KEPT_ROWS
        assert texts_of(store, KEPT["comment"]) == {"responses": 1, "responses_by_day": 1, "comments_by_day": 1,
                                                    "cases": 1}
        audit = store.query("SELECT * FROM {db}.erasures ORDER BY erased_at")
        assert [(a["org_id"], a["pseudonym"], a["by"]) for a in audit] == [
            ("acme", GONE["key"], "dpo-anna"), ("acme", GONE["key"], again["by"])]
        for needle in (GONE["id"], GONE["email"], GONE["comment"], GONE["inv"]):
            assert needle not in json.dumps(audit, default=str)
    finally:
        store.close()

    # a one-line error and a non-zero exit: unknown organization; a store that cannot be reached
    bad = env.cli("forget", "--org", "nope", "--contact", "x", check=False)
    assert bad.returncode != 0 and "unknown organization 'nope'" in bad.stderr and len(bad.stderr.splitlines()) == 1
    down = Env(env.home, {**env.vars, "NPSFLOW_CLICKHOUSE_DSN": "http://default@127.0.0.1:1/npsflow"})
    gone = down.cli("forget", "--org", "acme", "--contact", KEPT["id"], check=False)
    assert gone.returncode != 0 and "cannot open ClickHouse" in gone.stderr and len(gone.stderr.splitlines()) == 1
