"""Invitation channels against real in-process servers: aiosmtpd for SMTP, an aiohttp app standing in for
a Twilio-style SMS gateway. Retries use an injected sleep that only records, so no test waits."""

import asyncio
import base64
import email
import json
import socket
from datetime import datetime, timezone
from email import policy
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from hypothesis import example, given, settings
from hypothesis import strategies as st
from aiosmtpd.controller import Controller

from sinks.channels import (Channel, ChannelCosts, EmailChannel, Invitation, NewsletterChannel, OutboxChannel,
                            RetryPolicy, SendResult, SmsChannel, TransientFailure, build_channels,
                            call_with_retry, render_embed, sms_segments)
from sinks.channels.email import build_message
from sinks.channels.retry import PERMANENT, TRANSIENT, parse_retry_after

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc)
PRIMARY = "#0a7d5a"
NORDIC = "Hej Åsa! Tack för besöket i Malmö – æ ø å Æ Ø Å ä ö"
SCORE_URLS = [f"https://survey.example/i/inv-42?s={i}&sig=abc{i}" for i in range(11)]
LOGO = "https://cdn.example/acme/logo.png"


def invitation(**overrides) -> Invitation:
    fields = dict(
        invitation_id="inv-42", org_id="acme", org_name="Kafé <script>alert(1)</script>", locale="sv",
        to_email="anna@example.se", to_phone="+46701234567",
        survey_url="https://survey.example/i/inv-42?sig=abc", score_urls=list(SCORE_URLS),
        texts={
            "subject": "En snabb fråga från Kafé Åre",
            "intro": NORDIC,
            "question": "Hur troligt är det att du skulle rekommendera Kafé <script>alert(1)</script> till en vän?",
            "low_label": "Inte alls troligt", "high_label": "Mycket troligt",
            "sms_text": "Hej! Hur var ditt besök? Svara här: {link}",
            "footer": "Du får detta mejl för att du besökte oss.",
            "reminder_prefix": "Påminnelse:",
        },
        branding={"name": "Kafé <script>alert(1)</script>", "logo_url": LOGO,
                  "colors": {"primary": PRIMARY, "background": "#fafafa", "text": "#111111"},
                  "sender_name": "Kafé Åre", "sender_email": "nps@kafe.example", "sms_sender": "KafeAre"},
    )
    fields.update(overrides)
    return Invitation(**fields)


class Recorder:
    """Injected sleep: records the delays instead of waiting."""

    def __init__(self):
        self.delays = []

    async def __call__(self, seconds):
        self.delays.append(seconds)


def policy_with(recorder, **kw) -> RetryPolicy:
    return RetryPolicy(sleep=recorder, random=lambda: 0.5, **kw)


class Page(HTMLParser):
    def __init__(self, html):
        super().__init__()
        self.hrefs, self.srcs, self.tags = [], [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "a":
            self.hrefs.append(attrs.get("href"))
        if "src" in attrs:
            self.srcs.append(attrs["src"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- SMTP --------------------------------------------------------------------------------------------

class Mailbox:
    def __init__(self, temporary_failures=0):
        self.temporary_failures = temporary_failures
        self.data_commands = 0
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.data_commands += 1
        if self.temporary_failures:
            self.temporary_failures -= 1
            return "451 4.3.0 temporary local problem, try again"
        self.envelopes.append(envelope)
        return "250 2.0.0 OK queued"


class RejectingMailbox(Mailbox):
    def __init__(self):
        super().__init__()
        self.rcpt_commands = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt_commands += 1
        return "550 5.1.1 mailbox unavailable"


@pytest.fixture
def smtp():
    controllers = []

    def start(handler):
        controller = Controller(handler, hostname="127.0.0.1", port=free_port())
        controller.start()
        controllers.append(controller)
        return controller

    yield start
    for controller in controllers:
        controller.stop()


def email_channel(controller, sleep, **kw):
    return EmailChannel(host=controller.hostname, port=controller.port, starttls=False, timeout=10,
                        retry=policy_with(sleep), costs=ChannelCosts(email=0.001, currency="EUR"),
                        clock=lambda: NOW, **kw)


def parts(msg):
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    return plain, html


async def test_email_swedish_invitation_arrives_with_text_html_and_headers(smtp):
    box = Mailbox()
    sleep = Recorder()
    result = await email_channel(smtp(box), sleep).send(invitation())

    assert result.status == "sent" and result.reason is None and result.attempts == 1
    assert result.cost == 0.001 and result.currency == "EUR"
    assert len(box.envelopes) == 1 and sleep.delays == []
    env = box.envelopes[0]
    assert env.mail_from == "nps@kafe.example" and env.rcpt_tos == ["anna@example.se"]
    msg = email.message_from_bytes(env.original_content, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Subject"] == "En snabb fråga från Kafé Åre"
    assert msg["From"].addresses[0].display_name == "Kafé Åre"
    assert msg["From"].addresses[0].addr_spec == "nps@kafe.example"
    assert msg["To"] == "anna@example.se"
    assert "inv-42" in msg["Message-ID"] and msg["Message-ID"] == result.provider_id
    assert msg["Date"].datetime == NOW
    assert msg["Content-Language"] == "sv"
    assert "List-Unsubscribe" not in msg
    plain, html = parts(msg)
    for body in (plain, html):
        assert NORDIC in body
        assert "Du får detta mejl för att du besökte oss." in body
    assert "Inte alls troligt" in plain and "Mycket troligt" in plain
    assert all(url in plain for url in SCORE_URLS)


async def test_email_html_has_the_eleven_score_links_branding_and_escaped_markup(smtp):
    box = Mailbox()
    await email_channel(smtp(box), Recorder()).send(invitation())
    _, html = parts(email.message_from_bytes(box.envelopes[0].original_content, policy=policy.default))

    page = Page(html)
    assert page.hrefs == SCORE_URLS  # '&' in the links survives escaping
    assert page.srcs == [LOGO]
    assert PRIMARY in html
    assert "<script" not in html and "script" not in page.tags
    assert "Kafé &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "0 = Inte alls troligt" in html and "10 = Mycket troligt" in html
    assert 'name="viewport"' in html


async def test_email_reminder_subject_prefix_and_list_unsubscribe(smtp):
    box = Mailbox()
    channel = email_channel(smtp(box), Recorder(), list_unsubscribe="https://kafe.example/u/{invitation_id}")
    result = await channel.send(invitation(reminder=True))
    assert result.status == "sent"
    msg = email.message_from_bytes(box.envelopes[0].original_content, policy=policy.default)
    assert msg["Subject"] == "Påminnelse: En snabb fråga från Kafé Åre"
    assert msg["List-Unsubscribe"] == "<https://kafe.example/u/inv-42>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_email_rejected_recipient_is_a_permanent_failure_after_one_attempt(smtp):
    box = RejectingMailbox()
    sleep = Recorder()
    result = await email_channel(smtp(box), sleep).send(invitation())
    assert result == SendResult("failed", "smtp_rejected_recipient", 1, None, None, None, "550 5.1.1")
    assert box.rcpt_commands == 1 and box.envelopes == [] and sleep.delays == []


async def test_email_temporary_failures_are_retried_until_accepted(smtp):
    box = Mailbox(temporary_failures=2)
    sleep = Recorder()
    channel = email_channel(smtp(box), sleep)
    result = await channel.send(invitation())
    assert result.status == "sent" and result.attempts == 3
    assert box.data_commands == 3 and len(box.envelopes) == 1
    assert sleep.delays == [channel.retry.backoff(1), channel.retry.backoff(2)]
    assert sleep.delays[1] > sleep.delays[0] > 0
    # the retried message is the same message: one Message-ID
    assert email.message_from_bytes(box.envelopes[0].original_content)["Message-ID"] == result.provider_id


async def test_email_server_down_fails_unreachable_after_max_attempts():
    sleep = Recorder()
    channel = EmailChannel(host="127.0.0.1", port=free_port(), starttls=False, timeout=5,
                           retry=policy_with(sleep, max_attempts=4))
    result = await channel.send(invitation())
    assert result.status == "failed" and result.reason == "smtp_unreachable"
    assert result.attempts == 4 and result.provider_id is None and result.cost is None
    assert len(sleep.delays) == 3


async def test_email_without_address_or_with_bad_links_fails_without_contacting_anyone(smtp):
    box = Mailbox()
    channel = email_channel(smtp(box), Recorder())
    no_address = await channel.send(invitation(to_email=None))
    assert (no_address.status, no_address.reason, no_address.attempts) == ("failed", "no_address", 0)
    ten_links = await channel.send(invitation(score_urls=SCORE_URLS[:10]))
    assert (ten_links.status, ten_links.reason) == ("failed", "invalid_invitation")
    js_link = await channel.send(invitation(score_urls=["javascript:alert(1)"] + SCORE_URLS[1:]))
    assert js_link.reason == "invalid_invitation"
    assert box.envelopes == []


def test_branding_colours_cannot_inject_css():
    inv = invitation(branding={"name": "Acme", "colors": {"primary": "red;background:url(https://evil.example/x)"},
                               "logo_url": "javascript:alert(1)", "sender_email": "nps@acme.example"})
    html = build_message(inv, now=NOW).get_body(("html",)).get_content()
    assert "evil.example" not in html and "javascript:" not in html
    assert Page(html).srcs == []


# --- SMS gateway ---------------------------------------------------------------------------------------

class Gateway:
    """A Twilio Messages API stand-in: records each request, answers from a script (default 201 + sid)."""

    def __init__(self):
        self.requests = []
        self.script = []
        self.port = None

    async def messages(self, request):
        form = await request.post()
        self.requests.append({"path": request.path, "method": request.method,
                              "authorization": request.headers.get("Authorization"),
                              "content_type": request.content_type, "form": dict(form)})
        status, body, headers = self.script.pop(0) if self.script else (201, None, {})
        if body is None:
            body = {"sid": f"SM{len(self.requests):032x}", "status": "queued"}
        return web.json_response(body, status=status, headers=headers)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def gateway():
    gw = Gateway()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", gw.messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    gw.port = runner.addresses[0][1]
    yield gw
    await runner.cleanup()


def sms_channel(gw, sleep, **kw):
    return SmsChannel(base_url=gw.base_url, account_sid="AC0123456789abcdef", auth_token="s3cret",
                      timeout=10, costs=ChannelCosts(sms=0.15, currency="EUR"), retry=policy_with(sleep), **kw)


async def test_sms_request_has_the_twilio_shape_and_the_sid_is_the_provider_id(gateway):
    sleep = Recorder()
    result = await sms_channel(gateway, sleep).send(invitation())

    assert result.status == "sent" and result.attempts == 1
    assert result.provider_id == f"SM{1:032x}"
    assert result.cost == 0.15 and result.currency == "EUR"
    [req] = gateway.requests
    assert req["method"] == "POST" and req["path"] == "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
    assert req["content_type"] == "application/x-www-form-urlencoded"
    scheme, _, token = req["authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(token).decode() == "AC0123456789abcdef:s3cret"
    assert set(req["form"]) == {"To", "From", "Body"}
    assert req["form"]["To"] == "+46701234567" and req["form"]["From"] == "KafeAre"
    body = req["form"]["Body"]
    assert body == "Hej! Hur var ditt besök? Svara här: https://survey.example/i/inv-42?sig=abc"
    assert sms_segments(body) == 1


async def test_sms_503_then_201_is_sent_after_two_attempts(gateway):
    gateway.script = [(503, {"message": "Service Unavailable"}, {})]
    sleep = Recorder()
    result = await sms_channel(gateway, sleep).send(invitation())
    assert result.status == "sent" and result.attempts == 2 and result.provider_id == f"SM{2:032x}"
    assert len(gateway.requests) == 2 and len(sleep.delays) == 1


async def test_sms_400_is_a_permanent_gateway_4xx_after_one_attempt(gateway):
    gateway.script = [(400, {"code": 21211, "message": "The 'To' number is not a valid phone number."}, {})]
    sleep = Recorder()
    result = await sms_channel(gateway, sleep).send(invitation())
    assert result == SendResult("failed", "gateway_4xx", 1, None, None, None, "HTTP 400 code 21211")
    assert len(gateway.requests) == 1 and sleep.delays == []


async def test_sms_429_honours_retry_after(gateway):
    gateway.script = [(429, {"code": 20429, "message": "Too Many Requests"}, {"Retry-After": "7"})]
    sleep = Recorder()
    result = await sms_channel(gateway, sleep).send(invitation())
    assert result.status == "sent" and result.attempts == 2
    assert sleep.delays == [7.0]


async def test_sms_retry_after_beyond_the_limit_gives_up_as_rate_limited(gateway):
    gateway.script = [(429, {}, {"Retry-After": "3600"})]
    sleep = Recorder()
    channel = SmsChannel(base_url=gateway.base_url, account_sid="AC1", auth_token="t",
                         retry=policy_with(sleep, max_retry_after=60))
    result = await channel.send(invitation())
    assert (result.status, result.reason, result.attempts) == ("failed", "gateway_rate_limited", 1)
    assert sleep.delays == []


async def test_sms_persistent_5xx_fails_after_max_attempts(gateway):
    gateway.script = [(500, {}, {})] * 4
    sleep = Recorder()
    result = await sms_channel(gateway, sleep).send(invitation())
    assert (result.status, result.reason, result.attempts) == ("failed", "gateway_5xx", 4)
    assert len(gateway.requests) == 4 and len(sleep.delays) == 3


async def test_sms_gateway_unreachable():
    sleep = Recorder()
    channel = SmsChannel(base_url=f"http://127.0.0.1:{free_port()}", account_sid="AC1", auth_token="t",
                         sender="Acme", retry=policy_with(sleep, max_attempts=3))
    result = await channel.send(invitation())
    assert (result.status, result.reason, result.attempts) == ("failed", "gateway_unreachable", 3)
    assert len(sleep.delays) == 2


async def test_sms_cost_is_price_per_segment_and_no_phone_is_no_address(gateway):
    long_text = "Hej! " + "Hur var ditt besök hos oss i dag? " * 5 + "{link}"
    inv = invitation(texts={**invitation().texts, "sms_text": long_text})
    result = await sms_channel(gateway, Recorder()).send(inv)
    body = gateway.requests[0]["form"]["Body"]
    assert 160 < len(body) <= 306 and sms_segments(body) == 2
    assert result.cost == 0.3
    missing = await sms_channel(gateway, Recorder()).send(invitation(to_phone=None))
    assert (missing.status, missing.reason, missing.attempts) == ("failed", "no_address", 0)
    assert len(gateway.requests) == 1


@pytest.mark.parametrize("text, segments", [
    ("", 1),
    ("a" * 160, 1),
    ("a" * 161, 2),
    ("a" * 306, 2),
    ("a" * 307, 3),
    ("åäöÅÄÖæøÆØé" * 14 + "abcdef", 1),  # Nordic letters are GSM-7 basic: 160 septets
    ("€" * 80, 1),  # extension chars take 2 septets: 160
    ("€" * 81, 2),
    ("a" * 152 + "€", 1),  # 154 septets fit one SMS
    ("a" * 159 + "[", 2),  # 161 septets
    ("a" * 158 + "{", 1),  # 160 septets
    ("ł" * 70, 1),  # ł is not GSM-7 → UCS-2
    ("ł" * 71, 2),
    ("a" * 69 + "ł", 1),
    ("a" * 70 + "ł", 2),
    ("😀" * 35, 1),  # each emoji is a surrogate pair: 70 units
    ("😀" * 36, 2),
    ("ł" * 134, 2),
    ("ł" * 135, 3),
])
def test_sms_segments(text, segments):
    assert sms_segments(text) == segments


def test_sms_segments_never_split_an_escape_sequence():
    # 152 septets then '€' (2): 154 > 153 in a concatenated message, so '€' opens part 2
    assert sms_segments("a" * 152 + "€" + "a" * 152) == 3
    assert sms_segments("a" * 151 + "€" + "a" * 153) == 2


def _http_url_by_urlsplit(url: object) -> bool:
    """The check as it was: urlsplit for every URL."""
    if not isinstance(url, str) or not url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["", "http://", "https://", "HTTPS://", "http:/", " https://", "\thttp://", "ftp://",
                        "https:", "http://[::1]", "https://[", "h\nttps://"]),
       st.text(alphabet="ab.:/?#[]@ \t\r\n\x00\x7fåÅ%=-_~1", max_size=12))
def test_the_fast_http_url_check_answers_like_urlsplit(prefix, rest):
    from sinks.channels.base import _http_url

    url = prefix + rest
    assert _http_url(url) == _http_url_by_urlsplit(url), url


_BODY_CHARS = st.text(alphabet="ab. \t=å\r\n-~^", max_size=90)
_BODY = st.lists(st.one_of(_BODY_CHARS, st.integers(0, 10)), max_size=12)
_LINK_TEXT = st.one_of(st.text(alphabet="hts:/.=?&ab9 \x7f\x01é\t", min_size=1, max_size=120),  # encoded
                       st.text(alphabet="hts:/.?&ab9-_~^", min_size=1, max_size=120))  # copied as they are


@settings(max_examples=1500, deadline=None)
@given(_BODY, st.lists(_LINK_TEXT, min_size=11, max_size=11), st.booleans())
@example(["x ", 0, "\n" + "a" * 100], ["https://l/0"] * 11, False)  # a long last line without a line end
@example(["x\n" + "a" * 70 + " ", 1, " " + "b" * 40], ["https://l/=1"] * 11, False)
@example([0, "\r\n.\r\n", 1, " \n.", 2, "=\t"], ["https://l/ 2."] * 11, False)
@example(["a" * 60, 0, "b" * 30, 0, 1, "\n" + "c" * 75, 2, ".\n"], [f"https://l/{'x' * i}" for i in range(11)],
         False)  # soft breaks inside links and between two of them
@example(["~^`|!*$@#%&;:?_{} " * 5, 0, "\n"], ["https://l/a"] * 11, False)  # no mark left: encoded with the links
@example(["x\n", 0, "\n", 1], [".", "."] + ["https://l/a"] * 9, False)  # a lone "." on a line is encoded
def test_a_quoted_body_encodes_like_quoted_printable_of_the_whole_body(items, links, break_a_link):
    """The body encoded once per combination of link lengths, the links' characters put in their places: the
    same bytes as b2a_qp of the body with the links in it (soft breaks inside and between links, trailing blanks,
    dots, '=' and non-ASCII next to them); links b2a_qp would change are encoded with the body."""
    from sinks.channels.email import _LINK, QuotedBody, _fill, _pieces

    rendered = "".join(_LINK.format(i) if isinstance(i, int) else i for i in items)
    if break_a_link:
        links = [*links[:10], links[10] + "\n x"]  # never a signed link: the whole body encoded at once
    body = QuotedBody(rendered)
    whole = _fill(_pieces(rendered.replace("\r\n", "\n").replace("\n", "\r\n")), links)
    assert body.fill(links) == whole


def test_the_kept_date_header_is_format_datetime_of_every_instant():
    from datetime import timedelta
    from email.utils import format_datetime
    from zoneinfo import ZoneInfo

    from sinks.channels.email import DateHeader

    header, helsinki = DateHeader(), ZoneInfo("Europe/Helsinki")
    fold = datetime(2026, 10, 25, 3, 30, 15, tzinfo=helsinki)  # the repeated hour: the same wall clock twice
    moments = [NOW, NOW.replace(microsecond=999_999), NOW + timedelta(seconds=1), NOW.replace(tzinfo=None),
               NOW.astimezone(helsinki), NOW.astimezone(timezone(timedelta(hours=-3, seconds=7))),
               fold, fold.replace(fold=1), fold, NOW.replace(tzinfo=None), NOW]
    assert [header(m) for m in moments] == [format_datetime(m).encode("ascii") for m in moments]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet="ab&<>\"'=/ ", max_size=20), max_size=11))
def test_links_are_html_escaped_like_markupsafe(links):
    from markupsafe import escape

    from sinks.channels.email import _html_escaped

    assert _html_escaped(links) == [str(escape(link)) for link in links]


# --- outbox and newsletter -------------------------------------------------------------------------------

async def test_outbox_email_writes_the_same_message_the_smtp_channel_sends(tmp_path, smtp):
    outbox = OutboxChannel(tmp_path, "email", costs=ChannelCosts(email=0.001), clock=lambda: NOW)
    result = await outbox.send(invitation())
    assert result.status == "sent" and result.cost == 0.001
    path = tmp_path / "outbox" / "email" / "inv-42.eml"
    written = email.message_from_bytes(path.read_bytes(), policy=policy.default)

    box = Mailbox()
    await email_channel(smtp(box), Recorder()).send(invitation())
    sent = email.message_from_bytes(box.envelopes[0].original_content, policy=policy.default)
    for header in ("From", "To", "Subject", "Date", "Message-ID", "Content-Language"):
        assert written[header] == sent[header], header
    assert parts(written) == parts(sent)
    assert written["Message-ID"] == result.provider_id

    again = await outbox.send(invitation())  # a re-send overwrites the same file
    assert again.status == "sent" and again.provider_id == result.provider_id
    assert sorted(p.name for p in path.parent.iterdir()) == ["inv-42.eml"]
    reminder = await outbox.send(invitation(reminder=True))  # the reminder is a message of its own
    assert reminder.status == "sent" and reminder.provider_id != result.provider_id
    assert sorted(p.name for p in path.parent.iterdir()) == ["inv-42-reminder.eml", "inv-42.eml"]
    reminder_msg = email.message_from_bytes((path.parent / "inv-42-reminder.eml").read_bytes(), policy=policy.default)
    assert reminder_msg["Subject"].startswith("Påminnelse:")
    assert not email.message_from_bytes(path.read_bytes(), policy=policy.default)["Subject"].startswith("Påminnelse:")


async def test_outbox_writes_a_gathered_chunk_in_one_thread_hop_each_file_the_message_it_built(tmp_path,
                                                                                                 monkeypatch):
    from sinks.channels import outbox as outbox_module

    groups, write_files = [], outbox_module.write_files

    def counted(files):
        groups.append(len(files))
        return write_files(files)

    monkeypatch.setattr(outbox_module, "write_files", counted)
    outbox = OutboxChannel(tmp_path, "email", clock=lambda: NOW)
    invitations = [invitation(invitation_id=f"inv-{i}", reminder=i % 5 == 0) for i in range(40)]
    results = await asyncio.gather(*(outbox.send(inv) for inv in invitations))
    assert groups == [40]  # one thread hop for the whole chunk (was one per file)
    folder = tmp_path / "outbox" / "email"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{inv.delivery_id}.eml" for inv in invitations)
    for inv, result in zip(invitations, results):
        built = outbox.templates.build(inv, NOW)  # the same template (and boundary): the very same bytes
        assert (folder / f"{inv.delivery_id}.eml").read_bytes() == built.data
        assert (result.status, result.provider_id, result.attempts) == ("sent", built.message_id, 1)
    assert (await outbox.send(invitation(invitation_id="inv-1"))).status == "sent"  # a later send: a new group
    assert groups == [40, 1]


async def test_outbox_a_file_that_cannot_be_written_fails_only_its_own_send(tmp_path):
    outbox = OutboxChannel(tmp_path, "email", clock=lambda: NOW)
    folder = tmp_path / "outbox" / "email"
    (folder / "inv-3.eml").mkdir(parents=True)  # a directory in the way: the rename onto it fails
    invitations = [invitation(invitation_id=f"inv-{i}") for i in range(8)]
    results = await asyncio.gather(*(outbox.send(inv) for inv in invitations))
    assert [(r.status, r.reason) for r in results] == [
        ("failed", "outbox_write_failed") if i == 3 else ("sent", None) for i in range(8)]
    assert results[3].detail == "IsADirectoryError" and results[3].attempts == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"inv-{i}.eml" for i in range(8))  # no temp files
    assert all((folder / f"inv-{i}.eml").read_bytes() == outbox.templates.build(invitations[i], NOW).data
               for i in range(8) if i != 3)


async def test_outbox_sms_line_is_written_once_per_invitation(tmp_path):
    outbox = OutboxChannel(tmp_path, "sms", costs=ChannelCosts(sms=0.15, currency="EUR"))
    first = await outbox.send(invitation())
    second = await outbox.send(invitation())
    # another channel instance (e.g. a restarted worker) sees the file, not just its memory
    third = await OutboxChannel(tmp_path, "sms").send(invitation())
    other = await outbox.send(invitation(invitation_id="inv-43"))
    assert all(r.status == "sent" for r in (first, second, third, other))

    lines = (tmp_path / "outbox" / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["invitation_id"] for r in records] == ["inv-42", "inv-43"]
    rec = records[0]
    assert rec["to"] == "+46701234567" and rec["from"] == "KafeAre"
    assert rec["body"] == "Hej! Hur var ditt besök? Svara här: https://survey.example/i/inv-42?sig=abc"
    assert rec["segments"] == 1 and first.cost == 0.15


async def test_outbox_sms_does_not_glue_onto_a_torn_line(tmp_path):
    path = tmp_path / "outbox" / "sms.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"invitation_id": "inv-1", "to": "+4', encoding="utf-8")  # a crash mid-write
    result = await OutboxChannel(tmp_path, "sms").send(invitation())
    assert result.status == "sent"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[-1])["invitation_id"] == "inv-42" and len(lines) == 2


def test_newsletter_embed_is_self_contained_and_escaped():
    snippet = render_embed(invitation())
    page = Page(snippet)
    assert page.hrefs == SCORE_URLS
    assert page.srcs == [LOGO]
    assert "<script" not in snippet and "script" not in page.tags
    assert "&lt;script&gt;" in snippet
    assert not {"style", "link", "html", "head", "body", "iframe"} & set(page.tags)
    assert "url(" not in snippet and "@import" not in snippet
    hosts = {urlsplit(u).netloc for u in page.hrefs + page.srcs}
    assert hosts == {"survey.example", "cdn.example"}
    assert PRIMARY in snippet and "Mycket troligt" in snippet


async def test_newsletter_send_writes_the_snippet_at_no_cost(tmp_path):
    channel = NewsletterChannel(tmp_path, costs=ChannelCosts(newsletter=0.0, currency="SEK"))
    result = await channel.send(invitation())
    assert (result.status, result.attempts, result.cost, result.currency) == ("sent", 1, 0.0, "SEK")
    written = (tmp_path / "outbox" / "newsletter" / "inv-42.html").read_text(encoding="utf-8")
    assert written == render_embed(invitation())


# --- retry policy and factory ------------------------------------------------------------------------------

def test_backoff_grows_exponentially_with_bounded_jitter():
    low = RetryPolicy(base_delay=1, max_delay=5, jitter=0.5, random=lambda: 0.0)
    high = RetryPolicy(base_delay=1, max_delay=5, jitter=0.5, random=lambda: 0.999999)
    assert [low.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]
    assert [round(high.backoff(n), 3) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert RetryPolicy(max_attempts=2).delay_after(2, None) is None
    assert parse_retry_after("Mon, 23 Nov 2026 09:30:30 GMT", now=NOW) == 30.0
    assert parse_retry_after("soon") is None


async def test_an_unexpected_exception_becomes_a_failure_not_a_crash():
    sleep = Recorder()
    calls = []

    async def attempt():
        calls.append(1)
        if len(calls) == 1:
            raise TransientFailure("gateway_timeout")
        raise KeyError("bug")

    outcome = await call_with_retry(attempt, policy_with(sleep))
    assert (outcome.ok, outcome.reason, outcome.kind, outcome.attempts) == (False, "channel_error", PERMANENT, 2)

    async def always_transient():
        raise TransientFailure("smtp_timeout")

    outcome = await call_with_retry(always_transient, policy_with(Recorder(), max_attempts=2))
    assert (outcome.reason, outcome.kind, outcome.attempts) == ("smtp_timeout", TRANSIENT, 2)


def test_build_channels_defaults_to_the_outbox_and_builds_configured_transports(tmp_path):
    default = build_channels({}, tmp_path)
    assert set(default) == {"email", "sms"}
    assert all(isinstance(c, OutboxChannel) and isinstance(c, Channel) for c in default.values())
    assert {k: c.name for k, c in default.items()} == {"email": "email", "sms": "sms"}

    channels = build_channels({
        "email": {"transport": "smtp", "host": "smtp.example", "port": 587, "starttls": True,
                  "username": "u", "password": "p"},
        "sms": {"transport": "gateway", "base_url": "https://api.twilio.com/", "account_sid": "AC9",
                "auth_token": "t", "sender": "Acme"},
        "newsletter": True,
        "costs": {"sms": 0.07, "email": 0.0005, "currency": "sek"},
        "retry": {"max_attempts": 2},
    }, tmp_path)
    assert isinstance(channels["email"], EmailChannel) and channels["email"].port == 587
    assert isinstance(channels["sms"], SmsChannel)
    assert channels["sms"].url == "https://api.twilio.com/2010-04-01/Accounts/AC9/Messages.json"
    assert channels["sms"].costs == ChannelCosts(email=0.0005, sms=0.07, currency="SEK")
    assert channels["sms"].retry.max_attempts == 2
    assert isinstance(channels["newsletter"], NewsletterChannel)
    assert set(build_channels({"sms": False}, tmp_path)) == {"email"}
    with pytest.raises(ValueError):
        build_channels({"email": {"transport": "carrier-pigeon"}}, tmp_path)
    with pytest.raises(ValueError):
        build_channels({"sms": {"transport": "gateway", "base_url": "https://x"}}, tmp_path)


def test_the_example_channels_file_builds_every_channel(tmp_path):
    from pathlib import Path

    from npsflow import config
    from sinks.channels.newsletter import NewsletterChannel
    from streams.app import load_channels

    example = Path(__file__).resolve().parent.parent / "deploy" / "channels.example.yaml"
    built = load_channels(config.load({"NPSFLOW_HOME": str(tmp_path), "NPSFLOW_CHANNELS": str(example)}))
    assert isinstance(built["email"], EmailChannel) and isinstance(built["sms"], SmsChannel)
    assert isinstance(built["newsletter"], NewsletterChannel)
    assert built["sms"].url == "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json"
    defaults = load_channels(config.load({"NPSFLOW_HOME": str(tmp_path)}))  # no file: outbox + newsletter
    assert {k: type(v).__name__ for k, v in defaults.items()} == {
        "email": "OutboxChannel", "sms": "OutboxChannel", "newsletter": "NewsletterChannel"}


# --- at most once: what is retried and what is not ------------------------------------------------------

class DroppingMailbox(Mailbox):
    """Takes the whole message, then drops the connection instead of answering: the client cannot know."""

    async def handle_DATA(self, server, session, envelope):
        self.data_commands += 1
        self.envelopes.append(envelope)
        server.transport.close()
        return "250 2.0.0 OK queued"


async def test_smtp_connection_lost_during_data_is_uncertain_and_never_retried(smtp):
    box = DroppingMailbox()
    sleep = Recorder()
    result = await email_channel(smtp(box), sleep).send(invitation())
    assert (result.status, result.reason, result.retryable, result.attempts) == (
        "failed", "delivery_uncertain", False, 1)
    assert box.data_commands == 1 and sleep.delays == []  # one DATA: the message is not sent a second time


async def test_smtp_temporary_failures_are_retryable_for_the_dispatcher(smtp):
    sleep = Recorder()
    result = await email_channel(smtp(Mailbox(temporary_failures=10)), sleep).send(invitation())
    assert (result.status, result.reason, result.retryable, result.attempts) == (
        "failed", "smtp_temporary_failure", True, 4)
    unreachable = await EmailChannel(host="127.0.0.1", port=free_port(), starttls=False, timeout=5,
                                     retry=policy_with(Recorder(), max_attempts=2)).send(invitation())
    assert (unreachable.reason, unreachable.retryable) == ("smtp_unreachable", True)
    rejected = await email_channel(smtp(RejectingMailbox()), Recorder()).send(invitation())
    assert (rejected.reason, rejected.retryable) == ("smtp_rejected_recipient", False)


async def test_sms_gateway_timeout_is_uncertain_and_never_retried():
    calls = []

    async def slow(request):
        calls.append(await request.post())
        await asyncio.sleep(2)
        return web.json_response({"sid": "SM1"}, status=201)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        channel = SmsChannel(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}", account_sid="AC1",
                             auth_token="t", timeout=0.3, retry=policy_with(Recorder()))
        result = await channel.send(invitation())
    finally:
        await runner.cleanup()
    assert (result.status, result.reason, result.retryable, result.attempts) == ("failed", "delivery_uncertain",
                                                                                  False, 1)
    assert len(calls) == 1


# --- the pre-rendered e-mail builder ----------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, {"reminder": True}, {"to_email": "Anna.B+nps@mail.example.se"},
                                       {"locale": "fi", "texts": {"subject": "Kysymys " + "å" * 80}}])
def test_the_pre_rendered_message_parses_like_the_stdlib_one(overrides):
    from sinks.channels.email import MailTemplates, message_bytes

    inv = invitation(**overrides)
    unsubscribe = "https://kafe.example/u/{invitation_id}"
    reference = email.message_from_bytes(message_bytes(build_message(inv, list_unsubscribe=unsubscribe, now=NOW)),
                                         policy=policy.default)
    templates = MailTemplates(list_unsubscribe=unsubscribe)
    wire = templates.build(inv, NOW)
    fast = email.message_from_bytes(wire.data, policy=policy.default)
    assert not fast.defects and all(not p.defects for p in fast.iter_parts())
    for header in ("From", "To", "Subject", "Date", "Message-ID", "Content-Language", "List-Unsubscribe",
                   "List-Unsubscribe-Post", "Auto-Submitted", "MIME-Version"):
        assert fast[header] == reference[header], header
    assert fast.get_content_type() == "multipart/alternative"
    assert parts(fast) == parts(reference)
    assert (wire.message_id, wire.sender, wire.recipients) == (reference["Message-ID"], "nps@kafe.example",
                                                               (inv.to_email,))
    assert all(len(line) <= 998 for line in wire.data.split(b"\r\n")) and wire.data.isascii()
    other = templates.build(invitation(**{**overrides, "invitation_id": "inv-43",
                                          "score_urls": [u.replace("42", "43") for u in SCORE_URLS]}), NOW)
    assert len(templates.cache) == 1 and b"inv-43" in other.data and b"inv-42" not in other.data


def test_unusual_addresses_take_the_stdlib_path_and_bad_ones_are_refused():
    from sinks.channels.email import InvalidMessage, MailTemplates

    templates = MailTemplates()
    wire = templates.build(invitation(to_email="anna@exämple.se"), NOW)  # non-ASCII domain: via the stdlib
    assert email.message_from_bytes(wire.data, policy=policy.default)["To"] == "anna@exämple.se"
    with pytest.raises(InvalidMessage):  # as the stdlib builder refuses it
        templates.build(invitation(to_email="åsa@exempel.se"), NOW)
    with pytest.raises(InvalidMessage):
        templates.build(invitation(to_email="not an address"), NOW)
    with pytest.raises(InvalidMessage):
        templates.build(invitation(branding={}), NOW)  # no sender


def test_the_pre_rendered_builder_is_fast():
    import time

    from sinks.channels.email import MailTemplates

    templates, inv = MailTemplates(), invitation()
    templates.build(inv, NOW)
    start = time.perf_counter()
    for _ in range(500):
        templates.build(inv, NOW)
    per_mail = (time.perf_counter() - start) / 500
    start = time.perf_counter()
    for _ in range(20):
        build_message(inv, now=NOW).as_bytes(policy=policy.SMTP)
    stdlib = (time.perf_counter() - start) / 20
    print(f"pre-rendered {per_mail * 1e6:.0f} µs per mail, stdlib {stdlib * 1e6:.0f} µs")
    assert per_mail * 10 < stdlib


class CountingMailbox(Mailbox):
    def __init__(self):
        super().__init__()
        self.greetings = 0
        self.transports = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.greetings += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        self.transports.append(server.transport)
        return await super().handle_DATA(server, session, envelope)


async def test_smtp_sessions_are_reused_and_one_dropped_while_idle_is_replaced(smtp):
    box = CountingMailbox()
    sleep = Recorder()
    controller = smtp(box)
    channel = email_channel(controller, sleep, sessions=2)
    results = await asyncio.gather(*(channel.send(invitation(invitation_id=f"inv-{i}")) for i in range(10)))
    assert [r.status for r in results] == ["sent"] * 10 and len(box.envelopes) == 10
    assert box.greetings <= 2  # ten mails over at most two sessions
    for transport in box.transports:
        controller.loop.call_soon_threadsafe(transport.close)  # the server drops its idle clients
    await asyncio.sleep(0.2)
    again = await channel.send(invitation(invitation_id="inv-x"))
    assert (again.status, again.attempts) == ("sent", 1) and sleep.delays == []  # no failure, no backoff
    assert len(box.envelopes) == 11
    single = email_channel(smtp(CountingMailbox()), Recorder(), sessions=0)
    assert (await single.send(invitation())).status == "sent"
