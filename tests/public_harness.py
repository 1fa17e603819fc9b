"""The public listener in process, for the fuzz tests of the survey page and the response API (issue 15).

The real aiohttp application (``web.public.public_app``, its handlers, host guard, body limits, templates, CSRF,
link tokens, API keys) served by aiohttp's TestServer on 127.0.0.1; what it would write to Kafka is captured at
the raw topic's ``send`` (``CapturingTopic``, acknowledged at once as the broker would), and the invitations it
reads come from a dict (``DictInvitations``, the ``web.invitations.InvitationSource`` interface) instead of the
worker's Faust table. Rate limits are lifted so that every example reaches the handlers.

One event loop runs the server for the whole module (``PublicHarness.run`` drives a coroutine on it), so
hypothesis' synchronous examples can share one server.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer

from npsflow.programs import parse_programs
from schemas import codec as avro
from streams import links
from streams.app import Stats, dispatch_book
from streams.dispatch import link_key
from streams.guards import RateLimiter, api_key_hash
from tests.programs import DEFAULT, acme, bolt, programs_yaml, service, shop
from web.public import (AnswerWriter, InvitationDesk, Limits, Notices, ResponsesApi, SurveyPages, public_app)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
SECRET = "fuzz-secret-0123456789abcdef"
API_KEY = "npk_fuzz-key-of-acme"
OTHER_KEY = "npk_fuzz-key-of-bolt"
HOSTS = frozenset({"127.0.0.1", "localhost"})
BRAND = 'Acme <b>Oy</b> & "Sons"'  # markup in the organization's own texts must be escaped too
PROGRAMS = programs_yaml(
    acme(service(quiet_hours=DEFAULT), name='Acme <Oy> & "Sons"', brand={"name": BRAND},
         review_url="https://reviews.example.com/acme", api_keys=[api_key_hash(API_KEY)]),
    bolt(shop(quiet_hours=DEFAULT), api_keys=[api_key_hash(OTHER_KEY)]))


class CapturingTopic:
    """The raw topic's ``send``: keeps (key, value), tells ``on_send`` (if any), and acknowledges at once."""

    def __init__(self, on_send=None) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.on_send = on_send

    def get_topic_name(self) -> str:
        return "npsflow.responses.raw"

    async def send(self, key=None, value=None, **kw):
        self.sent.append((key, value))
        if self.on_send is not None:
            self.on_send(value)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class DictInvitations:
    """Invitations by id (``web.invitations.InvitationSource``): unknown → "invalid"."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict] = {}

    async def fetch(self, inv_id: str):
        inv = self.by_id.get(inv_id)
        return (inv, None) if inv is not None else (None, "invalid")


def invitation(inv_id: str, org: str = "acme", program: str = "service", locale: str = "fi", **extra) -> dict:
    return {"inv": inv_id, "org": org, "program": program, "locale": locale, "survey_id": f"nps-{program}",
            "resp": False, "answered_at": None, **extra}


class ErrorCount(logging.Handler):
    """Counts the records of level ERROR and above it sees."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class PublicHarness:
    def __init__(self, tmp_path) -> None:
        from npsflow import config

        settings = config.load({"NPSFLOW_HOME": str(tmp_path), "NPSFLOW_SECRET": SECRET})
        self.book = dispatch_book(settings, parse_programs(PROGRAMS))
        self.codec = avro.AvroCodec(registry_url="")
        self.topic = CapturingTopic(on_send=self.answered)
        self.invitations = DictInvitations()
        self.stats = Stats()
        self.now = NOW
        writer = AnswerWriter(SimpleNamespace(topics={"raw": self.topic}, codec=self.codec))
        unlimited = lambda: RateLimiter(rate=1e9, burst=1e9)  # noqa: E731
        limits = Limits(page_rate=1e9, per_invitation=unlimited(), per_api_key=unlimited())
        desk = InvitationDesk(self.invitations, self.book, edit_window_seconds=3600)
        shared = (desk, writer, limits, Notices(self.stats), self.book, lambda: self.now, self.stats)
        self.pages = SurveyPages(*shared)
        self.pages.follow_up_wait = 0.05  # the state here changes only when a test changes it
        self.app = public_app(self.pages, ResponsesApi(*shared), allowed_hosts=HOSTS)
        self.loop = asyncio.new_event_loop()
        self.server_log = ErrorCount()
        logging.getLogger("aiohttp").addHandler(self.server_log)
        self.client = self.run(self._start())

    async def _start(self) -> TestClient:
        client = TestClient(TestServer(self.app, host="127.0.0.1"))
        await client.start_server()
        return client

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        logging.getLogger("aiohttp").removeHandler(self.server_log)
        self.run(self.client.close())
        self.loop.close()

    def token(self, inv_id: str, score: int | None = None, expires: datetime | None = None) -> str:
        return links.sign_token(inv_id, expires or self.now + timedelta(days=1), link_key(SECRET.encode()), "k1",
                                score=score)

    def sent(self) -> list[dict]:
        """Every raw response the listener sent, decoded."""
        return [self.codec.decode(value, expected=avro.RAW_RESPONSE) for _, value in self.topic.sent]

    def answered(self, value: bytes) -> None:
        """What the pipeline does with a page's answer, at once: the invitation's state holds it (as the deliver
        agent's ``responded`` keeps it: latest version, first answer time) — the follow-up form completes it."""
        from streams.responses import parse_timestamp, to_ms

        raw = self.codec.decode(value, expected=avro.RAW_RESPONSE)
        inv = self.invitations.by_id.get(raw.get("invitation_id") or "")
        if inv is None or raw.get("source") != "web":  # (the API's answers to invitations: not the page's concern)
            return
        answered = parse_timestamp(raw["responded_at"], "responded_at")
        v = to_ms(answered) * 1_000_000
        if (inv.get("answer") or {}).get("v", -1) < v:
            inv["answer"] = {"v": v, "score": raw["score"], "comment": raw.get("comment"),
                             "follow_up": raw.get("follow_up")}
        if not inv.get("resp"):
            inv.update(resp=True, answered_at=to_ms(answered))

    def server_errors(self) -> int:
        """Errors aiohttp itself logged (e.g. "Unhandled exception" around a request): none is expected."""
        return self.server_log.count

    def failures(self) -> int:
        """Handler failures the ``guarded`` wrapper turned into the "unavailable" page."""
        return self.stats.as_dict().get("survey.page.unavailable", 0)
