"""The worker's two listeners (web.server): the public one serves only the survey page and the response API, the
internal one the read APIs and the dashboard, behind an optional bearer token. In process, on the real aiohttp
applications the worker serves, a real Faust app (not started) and a real embedded ClickHouse store; the same
through a real worker on the real broker in tests/test_e2e_listeners.py."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from npsflow import config
from streams.app import create_app
from web.common import bearer_matches
from web.internal import InternalApi, internal_app
from web.public import public_app, public_handlers
from web.server import allowed_hosts, bind_socket, bound

TOKEN = "internal-token-0123456789abcdef"
# Every path of the internal listener, and Faust's built-in views (tables, router, graph, statistics, index).
INTERNAL_PATHS = ["/api/v1/stats", "/api/v1/report", "/api/v1/report?by=location", "/api/v1/windows",
                  "/api/v1/deadletters", "/api/v1/dispatches", "/api/v1/dashboard", "/dashboard",
                  "/api/v1/terms", "/api/v1/terms?by=location&lang=fi&min_count=3", "/api/v1/themes",
                  "/api/v1/alerts", "/api/v1/alerts?status=open"]
# The internal read of one invitation (web.routing asks it of the worker holding the invitation): never public.
PEER_PATHS = ["/api/v1/invitation/abc", "/api/v1/invitation/I%7Cabc", "/api/v1/invitation/"]
FAUST_PATHS = ["/", "/table/", "/table/invitations/", "/table/invitations/I|abc/", "/router/",
               "/router/invitations/I|abc/", "/graph/", "/stats/", "/assignment/", "/performance/"]


@pytest.fixture
def settings(tmp_path):
    return config.load({"NPSFLOW_HOME": str(tmp_path), "NPSFLOW_SECRET": "s" * 24,
                        "NPSFLOW_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'clickhouse'}"})


@pytest.fixture
def pipeline(settings):
    return create_app(settings, web_enabled=True)


async def client_of(app) -> TestClient:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def public(pipeline, settings):
    pages, api = public_handlers(pipeline, pipeline.book, settings)
    client = await client_of(public_app(pages, api, allowed_hosts=settings.web_hosts))
    yield client
    await client.close()


def internal_client(pipeline, settings, store, token):
    from web.invitations import LocalInvitations

    reads = InternalApi(store, pipeline.stats, ["location"], invitations=LocalInvitations(pipeline, settings.partitions))
    return client_of(internal_app(reads, allowed_hosts=settings.web_hosts, token=token))


async def test_the_public_listener_serves_no_internal_path_and_no_faust_view(public):
    for path in INTERNAL_PATHS + FAUST_PATHS + PEER_PATHS:
        for method in ("GET", "POST"):
            reply = await public.request(method, path)
            assert reply.status == 404, (method, path, reply.status)
    assert (await public.get("/healthz")).status == 200
    assert (await public.get("/s/not-a-token")).status == 404  # the survey page: a forged link's notice page
    assert (await public.post("/api/v1/responses", json=[])).status == 401  # the response API: needs a key


async def test_the_internal_listener_serves_the_read_apis_and_the_dashboard(pipeline, settings, ch_store):
    client = await internal_client(pipeline, settings, ch_store, token=None)
    try:
        for path in INTERNAL_PATHS + ["/healthz"]:
            reply = await client.get(path)
            assert reply.status == 200, (path, reply.status, await reply.text())
        assert (await (await client.get("/api/v1/report")).json())["total"]["responses"] == 0
        for path in FAUST_PATHS + ["/s/x", "/api/v1/responses"]:
            assert (await client.get(path)).status == 404, path
        assert (await client.get("/api/v1/stats", headers={"Host": "evil.example"})).status == 421
        for bad in ("by=loc;drop", "limit=-1", "min_count=x", "category=angry", "sinse=2024-01-01", "since=tuesday"):
            reply = await client.get(f"/api/v1/terms?{bad}")
            assert reply.status == 400 and (await reply.json())["error"], bad
        assert (await client.get("/api/v1/cloud?lang=fi")).status == 400  # the cloud takes a period only
        assert (await client.get("/api/v1/cloud?since=2024-01-01T00:00:00Z")).status == 200
    finally:
        await client.close()


async def test_with_a_token_the_internal_listener_wants_the_bearer(pipeline, settings, ch_store):
    client = await internal_client(pipeline, settings, ch_store, token=TOKEN)
    try:
        for path in INTERNAL_PATHS + FAUST_PATHS:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}):
                reply = await client.get(path, headers=headers)
                assert reply.status == 401, (path, headers, reply.status)
                assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        right = {"Authorization": f"Bearer {TOKEN}"}
        for path in INTERNAL_PATHS:
            assert (await client.get(path, headers=right)).status == 200, path
        for path in FAUST_PATHS:
            assert (await client.get(path, headers=right)).status == 404, path
        for headers in ({}, {"Authorization": "Bearer wrong"}):  # another worker's read of an invitation, too
            assert (await client.get(PEER_PATHS[0], headers=headers)).status == 401
        held_elsewhere = await client.get(PEER_PATHS[0], headers=right)  # this (unstarted) worker holds nothing
        assert held_elsewhere.status == 409 and (await held_elsewhere.json())["reason"] == "not_held"
        assert (await client.get("/healthz")).status == 200  # liveness needs no token
        # the host guard comes first: a rebound DNS name learns nothing, not even that a token is wanted
        assert (await client.get("/api/v1/stats", headers={**right, "Host": "evil.example"})).status == 421
    finally:
        await client.close()


def test_bearer_comparison():
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN) and bearer_matches(f"bearer  {TOKEN} ", TOKEN)
    for header in (None, "", "Bearer", f"Token {TOKEN}", f"Bearer {TOKEN.upper()}", "Bearer \udcff"):
        assert not bearer_matches(header, TOKEN)


def test_listeners_bind_free_ports_and_answer_to_their_own_address(settings):
    public = bind_socket(config.Bind("127.0.0.1", None))
    internal = bind_socket(config.Bind("127.0.0.1", None))
    try:
        ports = {bound(settings.public_bind, public).port, bound(settings.internal_bind, internal).port}
        assert len(ports) == 2 and None not in ports
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
            bind_socket(config.Bind("127.0.0.1", bound(settings.public_bind, public).port)).close()
    finally:
        public.close()
        internal.close()
    assert allowed_hosts(settings, config.Bind("10.1.2.3", 80)) == settings.web_hosts | {"10.1.2.3"}
    assert allowed_hosts(settings, config.Bind("0.0.0.0", 80)) == settings.web_hosts


def test_faust_builds_none_of_its_own_web_views(pipeline, settings, ch_store):
    """With the listeners registered as the app's web server, Faust's boot starts no aiohttp stack of its own."""
    from web.server import install_web

    public = bind_socket(config.Bind("127.0.0.1", None))
    internal = bind_socket(config.Bind("127.0.0.1", None))
    try:
        servers = install_web(pipeline, ch_store, settings, public, internal)
        app = pipeline.app
        assert app._web_server_service is servers
        assert app.boot_strategy.web_server() == []  # not app.web, not its cache
        conf = app.conf
        assert not (conf.web_tables_enabled or conf.web_router_enabled or conf.web_stats_enabled
                    or conf.web_graph_enabled or conf.web_metrics_enabled)
    finally:
        public.close()
        internal.close()


async def test_the_dashboard_numbers_survive_a_failing_words_query(pipeline, settings, ch_store):
    """The word cloud and the complaints are extra: when their query fails (here: the view is gone, as before
    migration 0006's views exist), the dashboard still answers with its numbers and ``words`` null."""
    client = await internal_client(pipeline, settings, ch_store, token=None)
    try:
        assert (await (await client.get("/api/v1/dashboard")).json())["words"]["cloud"]["words"] == []
        ch_store.command("DROP VIEW {db}.term_cells")
        # a fresh listener: the first one's caches hold the old answer for 5 s / 60 s
        reads = InternalApi(ch_store, pipeline.stats, ["location"])
        fresh = await client_of(internal_app(reads, allowed_hosts=settings.web_hosts, token=None))
        try:
            reply = await fresh.get("/api/v1/dashboard")
            data = await reply.json()
            assert reply.status == 200 and data["words"] is None and data["total"]["responses"] == 0
        finally:
            await fresh.close()
    finally:
        await client.close()


def test_trusted_proxies_may_be_networks_and_only_they_name_the_client():
    """NPSFLOW_TRUSTED_PROXIES takes addresses and networks (an ingress controller's pods change their IPs); a peer
    outside them cannot choose its rate-limit identity with X-Forwarded-For."""
    from types import SimpleNamespace

    from npsflow import config
    from web.public import Limits

    limits = Limits(1.0, frozenset({"10.42.0.0/16", "192.0.2.7", "2001:db8::/32"}))
    forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}
    ask = lambda peer: limits.client_ip(SimpleNamespace(remote=peer, headers=forwarded))  # noqa: E731
    assert [ask("10.42.7.1"), ask("192.0.2.7"), ask("2001:db8::5")] == ["203.0.113.9"] * 3
    assert [ask("10.43.0.1"), ask("192.0.2.8"), ask("unknown")] == ["10.43.0.1", "192.0.2.8", "unknown"]
    assert config.load({"NPSFLOW_TRUSTED_PROXIES": "10.42.0.0/16, 192.0.2.7"}).trusted_proxies == (
        "10.42.0.0/16", "192.0.2.7")
    with pytest.raises(config.ConfigError, match="NPSFLOW_TRUSTED_PROXIES: 'ingress' is not an IP address"):
        config.load({"NPSFLOW_TRUSTED_PROXIES": "10.0.0.1,ingress"})
