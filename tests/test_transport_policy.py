"""What every reply of both listeners carries (web.common.transport_policy, issue 16): COOP always, HSTS only
when the request came over https (a TLS listener, or a trusted proxy saying so), compression of large replies
for clients that accept it; and /favicon.ico. Against a real aiohttp server on a local port."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
import zlib

from aiohttp import ClientSession, TCPConnector, web
from aiohttp.test_utils import TestServer

from web.common import FAVICON, HSTS, favicon, transport_policy

PAGE = "<!doctype html><title>x</title>" + "<p>Hej då, Åsa – tack för svaret!</p>" * 100  # ~4 KB


async def serve(trusted=None, ssl_context=None):
    async def page(request):
        return web.Response(text=PAGE, content_type="text/html")

    async def small(request):
        return web.Response(text="ok")

    app = web.Application(middlewares=[transport_policy(trusted)])
    app.add_routes([web.get("/page", page), web.get("/small", small), web.get("/favicon.ico", favicon)])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=ssl_context)
    return server


async def fetch(url, headers=None, ssl_context=None):
    async with ClientSession(auto_decompress=False, connector=TCPConnector(ssl=ssl_context or False)) as session:
        async with session.get(url, headers=headers or {}) as response:
            return response.status, dict(response.headers), await response.read()


def test_plain_http_gets_coop_and_compression_but_no_hsts():
    async def go():
        server = await serve(trusted=lambda peer: peer == "127.0.0.1")
        try:
            base = f"http://127.0.0.1:{server.port}"
            status, headers, body = await fetch(f"{base}/page", {"Accept-Encoding": "gzip"})
            assert status == 200 and headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert "Strict-Transport-Security" not in headers
            assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body).decode() == PAGE  # the same page
            assert len(body) < len(PAGE.encode()) / 5
            _, headers, body = await fetch(f"{base}/page", {"Accept-Encoding": "identity"})
            assert "Content-Encoding" not in headers and body.decode() == PAGE  # only for clients that accept it
            _, headers, body = await fetch(f"{base}/page", {"Accept-Encoding": "deflate, gzip"})
            assert headers["Content-Encoding"] == "gzip"  # gzip first (aiohttp alone picks deflate)
            _, headers, body = await fetch(f"{base}/page", {"Accept-Encoding": "gzip;q=0, deflate"})
            assert headers["Content-Encoding"] == "deflate" and zlib.decompress(body).decode() == PAGE
            _, headers, body = await fetch(f"{base}/page", {"Accept-Encoding": "gzip;q=0"})
            assert "Content-Encoding" not in headers and body.decode() == PAGE
            _, headers, body = await fetch(f"{base}/small", {"Accept-Encoding": "gzip"})
            assert "Content-Encoding" not in headers and body == b"ok"  # small: not worth a compressor
            _, headers, _ = await fetch(f"{base}/nothing-here")  # aiohttp's own 404 carries the policy too
            assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
            # behind a trusted proxy that terminated TLS: HSTS; a client claiming it itself is not trusted
            _, headers, _ = await fetch(f"{base}/small", {"X-Forwarded-Proto": "https"})
            assert headers["Strict-Transport-Security"] == HSTS == "max-age=31536000"
            status, headers, body = await fetch(f"{base}/favicon.ico", {"Accept-Encoding": "identity"})
            assert (status, headers["Content-Type"], body) == (200, "image/x-icon", FAVICON)
        finally:
            await server.close()

        untrusting = await serve(trusted=lambda peer: False)
        try:
            _, headers, _ = await fetch(f"http://127.0.0.1:{untrusting.port}/small", {"X-Forwarded-Proto": "https"})
            assert "Strict-Transport-Security" not in headers
        finally:
            await untrusting.close()
    asyncio.run(go())


def test_a_tls_listener_sends_hsts(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    client_side = ssl.create_default_context(cafile=str(cert))

    async def go():
        server = await serve(ssl_context=server_side)
        try:
            status, headers, _ = await fetch(f"https://127.0.0.1:{server.port}/small", ssl_context=client_side)
            assert status == 200 and headers["Strict-Transport-Security"] == HSTS
        finally:
            await server.close()
    asyncio.run(go())


def test_the_icon_is_a_16_pixel_ico():
    # read with the ICO/BMP header layout (an independent reading of the bytes, not the writer's code)
    assert FAVICON[:6] == b"\x00\x00\x01\x00\x01\x00"  # reserved, type 1 (icon), one image
    width, height, _, _, planes, bits, size, offset = (FAVICON[6], FAVICON[7], FAVICON[8], FAVICON[9],
                                                       int.from_bytes(FAVICON[10:12], "little"),
                                                       int.from_bytes(FAVICON[12:14], "little"),
                                                       int.from_bytes(FAVICON[14:18], "little"),
                                                       int.from_bytes(FAVICON[18:22], "little"))
    assert (width, height, planes, bits, offset, offset + size) == (16, 16, 1, 32, 22, len(FAVICON))
