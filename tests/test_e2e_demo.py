"""`npsflow demo` end to end on the real broker: simulated triggers → invitations in the outbox → simulated answers
joined to their invitations → report; the numbers the demo prints agree with what the store and the outbox hold."""

from __future__ import annotations

import email
import json
import re
from email import policy

import pytest

from tests.e2e_helpers import make_env

pytestmark = pytest.mark.kafka


def test_demo_runs_the_survey_flow_from_trigger_events(tmp_path, kafka_bootstrap):
    env = make_env(tmp_path, kafka_bootstrap)
    try:
        # seeded: among 300 random events the two opted-out regulars are missing in ~4 % of runs; seed 2 has them
        proc = env.cli("demo", "--count", "300", "--rate", "300", "--seed", "2", timeout=300)
    finally:
        env.stop_worker()
    out = proc.stdout
    assert "Final report" in out and "stack stopped" in out
    assert "What respondents say" in out
    cloud = re.findall(r"word cloud: (\d+) words → (\S+)", out)
    import xml.etree.ElementTree as ET

    root = ET.parse(cloud[-1][1]).getroot()  # a standalone SVG, well-formed
    assert len(root.findall("{http://www.w3.org/2000/svg}text")) == int(cloud[-1][0])
    status = re.findall(r"triggers (\d+)/300 \((\d+) malformed, (\d+) repeated\) · invitations sent (\d+) · "
                        r"answers on the survey page (\d+)", out)
    triggers, malformed, repeated, invited, answered = map(int, status[-1])
    assert triggers == 300 and 0 < answered < invited

    # after the demo the stack is down: the CLI reads the embedded store directly
    # the alerts step imported 4000 answers (8 days, no organization) with a drop planted in Stockholm
    report = env.cli_json("report", "--by", "location")
    assert report["total"]["responses"] == answered + 4000
    from sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore(env.settings.clickhouse_dsn)  # the worker is gone: the embedded store is free
    try:
        sources = store.query("SELECT source, count() AS n, countIf(invitation_id != '') AS joined "
                              "FROM {db}.responses FINAL GROUP BY source")
        detractors = {r["response_id"] for r in store.query(
            "SELECT response_id FROM {db}.responses FINAL WHERE score <= 6 AND source = 'web'")}
    finally:
        store.close()
    assert sorted((r["source"], r["n"], r["joined"]) for r in sources) == [
        ("simulator", 4000, 0), ("web", answered, answered)]  # the survey page's answers, all joined
    # follow-up: every answer whose latest version is a detractor's opened a case (one contact, one invitation,
    # one answer here), owned by its location's manager or the regional desk; each owner was mailed
    assert "Follow-up cases" in out
    cases = env.cli_json("cases")
    opened = {c["response_id"] for c in cases["cases"]}
    assert detractors and detractors <= opened
    assert sum(cases["summary"].values()) == len(cases["cases"])
    owners = {c["segment"].get("location"): c["owner"] for c in cases["cases"]}
    assert owners.get("Stockholm", "stockholm-manager") == "stockholm-manager"
    assert set(owners.values()) <= {"stockholm-manager", "kobenhavn-manager", "helsinki-manager", "oslo-manager",
                                    "regional-desk"}
    assert len(list((env.home / "outbox" / "notifications").glob("*.eml"))) >= len(detractors)
    # the planted drop raised an alert for Stockholm (and only drops: the history is otherwise stationary)
    assert "Alerts" in out
    alerts = env.cli_json("alerts")["alerts"]
    assert any(a["segment"] == {"location": "Stockholm"} and a["kind"] == "drop" for a in alerts)
    assert {a["kind"] for a in alerts} <= {"drop", "shift"}
    assert not any(a["segment"].get("location") not in (None, "Stockholm") for a in alerts)
    dispatches = env.cli_json("dispatches")
    assert dispatches["by_status"]["sent"] == invited
    assert dispatches["total"] == 300 - malformed - repeated  # the repeated trigger events were decided once
    suppressed = {r["reason"] for r in dispatches["reasons"] if r["status"] == "suppressed"}
    assert {"quarantine", "opted_out"} <= suppressed
    dead = env.cli_json("deadletters")
    assert dead["total"] == malformed

    outbox = env.home / "outbox"
    sms = [json.loads(line) for line in (outbox / "sms.jsonl").read_text().splitlines()]
    mails = [email.message_from_bytes(path.read_bytes(), policy=policy.default)
             for path in (outbox / "email").glob("*.eml")]
    # the web shop's promoters were thanked or asked for a review and given a code: mails without a survey link
    promoter_mails = [m for m in mails if "/s/" not in m.get_body(("plain",)).get_content()]
    assert len(sms) + len(mails) - len(promoter_mails) == invited == sum(dispatches["sent_by_channel"].values())
    codes = [c for m in promoter_mails for c in re.findall(r"NORDLYS-[A-Z0-9]{4}", m.get_body(("plain",)).get_content())]
    assert len(codes) == len(set(codes)), "a reward code went out twice"
    assert sum(a["by_status"].get("sent", 0) for a in dispatches["promoter_actions"].values()) <= len(promoter_mails)
    assert all(s["segments"] == 1 for s in sms)
