"""Shared pytest configuration. Fixture modules are plugged in here so each stays small."""

pytest_plugins = [
    "tests.fixtures_kafka",
    "tests.fixtures_clickhouse",
    "tests.fixtures_browser",
]
