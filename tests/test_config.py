"""Settings validation: every bad knob is one clear ConfigError line naming the variable."""

from __future__ import annotations

import pytest

from npsflow import config


def load(tmp_path, **env):
    return config.load({"NPSFLOW_HOME": str(tmp_path), **env})


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "1e999", "soon"])
def test_sink_max_age_must_be_a_finite_positive_number(tmp_path, value):
    with pytest.raises(config.ConfigError, match="NPSFLOW_SINK_MAX_AGE") as info:
        load(tmp_path, NPSFLOW_SINK_MAX_AGE=value)
    assert "\n" not in str(info.value)


def test_sink_max_age_accepts_fractions(tmp_path):
    assert load(tmp_path, NPSFLOW_SINK_MAX_AGE="0.25").sink_max_age == 0.25
    assert load(tmp_path).sink_max_age == 1.0


@pytest.mark.parametrize("name", ["NPSFLOW_PUBLIC_BIND", "NPSFLOW_INTERNAL_BIND"])
@pytest.mark.parametrize("value", ["127.0.0.1:65536", "127.0.0.1:-80", "127.0.0.1:http", "h:80.5", "::1:80",
                                   "[::1]80", "bad host:80", "[::1"])
def test_listener_binds_must_be_host_and_port(tmp_path, name, value):
    with pytest.raises(config.ConfigError, match=name) as info:
        load(tmp_path, **{name: value})
    assert "\n" not in str(info.value)


def test_listener_binds_parse_and_default(tmp_path):
    default = load(tmp_path)
    assert default.public_bind == default.internal_bind == config.Bind("127.0.0.1", None)
    assert load(tmp_path, NPSFLOW_PUBLIC_BIND="0.0.0.0:8080").public_bind == config.Bind("0.0.0.0", 8080)
    assert load(tmp_path, NPSFLOW_PUBLIC_BIND="0.0.0.0:8080").public_bind.url == "http://127.0.0.1:8080"
    assert load(tmp_path, NPSFLOW_INTERNAL_BIND="[::1]:9000").internal_bind.url == "http://[::1]:9000"
    assert load(tmp_path, NPSFLOW_INTERNAL_BIND=":9000").internal_bind == config.Bind("127.0.0.1", 9000)
    assert load(tmp_path, NPSFLOW_PUBLIC_BIND="nps.internal").public_bind == config.Bind("nps.internal", None)
    assert load(tmp_path, NPSFLOW_PUBLIC_BIND="127.0.0.1:0").public_bind.port is None  # 0: a free port
    with pytest.raises(config.ConfigError, match="must not share a port"):
        load(tmp_path, NPSFLOW_PUBLIC_BIND="127.0.0.1:8080", NPSFLOW_INTERNAL_BIND="127.0.0.1:8080")
    with pytest.raises(config.ConfigError, match="NPSFLOW_WEB_PORT is gone.*NPSFLOW_PUBLIC_BIND"):
        load(tmp_path, NPSFLOW_WEB_PORT="8080")


def test_survey_links_point_at_the_public_listener_unless_set(tmp_path):
    assert load(tmp_path, NPSFLOW_PUBLIC_BIND="0.0.0.0:8443").survey_base_url == "http://127.0.0.1:8443/s"
    assert load(tmp_path, NPSFLOW_PUBLIC_BIND="0.0.0.0:8443",
                NPSFLOW_SURVEY_URL="https://nps.example.com/s").survey_base_url == "https://nps.example.com/s"


def test_internal_token_from_the_environment_or_a_file(tmp_path):
    assert load(tmp_path).internal_token is None
    token = "t0ken-of-the-internal-listener"
    assert load(tmp_path, NPSFLOW_INTERNAL_TOKEN=token).internal_token == token
    assert token not in repr(load(tmp_path, NPSFLOW_INTERNAL_TOKEN=token))
    path = tmp_path / "token"
    path.write_text(token + "\n")
    from_file = load(tmp_path, NPSFLOW_INTERNAL_TOKEN_FILE=str(path))
    assert (from_file.internal_token, from_file.internal_token_file) == (token, path.resolve())
    assert config.load(from_file.to_env()).internal_token == token
    assert "NPSFLOW_INTERNAL_TOKEN" not in from_file.to_env()  # a child process reads the file itself
    for bad, match in ((dict(NPSFLOW_INTERNAL_TOKEN="short"), "16-512 visible ASCII"),
                       (dict(NPSFLOW_INTERNAL_TOKEN="has a space in it, long enough"), "16-512 visible ASCII"),
                       (dict(NPSFLOW_INTERNAL_TOKEN_FILE=str(tmp_path / "none")), "cannot read"),
                       (dict(NPSFLOW_INTERNAL_TOKEN=token, NPSFLOW_INTERNAL_TOKEN_FILE=str(path)), "not both")):
        with pytest.raises(config.ConfigError, match=match):
            load(tmp_path, **bad)


@pytest.mark.parametrize("value", ["Location", "overall,bad dim", "1st", "a-b", "x" * 65, ",", " , ", "location;drop",
                                   "promoters", "overall,location,overall"])
def test_dimensions_must_be_valid_names_and_at_least_one(tmp_path, value):
    with pytest.raises(config.ConfigError, match="NPSFLOW_DIMENSIONS") as info:
        load(tmp_path, NPSFLOW_DIMENSIONS=value)
    assert "\n" not in str(info.value)


def test_valid_dimensions(tmp_path):
    assert load(tmp_path, NPSFLOW_DIMENSIONS=" overall , store_2 ").dimensions == ("overall", "store_2")
    assert load(tmp_path, NPSFLOW_DIMENSIONS="x" * 64).dimensions == ("x" * 64,)


def test_window_names_must_be_unique(tmp_path):
    with pytest.raises(config.ConfigError, match="NPSFLOW_WINDOWS.*24h"):
        load(tmp_path, NPSFLOW_WINDOWS="24h,7d,24h")
    assert [w.name for w in load(tmp_path, NPSFLOW_WINDOWS="24h,7d").windows] == ["24h", "7d"]


def test_settings_round_trip_through_the_environment(tmp_path):
    settings = load(tmp_path, NPSFLOW_PUBLIC_BIND="0.0.0.0:8099", NPSFLOW_INTERNAL_BIND="[::1]:8100",
                    NPSFLOW_INTERNAL_TOKEN="x" * 20, NPSFLOW_SINK_MAX_AGE="0.5", NPSFLOW_DIMENSIONS="overall,shop")
    again = config.load(settings.to_env())
    assert (again.public_bind, again.internal_bind, again.internal_token, again.sink_max_age, again.dimensions) == (
        config.Bind("0.0.0.0", 8099), config.Bind("::1", 8100), "x" * 20, 0.5, ("overall", "shop"))


@pytest.mark.parametrize("name,value,match", [
    ("NPSFLOW_SECRET", "short", "at least 16 characters"),
    ("NPSFLOW_SURVEY_URL", "nps.example.com/s", "http\\(s\\) URL"),
    ("NPSFLOW_LINK_TTL", "forever", "NPSFLOW_LINK_TTL"),
    ("NPSFLOW_PROGRAMS", "/no/such/programs.yaml", "no such file"),
    ("NPSFLOW_CHANNELS", "/no/such/channels.yaml", "no such file"),
])
def test_dispatch_settings_are_checked(tmp_path, name, value, match):
    with pytest.raises(config.ConfigError, match=match) as info:
        load(tmp_path, **{name: value})
    assert name in str(info.value) and "\n" not in str(info.value)


def test_the_secret_is_created_once_private_and_shared_by_every_process(tmp_path):
    import os
    import stat
    import subprocess
    import sys

    first = load(tmp_path).secret
    path = tmp_path / "secret.key"
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(tmp_path).secret == first
    other = subprocess.run([sys.executable, "-c", "from npsflow import config; print(config.load().secret.hex())"],
                           env={**os.environ, "NPSFLOW_HOME": str(tmp_path)}, capture_output=True, text=True)
    assert other.stdout.strip() == first.hex()
    assert load(tmp_path, NPSFLOW_SECRET="s" * 20).secret == b"s" * 20  # the variable wins
    path.write_text("not hex")
    with pytest.raises(config.ConfigError, match="secret.key"):
        load(tmp_path).secret


def test_dispatch_settings_reach_a_child_process(tmp_path):
    programs = tmp_path / "p.yaml"
    programs.write_text("version: 1\n")
    settings = load(tmp_path, NPSFLOW_PROGRAMS=str(programs), NPSFLOW_SECRET="x" * 16,
                    NPSFLOW_SURVEY_URL="https://nps.example.com/s", NPSFLOW_LINK_TTL="7d")
    again = config.load(settings.to_env())
    assert (again.programs_file, again.secret, again.survey_url, again.link_ttl_seconds) == (
        programs.resolve(), b"x" * 16, "https://nps.example.com/s", 7 * 86400)


def test_retention_in_whole_days(tmp_path):
    assert load(tmp_path).retention_days is None
    assert load(tmp_path, NPSFLOW_RETENTION="730d").retention_days == 730
    assert config.load(load(tmp_path, NPSFLOW_RETENTION="2w").to_env()).retention_days == 14
    for bad in ("36h", "forever", "0d", "40000d"):
        with pytest.raises(config.ConfigError, match="NPSFLOW_RETENTION"):
            load(tmp_path, NPSFLOW_RETENTION=bad)


def test_web_hosts_are_local_names_the_survey_host_and_the_allowed_ones(tmp_path):
    assert load(tmp_path).web_hosts == {"127.0.0.1", "localhost", "::1"}
    settings = load(tmp_path, NPSFLOW_SURVEY_URL="https://NPS.example.com/s", NPSFLOW_ALLOWED_HOSTS="a.example, b.example")
    assert settings.web_hosts == {"127.0.0.1", "localhost", "::1", "nps.example.com", "a.example", "b.example"}
    assert config.load(settings.to_env()).web_hosts == settings.web_hosts


def test_the_secret_from_a_file_compose_and_kubernetes_secrets(tmp_path):
    """NPSFLOW_SECRET_FILE: the file's content (a trailing newline stripped) is the key; a child process gets the
    path, never the value; both variables, an unreadable, empty or short file are one line naming the variable."""
    secret = tmp_path / "secret"
    secret.write_text("k" * 32 + "\n")
    settings = load(tmp_path, NPSFLOW_SECRET_FILE=str(secret))
    assert settings.secret == b"k" * 32 and not (tmp_path / "secret.key").exists()
    env = settings.to_env()
    assert env["NPSFLOW_SECRET_FILE"] == str(secret.resolve()) and "NPSFLOW_SECRET" not in env
    assert config.load(env).secret == b"k" * 32
    assert "k" * 32 not in repr(settings)
    short = tmp_path / "short"
    short.write_text("tooshort\n")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for extra, match in ((dict(NPSFLOW_SECRET_FILE=str(secret), NPSFLOW_SECRET="s" * 20), "not both"),
                         (dict(NPSFLOW_SECRET_FILE=str(tmp_path / "missing")), "cannot read"),
                         (dict(NPSFLOW_SECRET_FILE=str(empty)), "is empty"),
                         (dict(NPSFLOW_SECRET_FILE=str(short)), "at least 16 characters")):
        with pytest.raises(config.ConfigError, match=match) as info:
            load(tmp_path, **extra)
        assert "NPSFLOW_SECRET" in str(info.value) and "\n" not in str(info.value)
        assert "tooshort" not in str(info.value)


def test_the_advertised_url_auto_is_this_hosts_address_and_the_internal_port(tmp_path, monkeypatch):
    """NPSFLOW_INTERNAL_ADVERTISED_URL=auto (the container image's default): every compose replica advertises its
    own address, which its internal listener then answers to."""
    import socket

    from web.server import internal_hosts

    monkeypatch.setattr(socket, "gethostname", lambda: "c0ffee")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: {"c0ffee": "172.18.0.7"}[name])
    settings = load(tmp_path, NPSFLOW_INTERNAL_BIND="0.0.0.0:8081", NPSFLOW_INTERNAL_ADVERTISED_URL="auto")
    assert settings.internal_advertised_url == "http://172.18.0.7:8081"
    assert "172.18.0.7" in internal_hosts(settings)
    with pytest.raises(config.ConfigError, match="NPSFLOW_INTERNAL_ADVERTISED_URL=auto needs a fixed port"):
        load(tmp_path, NPSFLOW_INTERNAL_BIND="0.0.0.0:0", NPSFLOW_INTERNAL_ADVERTISED_URL="auto")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: (_ for _ in ()).throw(socket.gaierror(-2, "no")))
    with pytest.raises(config.ConfigError, match="does not resolve"):
        load(tmp_path, NPSFLOW_INTERNAL_BIND="0.0.0.0:8081", NPSFLOW_INTERNAL_ADVERTISED_URL="auto")
