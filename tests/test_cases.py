"""streams.cases: detractor follow-up cases as a pure state machine (issue 12, point 1).

Expected values are written by hand; the clock is injected (``now`` in ms). ``Store`` plays the agent: it
applies an event to a dict of state keys and keeps the changes."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import cases
from streams.cases import CasesConfig, CasesConfigError, apply, summary

H = 3_600_000  # one hour in ms


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def answer(response_id: str, score: int, *, version: int = 1, respondent: str = "k-alice", org: str | None = "acme",
           location: str = "Espoo", comment: str | None = "slow service", at: str = "2026-06-01T09:00:00Z",
           **extra) -> dict:
    """A classified answer as classify emits it (the fields cases reads, plus whatever ``extra`` adds)."""
    return {"response_id": response_id, "version": version, "score": score, "comment": comment,
            "segment": {"location": location}, "org_id": org, "respondent": respondent,
            "responded_at": datetime.fromisoformat(at.replace("Z", "+00:00")), "category": "?", **extra}


CONFIG = CasesConfig.from_yaml_dict({"organizations": [{
    "id": "acme",
    "owners": [{"location": {"Espoo": "anna@acme.example", "Oulu": "olli@acme.example"}},
               {"region": {"North": "nora@acme.example"}}],
    "fallback_owner": "desk@acme.example",
    "escalation_owner": "boss@acme.example",
}]})


class Store:
    """The agent's table: a dict of state keys; ``run`` applies one event and keeps its changes."""

    def __init__(self, config: CasesConfig = CONFIG) -> None:
        self.state: dict = {}
        self.config = config

    def get(self, key: str):
        return self.state.get(key)

    def run(self, event: dict, now: int) -> tuple[dict, list[dict]]:
        known = self.state.get(f"C|{event.get('case_id')}")
        if event.get("kind") != "answer" and "route" not in event and known is not None:
            event = {**event, "route": known["route"]}  # as the CLI, the API and the timer send them
        changes, outputs = apply(event, self, now, self.config)
        for key, value in changes.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        return changes, outputs

    def answer(self, record: dict, now: int) -> list[dict]:
        return self.run(cases.answer_event(record), now)[1]

    def case(self, case_id: str) -> dict:
        return self.state[f"C|{case_id}"]

    def cases(self) -> list[dict]:
        return [v for k, v in self.state.items() if k.startswith("C|")]


def of(outputs: list[dict], kind: str) -> list[dict]:
    return [o for o in outputs if o["type"] == kind]


T0 = ms("2026-06-01T10:00:00Z")  # a Monday


def command(kind: str, case_id: str, actor: str = "anna@acme.example", **fields) -> dict:
    return {"kind": kind, "case_id": case_id, "actor": actor, **fields}


# ---------------------------------------------------------------------------------------------------------
# Configuration


def test_no_configuration_means_unassigned_48h_no_escalation():
    org = CasesConfig.from_yaml_dict(None).for_org("anyone")
    assert org.owner_for({"location": "Espoo"}) == "unassigned"
    assert org.due_at(T0) == T0 + 48 * H
    assert org.escalation_owner is None
    assert org.qualifies(6) and not org.qualifies(7) and not org.qualifies(10)


def test_owner_rules_first_match_then_fallback():
    org = CONFIG.for_org("acme")
    assert org.owner_for({"location": "Oulu", "region": "North"}) == "olli@acme.example"  # first rule wins
    assert org.owner_for({"location": "Turku", "region": "North"}) == "nora@acme.example"
    assert org.owner_for({"location": "Turku"}) == "desk@acme.example"
    assert org.owner_for({}) == "desk@acme.example"


def test_owner_rules_as_one_mapping_keep_their_order():
    org = CasesConfig.from_yaml_dict({"organizations": [{"id": "a", "owners": {
        "region": {"North": "nora"}, "location": {"Oulu": "olli"}}}]}).for_org("a")
    assert org.owner_for({"location": "Oulu", "region": "North"}) == "nora"


def test_open_on_passives_and_specific_scores():
    org = CasesConfig.from_yaml_dict({"organizations": [{"id": "a", "open_on": ["detractor", 8]}]}).for_org("a")
    assert [s for s in range(11) if org.qualifies(s)] == [0, 1, 2, 3, 4, 5, 6, 8]
    org = CasesConfig.from_yaml_dict({"organizations": [{"id": "a", "open_on": ["passive"]}]}).for_org("a")
    assert [s for s in range(11) if org.qualifies(s)] == [7, 8]
    org = CasesConfig.from_yaml_dict({"organizations": [{"id": "a", "open_on": []}]}).for_org("a")
    assert [s for s in range(11) if org.qualifies(s)] == []  # an organization that opens no cases


def test_configuration_mistakes_one_line_each():
    with pytest.raises(CasesConfigError) as caught:
        CasesConfig.from_yaml_dict({"organizations": [{
            "id": "a", "timezone": "Mars/Olympus", "open_on": [9], "sla": "2 days", "colour": "red",
            "owners": [{"location": {"Espoo": ""}}], "business_hours": {"start": "18:00", "end": "17:00"}}]})
    assert caught.value.errors == [
        "organizations[0].timezone: must be an IANA timezone like Europe/Helsinki, got 'Mars/Olympus'",
        "organizations[0].open_on: must be a list of detractor, passive or scores 0–8, got a list",
        "organizations[0].owners[0].owners: must be an owner (a non-empty text of at most 200 characters), "
        "got ''",
        "organizations[0].sla: must be a duration like 30m, 2h or 1d, got '2 days'",
        "organizations[0].business_hours: start must be before end (no overnight business hours), got "
        "18:00–17:00",
        "organizations[0].colour: unknown key (allowed: id, timezone, open_on, owners, fallback_owner, "
        "escalation_owner, sla, business_hours)",
    ]


# ---------------------------------------------------------------------------------------------------------
# Due times


def test_due_time_48h_wall_clock():
    store = Store()
    outputs = store.answer(answer("r1", 3), T0)
    (record,) = of(outputs, "case")
    assert record["case"]["opened_at"] == T0
    assert record["case"]["due_at"] == ms("2026-06-03T10:00:00Z") == T0 + 172_800_000


HELSINKI = {"id": "fi", "timezone": "Europe/Helsinki", "business_hours": {"days": ["mon", "tue", "wed", "thu", "fri"],
                                                                          "start": "08:00", "end": "17:00"}}


def test_business_hours_across_a_weekend_and_the_autumn_dst_change():
    org = CasesConfig.from_yaml_dict({"organizations": [{**HELSINKI, "sla": "16h"}]}).for_org("fi")
    # Opened Fri 2026-10-23 12:00Z = 15:00 EEST (UTC+3). Fri 15:00–17:00 = 2 h (14 h left). Sat 24 and Sun 25
    # (EEST → EET at 04:00 local) are not working days. Mon 26 08:00–17:00 EET (UTC+2) = 06:00Z–15:00Z, 9 h
    # (5 h left). Tue 27 08:00 EET = 06:00Z, + 5 h = 11:00Z. (With the summer offset kept: 10:00Z, wrong.)
    assert org.due_at(ms("2026-10-23T12:00:00Z")) == ms("2026-10-27T11:00:00Z")


def test_business_hours_48h_across_the_spring_dst_change():
    org = CasesConfig.from_yaml_dict({"organizations": [HELSINKI]}).for_org("fi")  # SLA default 48 h
    # Opened Thu 2026-03-26 08:00Z = 10:00 EET (UTC+2). Thu 10–17 = 7 h (41 left), Fri 27: 9 (32), weekend (Sun
    # 29: EET → EEST at 03:00 local), Mon 30: 9 (23), Tue 31: 9 (14), Wed Apr 1: 9 (5), Thu Apr 2 08:00 EEST
    # (UTC+3) = 05:00Z + 5 h = 10:00Z.
    assert org.due_at(ms("2026-03-26T08:00:00Z")) == ms("2026-04-02T10:00:00Z")


def test_business_hours_opened_outside_them():
    org = CasesConfig.from_yaml_dict({"organizations": [{**HELSINKI, "sla": "3h"}]}).for_org("fi")
    # Sat 2026-10-24 09:00Z: the clock starts Mon 26 08:00 EET = 06:00Z; + 3 h = 09:00Z.
    assert org.due_at(ms("2026-10-24T09:00:00Z")) == ms("2026-10-26T09:00:00Z")
    # Wed 2026-06-03 13:30Z = 16:30 EEST: 30 min that day, 30 min from Thu 08:00 EEST (05:00Z) → 05:30Z.
    org = CasesConfig.from_yaml_dict({"organizations": [{**HELSINKI, "sla": "1h"}]}).for_org("fi")
    assert org.due_at(ms("2026-06-03T13:30:00Z")) == ms("2026-06-04T05:30:00Z")
    # Exactly at the end of a day with the SLA used up: that instant (not the next morning).
    assert org.due_at(ms("2026-06-03T13:00:00Z")) == ms("2026-06-03T14:00:00Z")


# ---------------------------------------------------------------------------------------------------------
# Opening, replays, versions


def test_a_detractor_opens_exactly_one_case_with_its_owner():
    store = Store()
    outputs = store.answer(answer("r1", 3, location="Oulu"), T0)
    assert [o["type"] for o in outputs] == ["case", "notification"]
    case = outputs[0]["case"]
    case_id = case["case_id"]
    assert case_id == cases.case_id_of("acme|k-alice", "r1", 1) and case_id.startswith("case-")
    assert {k: case[k] for k in ("response_id", "org_id", "owner", "score", "category", "comment", "segment",
                                 "status", "first_contact_at", "closed_at", "close_reason", "rev", "route")} == {
        "response_id": "r1", "org_id": "acme", "owner": "olli@acme.example", "score": 3, "category": "detractor",
        "comment": "slow service", "segment": {"location": "Oulu"}, "status": "open", "first_contact_at": None,
        "closed_at": None, "close_reason": None, "rev": 1, "route": "acme|k-alice"}
    assert outputs[1]["to"] == "olli@acme.example" and outputs[1]["kind"] == "opened"
    assert store.state["K|acme|k-alice"] == case_id
    assert store.state["R|acme|r1"] == {"case_id": case_id, "version": 1}
    assert len(store.cases()) == 1


def test_owner_fallback_and_unassigned():
    store = Store()
    (case,) = [o["case"] for o in store.answer(answer("r1", 0, location="Turku"), T0) if o["type"] == "case"]
    assert case["owner"] == "desk@acme.example"
    other = Store(CasesConfig())
    outputs = other.answer(answer("r1", 0), T0)
    assert [o["type"] for o in outputs] == ["case"]  # nobody to notify at "unassigned"
    assert outputs[0]["case"]["owner"] == "unassigned" and outputs[0]["case"]["due_at"] == T0 + 48 * H


def test_promoters_and_passives_open_nothing_by_default():
    store = Store()
    for i, score in enumerate((7, 8, 9, 10)):
        assert store.run(cases.answer_event(answer(f"r{i}", score)), T0) == ({}, [])
    assert store.state == {}


def test_replaying_the_same_answer_changes_nothing_and_an_older_version_is_ignored():
    store = Store()
    store.answer(answer("r1", 3, version=2), T0)
    before = json.loads(json.dumps(store.state))
    assert store.run(cases.answer_event(answer("r1", 3, version=2)), T0 + H) == ({}, [])
    assert store.run(cases.answer_event(answer("r1", 10, version=1)), T0 + H) == ({}, [])  # older: not a close
    assert store.state == before


def test_an_edit_to_ten_resolves_the_case():
    store = Store()
    (opened,) = of(store.answer(answer("r1", 3, version=1), T0), "case")
    case_id = opened["case"]["case_id"]
    outputs = store.answer(answer("r1", 10, version=2, comment="sorted out, thanks"), T0 + H)
    assert [o["type"] for o in outputs] == ["case", "notification"]
    case = store.case(case_id)
    assert (case["status"], case["close_reason"], case["closed_at"], case["score"], case["comment"], case["rev"]) == \
        ("closed", "resolved_by_edit", T0 + H, 10, "sorted out, thanks", 2)
    assert outputs[1]["kind"] == "resolved_by_edit" and outputs[1]["to"] == "anna@acme.example"
    assert "K|acme|k-alice" not in store.state
    assert store.run(cases.answer_event(answer("r1", 10, version=2)), T0 + 2 * H) == ({}, [])  # replay
    assert store.run(cases.answer_event(answer("r1", 3, version=1)), T0 + 2 * H) == ({}, [])  # older


def test_an_edit_to_a_passive_keeps_the_case_open():
    store = Store()
    (opened,) = of(store.answer(answer("r1", 3, version=1), T0), "case")
    outputs = store.answer(answer("r1", 8, version=2, comment="better"), T0 + H)
    assert [o["type"] for o in outputs] == ["case"]  # updated, nobody notified
    case = outputs[0]["case"]
    assert (case["status"], case["score"], case["category"], case["comment"], case["rev"]) == \
        ("open", 8, "passive", "better", 2)
    assert case["log"][-1]["kind"] == "answer_edited"
    assert case["due_at"] == opened["case"]["due_at"]


def test_a_second_detractor_answer_of_the_contact_joins_the_open_case():
    store = Store()
    (opened,) = of(store.answer(answer("r1", 3), T0), "case")
    case_id = opened["case"]["case_id"]
    outputs = store.answer(answer("r2", 1, comment="still broken", location="Oulu"), T0 + H)
    assert [o["type"] for o in outputs] == ["case", "notification"]
    case = store.case(case_id)
    assert [a["response_id"] for a in case["answers"]] == ["r1", "r2"]
    assert (case["score"], case["owner"], case["due_at"]) == (3, "anna@acme.example", T0 + 48 * H)  # the opener's
    assert outputs[1]["kind"] == "answer_added" and outputs[1]["to"] == "anna@acme.example"
    assert (outputs[1]["score"], outputs[1]["comment"]) == (1, "still broken")  # the new answer
    assert store.state["R|acme|r2"] == {"case_id": case_id, "version": 1}
    assert len(store.cases()) == 1
    # another contact: another case
    store.answer(answer("r3", 2, respondent="k-bob"), T0 + H)
    assert len(store.cases()) == 2 and store.state["K|acme|k-bob"] != case_id


def test_the_opener_edited_to_ten_while_another_answer_still_qualifies_keeps_the_case_open():
    store = Store()
    (opened,) = of(store.answer(answer("r1", 3), T0), "case")
    store.answer(answer("r2", 2), T0 + H)
    outputs = store.answer(answer("r1", 10, version=2), T0 + 2 * H)
    assert [o["type"] for o in outputs] == ["case"]
    assert outputs[0]["case"]["status"] == "open" and outputs[0]["case"]["score"] == 10
    outputs = store.answer(answer("r2", 9, version=2), T0 + 3 * H)  # now none qualifies
    assert outputs[0]["case"]["close_reason"] == "resolved_by_edit"


def test_after_a_case_is_closed_a_new_detractor_answer_opens_a_new_case():
    store = Store()
    (opened,) = of(store.answer(answer("r1", 3), T0), "case")
    first = opened["case"]["case_id"]
    store.run(command("close", first), T0 + H)
    outputs = store.answer(answer("r2", 4), T0 + 2 * H)
    (record,) = of(outputs, "case")
    assert record["case"]["case_id"] not in (first,) and record["case"]["opened_at"] == T0 + 2 * H
    assert store.state["K|acme|k-alice"] == record["case"]["case_id"]
    assert len(store.cases()) == 2


def test_an_edit_of_an_answer_of_a_case_its_owner_closed_is_ignored():
    store = Store()
    (opened,) = of(store.answer(answer("r1", 3), T0), "case")
    store.run(command("close", opened["case"]["case_id"]), T0 + H)
    changes, outputs = store.run(cases.answer_event(answer("r1", 2, version=2, comment="and rude")), T0 + 2 * H)
    assert outputs == [] and changes == {"R|acme|r1": {"case_id": opened["case"]["case_id"], "version": 2}}
    assert len(store.cases()) == 1


def test_an_answer_resolved_by_edit_that_turns_bad_again_opens_a_new_case():
    store = Store()
    (opened,) = of(store.answer(answer("r1", 3, version=1), T0), "case")
    store.answer(answer("r1", 10, version=2), T0 + H)
    outputs = store.answer(answer("r1", 2, version=3), T0 + 2 * H)
    (record,) = of(outputs, "case")
    assert record["case"]["case_id"] == cases.case_id_of("acme|k-alice", "r1", 3) != opened["case"]["case_id"]
    assert store.case(opened["case"]["case_id"])["status"] == "closed"  # history stays
    assert store.state["R|acme|r1"] == {"case_id": record["case"]["case_id"], "version": 3}


def test_anonymous_answers_are_their_own_contacts_and_orgless_answers_use_the_default():
    store = Store()
    a = store.answer(answer("r1", 3, respondent="", org=None), T0)
    b = store.answer(answer("r2", 3, respondent="", org=None), T0)
    assert a[0]["case"]["route"] == "|r:r1" and b[0]["case"]["route"] == "|r:r2"
    assert a[0]["case"]["owner"] == "unassigned" and len(store.cases()) == 2
    assert cases.route_of(cases.answer_event(answer("r9", 1, respondent=""))) == "acme|r:r9"


def test_a_case_opened_before_is_not_opened_again_when_its_answer_index_is_gone():
    store = Store()
    store.answer(answer("r1", 3), T0)
    del store.state["R|acme|r1"], store.state["K|acme|k-alice"]  # e.g. expired by the agent
    changes, outputs = store.run(cases.answer_event(answer("r1", 3)), T0 + H)
    assert outputs == [] and changes == {}


# ---------------------------------------------------------------------------------------------------------
# Commands


def opened_case(store: Store, now: int = T0, **fields) -> str:
    (record,) = of(store.answer(answer("r1", 3, **fields), now), "case")
    return record["case"]["case_id"]


def test_ack_sets_the_first_contact_once():
    store = Store()
    case_id = opened_case(store)
    changes, outputs = store.run(command("ack", case_id, text="Called, will send a technician"), T0 + 2 * H)
    assert [o["type"] for o in outputs] == ["case"]
    case = store.case(case_id)
    assert (case["status"], case["first_contact_at"], case["rev"]) == ("open", T0 + 2 * H, 2)
    assert case["notes"] == [{"at": T0 + 2 * H, "actor": "anna@acme.example", "text": "Called, will send a technician"}]
    assert case["log"][-1] == {"rev": 2, "at": T0 + 2 * H, "kind": "ack", "actor": "anna@acme.example"}
    assert list(changes) == [f"C|{case_id}"]
    changes, outputs = store.run(command("ack", case_id), T0 + 3 * H)
    assert changes == {} and [(o["type"], o["reason"]) for o in outputs] == [("refused", "already_acknowledged")]
    assert store.case(case_id)["first_contact_at"] == T0 + 2 * H


def test_note_appends_and_needs_a_text():
    store = Store()
    case_id = opened_case(store)
    store.run(command("note", case_id, text="first"), T0 + H)
    store.run(command("note", case_id, actor="olli@acme.example", text="  second "), T0 + 2 * H)
    assert [(n["actor"], n["text"]) for n in store.case(case_id)["notes"]] == [
        ("anna@acme.example", "first"), ("olli@acme.example", "second")]
    assert store.case(case_id)["first_contact_at"] is None  # a note is not a contact
    for bad, reason in ((command("note", case_id, text="  "), "missing_text"),
                        (command("note", case_id, text="x" * 2001), "text_too_long"),
                        (command("note", case_id, actor="", text="x"), "missing_actor")):
        changes, outputs = store.run(bad, T0 + 3 * H)
        assert changes == {} and [o["reason"] for o in outputs] == [reason]


def test_assign_changes_the_owner_and_notifies_the_new_one():
    store = Store()
    case_id = opened_case(store)
    changes, outputs = store.run(command("assign", case_id, owner="olli@acme.example"), T0 + H)
    assert [o["type"] for o in outputs] == ["case", "notification"]
    assert store.case(case_id)["owner"] == "olli@acme.example"
    assert (outputs[1]["to"], outputs[1]["kind"], outputs[1]["idempotency_key"]) == (
        "olli@acme.example", "assigned", f"{case_id}:assigned:2")
    for bad, reason in ((command("assign", case_id, owner="olli@acme.example"), "already_owner"),
                        (command("assign", case_id), "missing_owner")):
        assert [o["reason"] for o in store.run(bad, T0 + 2 * H)[1]] == [reason]


def test_close_with_a_reason_and_commands_on_closed_or_unknown_cases_are_refused():
    store = Store()
    case_id = opened_case(store)
    for reason in ("resolved_by_edit", "Not A Word", 7):
        assert [o["reason"] for o in store.run(command("close", case_id, reason=reason), T0)[1]] == ["invalid_reason"]
    changes, outputs = store.run(command("close", case_id, reason="resolved", text="Refunded"), T0 + 5 * H)
    case = store.case(case_id)
    assert (case["status"], case["close_reason"], case["closed_at"], case["notes"][-1]["text"]) == \
        ("closed", "resolved", T0 + 5 * H, "Refunded")
    assert changes["K|acme|k-alice"] is None and [o["type"] for o in outputs] == ["case"]
    for kind in ("ack", "note", "assign", "close"):
        changes, outputs = store.run(command(kind, case_id, text="x", owner="someone"), T0 + 6 * H)
        assert changes == {} and outputs == [{"type": "refused", "kind": kind, "case_id": case_id, "command_id": None,
                                              "reason": "case_closed", "detail": "the case was closed (resolved)"}]
    changes, outputs = store.run(command("ack", "case-0000000000000000"), T0)
    assert changes == {} and [o["reason"] for o in outputs] == ["unknown_case"]
    assert [o["reason"] for o in store.run({"kind": "reopen", "case_id": case_id}, T0)[1]] == ["unknown_event"]


def test_close_without_a_reason_is_closed():
    store = Store()
    case_id = opened_case(store)
    store.run(command("close", case_id), T0 + H)
    assert store.case(case_id)["close_reason"] == "closed"


def test_a_repeated_command_id_is_a_no_op_and_a_wrong_route_is_refused():
    store = Store()
    case_id = opened_case(store)
    note = command("note", case_id, text="called", command_id="cmd-1", route="acme|k-alice")
    assert of(store.run(note, T0 + H)[1], "case")
    assert store.run(note, T0 + 2 * H) == ({}, [])
    close = command("close", case_id, command_id="cmd-2")
    store.run(close, T0 + 3 * H)
    assert store.run(close, T0 + 4 * H) == ({}, [])  # the retry of a close that worked: not "case_closed"
    assert len(store.case(case_id)["notes"]) == 1
    other = Store()
    case_id = opened_case(other)
    assert [o["reason"] for o in other.run(command("ack", case_id, route="acme|k-bob"), T0)[1]] == ["wrong_route"]


# ---------------------------------------------------------------------------------------------------------
# Overdue and escalation


def test_overdue_escalates_once_with_an_injected_clock():
    store = Store()
    case_id = opened_case(store)  # due T0 + 48 h
    tick = {"kind": "tick", "case_id": case_id, "route": "acme|k-alice"}
    assert store.run(tick, T0 + 48 * H - 1) == ({}, [])
    assert cases.status_at(store.case(case_id), T0 + 48 * H - 1) == "open"
    assert cases.status_at(store.case(case_id), T0 + 48 * H) == "overdue"
    assert cases.to_escalate(store.cases(), T0 + 48 * H) == [case_id]
    changes, outputs = store.run(tick, T0 + 50 * H)
    assert [o["type"] for o in outputs] == ["case", "escalated", "notification"]
    assert outputs[1] == {"type": "escalated", "idempotency_key": f"{case_id}:escalated:2", "case_id": case_id,
                          "org_id": "acme", "owner": "anna@acme.example", "escalated_to": "boss@acme.example",
                          "due_at": T0 + 48 * H, "at": T0 + 50 * H}
    assert (outputs[2]["to"], outputs[2]["kind"]) == ("boss@acme.example", "escalated")
    case = store.case(case_id)
    assert (case["escalated_at"], case["escalated_to"], case["owner"], case["status"]) == \
        (T0 + 50 * H, "boss@acme.example", "anna@acme.example", "open")
    assert store.run(tick, T0 + 51 * H) == ({}, [])
    assert store.run(tick, T0 + 99 * H) == ({}, [])
    assert cases.to_escalate(store.cases(), T0 + 99 * H) == []


def test_no_escalation_of_closed_cases_and_none_to_notify_without_an_escalation_owner():
    store = Store()
    case_id = opened_case(store)
    store.run(command("close", case_id), T0 + 49 * H)  # closed late, never ticked
    assert store.run({"kind": "tick", "case_id": case_id}, T0 + 50 * H) == ({}, [])
    assert store.run({"kind": "tick", "case_id": "case-unknown"}, T0 + 50 * H) == ({}, [])
    bare = Store(CasesConfig())
    case_id = opened_case(bare)
    outputs = bare.run({"kind": "tick", "case_id": case_id}, T0 + 48 * H)[1]
    assert [o["type"] for o in outputs] == ["case", "escalated"] and outputs[1]["escalated_to"] is None


def test_an_acknowledged_case_is_still_overdue_when_not_closed_in_time():
    store = Store()
    case_id = opened_case(store)
    store.run(command("ack", case_id), T0 + H)
    assert cases.status_at(store.case(case_id), T0 + 48 * H) == "overdue"


# ---------------------------------------------------------------------------------------------------------
# Notifications


def test_notifications_carry_no_contact_details_and_have_stable_keys():
    def run() -> list[dict]:
        store = Store()
        record = answer("r1", 2, comment="the driver was late [phone]", email="alice@home.example",
                        phone="+358401234567", contact={"email": "alice@home.example"}, follow_up="call me")
        out = store.answer(record, T0)
        case_id = out[0]["case"]["case_id"]
        out += store.answer(answer("r2", 1, email="alice@home.example"), T0 + H)
        out += store.run(command("assign", case_id, owner="olli@acme.example"), T0 + 2 * H)[1]
        out += store.run({"kind": "tick", "case_id": case_id}, T0 + 48 * H)[1]
        out += store.answer(answer("r1", 10, version=2), T0 + 49 * H)
        out += store.answer(answer("r2", 10, version=2), T0 + 49 * H)
        return out

    outputs = run()
    case_id = outputs[0]["case"]["case_id"]
    notes = of(outputs, "notification")
    assert [(n["kind"], n["to"], n["idempotency_key"]) for n in notes] == [
        ("opened", "anna@acme.example", f"{case_id}:opened:1"),
        ("answer_added", "anna@acme.example", f"{case_id}:answer_added:2"),
        ("assigned", "olli@acme.example", f"{case_id}:assigned:3"),
        ("escalated", "boss@acme.example", f"{case_id}:escalated:4"),
        ("resolved_by_edit", "olli@acme.example", f"{case_id}:resolved_by_edit:6"),
    ]
    assert set(notes[0]) == {"type", "idempotency_key", "kind", "to", "case_id", "org_id", "owner", "score",
                             "category", "comment", "segment", "opened_at", "due_at", "status", "close_reason"}
    text = json.dumps(outputs)
    for personal in ("alice@home.example", "+358401234567", "call me"):
        assert personal not in text  # not in notifications nor in case records
    assert "k-alice" not in json.dumps(notes)  # not even the pseudonym: the owner does not need it
    assert [n["idempotency_key"] for n in of(run(), "notification")] == [n["idempotency_key"] for n in notes]


# ---------------------------------------------------------------------------------------------------------
# Summary and JSON


def test_summary_against_hand_counted_cases():
    now = T0 + 100 * H

    def case(due: int, status: str = "open", closed_at: int | None = None) -> dict:
        return {"case_id": "c", "status": status, "due_at": due, "closed_at": closed_at, "escalated_at": None}

    sample = [
        case(now + 1),                            # open
        case(now + 50 * H),                       # open
        case(now),                                # overdue (exactly at its due time)
        case(now - H),                            # overdue
        case(now - 2 * H),                        # overdue
        case(now - H, "closed", now - H),         # closed within (exactly at due)
        case(now + H, "closed", now - 10 * H),    # closed within
        case(now - 5 * H, "closed", now - 4 * H),  # closed late
    ]
    assert summary(sample, now) == {"open": 2, "overdue": 3, "closed_within_sla": 2, "closed_late": 1}
    assert summary([], now) == {"open": 0, "overdue": 0, "closed_within_sla": 0, "closed_late": 0}


def test_summary_of_cases_made_by_the_step():
    store = Store()
    a = opened_case(store)                                                        # due T0 + 48 h
    (b,) = of(store.answer(answer("r2", 1, respondent="k-bob"), T0 + 10 * H), "case")  # due T0 + 58 h
    (c,) = of(store.answer(answer("r3", 0, respondent="k-cid"), T0), "case")      # due T0 + 48 h
    store.run(command("close", c["case"]["case_id"]), T0 + 47 * H)               # within
    assert summary(store.cases(), T0 + 50 * H) == {"open": 1, "overdue": 1, "closed_within_sla": 1, "closed_late": 0}
    store.run(command("close", a), T0 + 51 * H)                                   # late
    assert summary(store.cases(), T0 + 60 * H) == {"open": 0, "overdue": 1, "closed_within_sla": 1, "closed_late": 1}


def test_states_and_outputs_round_trip_through_json():
    store = Store()
    case_id = opened_case(store)
    store.answer(answer("r2", 1), T0 + H)
    store.run(command("ack", case_id, text="called"), T0 + 2 * H)
    store.run({"kind": "tick", "case_id": case_id}, T0 + 48 * H)
    copy = Store()
    copy.state = json.loads(json.dumps(store.state))
    assert copy.state == store.state
    # the restored state answers every later event exactly as the original does
    for event, now in ((command("close", case_id, reason="resolved"), T0 + 49 * H),
                       (cases.answer_event(answer("r4", 2)), T0 + 50 * H)):
        result = store.run(event, now)
        assert result[1] and copy.run(event, now) == result
        assert json.loads(json.dumps(result)) == [result[0], result[1]]
    assert copy.state == store.state


# ---------------------------------------------------------------------------------------------------------
# Properties over random histories

RESPONDENT = {"r0": "k-a", "r1": "k-a", "r2": "k-b", "r3": "k-b"}
STEPS = st.lists(st.one_of(
    st.tuples(st.just("answer"), st.sampled_from(sorted(RESPONDENT)), st.integers(1, 4), st.integers(0, 10)),
    st.tuples(st.sampled_from(["ack", "note", "assign", "close", "tick"]), st.integers(0, 5),
              st.sampled_from(["anna", "olli"]), st.integers(0, 2))),
    max_size=30)


def replay(steps: list) -> tuple[Store, list[tuple[dict, int, tuple]]]:
    store, history, now = Store(), [], T0
    for step in steps:
        now += 7 * H
        if step[0] == "answer":
            _, rid, version, score = step
            event = cases.answer_event(answer(rid, score, version=version, respondent=RESPONDENT[rid]))
        else:
            kind, index, who, cid = step
            ids = sorted(c["case_id"] for c in store.cases())
            case_id = ids[index % len(ids)] if ids else "case-none"
            event = command(kind, case_id, actor=who, owner=who, text="t", command_id=f"c{cid}")
        history.append((event, now, store.run(event, now)))
    return store, history


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_random_histories_keep_the_invariants(steps):
    store, history = replay(steps)
    opened = [c for c in store.cases() if c["status"] == "open"]
    # one open case per contact, and it is the contact's index entry
    assert len({c["route"] for c in opened}) == len(opened)
    assert {c["route"]: c["case_id"] for c in opened} == {
        k[2:]: v for k, v in store.state.items() if k.startswith("K|")}
    for case in store.cases():
        assert case["rev"] == len(case["log"]) and (case["status"] == "closed") == (case["closed_at"] is not None)
        for entry in case["answers"]:
            link = store.state.get(f"R|acme|{entry['response_id']}")
            assert link is not None and link["version"] >= entry["version"]
    keys = [o["idempotency_key"] for _, _, (_, outputs) in history for o in outputs if o["type"] == "notification"]
    assert len(keys) == len(set(keys))
    assert replay(steps)[1] == history  # deterministic


@settings(max_examples=100, deadline=None)
@given(STEPS, st.sampled_from(sorted(RESPONDENT)), st.integers(1, 4), st.integers(0, 10))
def test_an_answer_applied_twice_changes_nothing_the_second_time(steps, rid, version, score):
    store, history = replay(steps)
    event = cases.answer_event(answer(rid, score, version=version, respondent=RESPONDENT[rid]))
    now = T0 + 1000 * H
    store.run(event, now)
    assert store.run(event, now + H) == ({}, [])


def test_erase_forgets_the_routes_cases_and_answers_and_tombstones_their_records():
    store = Store()
    store.answer(answer("r1", 2), T0)
    store.answer(answer("r2", 3), T0 + 1)  # joins alice's open case
    store.answer(answer("r3", 1, respondent="k-bob"), T0 + 2)
    alice = [c for c in store.cases() if c["route"] == "acme|k-alice"]
    bob = [c for c in store.cases() if c["route"] == "acme|k-bob"]
    assert len(alice) == 1 and len(bob) == 1
    gone_id = alice[0]["case_id"]
    # ClickHouse names alice's case, an old case the agent expired already, and (wrongly) bob's: never erased here
    event = cases.erase_event("acme|k-alice", [gone_id, "case-expired", bob[0]["case_id"]], ["r1", "r2"])
    changes, outputs = store.run(event, T0 + 10)
    assert set(changes) == {f"C|{gone_id}", "K|acme|k-alice", "R|acme|r1", "R|acme|r2"}
    assert all(v is None for v in changes.values())
    assert sorted(o["key"] for o in of(outputs, "tombstone")) == sorted([gone_id, "case-expired"])
    assert of(outputs, "erased") == [{"type": "erased", "cases": 2}]
    assert [c["route"] for c in store.cases()] == ["acme|k-bob"] and "R|acme|r3" in store.state
    again, outputs = store.run(event, T0 + 20)
    assert again == {} and sorted(o["key"] for o in of(outputs, "tombstone")) == sorted([gone_id, "case-expired"])
