"""The worker's two listeners end to end: a real worker (real broker, embedded ClickHouse) started with an internal
token. The public listener serves the survey page and nothing internal — not Faust's table views either (they
once returned an invitation with its segment at /table/invitations/I|<id>/); the internal one wants the token,
and the CLI reads through it."""

from __future__ import annotations

import email
import re
from email import policy

import pytest
import requests

from tests.e2e_helpers import wait_for
from tests.test_e2e_survey import invite, survey_env
from tests.test_web_listeners import FAUST_PATHS, INTERNAL_PATHS, TOKEN

pytestmark = pytest.mark.kafka


@pytest.fixture
def env(tmp_path, kafka_bootstrap):
    e = survey_env(tmp_path, kafka_bootstrap)
    e.vars["NPSFLOW_INTERNAL_TOKEN"] = TOKEN
    yield e
    e.stop_worker()


def test_public_listener_serves_only_the_survey_and_internal_wants_the_token(env, tmp_path):
    env.start_worker()
    (inv,) = invite(env, tmp_path)  # env.stats() reads through the internal listener, with the token
    public, internal = env.public_url, env.internal_url
    assert public != internal and public.startswith("http://127.0.0.1:") and internal.startswith("http://127.0.0.1:")
    assert TOKEN not in (env.home / "worker.json").read_text()

    table_view = f"/table/invitations/I|{inv}/"
    for path in INTERNAL_PATHS + FAUST_PATHS + [table_view, f"/router/invitations/I|{inv}/"]:
        for method in ("GET", "POST"):
            reply = requests.request(method, public + path, timeout=30)
            assert reply.status_code == 404, (method, path, reply.status_code)
            assert inv not in reply.text

    right = {"Authorization": f"Bearer {TOKEN}"}
    for path in INTERNAL_PATHS:
        assert requests.get(internal + path, timeout=30).status_code == 401, path
        assert requests.get(internal + path, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
        assert requests.get(internal + path, headers=right, timeout=60).status_code == 200, path
    for path in FAUST_PATHS + [table_view]:
        reply = requests.get(internal + path, headers=right, timeout=30)
        assert reply.status_code == 404 and inv not in reply.text, path
    assert requests.get(internal + "/healthz", timeout=30).status_code == 200
    assert requests.get(public + "/healthz", timeout=30).status_code == 200

    # the invitation's link points at the public listener, and works there
    mail = email.message_from_bytes(next((env.home / "outbox" / "email").glob("*.eml")).read_bytes(),
                                    policy=policy.default)
    link = re.findall(r"http://\S+/s/[A-Za-z0-9_.-]+", mail.get_body(("plain",)).get_content())[0]
    assert link.startswith(public + "/s/")
    assert requests.get(link, timeout=30).status_code == 200
    assert requests.get(internal + link[len(public):], headers=right, timeout=30).status_code == 404

    # the CLI reads through the internal listener with the token; without it, one line says what is missing
    assert wait_for(lambda: env.cli_json("dispatches")["total"] == 1, what="the dispatch in ClickHouse")
    without = env.cli("report", check=False, env_without=("NPSFLOW_INTERNAL_TOKEN",))
    assert without.returncode == 1 and "NPSFLOW_INTERNAL_TOKEN" in without.stderr
    assert len([line for line in without.stderr.splitlines() if line.strip()]) == 1
