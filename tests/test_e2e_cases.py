"""End to end on the real broker: a detractor answer → exactly one case (ClickHouse, `npsflow cases`) and one
signed webhook call to a local receiver; `npsflow cases ack` and the internal API; an edit to 10 resolves it;
a SIGKILLed worker, a restart and replayed answers duplicate no case and no notification."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from sinks.channels.webhook import verify
from tests.e2e_helpers import make_env, wait_for, write_jsonl

pytestmark = pytest.mark.kafka
SECRET = b"e2e-webhook-secret-0123456789"
CASE_KEYS = {"case_id", "response_id", "org_id", "owner", "segment", "score", "comment", "opened_at", "due_at",
             "status", "first_contact_at", "closed_at"}


class Receiver(ThreadingHTTPServer):
    """A real HTTP server on a free port recording every webhook call (headers, raw body)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.calls.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def events(self, event: str) -> list[tuple[dict, bytes]]:
        return [(h, b) for h, b in self.calls if h.get("X-Npsflow-Event") == event]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()


def test_a_detractor_opens_one_case_one_signed_webhook_an_edit_resolves_it_restarts_duplicate_nothing(
        tmp_path, kafka_bootstrap, receiver):
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET)
    cases_file = tmp_path / "cases.yaml"
    cases_file.write_text(f"""
organizations:
  - id: ""
    fallback_owner: hq
    escalation_owner: head-of-care
    sla: 20s
    owners:
      - location: {{Espoo: espoo-manager}}
notify:
  webhook: {{url: "{receiver.url}", secret_file: "{secret}"}}
""")
    env = make_env(tmp_path, kafka_bootstrap, NPSFLOW_CASES=str(cases_file))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    at = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    answers = [
        {"response_id": "r-det", "score": 2, "responded_at": at, "comment": "Nobody called back, 0701234567",
         "locale": "sv", "segment": {"location": "Espoo"}},
        {"response_id": "r-pro", "score": 10, "responded_at": at, "segment": {"location": "Espoo"}},
        {"response_id": "r-pas", "score": 8, "responded_at": at, "segment": {"location": "Oslo"}},
        {"response_id": "r-esc", "score": 0, "responded_at": at, "segment": {"location": "Oslo"}},  # left alone
    ]
    env.start_worker()
    try:
        env.cli("ingest", "responses", str(write_jsonl(tmp_path / "a.jsonl", answers)))
        listed = wait_for(lambda: (d := env.cli_json("cases")) and len(d["cases"]) == 2 and d, what="two cases")
        case, = [c for c in listed["cases"] if c["response_id"] == "r-det"]
        assert {c["response_id"] for c in listed["cases"]} == {"r-det", "r-esc"}  # not the passive, not the 10
        assert set(case) >= CASE_KEYS
        assert (case["response_id"], case["owner"], case["score"], case["status"]) == ("r-det", "espoo-manager", 2,
                                                                                       "open")
        assert case["segment"] == {"location": "Espoo"} and "0701234567" not in case["comment"]
        assert sum(listed["summary"].values()) == 2 and listed["summary"]["closed_within_sla"] == 0

        opened = wait_for(lambda: len(receiver.events("case.opened")) == 2 and receiver.events("case.opened"),
                          what="the webhook calls")
        (headers, body), = [(h, b) for h, b in opened if json.loads(b)["data"]["case_id"] == case["case_id"]]
        assert verify(body, headers["X-Npsflow-Signature"], SECRET)
        assert not verify(body, headers["X-Npsflow-Signature"], b"not-the-secret-0123456789")
        sent = json.loads(body)
        assert sent["data"]["case_id"] == case["case_id"] and headers["Idempotency-Key"] == sent["id"]
        assert "0701234567" not in body.decode()

        acked = json.loads(env.cli("cases", "ack", case["case_id"], "--text", "Called, apologised",
                                   "--actor", "anna", "--format", "json").stdout)
        assert acked["first_contact_at"] is not None and acked["notes"][0]["actor"] == "anna"
        again = env.cli("cases", "ack", case["case_id"], "--actor", "anna", check=False)
        assert again.returncode == 1 and "already_acknowledged" in again.stderr and len(again.stderr.splitlines()) == 1

        url = f"{env.internal_url}/api/v1/cases/{case['case_id']}/note"
        assert requests.post(url, data="x", headers={"Content-Type": "text/plain"}, timeout=30).status_code == 415
        retry = {"Idempotency-Key": "note-voucher-0001"}
        reply = requests.post(url, json={"actor": "ola", "text": "Sent a voucher"}, headers=retry, timeout=30)
        assert reply.status_code == 202
        assert requests.post(url, json={"actor": "ola", "text": "Sent a voucher"}, headers=retry,
                             timeout=30).status_code in (200, 202)  # a client's retry: the same command
        command = reply.json()["command_id"]
        wait_for(lambda: command in _case(env, case["case_id"])["command_ids"], what="the API's note")
        time.sleep(1.0)
        assert [n["text"] for n in _case(env, case["case_id"])["notes"]].count("Sent a voucher") == 1
        assert requests.post(f"{env.internal_url}/api/v1/cases/case-0000000000000000/ack", json={"actor": "x"},
                             timeout=30).status_code == 404

        env.kill_worker()  # no graceful stop: whatever was not committed is read again
    finally:
        env.stop_worker()
    env.start_worker()
    try:
        edit = {**answers[0], "score": 10, "responded_at": (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        env.cli("ingest", "responses", str(write_jsonl(tmp_path / "b.jsonl", answers + [edit])))  # replays + edit
        closed = wait_for(lambda: (c := _case(env, case["case_id"])) and c["status"] == "closed" and c,
                          what="the case resolved by the edit")
        assert closed["close_reason"] == "resolved_by_edit" and closed["score"] == 10
        wait_for(lambda: receiver.events("case.resolved_by_edit"), what="the resolved notification")
        listed = env.cli_json("cases")
        assert sorted(c["response_id"] for c in listed["cases"]) == ["r-det", "r-esc"]  # no new case
        opened = receiver.events("case.opened")
        assert len({h["Idempotency-Key"] for h, _ in opened}) == 2 and len(opened) == 2
        # the 20 s SLA: r-esc, never touched, escalates once to the escalation owner (the agent's timer)
        escalated = wait_for(lambda: [json.loads(b) for h, b in receiver.events("case.escalated")
                                      if json.loads(b)["data"]["case_id"] != case["case_id"]], timeout=120,
                             what="the escalation")
        (esc,) = escalated
        assert esc["to"] == "head-of-care"
        row = wait_for(lambda: (c := _case(env, esc["data"]["case_id"]))["escalated_to"] and c, what="the row")
        assert (row["escalated_to"], row["status"]) == ("head-of-care", "overdue")
    finally:
        env.stop_worker()


def _case(env, case_id: str) -> dict:
    reply = requests.get(f"{env.internal_url}/api/v1/case", params={"id": case_id}, timeout=30)
    return reply.json()["case"]
