"""The worker's two HTTP listeners, one Faust web-server service.

    public    NPSFLOW_PUBLIC_BIND    (web.public)    the survey page and POST /api/v1/responses — nothing else
    internal  NPSFLOW_INTERNAL_BIND  (web.internal)  read APIs, dashboard, stats; optional bearer token

``install_web`` registers ``WebServers`` with ``app.web_server``: Faust then never builds its own aiohttp stack
(with its ``/table/<name>/<key>/``, ``/router``, ``/graph`` and statistics views) and starts ours after table
recovery, as a child service it stops with the app. The sockets are bound and listening before the worker starts
(``bind_socket``), so the ports — also free ones, port 0 — are known for the survey links and worker.json, and
no other process can take them in between; a connection made meanwhile waits in the backlog until then.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from mode import Service

from npsflow.config import Bind, Settings
from sinks.terms import load_themes
from web.internal import InternalApi, internal_app
from web.public import public_app, public_handlers

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def bind_socket(bind: Bind) -> socket.socket:
    """A TCP socket bound to ``bind`` (port None or 0: a free one) and listening; served later (WebServers)."""
    family, kind, proto, _, address = socket.getaddrinfo(bind.host or None, bind.port or 0, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)  # held from now on: with SO_REUSEADDR a merely bound port could be bound again
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {bind}: {exc.strerror}") from None
    return sock


def bound(bind: Bind, sock: socket.socket) -> Bind:
    """``bind`` with the port the socket actually got."""
    return Bind(bind.host, sock.getsockname()[1])


def allowed_hosts(settings: Settings, bind: Bind) -> frozenset[str]:
    """Host names a listener answers to: NPSFLOW_ALLOWED_HOSTS and the local names (Settings.web_hosts), plus the
    address it is bound to (unless that is a wildcard)."""
    host = bind.host.strip("[]").lower()
    return settings.web_hosts | ({host} if host not in WILDCARD_HOSTS else set())


@dataclass
class Listener:
    name: str
    sock: socket.socket
    app: web.Application
    runner: web.AppRunner | None = field(default=None, repr=False)


class WebServers(Service):
    """Serves each listener's aiohttp application on its pre-bound socket; no access log (it would write client
    addresses and survey tokens)."""

    driver_version = f"aiohttp {aiohttp.__version__}"

    def __init__(self, listeners: list[Listener], web_url: str, router=None, **kwargs) -> None:
        self.listeners, self.web_url = listeners, web_url
        self.router = router  # web.routing.Router: started before the listeners, stopped after them
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        if self.router is not None:
            await self.router.start()
        for listener in self.listeners:
            runner = web.AppRunner(listener.app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.SockSite(runner, listener.sock, shutdown_timeout=5.0).start()
            listener.runner = runner

    async def on_stop(self) -> None:
        for listener in reversed(self.listeners):
            if listener.runner is not None:
                await listener.runner.cleanup()
                listener.runner = None
        if self.router is not None:
            await self.router.stop()


def case_submitter(pipeline):
    """Produces a case command (streams.cases.command_for) keyed by its route; returns once Kafka has it."""
    from streams.app import run_batch

    topic = pipeline.topics["case_events"].get_topic_name()
    partitions = pipeline.settings.partitions

    async def submit(event: dict) -> None:
        import orjson

        out = pipeline.output()
        out.add_keyed(topic, partitions, event["route"].encode(), orjson.dumps(event))
        await run_batch("case_command", pipeline.stats, out.flush, max_delay=2.0)

    return submit


def internal_hosts(settings: Settings) -> frozenset[str]:
    """Host names the internal listener answers to: allowed_hosts, plus the host of its advertised URL (what the
    other workers' survey pages ask, web.routing)."""
    from urllib.parse import urlsplit

    advertised = (urlsplit(settings.internal_advertised_url).hostname or "").lower()
    return allowed_hosts(settings, settings.internal_bind) | ({advertised} if advertised else set())


def install_web(pipeline, store, settings: Settings, public: socket.socket, internal: socket.socket,
                bootstrap: str | None = None) -> WebServers:
    """Put the public and the internal listener on the pipeline's Faust app (``app.web_server``). ``settings``
    carry the bound ports (``bound``); ``store`` is the worker's ClickHouseStore. With ``bootstrap`` (Kafka) the
    survey page routes invitations held by other workers to them (web.routing); without, it answers only the
    ones this worker holds."""
    from web.health import Readiness
    from web.invitations import LocalInvitations
    from web.routing import Router

    readiness = Readiness(pipeline.app, settings.role, store, max_lag=settings.ready_max_lag,
                          grace_seconds=settings.ready_grace_seconds,
                          sinks=lambda: pipeline.store_holder.get("sinks") or {})
    readiness.install()
    router = Router(settings, bootstrap, pipeline.stats) if bootstrap else None
    pages, api = public_handlers(pipeline, pipeline.book, settings, remote=router.client if router else None)
    reads = InternalApi(store, pipeline.stats, [d for d in settings.dimensions if d != "overall"],
                        load_themes(settings.themes_file), submit=case_submitter(pipeline),
                        invitations=LocalInvitations(pipeline, settings.partitions))
    servers = WebServers([
        Listener("public", public, public_app(pages, api, allowed_hosts=allowed_hosts(settings, settings.public_bind),
                                              readyz=readiness.handle)),
        Listener("internal", internal, internal_app(reads, allowed_hosts=internal_hosts(settings),
                                                    token=settings.internal_token, readyz=readiness.handle)),
    ], web_url=settings.public_bind.url, router=router)
    servers.readiness = readiness
    pipeline.app.web_server(servers)
    return servers
