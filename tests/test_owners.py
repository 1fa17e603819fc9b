"""The owner directory (streams.owners) and the routed read of one invitation (web.routing, web.internal), in
process: the directory fed record by record; the owner client against a real aiohttp internal listener whose
invitations are a small stand-in table. Through real workers on the real broker: tests/test_e2e_routing.py."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestServer

from npsflow import config
from streams.owners import Directory, Owner, invitation_partition
from web.internal import InternalApi, internal_app
from web.invitations import ELSEWHERE, HERE, RECOVERING
from web.routing import DirectoryReader, OwnerClient

TOKEN = "internal-token-0123456789abcdef"
SECRET = b"deployment-secret-0123456789abcdef"


def record(partition: int, url: str, generation: int, at: int, worker: str = "w") -> bytes:
    return Owner(partition, url, worker, generation, at).encode(SECRET)[1]


def test_the_latest_record_per_partition_wins():
    d = Directory(SECRET)
    assert d.apply(record(0, "http://a:1", 3, 100)) and d.apply(record(1, "http://b:1", 3, 100))
    assert d.apply(record(0, "http://b:1", 4, 200))
    assert (d.owner(0).url, d.owner(1).url, d.owner(2)) == ("http://b:1", "http://b:1", None)
    assert d.apply(record(1, "http://c:1", 4, 150))  # the same generation again: the later record wins
    assert d.owner(1).url == "http://c:1"


def test_a_stale_generation_does_not_overwrite_a_newer_owner():
    d = Directory(SECRET)
    d.apply(record(5, "http://new:1", 7, 2000))
    assert not d.apply(record(5, "http://old:1", 6, 1990))  # the previous owner's send that landed late
    assert d.owner(5).url == "http://new:1"
    # the group was deleted and counts from 1 again: an older generation that is later in time replaces it
    assert d.apply(record(5, "http://restarted:1", 1, 5000))
    assert d.owner(5).url == "http://restarted:1"


def test_malformed_records_and_tombstones_are_skipped():
    d = Directory(SECRET)
    d.apply(record(2, "http://a:1", 1, 1))
    for bad in (None, b"", b"not json", b"{}", json.dumps({"partition": 2, "url": "ftp://x", "generation": 9,
                                                           "at": 9}).encode(),
                json.dumps({"partition": "x", "url": "http://x:1", "generation": 9, "at": 9}).encode()):
        assert not d.apply(bad)
    assert d.owner(2).url == "http://a:1" and d.applied == 7


def test_records_round_trip_and_are_keyed_by_partition():
    key, value = Owner(3, "http://10.0.0.7:7001", "process-2", 12, 1234).encode(SECRET)
    assert key == b"3"
    assert Owner.decode(value, SECRET) == Owner(3, "http://10.0.0.7:7001", "process-2", 12, 1234)


def test_a_record_not_signed_with_the_deployments_secret_redirects_nothing():
    """The reader sends the internal token to the URL a record names: a record produced by anyone else (another
    secret, no signature, a signed record with its URL changed) must not move a partition."""
    d = Directory(SECRET)
    d.apply(record(4, "http://owner:1", 2, 100))
    forged = Owner(4, "http://attacker:1", "w", 3, 200)
    unsigned = json.dumps(forged.fields()).encode()
    tampered = json.loads(record(4, "http://owner:1", 3, 200))
    tampered["url"] = "http://attacker:1"
    for bad in (forged.encode(b"another-secret-0123456789")[1], unsigned, json.dumps(tampered).encode()):
        assert not d.apply(bad)
    assert d.owner(4).url == "http://owner:1"
    assert d.apply(record(4, "http://new-owner:1", 3, 200))  # signed with the deployment's secret: it moves


def test_the_invitation_partition_is_the_kafka_default_partitioners():
    from aiokafka.partitioner import DefaultPartitioner  # what Faust's producer keys with

    for inv_id in ("abc", "inv-1", "x" * 22, "ÄÖ-å"):
        key = inv_id.encode()
        assert invitation_partition(inv_id, 6) == DefaultPartitioner()(key, list(range(6)), list(range(6)))


class Held:
    """A stand-in for web.invitations.LocalInvitations: which invitations a worker holds and their records."""

    def __init__(self, rows: dict, where: str = HERE) -> None:
        self.rows, self.state = rows, where

    def where(self, inv_id: str) -> str:
        return self.state

    def get(self, inv_id: str):
        return self.rows.get(inv_id)


class Counts:
    def __init__(self) -> None:
        self.counts: dict = {}

    def inc(self, name: str, by: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + by

    def as_dict(self) -> dict:
        return dict(self.counts)


@pytest.fixture
def settings(tmp_path):
    return config.load({"NPSFLOW_HOME": str(tmp_path), "NPSFLOW_SECRET": "s" * 24,
                        "NPSFLOW_INTERNAL_TOKEN": TOKEN})


async def owner_server(held: Held, token: str | None = TOKEN) -> TestServer:
    api = InternalApi(None, Counts(), ["location"], themes={}, invitations=held)
    server = TestServer(internal_app(api, allowed_hosts=frozenset({"127.0.0.1"}), token=token), host="127.0.0.1")
    await server.start_server()
    return server


async def client_for(settings, url: str | None, headers: dict) -> OwnerClient:
    reader = DirectoryReader(settings, "127.0.0.1:1")  # never started: the directory is fed by hand
    if url is not None:
        for partition in range(settings.partitions):
            assert reader.directory.apply(Owner(partition, url, "w", 1, 1).encode(settings.secret)[1])
    client = OwnerClient(reader, headers, Counts())
    await client.start()
    return client


async def test_the_owner_client_reads_the_invitation_from_its_holder(settings):
    inv = {"inv": "inv-1", "org": "acme", "program": "service", "locale": "fi"}
    server = await owner_server(Held({"inv-1": inv}))
    client = await client_for(settings, f"http://127.0.0.1:{server.port}", {"Authorization": f"Bearer {TOKEN}"})
    try:
        assert await client.fetch("inv-1", invitation_partition("inv-1", 6)) == (inv, None)
        assert await client.fetch("inv-2", invitation_partition("inv-2", 6)) == (None, "invalid")
        assert client.stats.counts["survey.routed"] == 2
    finally:
        await client.stop()
        await server.close()


@pytest.mark.parametrize("where", [ELSEWHERE, RECOVERING])
async def test_an_owner_that_does_not_hold_the_partition_means_unavailable(settings, where):
    server = await owner_server(Held({"inv-1": {"inv": "inv-1"}}, where=where))
    client = await client_for(settings, f"http://127.0.0.1:{server.port}", {"Authorization": f"Bearer {TOKEN}"})
    try:
        assert await client.fetch("inv-1", 0) == (None, "unavailable")
        assert client.stats.counts == {"survey.routed_unavailable": 1}
    finally:
        await client.stop()
        await server.close()


async def test_no_owner_a_dead_owner_or_a_wrong_token_mean_unavailable(settings):
    server = await owner_server(Held({"inv-1": {"inv": "inv-1"}}))
    url = f"http://127.0.0.1:{server.port}"
    cases = [(None, {"Authorization": f"Bearer {TOKEN}"}), (url, {}), (url, {"Authorization": "Bearer wrong"})]
    try:
        for owner_url, headers in cases:
            client = await client_for(settings, owner_url, headers)
            try:
                assert await client.fetch("inv-1", 0) == (None, "unavailable"), (owner_url, headers)
            finally:
                await client.stop()
    finally:
        await server.close()
    client = await client_for(settings, url, {"Authorization": f"Bearer {TOKEN}"})  # the server is gone now
    try:
        assert await client.fetch("inv-1", 0) == (None, "unavailable")
    finally:
        await client.stop()


def test_the_advertised_url_defaults_to_the_bound_internal_listener(tmp_path):
    base = {"NPSFLOW_HOME": str(tmp_path)}
    assert config.load({**base, "NPSFLOW_INTERNAL_BIND": "0.0.0.0:7001"}).internal_advertised_url == \
        "http://127.0.0.1:7001"
    told = config.load({**base, "NPSFLOW_INTERNAL_ADVERTISED_URL": "http://10.1.2.3:7001/"})
    assert told.internal_advertised_url == "http://10.1.2.3:7001"
    assert told.to_env()["NPSFLOW_INTERNAL_ADVERTISED_URL"] == "http://10.1.2.3:7001/"
    with pytest.raises(config.ConfigError, match="NPSFLOW_INTERNAL_ADVERTISED_URL"):
        config.load({**base, "NPSFLOW_INTERNAL_ADVERTISED_URL": "10.1.2.3:7001"})
    from web.server import internal_hosts

    assert "10.1.2.3" in internal_hosts(told)  # its own listener answers to the name the others use
