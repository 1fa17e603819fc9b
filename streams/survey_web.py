"""The respondent's survey page and the response API, served by the worker's web server (Faust web / aiohttp).

GET  /s/{token}           the survey page of the invitation the signed token names, branded and in its locale; a
                          one-click score link (from the e-mail) preselects the score and submits it at once —
                          by a tiny inline script, so mail scanners that prefetch links record nothing
POST /s/{token}           step "score": score 0–10 + optional comment → a raw response → the thank-you page with
                          the category's follow-up question; step "follow_up": its answer (a new version)
POST /api/v1/responses    a JSON batch of responses collected elsewhere, per-organization API keys
                          (``Authorization: Bearer <key>``), per-record validation results in the reply

An answer becomes a RawResponse on the raw topic with ``response_id = invitation_id`` (one response per
invitation; a change is a new version, latest wins) keyed by the invitation id, so classify joins it to the
invitation's segments. The first answer opens the edit window (``NPSFLOW_EDIT_WINDOW``); after it, the link
shows "already answered" and writes nothing. Nothing is written for a forged, expired or unknown token, a
missing/invalid CSRF token, an oversized body or a rate-limited client. Logs name invitation ids, never
addresses, comments or client IPs.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from faust.web import View

from npsflow.ingest import response_key, to_raw_response
from schemas import codec as avro
from streams import links
from streams.guards import RateLimiter, api_key_matches, csrf_token, csrf_valid
from streams.nps import classify
from streams.responses import Rejected, validate

log = logging.getLogger("npsflow.survey")

MAX_FORM_BYTES = 48 * 1024  # two fields of 2000 characters, percent-encoded UTF-8, fit; nothing much bigger
MAX_API_BYTES = 1024 * 1024
MAX_API_RECORDS = 1000
MAX_FORM_TEXT = 2000  # the comment and follow-up fields of the page (the API allows MAX_COMMENT_CHARS)
STATUS = {"invalid": 404, "expired": 410, "answered": 409, "rate_limited": 429, "too_large": 413,
          "unavailable": 503}


def security_headers(nonce: str, logo_url: str | None = None) -> dict[str, str]:
    from streams.survey_page import content_security_policy

    return {
        "Content-Security-Policy": content_security_policy(nonce, logo_url=logo_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }


def install_survey(pipeline, book, settings) -> None:
    from kafka.partitioner.default import murmur2

    from streams import survey_page as page

    app, stats, clock = pipeline.app, pipeline.stats, pipeline.clock
    invitations = pipeline.tables["invitations"]
    raw_topic = pipeline.topics["raw"]
    invitations_topic = pipeline.topics["invitations"]
    codec = pipeline.codec
    edit_window_ms = settings.edit_window_seconds * 1000
    per_ip = RateLimiter(rate=settings.page_rate, burst=30 * settings.page_rate)  # default: 30 at once, then 1/s
    per_invitation = RateLimiter(rate=0.2, burst=10)  # one invitation: 10 at once, then one per 5 s
    per_api_key = RateLimiter(rate=50.0, burst=200)
    trusted = frozenset(settings.trusted_proxies)

    def client_ip(request) -> str:
        """The client's IP: the peer, or — behind a trusted reverse proxy — the last address it appended."""
        peer = request.remote or "unknown"
        forwarded = request.headers.get("X-Forwarded-For")
        if peer in trusted and forwarded:
            return forwarded.split(",")[-1].strip() or peer
        return peer

    def answer(web, kind: str, locale: str = "en", brand: dict | None = None, headers: dict | None = None):
        """A notice page (invalid or expired link, already answered, …): nothing was written."""
        nonce = secrets.token_urlsafe(12)
        body = page.render_message(kind=kind, locale=locale, brand=brand, nonce=nonce)
        stats.inc(f"survey.page.{kind}")
        return web.html(body, status=STATUS[kind],
                        headers={**security_headers(nonce, (brand or {}).get("logo_url")), **(headers or {})})

    def limited(web, request, inv_id: str | None):
        now = time.monotonic()
        for limiter, key in ((per_ip, client_ip(request)), (per_invitation, inv_id)):
            if key is not None and not limiter.allow(key, now):
                wait = max(1, int(limiter.retry_after(key, now) + 0.999))
                return answer(web, "rate_limited", headers={"Retry-After": str(wait)})
        return None

    def held_here(inv_id: str) -> bool:
        """Whether this worker holds the invitation's partition, with its table recovered."""
        if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
            return False
        try:
            name = invitations_topic.get_topic_name()
            actives = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}
        except Exception:
            return False
        partition = (murmur2(inv_id.encode()) & 0x7FFFFFFF) % settings.partitions
        return partition in actives

    def lookup(inv_id: str):
        """(invitation, problem): the invitation with its texts, or why the page cannot be served here."""
        inv = invitations.get(f"I|{inv_id}")
        if inv is None:
            return None, "invalid" if held_here(inv_id) else "unavailable"
        found = book.found(inv["org"], inv["program"])
        if found is None:
            return None, "invalid"
        from npsflow.programs import branding, texts

        org, program = found
        return (inv, org, texts(org, inv["locale"], program), branding(org, inv["locale"])), None

    def refused_token(web, request, exc: links.InvalidToken):
        kind = "expired" if exc.reason == links.EXPIRED else "invalid"
        if exc.invitation_id:  # expired, but genuinely ours: say it in the invitation's language
            found, _ = lookup(exc.invitation_id)
            if found:
                inv, _org, _words, brand = found
                return limited(web, request, exc.invitation_id) or answer(web, kind, inv["locale"], brand)
        return limited(web, request, None) or answer(web, kind)

    def admit(view, request, token: str):
        """(claims, None) for a genuine, unexpired link within the rate limits; else (None, the refusal page)."""
        try:
            claims = links.verify_token(token, book.link_keys, clock())
        except links.InvalidToken as exc:
            return None, refused_token(view, request, exc)
        return claims, limited(view, request, claims.invitation_id)

    def open_invitation(view, inv_id: str, now: datetime):
        """((invitation, org, texts, branding), None), or (None, the notice page): unknown, held by another
        worker, or answered and past its edit window."""
        found, problem = lookup(inv_id)
        if problem:
            return None, answer(view, problem)
        inv, _org, _words, brand = found
        if closed(inv, now):
            return None, answer(view, "answered", inv["locale"], brand)
        return found, None

    def closed(inv: dict, now: datetime) -> bool:
        first = inv.get("answered_at")
        return bool(inv.get("resp")) and first is not None and now.timestamp() * 1000 > first + edit_window_ms

    async def produce(inv: dict, score: int, comment: str | None, follow_up: str | None, now: datetime,
                      source: str = "web") -> None:
        obj = {"response_id": inv["inv"], "invitation_id": inv["inv"], "survey_id": inv.get("survey_id"),
               "score": score, "comment": comment, "follow_up": follow_up,
               "responded_at": now.isoformat(), "locale": inv.get("locale")}
        record = to_raw_response({k: v for k, v in obj.items() if v is not None}, source=source, received_at=now)
        future = await raw_topic.send(key=response_key(record), value=codec.encode(avro.RAW_RESPONSE, record))
        await future  # the answer is in Kafka before the respondent is thanked

    def survey_html(web, token: str, inv: dict, words: dict, brand: dict, now: datetime, *, preselected=None,
                    comment: str = "", auto_submit: bool = False, errors=(), status: int = 200):
        nonce = secrets.token_urlsafe(12)
        html = page.render_survey(brand=brand, texts=words, locale=inv["locale"], action=f"/s/{token}",
                                  csrf=csrf_token(book.secret, inv["inv"], now), preselected=preselected,
                                  comment=comment, auto_submit=auto_submit, nonce=nonce, errors=list(errors),
                                  saved=bool(inv.get("resp")) and not errors)
        return web.html(html, status=status, headers=security_headers(nonce, brand.get("logo_url")))

    def guarded(handler):
        """Any failure becomes the "unavailable" page, logged without the client's address or the token."""
        async def wrapper(view, request, **kw):
            try:
                return await handler(view, request, **kw)
            except Exception:
                log.exception("survey: %s %s failed", request.method, request.path.split("/")[1] if request.path else "")
                return answer(view, "unavailable")
        return wrapper

    @app.page("/s/{token}")
    class Survey(View):
        @guarded
        async def get(self, request, token):
            claims, refused = admit(self, request, token)
            if refused:
                return refused
            now = clock()
            found, refused = open_invitation(self, claims.invitation_id, now)
            if refused:
                return refused
            inv, org, words, brand = found
            previous = inv.get("answer") or {}
            answered = bool(inv.get("resp"))
            preselected = claims.score if claims.score is not None and not answered else previous.get("score")
            stats.inc("survey.page.shown")
            # a one-click link submits itself once; opened again (or Back), it shows the answer to change
            return survey_html(self, token, inv, words, brand, now, preselected=preselected,
                               comment=previous.get("comment") or "", auto_submit=claims.score is not None and not answered)

        @guarded
        async def post(self, request, token):
            if (request.content_length or 0) > MAX_FORM_BYTES:
                return answer(self, "too_large")
            claims, refused = admit(self, request, token)
            if refused:
                return refused
            inv_id = claims.invitation_id
            raw = await read_body(request, MAX_FORM_BYTES)
            if raw is None:
                return answer(self, "too_large")
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
            now = clock()
            found, refused = open_invitation(self, inv_id, now)
            if refused:
                return refused
            inv, org, words, brand = found
            step = form.get("step") or "score"
            if step not in ("score", "follow_up"):
                return answer(self, "invalid", inv["locale"], brand)
            comment = (form.get("comment") or "").strip()[:MAX_FORM_TEXT] or None
            follow_up = (form.get("follow_up") or "").strip()[:MAX_FORM_TEXT] or None
            score_text = (form.get("score") or "").strip()
            valid_score = score_text.isdigit() and 0 <= int(score_text) <= 10
            if not csrf_valid(book.secret, inv_id, form.get("csrf"), now):
                stats.inc("survey.csrf_refused")
                if form.get("csrf") is None or step != "score":
                    return answer(self, "invalid", inv["locale"], brand)
                # a page left open too long: the same form again, filled in, with a fresh token — nothing written
                return survey_html(self, token, inv, words, brand, now,
                                   preselected=int(score_text) if valid_score else None, comment=comment or "",
                                   errors=["send_again"], status=400)
            if not valid_score:
                return survey_html(self, token, inv, words, brand, now, comment=comment or "",
                                   errors=["pick_score"], status=400)
            score = int(score_text)
            category = classify(score).value
            previous = inv.get("answer") or {}
            if step == "score":  # changing the score keeps an earlier follow-up answer
                follow_up = previous.get("follow_up")
            skipped = step == "follow_up" and bool(form.get("skip"))
            if not skipped:
                try:
                    await produce(inv, score, comment, follow_up, now)
                except Exception:
                    log.exception("survey: could not record the answer of invitation %s", inv_id)
                    return answer(self, "unavailable", inv["locale"], brand)
                stats.inc(f"survey.answer.{step}")
                log.info("survey: invitation %s answered (%s)", inv_id, step)
            nonce = secrets.token_urlsafe(12)
            html = page.render_thanks(brand=brand, texts=words, locale=inv["locale"], category=category,
                                      action=f"/s/{token}", csrf=csrf_token(book.secret, inv_id, now), nonce=nonce,
                                      review_url=org.review_url if category == "promoter" else None,
                                      follow_up_done=step == "follow_up", change_url=f"/s/{token}",
                                      score=score, comment=comment or "")
            return self.html(html, headers=security_headers(nonce, brand.get("logo_url")))

    @app.page("/api/v1/responses")
    class Responses(View):
        @guarded
        async def post(self, request):
            if not per_ip.allow(client_ip(request), time.monotonic()):
                return self.json({"error": "rate limited"}, status=429, headers={"Retry-After": "1"})
            auth = request.headers.get("Authorization") or ""
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            org = next((o for o in (book.programs.organizations if book.programs else ())
                        if key and api_key_matches(key, o.api_keys)), None)
            if org is None:
                stats.inc("api.unauthorized")
                return self.json({"error": "unauthorized: Authorization: Bearer <API key of an organization>"},
                                 status=401)
            if not per_api_key.allow(org.id, time.monotonic()):
                return self.json({"error": "rate limited"}, status=429, headers={"Retry-After": "1"})
            if (request.content_length or 0) > MAX_API_BYTES:
                return self.json({"error": f"body larger than {MAX_API_BYTES} bytes"}, status=413)
            raw = await read_body(request, MAX_API_BYTES)
            if raw is None:
                return self.json({"error": f"body larger than {MAX_API_BYTES} bytes"}, status=413)
            try:
                body = json.loads(raw)
            except ValueError as exc:
                return self.json({"error": f"not JSON: {exc}"}, status=400)
            records = body.get("responses") if isinstance(body, dict) else body
            if not isinstance(records, list) or not records:
                return self.json({"error": "expected a non-empty JSON list of responses (or {\"responses\": [...]})"},
                                 status=400)
            if len(records) > MAX_API_RECORDS:
                return self.json({"error": f"at most {MAX_API_RECORDS} responses per request"}, status=413)
            now = clock()
            results: list[dict[str, Any]] = []
            futures = []
            for i, obj in enumerate(records):
                result = await accept(org, i, obj, now, futures)
                results.append(result)
            try:
                for future in futures:
                    await future
            except Exception:
                log.exception("api: delivery to Kafka failed")
                return self.json({"error": "temporarily unavailable; send the batch again (responses are "
                                           "idempotent by response_id)"}, status=503)
            accepted = sum(r["status"] == "accepted" for r in results)
            stats.inc("api.responses.accepted", accepted)
            stats.inc("api.responses.rejected", len(results) - accepted)
            return self.json({"accepted": accepted, "rejected": len(results) - accepted, "results": results})

    async def accept(org, i: int, obj, now: datetime, futures: list) -> dict:
        """One API record: validated like classify does, bound to the calling organization, then sent. The
        result names the record by its index and the client's own response_id; an accepted one also says under
        which id it is stored (``<org>:<id>``, or the invitation's id for an answer to an invitation)."""
        sent_id = obj.get("response_id") if isinstance(obj, dict) and isinstance(obj.get("response_id"), str) else None

        def rejected(reason: str, detail: str | None = None) -> dict:
            out = {"index": i, "status": "rejected", "reason": reason, "response_id": sent_id}
            if detail:
                out["detail"] = detail
            return out

        if not isinstance(obj, dict):
            return rejected("not_a_json_object")
        obj = dict(obj)
        inv_id = obj.get("invitation_id")
        if inv_id is not None:
            if not isinstance(inv_id, str) or not inv_id.strip():
                return rejected("invitation_id_invalid", "invitation_id must be a non-empty string")
            inv = invitations.get(f"I|{inv_id.strip()}")
            if inv is None or inv["org"] != org.id:  # another org's invitations are not even acknowledged
                return rejected("invitation_unknown", "no invitation of this organization has this id")
            if closed(inv, now):
                return rejected("edit_window_closed", "the answer to this invitation can no longer be changed")
            obj["response_id"] = inv_id.strip()  # one response per invitation
        elif isinstance(obj.get("response_id"), str) and obj["response_id"].strip():
            obj["response_id"] = f"{org.id}:{obj['response_id'].strip()}"  # organizations never share ids
        record = to_raw_response(obj, source=f"api:{org.id}", received_at=now)
        try:
            validate(record, now)
            value = codec.encode(avro.RAW_RESPONSE, record)
        except Rejected as exc:
            return rejected(exc.reason, exc.detail)
        except avro.CodecError as exc:
            return rejected("avro_encode_error", exc.detail[:200])
        except (ValueError, TypeError) as exc:
            return rejected("avro_encode_error", type(exc).__name__)
        futures.append(await raw_topic.send(key=response_key(record), value=value))
        return {"index": i, "status": "accepted", "response_id": sent_id, "stored_as": record["response_id"]}

    pipeline.agents["survey_pages"] = Survey
    pipeline.agents["responses_api"] = Responses


async def read_body(request, limit: int) -> bytes | None:
    """The whole body, however it arrives (split, chunked, no Content-Length); None once it exceeds ``limit``."""
    chunks, size = [], 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
