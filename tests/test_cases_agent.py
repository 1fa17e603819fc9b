"""The cases and notify agents without a broker (tests/test_agents.py's harness): classify → case events →
cases → notifications → a real local webhook receiver and the e-mail outbox."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta

import orjson
import pytest
from aiohttp import web

from schemas import codec as avro
from sinks.channels.webhook import verify
from tests.test_agents import CODEC, NOW, Harness, raw

SECRET = b"s" * 32
CASES_YAML = """
organizations:
  - id: ""
    fallback_owner: anna@example.com
    escalation_owner: boss@example.com
    owners:
      - location: {{Espoo: espoo-manager}}
notify:
  webhook: {{url: "{url}", secret_file: "{secret}"}}
  email: {{owners: {{espoo-manager: espoo@example.com}}, alerts: [ops@example.com]}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self):
        return self.now


def cases_harness(tmp_path, url="http://127.0.0.1:9/hook", clock=None) -> Harness:
    secret = tmp_path / "webhook.secret"
    secret.write_bytes(SECRET)
    path = tmp_path / "cases.yaml"
    path.write_text(CASES_YAML.format(url=url, secret=secret))
    return Harness(tmp_path, clock=clock or Clock(), env={"NPSFLOW_CASES": str(path)})


async def classify_to_cases(harness: Harness, *raws: tuple[bytes, str]) -> list:
    """Feed raw responses through classify, then its case events through the cases agent."""
    before = len(harness.sent["case_events"])
    async with harness.feed("classify") as agent:
        for value, key in raws:
            await agent.put(value, key=key)
    events = harness.sent["case_events"][before:]
    async with harness.feed("cases") as agent:
        for key, value in events:
            await agent.put(value, key=key)
    return events


def cases(harness: Harness) -> list[dict]:
    return [CODEC.decode(v, expected=avro.CASE) for _, v in harness.sent["cases"]]


def notes(harness: Harness) -> list[dict]:
    return [orjson.loads(v) for _, v in harness.sent["notifications"]]


def dead(harness: Harness) -> list[dict]:
    return [CODEC.decode(v, expected=avro.DEAD_LETTER) for _, v in harness.sent["dead_letters"]]


async def test_classify_sends_what_may_open_or_resolve_a_case_keyed_by_the_contact(tmp_path):
    harness = cases_harness(tmp_path)
    async with harness.feed("classify") as agent:
        await agent.put(raw("r-1", score=3, comment="Ring me on 0701234567", locale="sv"), key="r-1")
        await agent.put(raw("r-2", score=10), key="r-2")  # a promoter's first version never opens a case
        await agent.put(raw("r-3", score=7), key="r-3")  # a passive: the org opens cases for detractors only
        await agent.put(raw("r-3", score=8, at="2026-11-20T10:05:00Z"), key="r-3")  # but every edit is sent
    events = [(k.decode(), orjson.loads(v)) for k, v in harness.sent["case_events"]]
    assert [k for k, _ in events] == ["|r:r-1", "|r:r-3"]  # anonymous answers: their own contact
    assert events[1][1]["answer"]["score"] == 8
    answer = events[0][1]["answer"]
    at_ms = int(NOW.replace(hour=10).timestamp() * 1000)
    assert (answer["score"], answer["response_id"], answer["responded_at"]) == (3, "r-1", at_ms)
    assert answer["version"] // 1_000_000 == at_ms  # versions order by answer time first
    assert "0701234567" not in answer["comment"]  # masked before it leaves classify
    assert answer["segment"] == {"location": "Espoo"}


async def test_a_detractor_opens_exactly_one_case_replays_open_nothing_an_edit_to_10_resolves_it(tmp_path):
    harness = cases_harness(tmp_path)
    events = await classify_to_cases(harness, (raw("r-1", score=2, comment="Slow"), "r-1"))
    (case,) = cases(harness)
    assert (case["status"], case["owner"], case["score"], case["rev"]) == ("open", "espoo-manager", 2, 1)
    assert case["due_at"] - case["opened_at"] == timedelta(hours=48)  # the default SLA
    (note,) = notes(harness)
    assert (note["event"], note["to"], note["data"]["case_id"]) == ("case.opened", "espoo-manager", case["case_id"])

    async with harness.feed("cases") as agent:  # the same events again: a replay
        for key, value in events:
            await agent.put(value, key=key)
    assert len(cases(harness)) == 1 and len(notes(harness)) == 1

    await classify_to_cases(harness, (raw("r-1", score=10, at="2026-11-20T10:30:00Z"), "r-1"))
    latest = cases(harness)[-1]
    assert (latest["status"], latest["close_reason"], latest["score"]) == ("closed", "resolved_by_edit", 10)
    assert notes(harness)[-1]["event"] == "case.resolved_by_edit"


async def test_commands_apply_once_and_refusals_are_dead_lettered_with_the_command_id(tmp_path):
    harness = cases_harness(tmp_path)
    await classify_to_cases(harness, (raw("r-1", score=1), "r-1"))
    case = cases(harness)[0]
    ack = {"kind": "ack", "case_id": case["case_id"], "route": case["route"], "actor": "anna",
           "text": "Called", "command_id": "cmd-1"}
    unknown = {**ack, "case_id": "case-0000000000000000", "command_id": "cmd-2"}
    async with harness.feed("cases") as agent:
        for command in (ack, ack, unknown):
            await agent.put(json.dumps(command).encode(), key=case["route"])
    acked = cases(harness)[1:]
    assert len(acked) == 1 and acked[0]["first_contact_at"] == NOW and acked[0]["command_ids"] == ["cmd-1"]
    (letter,) = dead(harness)
    assert (letter["stage"], letter["reason"], letter["key"]) == ("cases", "unknown_case", "cmd-2")


async def test_a_command_with_the_wrong_key_is_re_keyed_and_garbage_is_dead_lettered(tmp_path):
    harness = cases_harness(tmp_path)
    async with harness.feed("cases") as agent:
        await agent.put(b'{"kind": "note", "case_id": "c", "route": "x|y"}', key="other")
        await agent.put(b"not json", key="x")
    (rekeyed,) = harness.sent["case_events"]
    assert rekeyed[0] == b"x|y"
    assert [d["reason"] for d in dead(harness)] == ["bad_case_event"]


async def test_overdue_cases_escalate_once_with_an_injected_clock(tmp_path):
    clock = Clock()
    harness = cases_harness(tmp_path, clock=clock)
    await classify_to_cases(harness, (raw("r-1", score=0), "r-1"))
    escalate = harness.pipeline.timers["escalate_cases"]
    clock.now = NOW + timedelta(hours=47)
    await escalate()
    assert len(cases(harness)) == 1  # not due yet
    clock.now = NOW + timedelta(hours=48, minutes=1)
    await escalate()
    await escalate()
    escalated = cases(harness)[1:]
    assert len(escalated) == 1 and escalated[0]["escalated_to"] == "boss@example.com"
    assert [n["event"] for n in notes(harness)] == ["case.opened", "case.escalated"]
    assert notes(harness)[-1]["to"] == "boss@example.com"


@contextlib.asynccontextmanager
async def serving(handle):
    """A real HTTP server on a free port taking POST /hook with ``handle``; yields its URL."""
    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"
    finally:
        await runner.cleanup()


class Receiver:
    """Records every webhook call (the signature is checked by the test, not by it)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        return web.Response(status=204)


async def test_notifications_reach_the_webhook_signed_and_the_owner_by_mail_once(tmp_path):
    receiver = Receiver()
    async with serving(receiver.handle) as url:
        harness = cases_harness(tmp_path, url=url)
        await classify_to_cases(harness, (raw("r-1", score=4, comment="Rude staff"), "r-1"))
        records = harness.sent["notifications"]
        async with harness.feed("notify") as agent:
            for key, value in records + records:  # delivered, then redelivered: sent once
                await agent.put(value, key=key)
        (headers, body), = receiver.calls
        assert verify(body, headers["X-Npsflow-Signature"], SECRET)
        assert not verify(body, headers["X-Npsflow-Signature"], b"w" * 32)  # a wrong secret fails
        assert headers["Idempotency-Key"] == notes(harness)[0]["id"]
        assert json.loads(body)["data"]["comment"] == "Rude staff"
        (mail,) = (tmp_path / "outbox" / "notifications").glob("*.eml")
        text = mail.read_text()
        assert "To: espoo@example.com" in text and "Rude staff" in text
        assert harness.pipeline.stats.counts["notify.already_sent"] == 2


async def test_a_refused_webhook_is_dead_lettered_not_retried(tmp_path):
    async def refuse(request):
        return web.Response(status=410)
    async with serving(refuse) as url:
        harness = cases_harness(tmp_path, url=url)
        await classify_to_cases(harness, (raw("r-1", score=4), "r-1"))
        async with harness.feed("notify") as agent:
            for key, value in harness.sent["notifications"]:
                await agent.put(value, key=key)
        (letter,) = dead(harness)
        assert (letter["stage"], letter["reason"]) == ("notify", "webhook_refused")


@pytest.mark.parametrize("doc,first", [
    ("notify: {webhook: {url: 'https://h.example/x', secret: abc}}", "notify.webhook: must be a mapping"),
    ("alerts: {confidence: 2}", "alerts: confidence must be in (0.5, 1)"),
    ("organizations: [{id: a, sla: -1h}]", "organizations[0].sla"),
])
def test_a_broken_cases_file_stops_the_worker_with_one_line(tmp_path, doc, first):
    from npsflow import config
    from npsflow.prepare import follow_up_inputs

    path = tmp_path / "cases.yaml"
    path.write_text(doc)
    settings = config.load({"NPSFLOW_HOME": str(tmp_path), "NPSFLOW_CASES": str(path)})
    with pytest.raises(config.ConfigError) as exc:
        follow_up_inputs(settings)
    assert first in str(exc.value) and "\n" not in str(exc.value)


def test_the_example_and_demo_cases_files_load(tmp_path):
    from pathlib import Path

    from npsflow.follow_up import load_follow_up
    from npsflow.demo import demo_cases_path

    example = load_follow_up(Path(__file__).resolve().parent.parent / "deploy" / "cases.example.yaml",
                             env={"NPSFLOW_WEBHOOK_SECRET": "x" * 20})
    org = example.cases.for_org("nordvik-ror")
    assert org.owner_for({"location": "Göteborg"}) == "goteborg-desk"
    assert org.owner_for({"location": "Malmö", "channel": "store"}) == "store-managers"
    assert example.alerts.confidence == 0.99 and not example.alerts.rise
    assert example.notify.email.address_of("anna.lind@nordvikror.se") == "anna.lind@nordvikror.se"
    assert example.notify.email.address_of("someone@else.example") is None  # only listed addresses are mailed
    assert example.notify.webhook.secret == b"x" * 20
    demo = load_follow_up(demo_cases_path())
    assert demo.cases.for_org("demo").owner_for({"location": "Oslo"}) == "oslo-manager"


@pytest.mark.parametrize("bad", [
    {"kind": "answer", "answer": {"response_id": "r-9", "version": 1, "score": 3, "comment": 123, "segment": {},
                                  "responded_at": 1, "org_id": "", "respondent": ""}},
    {"kind": "answer", "answer": {"response_id": "r-9", "version": 10 ** 30, "score": 3, "comment": None,
                                  "segment": {}, "responded_at": 1, "org_id": "", "respondent": ""}},
    {"kind": "answer", "answer": {"response_id": "r-9", "version": 1, "score": 3, "comment": None, "segment": {},
                                  "responded_at": 10 ** 30, "org_id": "", "respondent": ""}},
    {"kind": "note", "case_id": "CASE", "actor": "a", "text": "no route"},
    {"kind": "tick", "case_id": "CASE"},
    {"kind": "note", "case_id": "CASE", "route": "ROUTE", "actor": "a", "text": "x", "command_id": {"x": 1}},
])
async def test_malformed_events_are_dead_lettered_and_the_agent_goes_on(tmp_path, bad):
    harness = cases_harness(tmp_path)
    await classify_to_cases(harness, (raw("r-1", score=1), "r-1"))
    (case,) = cases(harness)
    bad = json.loads(json.dumps(bad).replace("CASE", case["case_id"]).replace("ROUTE", case["route"]))
    route = bad.get("route") or ("|r:r-9" if bad["kind"] == "answer" else case["route"])
    good = {"kind": "ack", "case_id": case["case_id"], "route": case["route"], "actor": "anna", "command_id": "c1"}
    async with harness.feed("cases") as agent:
        await agent.put(json.dumps(bad).encode(), key=route)
        await agent.put(json.dumps(good).encode(), key=case["route"])
    letters = dead(harness)
    assert len(letters) == 1 and letters[0]["reason"] in ("bad_case_event", "invalid_command_id")
    assert [c["rev"] for c in cases(harness)] == [1, 2]  # nothing from the bad event; the next one applied
    assert cases(harness)[-1]["first_contact_at"] == NOW


async def test_a_receiver_that_is_down_never_holds_up_the_batch_the_timer_delivers_later(tmp_path):
    """Down: the batch is acked with the delivery parked; still down at the first retry: parked again with a
    longer backoff; up: delivered once, with the same idempotency key; a redelivery after that sends nothing."""
    state = {"up": False, "calls": []}

    async def hook(request):
        state["calls"].append(request.headers["Idempotency-Key"])
        return web.Response(status=204 if state["up"] else 503)
    clock = Clock()
    async with serving(hook) as url:
        harness = cases_harness(tmp_path, clock=clock, url=url)
        await classify_to_cases(harness, (raw("r-1", score=4), "r-1"))
        records = harness.sent["notifications"]
        async with harness.feed("notify") as agent:
            fed = [await agent.put(value, key=key) for key, value in records]
        assert all(f.acked for f in fed) and dead(harness) == []  # acked, parked, nothing lost
        retry = harness.pipeline.timers["retry_notifications"]
        await retry()
        assert len(state["calls"]) == 2  # two quick attempts in the batch, none yet from the timer (not due)
        clock.now += timedelta(seconds=6)
        await retry()
        assert len(state["calls"]) == 4  # due: tried again (still down), parked for 10 s now
        state["up"] = True
        clock.now += timedelta(seconds=6)
        await retry()
        assert len(state["calls"]) == 4  # not due yet
        clock.now += timedelta(seconds=5)
        await retry()
        await retry()
        assert len(state["calls"]) == 5 and len(set(state["calls"])) == 1  # delivered once, same key throughout
        async with harness.feed("notify") as agent:
            for key, value in records:
                await agent.put(value, key=key)
        assert len(state["calls"]) == 5


async def test_malformed_notifications_are_dead_lettered_and_the_agent_goes_on(tmp_path):
    harness = cases_harness(tmp_path, url="http://127.0.0.1:9/hook")
    bad = [{"id": "x:1", "event": "case.opened", "to": ["a"], "data": {}},
           {"id": "x:2", "event": "case.opened", "to": 5, "data": {}}, {"id": "", "event": "e", "data": {}}]
    async with harness.feed("notify") as agent:
        fed = [await agent.put(json.dumps(b).encode(), key="k") for b in bad]
    assert all(f.acked for f in fed)
    assert [d["reason"] for d in dead(harness)] == ["bad_notification"] * 3


async def test_closed_cases_are_forgotten_after_the_retention_with_their_answer_index(tmp_path):
    from streams.cases_agent import CASE_RETENTION_MS

    clock = Clock()
    harness = cases_harness(tmp_path, clock=clock)
    await classify_to_cases(harness, (raw("r-1", score=2), "r-1"), (raw("r-2", score=3), "r-2"))
    first, second = cases(harness)
    close = {"kind": "close", "case_id": first["case_id"], "route": first["route"], "actor": "a"}
    async with harness.feed("cases") as agent:
        await agent.put(json.dumps(close).encode(), key=first["route"])
    table = harness.pipeline.tables["cases"].data
    expire = harness.pipeline.timers["expire_cases"]
    clock.now += timedelta(milliseconds=CASE_RETENTION_MS - 1000)
    await expire()
    assert json.dumps(f"C|{first['case_id']}").encode() in table
    clock.now += timedelta(seconds=2)
    await expire()
    keys = {json.loads(k) for k in table}
    assert f"C|{first['case_id']}" not in keys and "R||r-1" not in keys  # forgotten with its answer index
    assert f"C|{second['case_id']}" in keys and "R||r-2" in keys  # the open case stays
