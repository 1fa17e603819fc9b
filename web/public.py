"""The public listener (``NPSFLOW_PUBLIC_BIND``): the respondent's survey page and the response API, nothing else.

GET  /s/{token}           the survey page of the invitation the signed token names, branded and in its locale; a
                          one-click score link (from the e-mail) preselects the score and submits it at once —
                          by a tiny inline script, so mail scanners that prefetch links record nothing
POST /s/{token}           step "score": score 0–10 + optional comment → a raw response → 303 to the thank-you
                          page; step "follow_up": its answer (a new version of the answer the form's receipt
                          names) or "skip" → 303 to the thank-you page, done
GET  /s/{token}/thanks    ?a=<signed receipt>: "you answered 3", a change button, the category's follow-up
                          question (POST → redirect → GET: Back, reload and bookmarks never post again)
GET  /favicon.ico         a neutral icon (browsers ask for it)
POST /api/v1/responses    a JSON batch of responses collected elsewhere, per-organization API keys
                          (``Authorization: Bearer <key>``), per-record validation results in the reply
GET  /healthz             liveness
GET  /readyz              readiness in the worker's role (web.health)

Every reply carries Cross-Origin-Opener-Policy, HSTS when served over https (directly, or behind a trusted proxy
that says so in X-Forwarded-Proto), and is compressed when large and the client accepts it (web.common.
transport_policy). Pages without an invitation to take the language from (an invalid or truncated link) speak
the browser's language (Accept-Language) among the shipped ones.

Every other path is 404 here (the read APIs and the dashboard are on the internal listener, ``web.internal``).

An answer becomes a RawResponse on the raw topic with ``response_id = invitation_id`` (one response per
invitation; a change is a new version, latest wins) keyed by the invitation id, so classify joins it to the
invitation's segments. The first answer opens the edit window (``NPSFLOW_EDIT_WINDOW``); after it, the link
shows "already answered" and writes nothing. Nothing is written for a forged, expired or unknown token, a
missing/invalid CSRF token, an oversized body or a rate-limited client. Logs name invitation ids, never
addresses, comments or client IPs.

Any worker's public listener answers any invitation: one whose partition this worker does not hold is read from
the worker that holds it (web.invitations, web.routing); the answer is written to Kafka here all the same.

The pieces, each with its own state: ``Limits`` (rate limits, client address), ``InvitationDesk`` (the
invitations, with their texts), ``AnswerWriter`` (raw responses to Kafka), ``Notices`` (the notice pages),
``SurveyPages`` and ``ResponsesApi`` (the handlers); ``public_app`` puts them on an aiohttp application.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from urllib.parse import parse_qs

from aiohttp import web

from npsflow.ingest import MAX_JSON_DEPTH, TOO_DEEP, json_depth, response_key, to_raw_response
from schemas import codec as avro
from streams import links
from streams.guards import (Receipt, RateLimiter, api_key_matches, csrf_token, csrf_valid, read_receipt,
                            receipt_token)
from streams.nps import classify
from streams.responses import Rejected, to_ms, validate
from web import survey_page as page
from web.invitations import InvitationSource, LocalInvitations, RoutedInvitations
from web.common import (UnreadableBody, favicon, healthz, host_guard, html_reply, json_reply, leftover_body,
                        quiet_client_errors, read_body, transport_policy)

log = logging.getLogger("npsflow.survey")

MAX_FORM_BYTES = 48 * 1024  # two fields of 2000 characters, percent-encoded UTF-8, fit; nothing much bigger
MAX_API_BYTES = 1024 * 1024
MAX_API_RECORDS = 1000
MAX_FORM_TEXT = 2000  # the comment and follow-up fields of the page (the API allows MAX_COMMENT_CHARS)
STATUS = {"invalid": 404, "expired": 410, "answered": 409, "rate_limited": 429, "too_large": 413,
          "unavailable": 503}


def security_headers(nonce: str, logo_url: str | None = None) -> dict[str, str]:
    return {
        "Content-Security-Policy": page.content_security_policy(nonce, logo_url=logo_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }


@dataclass
class Limits:
    """Rate limits of the public listener and who the client is."""

    page_rate: float
    trusted_proxies: frozenset[str] = frozenset()
    per_invitation: RateLimiter = field(default_factory=lambda: RateLimiter(rate=0.2, burst=10))  # 10, then 1/5 s
    per_api_key: RateLimiter = field(default_factory=lambda: RateLimiter(rate=50.0, burst=200))

    def __post_init__(self) -> None:
        self.per_ip = RateLimiter(rate=self.page_rate, burst=30 * self.page_rate)  # default: 30 at once, then 1/s
        self.proxy_networks = tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)

    def trusted(self, peer: str) -> bool:
        """Whether ``peer`` is one of the trusted proxies (an address or inside a network of NPSFLOW_TRUSTED_PROXIES)."""
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.proxy_networks)

    def client_ip(self, request: web.Request) -> str:
        """The client's IP: the peer, or — behind a trusted reverse proxy — the last address it appended."""
        peer = request.remote or "unknown"
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and self.trusted(peer):
            return forwarded.split(",")[-1].strip() or peer
        return peer

    def page_wait(self, request: web.Request, inv_id: str | None) -> int | None:
        """Seconds the client must wait (its address or the invitation is over its limit), or None."""
        now = time.monotonic()
        for limiter, key in ((self.per_ip, self.client_ip(request)), (self.per_invitation, inv_id)):
            if key is not None and not limiter.allow(key, now):
                return max(1, int(limiter.retry_after(key, now) + 0.999))
        return None


class InvitationDesk:
    """The invitations the page answers with their texts: ``source`` (web.invitations) is this worker's table, or
    routed to the worker holding the invitation."""

    def __init__(self, source: InvitationSource, book, edit_window_seconds: int) -> None:
        self.source, self.book = source, book
        self.edit_window_ms = edit_window_seconds * 1000

    async def fetch(self, inv_id: str) -> tuple[dict | None, str | None]:
        """(invitation, None), or None and "invalid" (none such) / "unavailable" (cannot tell now)."""
        return await self.source.fetch(inv_id)

    async def lookup(self, inv_id: str):
        """(invitation, org, texts, branding), None — or None and why the page cannot be served."""
        inv, problem = await self.fetch(inv_id)
        if inv is None:
            return None, problem
        found = self.book.found(inv["org"], inv["program"])
        if found is None:
            return None, "invalid"
        from npsflow.programs import branding, texts

        org, program = found
        return (inv, org, texts(org, inv["locale"], program), branding(org, inv["locale"])), None

    def closed(self, inv: dict, now: datetime) -> bool:
        """Answered, and the edit window since the first answer is over."""
        first = inv.get("answered_at")
        return bool(inv.get("resp")) and first is not None and now.timestamp() * 1000 > first + self.edit_window_ms


class AnswerWriter:
    """Raw responses to the raw topic (Avro, keyed like the CLI keys them)."""

    def __init__(self, pipeline) -> None:
        self.topic, self.codec = pipeline.topics["raw"], pipeline.codec

    async def send(self, record: dict, value: bytes | None = None):
        """Send one RawResponse record; returns the delivery future."""
        value = value if value is not None else self.codec.encode(avro.RAW_RESPONSE, record)
        return await self.topic.send(key=response_key(record), value=value)

    async def page_answer(self, inv: dict, score: int, comment: str | None, follow_up: str | None,
                          now: datetime) -> None:
        """The survey page's answer as a new version of the invitation's response, in Kafka when this returns."""
        obj = {"response_id": inv["inv"], "invitation_id": inv["inv"], "survey_id": inv.get("survey_id"),
               "score": score, "comment": comment, "follow_up": follow_up,
               "responded_at": now.isoformat(), "locale": inv.get("locale")}
        record = to_raw_response({k: v for k, v in obj.items() if v is not None}, source="web", received_at=now)
        await (await self.send(record))  # the answer is in Kafka before the respondent is thanked


class Notices:
    """Notice pages (invalid or expired link, already answered, …): nothing was written. Counted per kind."""

    def __init__(self, stats) -> None:
        self.stats = stats

    def page(self, kind: str, request: web.Request, locale: str | None = None, brand: dict | None = None,
             headers: dict | None = None) -> web.Response:
        """The ``kind`` page in ``locale`` (the invitation's); without one, in the language the browser prefers
        among the shipped ones (Accept-Language): a link that cannot be read names no invitation."""
        locale = locale or page.preferred_locale(request.headers.get("Accept-Language"))
        nonce = secrets.token_urlsafe(12)
        body = page.render_message(kind=kind, locale=locale, brand=brand, nonce=nonce)
        self.stats.inc(f"survey.page.{kind}")
        return html_reply(body, status=STATUS[kind],
                          headers={**security_headers(nonce, (brand or {}).get("logo_url")), **(headers or {})})


def guarded(handler: Callable) -> Callable:
    """Any failure of a handler method becomes the "unavailable" page, logged without the client's address or
    the token."""

    @functools.wraps(handler)
    async def wrapper(self, request: web.Request) -> web.Response:
        try:
            return await handler(self, request)
        except Exception:
            log.exception("survey: %s %s failed", request.method, request.path.split("/")[1] if request.path else "")
            return self.notices.page("unavailable", request)

    return wrapper


@dataclass
class Form:
    """A posted survey or follow-up form, trimmed to the page's limits."""

    step: str
    csrf: str | None
    comment: str | None
    follow_up: str | None
    score_text: str
    skip: bool
    receipt: str | None = None

    @classmethod
    def parse(cls, raw: bytes) -> "Form":
        fields = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
        return cls(step=fields.get("step") or "score", csrf=fields.get("csrf"),
                   comment=(fields.get("comment") or "").strip()[:MAX_FORM_TEXT] or None,
                   follow_up=(fields.get("follow_up") or "").strip()[:MAX_FORM_TEXT] or None,
                   score_text=(fields.get("score") or "").strip(), skip=bool(fields.get("skip")),
                   receipt=fields.get("a"))

    @property
    def score(self) -> int | None:
        """0–10 written in ASCII digits (the radios' values), else None. (str.isdigit() alone would take "²",
        which int() refuses: that failed the request.)"""
        text = self.score_text
        valid = text.isascii() and text.isdigit() and len(text) <= 2 and 0 <= int(text) <= 10
        return int(text) if valid else None


def own_path(request: web.Request) -> str:
    """The page's own path, where its forms post back: ``/s/<token>``."""
    return f"/s/{request.match_info['token']}"


def see_other(location: str) -> web.Response:
    """303 to ``location`` (a GET), never cached."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


FOLLOW_UP_WAIT = 5.0  # seconds a follow-up waits for the answer it completes to reach the invitation's state


class SurveyPages:
    """GET and POST /s/{token}, GET /s/{token}/thanks.

    POST → redirect → GET: a recorded answer is answered with 303 to the thank-you page, whose URL carries a
    signed receipt (streams.guards.Receipt: the score and when it was written), so Back, reload and bookmarks
    never post again. The follow-up form names that receipt; the follow-up is written as a new version of the
    recorded answer (its score and comment as the invitation's state holds them, waited for up to FOLLOW_UP_WAIT
    — the answer travels through Kafka and the classify agent first)."""

    def __init__(self, desk: InvitationDesk, writer: AnswerWriter, limits: Limits, notices: Notices, book, clock,
                 stats) -> None:
        self.desk, self.writer, self.limits, self.notices = desk, writer, limits, notices
        self.book, self.clock, self.stats = book, clock, stats
        self.follow_up_wait = FOLLOW_UP_WAIT

    def limited(self, request: web.Request, inv_id: str | None, locale: str | None = None,
                brand: dict | None = None) -> web.Response | None:
        wait = self.limits.page_wait(request, inv_id)
        return None if wait is None else self.notices.page("rate_limited", request, locale, brand,
                                                            headers={"Retry-After": str(wait)})

    async def refused_token(self, request: web.Request, exc: links.InvalidToken) -> web.Response:
        kind = "expired" if exc.reason == links.EXPIRED else "invalid"
        if exc.invitation_id:  # expired, but genuinely ours: say it in the invitation's language
            found, _ = await self.desk.lookup(exc.invitation_id)
            if found:
                inv, _org, _words, brand = found
                return self.limited(request, exc.invitation_id) or self.notices.page(kind, request, inv["locale"],
                                                                                     brand)
        return self.limited(request, None) or self.notices.page(kind, request)

    async def admit(self, request: web.Request):
        """(claims, None) for a genuine, unexpired link within the rate limits; else (None, the refusal page)."""
        try:
            claims = links.verify_token(request.match_info["token"], self.book.link_keys, self.clock())
        except links.InvalidToken as exc:
            return None, await self.refused_token(request, exc)
        return claims, self.limited(request, claims.invitation_id)

    async def open_invitation(self, request: web.Request, inv_id: str, now: datetime, *, closed_ok: bool = False):
        """((invitation, org, texts, branding), None), or (None, the notice page): unknown, unavailable now (its
        holder unreachable or moving), or — unless ``closed_ok`` — answered and past its edit window."""
        found, problem = await self.desk.lookup(inv_id)
        if problem:
            return None, self.notices.page(problem, request)
        inv, _org, _words, brand = found
        if not closed_ok and self.desk.closed(inv, now):
            return None, self.notices.page("answered", request, inv["locale"], brand)
        return found, None

    def survey_html(self, request: web.Request, found, now: datetime, *, preselected=None, comment: str = "",
                    auto_submit: bool = False, errors=(), status: int = 200) -> web.Response:
        inv, _org, words, brand = found
        nonce = secrets.token_urlsafe(12)
        html = page.render_survey(brand=brand, texts=words, locale=inv["locale"], action=own_path(request),
                                  csrf=csrf_token(self.book.secret, inv["inv"], now), preselected=preselected,
                                  comment=comment, auto_submit=auto_submit, nonce=nonce, errors=list(errors),
                                  saved=bool(inv.get("resp")) and not errors)
        return html_reply(html, status=status, headers=security_headers(nonce, brand.get("logo_url")))

    def thanks_html(self, request: web.Request, found, now: datetime, receipt: Receipt, *, score: int,
                    open_: bool = True, follow_up: str = "", errors=(), status: int = 200) -> web.Response:
        """The thank-you page of ``receipt`` showing ``score``; ``open_``: the answer may still change (the
        change button and, unless the receipt is done, the follow-up form)."""
        inv, org, words, brand = found
        category = classify(score).value
        nonce = secrets.token_urlsafe(12)
        html = page.render_thanks(
            brand=brand, texts=words, locale=inv["locale"], category=category, action=own_path(request),
            csrf=csrf_token(self.book.secret, inv["inv"], now), nonce=nonce,
            review_url=org.review_url if category == "promoter" else None,
            follow_up_done=receipt.done or not open_, change_url=f"{own_path(request)}?change=1" if open_ else None,
            score=score, receipt=receipt_token(self.book.secret, inv["inv"], receipt), follow_up=follow_up,
            errors=list(errors))
        return html_reply(html, status=status, headers=security_headers(nonce, brand.get("logo_url")))

    def to_thanks(self, request: web.Request, inv: dict, receipt: Receipt) -> web.Response:
        """303 to the thank-you page of ``receipt``."""
        location = f"{own_path(request)}/thanks?a={receipt_token(self.book.secret, inv['inv'], receipt)}"
        return see_other(location)

    @guarded
    async def get(self, request: web.Request) -> web.Response:
        claims, refused = await self.admit(request)
        if refused:
            return refused
        now = self.clock()
        found, refused = await self.open_invitation(request, claims.invitation_id, now)
        if refused:
            return refused
        inv = found[0]
        previous = inv.get("answer") or {}
        answered = bool(inv.get("resp"))
        # a one-click link submits itself once; opened again, from "change", or Back, it is the form to change
        one_click = claims.score is not None and not answered and "change" not in request.query
        self.stats.inc("survey.page.shown")
        return self.survey_html(request, found, now, preselected=claims.score if one_click else previous.get("score"),
                                comment=previous.get("comment") or "", auto_submit=one_click)

    @guarded
    async def thanks(self, request: web.Request) -> web.Response:
        """GET /s/{token}/thanks?a=<receipt>: what was recorded (the receipt's score, or a later answer's), the
        change button while the edit window is open, the follow-up form until it was answered or skipped."""
        claims, refused = await self.admit(request)
        if refused:
            return refused
        now = self.clock()
        found, refused = await self.open_invitation(request, claims.invitation_id, now, closed_ok=True)
        if refused:
            return refused
        inv = found[0]
        receipt = read_receipt(self.book.secret, inv["inv"], request.query.get("a"))
        if receipt is None:  # no (genuine) receipt: the survey page says where the invitation stands
            return see_other(own_path(request))
        latest = inv.get("answer") or {}
        newer = latest.get("score") is not None and (latest.get("v") or 0) // 1_000_000 > receipt.at_ms
        self.stats.inc("survey.page.thanks")
        return self.thanks_html(request, found, now, receipt, score=latest["score"] if newer else receipt.score,
                                open_=not self.desk.closed(inv, now))

    @guarded
    async def post(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return self.notices.page("too_large", request)
        claims, refused = await self.admit(request)
        if refused:
            return refused
        try:
            raw = await read_body(request, MAX_FORM_BYTES)
        except UnreadableBody:  # no browser sends that: nothing to say but "not valid"
            return self.notices.page("invalid", request)
        if raw is None:
            return self.notices.page("too_large", request)
        form, now = Form.parse(raw), self.clock()
        found, refused = await self.open_invitation(request, claims.invitation_id, now)
        if refused:
            return refused
        inv, _org, _words, brand = found
        if form.step not in ("score", "follow_up"):
            return self.notices.page("invalid", request, inv["locale"], brand)
        if not csrf_valid(self.book.secret, inv["inv"], form.csrf, now):
            self.stats.inc("survey.csrf_refused")
            if form.csrf is None or form.step != "score":
                return self.notices.page("invalid", request, inv["locale"], brand)
            # a page left open too long: the same form again, filled in, with a fresh token — nothing written
            return self.survey_html(request, found, now, preselected=form.score, comment=form.comment or "",
                                    errors=["send_again"], status=400)
        if form.step == "follow_up":
            return await self.follow_up(request, found, form, now)
        if form.score is None:
            return self.survey_html(request, found, now, comment=form.comment or "", errors=["pick_score"],
                                    status=400)
        follow_up = (inv.get("answer") or {}).get("follow_up")  # changing the score keeps an earlier follow-up
        return await self.record(request, found, form.score, form.comment, follow_up, now, "score")

    async def follow_up(self, request: web.Request, found, form: "Form", now: datetime) -> web.Response:
        """The follow-up form: skipped (nothing written), or written as a new version of the answer it completes."""
        inv, _org, _words, brand = found
        receipt = read_receipt(self.book.secret, inv["inv"], form.receipt)
        if receipt is None:
            return self.notices.page("invalid", request, inv["locale"], brand)
        if form.skip:
            return self.to_thanks(request, inv, Receipt(receipt.score, receipt.at_ms, done=True))
        answer = await self.recorded_answer(inv["inv"], receipt)
        if answer is None:  # not in the state yet: the form again, filled in — nothing written
            self.stats.inc("survey.follow_up_early")
            return self.thanks_html(request, found, now, receipt, score=receipt.score, follow_up=form.follow_up or "",
                                    errors=["not_saved_yet"], status=409)
        return await self.record(request, found, answer["score"], answer.get("comment"), form.follow_up, now,
                                 "follow_up")

    async def recorded_answer(self, inv_id: str, receipt: Receipt) -> dict | None:
        """The invitation's latest answer once it is the receipt's or later (waits up to FOLLOW_UP_WAIT), or None."""
        deadline = time.monotonic() + self.follow_up_wait
        while True:
            inv, _ = await self.desk.fetch(inv_id)
            answer = (inv or {}).get("answer") or {}
            if answer.get("score") is not None and (answer.get("v") or 0) // 1_000_000 >= receipt.at_ms:
                return answer
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.1)

    async def record(self, request: web.Request, found, score: int, comment: str | None, follow_up: str | None,
                     now: datetime, step: str) -> web.Response:
        """Writes the answer (in Kafka when this returns), then 303 to its thank-you page."""
        inv, _org, _words, brand = found
        try:
            await self.writer.page_answer(inv, score, comment, follow_up, now)
        except Exception:
            log.exception("survey: could not record the answer of invitation %s", inv["inv"])
            return self.notices.page("unavailable", request, inv["locale"], brand)
        self.stats.inc(f"survey.answer.{step}")
        log.info("survey: invitation %s answered (%s)", inv["inv"], step)
        return self.to_thanks(request, inv, Receipt(score, to_ms(now), done=step == "follow_up"))


class ApiRefusal(Exception):
    """A whole API request refused: its JSON reply."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.reply = json_reply({"error": message}, status=status, headers=headers)


class ResponsesApi:
    """POST /api/v1/responses: batches from an organization's own systems, one result per record."""

    def __init__(self, desk: InvitationDesk, writer: AnswerWriter, limits: Limits, notices: Notices, book, clock,
                 stats) -> None:
        self.desk, self.writer, self.limits, self.notices = desk, writer, limits, notices
        self.book, self.clock, self.stats = book, clock, stats

    def organization(self, request: web.Request):
        """The organization whose API key the request carries (ApiRefusal: rate limited or unauthorized)."""
        if not self.limits.per_ip.allow(self.limits.client_ip(request), time.monotonic()):
            raise ApiRefusal(429, "rate limited", {"Retry-After": "1"})
        auth = request.headers.get("Authorization") or ""
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        org = next((o for o in (self.book.programs.organizations if self.book.programs else ())
                    if key and api_key_matches(key, o.api_keys)), None)
        if org is None:
            self.stats.inc("api.unauthorized")
            raise ApiRefusal(401, "unauthorized: Authorization: Bearer <API key of an organization>")
        if not self.limits.per_api_key.allow(org.id, time.monotonic()):
            raise ApiRefusal(429, "rate limited", {"Retry-After": "1"})
        return org

    async def records(self, request: web.Request) -> list:
        """The request's list of records (ApiRefusal: too large, not JSON, not a non-empty list)."""
        too_large = f"body larger than {MAX_API_BYTES} bytes"
        if (request.content_length or 0) > MAX_API_BYTES:
            raise ApiRefusal(413, too_large)
        try:
            raw = await read_body(request, MAX_API_BYTES)
        except UnreadableBody as exc:
            raise ApiRefusal(400, f"unreadable body: {exc}") from None
        if raw is None:
            raise ApiRefusal(413, too_large)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ApiRefusal(400, f"not JSON: {exc}") from None
        except RecursionError:
            raise ApiRefusal(400, f"not JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
        records = body.get("responses") if isinstance(body, dict) else body
        if not isinstance(records, list) or not records:
            raise ApiRefusal(400, "expected a non-empty JSON list of responses (or {\"responses\": [...]})")
        if len(records) > MAX_API_RECORDS:
            raise ApiRefusal(413, f"at most {MAX_API_RECORDS} responses per request")
        return records

    @guarded
    async def post(self, request: web.Request) -> web.Response:
        try:
            org = self.organization(request)
            records = await self.records(request)
        except ApiRefusal as refusal:
            return refusal.reply
        now = self.clock()
        futures: list = []
        results = [await self.accept(org, i, obj, now, futures) for i, obj in enumerate(records)]
        try:
            for future in futures:
                await future
        except Exception:
            log.exception("api: delivery to Kafka failed")
            return json_reply({"error": "temporarily unavailable; send the batch again (responses are idempotent "
                                        "by response_id)"}, status=503)
        accepted = sum(r["status"] == "accepted" for r in results)
        self.stats.inc("api.responses.accepted", accepted)
        self.stats.inc("api.responses.rejected", len(results) - accepted)
        return json_reply({"accepted": accepted, "rejected": len(results) - accepted, "results": results})

    async def bind_to_org(self, org, obj: dict, now: datetime) -> tuple[str, str] | None:
        """Give the record its stored response id within ``org`` (in place); (reason, detail) if refused."""
        inv_id = obj.get("invitation_id")
        if inv_id is not None:
            if not isinstance(inv_id, str) or not inv_id.strip():
                return "invitation_id_invalid", "invitation_id must be a non-empty string"
            inv, problem = await self.desk.fetch(inv_id.strip())
            if problem == "unavailable":  # its holder cannot be asked now (a rebalance, unreachable)
                return "invitation_unavailable", ("this worker cannot see the invitation now; send the record "
                                                  "again (responses are idempotent by response_id)")
            if inv is None or inv["org"] != org.id:  # another org's invitations are not even acknowledged
                return "invitation_unknown", "no invitation of this organization has this id"
            if self.desk.closed(inv, now):
                return "edit_window_closed", "the answer to this invitation can no longer be changed"
            obj["response_id"] = inv_id.strip()  # one response per invitation
        elif isinstance(obj.get("response_id"), str) and obj["response_id"].strip():
            obj["response_id"] = f"{org.id}:{obj['response_id'].strip()}"  # organizations never share ids
        return None

    async def accept(self, org, i: int, obj: Any, now: datetime, futures: list) -> dict:
        """One API record: validated like classify does, bound to the calling organization, then sent. The
        result names the record by its index and the client's own response_id; an accepted one also says under
        which id it is stored (``<org>:<id>``, or the invitation's id for an answer to an invitation)."""
        sent_id = obj.get("response_id") if isinstance(obj, dict) and isinstance(obj.get("response_id"), str) else None

        def rejected(reason: str, detail: str | None = None) -> dict:
            out = {"index": i, "status": "rejected", "reason": reason, "response_id": sent_id}
            return {**out, "detail": detail} if detail else out

        if not isinstance(obj, dict):
            return rejected("not_a_json_object")
        if json_depth(obj) > MAX_JSON_DEPTH:
            return rejected(TOO_DEEP, f"nested deeper than {MAX_JSON_DEPTH} levels")
        obj = dict(obj)
        refused = await self.bind_to_org(org, obj, now)
        if refused:
            return rejected(*refused)
        record = to_raw_response(obj, source=f"api:{org.id}", received_at=now)
        try:
            response = validate(record, now)
            value = self.writer.codec.encode(avro.RAW_RESPONSE, record)
        except Rejected as exc:
            return rejected(exc.reason, exc.detail)
        except avro.CodecError as exc:
            return rejected("avro_encode_error", exc.detail[:200])
        except (ValueError, TypeError) as exc:
            return rejected("avro_encode_error", type(exc).__name__)
        futures.append(await self.writer.send(record, value))
        accepted = {"index": i, "status": "accepted", "response_id": sent_id, "stored_as": record["response_id"]}
        if response.truncated:  # sent whole: classify cuts it and dead-letters the original (comment_truncated)
            accepted["truncated"] = [name for name, _ in response.truncated]
        return accepted


def public_handlers(pipeline, book, settings, remote=None) -> tuple[SurveyPages, ResponsesApi]:
    """The survey page and response API handlers of a pipeline (streams.app.create_app) and its DispatchBook.
    ``remote`` (web.routing.OwnerClient): invitations of partitions held elsewhere are asked of their owner;
    None: this worker's table only."""
    local = LocalInvitations(pipeline, settings.partitions)
    source = RoutedInvitations(local, remote) if remote is not None else local
    desk = InvitationDesk(source, book, settings.edit_window_seconds)
    writer = AnswerWriter(pipeline)
    limits = Limits(settings.page_rate, frozenset(settings.trusted_proxies))
    notices = Notices(pipeline.stats)
    shared = (desk, writer, limits, notices, book, pipeline.clock, pipeline.stats)
    return SurveyPages(*shared), ResponsesApi(*shared)


def public_app(pages: SurveyPages, api: ResponsesApi, *, allowed_hosts: frozenset[str],
               readyz=None) -> web.Application:
    """The aiohttp application of the public listener: exactly these routes, behind the host guard. ``readyz``:
    the handler of GET /readyz (web.health.Readiness.handle)."""
    quiet_client_errors()
    app = web.Application(middlewares=[leftover_body(), transport_policy(pages.limits.trusted),
                                       host_guard(allowed_hosts)])
    app.add_routes([web.get("/s/{token}", pages.get), web.post("/s/{token}", pages.post),
                    web.get("/s/{token}/thanks", pages.thanks),
                    web.post("/api/v1/responses", api.post), web.get("/healthz", healthz),
                    web.get("/favicon.ico", favicon)])
    if readyz is not None:
        app.add_routes([web.get("/readyz", readyz)])
    return app
