"""Real servers in the test process, for end-to-end tests with a worker in another process.

* ``SmtpServer``: aiosmtpd (a real SMTP server) on 127.0.0.1, keeping every message it accepted.
* ``SmsGateway``: an HTTP server with the shape of Twilio's Messages API
  (``POST /2010-04-01/Accounts/{sid}/Messages.json``, form fields To, From, Body, HTTP basic auth), answering
  201 with a message sid, in a thread of its own so a synchronous test can wait on the worker meanwhile.
"""

from __future__ import annotations

import asyncio
import email
import threading
from email import policy

from aiohttp import web
from aiosmtpd.controller import Controller

from npsflow.worker import free_port


class SmtpServer:
    def __init__(self) -> None:
        self.messages: list = []
        self.recipients: list[list[str]] = []
        self._lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server, session, envelope):
        with self._lock:
            self.messages.append(email.message_from_bytes(envelope.original_content, policy=policy.default))
            self.recipients.append(list(envelope.rcpt_tos))
        return "250 2.0.0 OK queued"

    @property
    def port(self) -> int:
        return self.controller.port

    def received(self) -> list:
        with self._lock:
            return list(self.messages)

    def __enter__(self) -> "SmtpServer":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


class SmsGateway:
    def __init__(self, account_sid: str = "AC0123456789abcdef", auth_token: str = "gateway-token") -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _messages(self, request: web.Request) -> web.Response:
        form = await request.post()
        with self._lock:
            self.requests.append({"path": request.path, "authorization": request.headers.get("Authorization"),
                                  "content_type": request.content_type, "form": dict(form)})
            sid = f"SM{len(self.requests):032x}"
        return web.json_response({"sid": sid, "status": "queued"}, status=201)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._messages)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self) -> list[dict]:
        with self._lock:
            return list(self.requests)

    def __enter__(self) -> "SmsGateway":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
