"""What both listeners share: the Host-header guard, the optional bearer token, bodies and replies.

* ``host_guard(allowed)``: a request whose Host header names another host gets 421 (a page elsewhere must not
  reach the worker through a DNS name rebound to its address).
* ``bearer_guard(token)``: when a token is configured (``NPSFLOW_INTERNAL_TOKEN``), every request but
  ``/healthz`` needs ``Authorization: Bearer <token>``, compared in constant time; else 401.
* ``read_body``: a whole body however it arrives (split, chunked, no Content-Length), bounded; ``UnreadableBody``
  when it does not decode (a client error).
* ``transport_policy(trusted)``: middleware: Cross-Origin-Opener-Policy on every reply, Strict-Transport-Security
  when the request came over https (directly, or from a trusted proxy saying so in X-Forwarded-Proto), and
  compression of replies of COMPRESS_MIN_BYTES or more for clients that accept it. (BREACH: no page reflects
  input a third party controls next to a secret — the survey pages show only what the link's holder entered.)
* ``favicon``: GET /favicon.ico, a neutral 16×16 icon (browsers ask for it; a 404 is a console error).
* ``leftover_body``: middleware, outermost on both listeners; after a handler that did not read the whole body
  (a refusal, an undecodable or oversized body) it reads and drops the rest, bounded, and closes the connection
  after the reply when the rest cannot be read — instead of aiohttp's lingering read, which logged an "Unhandled
  exception" per undecodable body and could close the connection before the client had the reply.
* ``quiet_client_errors()``: aiohttp logs every request it cannot parse (bad chunk framing, an unknown
  Content-Encoding …) at ERROR with a traceback and the client's address — noise any internet client can cause,
  and personal data; such records become one INFO line without the address (installed by both listeners).
* ``json_reply`` / ``html_reply``: aiohttp responses; JSON encodes datetimes as ISO-8601 (like Faust's web did).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import struct
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable
from uuid import UUID

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from yarl import URL

UNGUARDED_PATHS = frozenset({"/healthz", "/readyz", "/favicon.ico"})  # /readyz: web.health
LEFTOVER_BYTES = 1024 * 1024  # what leftover_body reads and drops after a reply at most (then: close)
LEFTOVER_SECONDS = 10.0  # … and how long it waits for it (aiohttp's lingering time)


class ClientErrorRecords(logging.Filter):
    """On aiohttp's server logger: "Error handling request from <address>" caused by the client's request (an
    HTTP error below 500) becomes one INFO line naming the error only — no address, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500 \
                and str(record.msg).startswith("Error handling request"):
            reason = " ".join(str(exc.message).split())[:200]
            record.msg, record.args, record.exc_info, record.exc_text = \
                "refused a malformed request: %s (%s)", (type(exc).__name__, reason), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_client_errors() -> None:
    """Installs ``ClientErrorRecords`` on the ``aiohttp.server`` logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorRecords) for f in server_log.filters):
        server_log.addFilter(ClientErrorRecords())


def leftover_body(limit: int = LEFTOVER_BYTES, seconds: float = LEFTOVER_SECONDS):
    """aiohttp middleware: the rest of a request body its handler did not read is read and dropped (≤ ``limit``
    bytes, ≤ ``seconds``), so the connection can serve the next request; a rest that cannot be read (its
    Content-Encoding does not decode, its chunks are malformed), is too large or too slow closes the connection
    after the reply (``Connection: close``). Found by fuzzing (issue 15): aiohttp's own lingering read raised on
    an undecodable body — an "Unhandled exception" in the log per request, and at times the client lost the
    reply."""

    @web.middleware
    async def guard(request: web.Request, handler):
        response = await handler(request)
        if not request.content.is_eof() and not await _dropped(request, limit, seconds):
            response.force_close()  # the reply says "Connection: close", is sent, and then the connection closes
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()
        return response

    return guard


async def _dropped(request: web.Request, limit: int, seconds: float) -> bool:
    """Whether the rest of the body was read to its end within the bounds."""
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while not request.content.is_eof():
                size += len(await request.content.readany())
                if size > limit:
                    return False
    except (RequestPayloadError, HttpProcessingError, TimeoutError):
        return False
    return True


def host_guard(allowed: frozenset[str]):
    """aiohttp middleware: 421 for a request whose Host header is not one of ``allowed`` (lower-case names)."""

    @web.middleware
    async def guard(request: web.Request, handler):
        try:
            host = (URL(f"http://{request.host}").host or "").lower() if request.host else ""
        except ValueError:
            host = ""
        if host not in allowed:
            return web.Response(status=421, text="misdirected request: this host name is not served here\n")
        return await handler(request)

    return guard


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``Bearer <token>``; constant time in the token's content."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())


def bearer_guard(token: str | None):
    """aiohttp middleware: with a ``token``, 401 for a request (other than /healthz) without the right bearer."""

    @web.middleware
    async def guard(request: web.Request, handler):
        if token and request.path not in UNGUARDED_PATHS and not bearer_matches(
                request.headers.get("Authorization"), token):
            return json_reply({"error": "unauthorized: Authorization: Bearer <NPSFLOW_INTERNAL_TOKEN>"}, status=401,
                              headers={"WWW-Authenticate": 'Bearer realm="npsflow internal"'})
        return await handler(request)

    return guard


COMPRESS_MIN_BYTES = 1024  # smaller replies gain little and cost a compressor each
HSTS = "max-age=31536000"  # a year; no includeSubDomains: the operator's domain is not ours to decide for


def served_over_https(request: web.Request, trusted: Callable[[str], bool] | None = None) -> bool:
    """Whether the client reached us over https: a TLS listener, or a trusted proxy's X-Forwarded-Proto."""
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto")
    return bool(proto and trusted and trusted(request.remote or "")
                and proto.split(",")[-1].strip().lower() == "https")


def transport_policy(trusted: Callable[[str], bool] | None = None):
    """aiohttp middleware: COOP, HSTS over https, compression (see the module doc); ``trusted(peer)`` tells
    whether a peer is a reverse proxy whose X-Forwarded-Proto counts."""

    @web.middleware
    async def policy(request: web.Request, handler):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own replies (404, 405 …) carry the headers too
            _secure_headers(exc, request, trusted)
            raise
        _secure_headers(response, request, trusted)
        body = response.body if isinstance(response, web.Response) else None
        if isinstance(body, bytes) and len(body) >= COMPRESS_MIN_BYTES and "Content-Encoding" not in response.headers:
            coding = _coding(request.headers.get("Accept-Encoding"))
            if coding is not None:
                response.enable_compression(coding)
        return response

    return policy


def _coding(accept_encoding: str | None) -> web.ContentCoding | None:
    """gzip when the client accepts it, else deflate, else None (aiohttp alone would pick deflate first: raw
    zlib streams, which some clients read wrongly); a coding with q=0 is refused."""
    accepted = set()
    for item in (accept_encoding or "").lower().split(","):
        name, _, params = item.partition(";")
        if params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            accepted.add(name.strip())
    for coding in (web.ContentCoding.gzip, web.ContentCoding.deflate):
        if coding.value in accepted:
            return coding
    return None


def _secure_headers(response: web.StreamResponse, request: web.Request, trusted) -> None:
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if served_over_https(request, trusted):
        response.headers.setdefault("Strict-Transport-Security", HSTS)


def _icon(size: int = 16, rgb: tuple[int, int, int] = (0x5F, 0x6B, 0x7A)) -> bytes:
    """A ``size``² ICO (32-bit BMP): a neutral grey disc on transparent ground — no organization's brand."""
    pixels = bytearray()
    centre, radius = (size - 1) / 2, size / 2 - 0.5
    for y in range(size - 1, -1, -1):  # BMP rows bottom-up
        for x in range(size):
            inside = (x - centre) ** 2 + (y - centre) ** 2 <= radius ** 2
            pixels += bytes((rgb[2], rgb[1], rgb[0], 255 if inside else 0))
    mask = bytes(((size + 31) // 32) * 4 * size)  # the AND mask: all zero, the alpha channel decides
    info = struct.pack("<IiiHHIIiiII", 40, size, size * 2, 1, 32, 0, len(pixels) + len(mask), 0, 0, 0, 0)
    image = info + bytes(pixels) + mask
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(image), 22) + image


FAVICON = _icon()


async def favicon(request: web.Request) -> web.Response:
    return web.Response(body=FAVICON, content_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=604800"})


def _default(value: Any):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_reply(data: Any, *, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=json.dumps(data, default=_default, ensure_ascii=False), status=status,
                        content_type="application/json", headers=headers)


def html_reply(text: str, *, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)


class UnreadableBody(Exception):
    """A request body that cannot be read: its Content-Encoding does not decode, its chunks are malformed (a client
    error, answered 400 — not a failure of the handler)."""


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, however it arrives (split, chunked, no Content-Length); None once it exceeds ``limit``;
    ``UnreadableBody`` when it cannot be read (e.g. ``Content-Encoding: gzip`` on bytes that are not gzip)."""
    chunks, size = [], 0
    while True:
        try:
            chunk = await request.content.readany()
        except (RequestPayloadError, HttpProcessingError) as exc:
            raise UnreadableBody(" ".join(str(exc).split())[:200]) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


async def healthz(request: web.Request) -> web.Response:
    return json_reply({"ok": True})
