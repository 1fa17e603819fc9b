"""The `npsflow` command line. Every failure is one clear line on stderr and a non-zero exit code."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime

import click

from npsflow import config as cfg
from npsflow.render import console, render_report, render_terms

EXIT_USAGE = 2
EXIT_FAILED = 1


class Failure(click.ClickException):
    """One-line error, exit code 1 (click prints 'Error: …')."""

    exit_code = EXIT_FAILED


def _settings() -> cfg.Settings:
    try:
        return cfg.load()
    except cfg.ConfigError as exc:
        raise Failure(str(exc)) from None


def _bootstrap(settings: cfg.Settings) -> str:
    try:
        return settings.bootstrap()
    except cfg.ConfigError as exc:
        raise Failure(str(exc)) from None


def _emit(data, fmt: str, render) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        render(data)


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    from streams.responses import Rejected, parse_timestamp

    try:
        return parse_timestamp(value, name)
    except Rejected as exc:
        raise click.BadParameter(exc.detail, param_hint=f"--{name}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="npsflow")
def main() -> None:
    """npsflow: Kafka-native Net Promoter Score. Responses in, live NPS out.

    State lives under NPSFLOW_HOME (default ./.npsflow). NPSFLOW_KAFKA points at a broker (default: the
    local one from `npsflow stack up`); NPSFLOW_CLICKHOUSE_DSN at ClickHouse (default: embedded chDB).
    """


# ------------------------------------------------------------------------------------------------ stack
@main.group()
def stack() -> None:
    """Run the local stack: a real Kafka broker or cluster (KRaft) and the npsflow workers, in the background."""


@stack.command("up")
@click.option("--brokers", type=click.IntRange(1, 9), default=None,
              help="Kafka nodes of the local cluster (KRaft voters, small heaps; topics replicated min(3, N) times, "
                   "min ISR one less). Default: what $NPSFLOW_HOME/kafka holds, else 1.")
@click.option("--workers", type=click.IntRange(1, 32), default=1, show_default=True,
              help="1: one worker running everything; M > 1: M process workers plus one sink worker (ClickHouse, "
                   "what the CLI asks), all in one consumer group.")
@click.option("--web", type=click.IntRange(0, 8), default=None,
              help="Web workers (role web: the survey page and response API, routing each link to the worker "
                   "holding its invitation). Default: 1 with --workers > 1, else 0.")
def stack_up(brokers: int | None, workers: int, web: int | None) -> None:
    """Start the local Kafka (fetching it on first use) and the workers; returns when all are ready."""
    from npsflow import stack as st

    settings = _settings()
    try:
        state = st.up(settings, brokers=brokers, workers=workers, web=web)
    except Exception as exc:  # KafkaStackError, StackError, ConfigError: all one line for the user
        raise Failure(str(exc)) from None
    click.echo(f"kafka  {state['kafka'].get('bootstrap')}  (version {state['kafka'].get('version', 'external')})")
    for w in [state["worker"], *state["workers"], *state.get("web", [])]:
        click.echo(f"worker {w.get('name') or w.get('role', '')} pid {w['pid']}  survey page {w['public_url']}/s/…  "
                   f"internal {w['internal_url']}/api/v1/stats")


@stack.command("down")
def stack_down() -> None:
    """Stop every worker and the local Kafka (no process is left behind)."""
    from npsflow import stack as st

    state = st.down(_settings())
    named = f" (+ {', '.join(state['workers_stopped'])})" if state["workers_stopped"] else ""
    click.echo(f"worker {'stopped' if state['worker_stopped'] else 'was not running'}{named}; "
               f"kafka {'stopped' if state['kafka_stopped'] else 'was not running'}")


@stack.command("status")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def stack_status(fmt: str) -> None:
    """Show whether the brokers and the workers run, and where."""
    from npsflow import stack as st

    state = st.status(_settings())

    def render(s):
        k = s["kafka"]
        sec = k.get("security") or {}
        auth = (f"  {sec['security_protocol']}" + (f" {sec.get('sasl_mechanism')} user {sec.get('sasl_username')}"
                                                    if sec.get("sasl_mechanism") else "")
                if sec.get("security_protocol", "PLAINTEXT") != "PLAINTEXT" else "")
        click.echo(f"kafka   {'running' if k.get('running') or k.get('external') else 'stopped'}"
                   f"  {k.get('bootstrap') or ''}{auth}")
        for node in k.get("nodes", []):
            click.echo(f"  node {node['node_id']}  {'running' if node['running'] else 'stopped'}"
                       f"  port {node.get('broker_port')}" + (f"  pid {node['pid']}" if node.get("pid") else ""))
        for w in [s["worker"], *s["workers"], *s.get("web", [])]:
            label = w.get("name") or "worker"
            click.echo(f"{label:<10}{'running' if w.get('pid') else 'stopped'}"
                       + (f"  role {w.get('role')}  pid {w['pid']}  public {w.get('public_url')}  "
                          f"internal {w.get('internal_url')}" if w.get("pid") else ""))
        click.echo(f"clickhouse {s['clickhouse_dsn']}")

    _emit(state, fmt, render)


# --------------------------------------------------------------------------------------------- programs
@main.group()
def programs() -> None:
    """Survey programs (which events trigger which survey, contact rules, texts, branding)."""


@programs.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def programs_check(file: str) -> None:
    """Validate a programs YAML FILE: every mistake on a line of its own (exit 1), else a summary."""
    from npsflow.programs import ProgramsError, load_programs

    try:
        loaded = load_programs(file)
    except ProgramsError as exc:
        for error in exc.errors:
            click.echo(error, err=True)
        raise Failure(f"{file}: {len(exc.errors)} mistake(s)") from None
    orgs = loaded.organizations
    click.echo(f"{file}: ok — {len(orgs)} organization(s), {sum(len(o.programs) for o in orgs)} program(s), "
               f"event types: {', '.join(sorted({e for o in orgs for p in o.programs for e in p.event_types}))}")


@main.command("survey-link")
@click.argument("invitation_id")
@click.option("--score", type=click.IntRange(0, 10), default=None, help="A one-click link with this score.")
def survey_link(invitation_id: str, score: int | None) -> None:
    """Print a signed survey link for INVITATION_ID (for testing; signed with NPSFLOW_SECRET, valid
    NPSFLOW_LINK_TTL, pointing at NPSFLOW_SURVEY_URL or the running worker)."""
    from datetime import datetime, timedelta, timezone

    from streams import links
    from streams.dispatch import LINK_KEY_ID, link_key

    settings = _settings()
    base = settings.survey_url
    if base is None:
        info = settings.worker_info()
        if not info:
            raise Failure("no worker is running and NPSFLOW_SURVEY_URL is not set: no base URL for the link")
        base = f"{info['public_url']}/s"  # the worker's public listener
    expires = datetime.now(timezone.utc) + timedelta(seconds=settings.link_ttl_seconds)
    try:
        token = links.sign_token(invitation_id, expires, link_key(settings.secret), LINK_KEY_ID, score=score)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    click.echo(links.survey_url(base, token))


@main.group("api-key")
def api_key() -> None:
    """API keys of POST /api/v1/responses (one organization each)."""


@api_key.command("new")
def api_key_new() -> None:
    """Print a new API key and the hash line to add to the organization's `api_keys` in the programs file.
    The key is shown once; only its hash is configured."""
    from streams.guards import new_api_key

    key, line = new_api_key()
    click.echo(f"key:  {key}")
    click.echo(f"hash: {line}   (add under api_keys: of the organization in NPSFLOW_PROGRAMS)")


# ---------------------------------------------------------------------------------------------- grafana
@main.group()
def grafana() -> None:
    """Grafana dashboards as code (ClickHouse data source, dashboards from sinks/bi.py)."""


@grafana.command("build")
@click.option("--out", "out_dir", default="deploy/grafana", show_default=True,
              type=click.Path(file_okay=False), help="directory for dashboards/ and provisioning/")
def grafana_build(out_dir: str) -> None:
    """Regenerate the dashboard JSON and the provisioning files (the Segment by options: NPSFLOW_DIMENSIONS
    without overall)."""
    from npsflow.grafana import build

    dimensions = _settings().dimensions
    try:
        written = build(out_dir, dimensions=dimensions)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    for path in written:
        click.echo(str(path))


def _secret_file(name: str) -> str | None:
    """The content of the file the environment variable ``name`` names (stripped), or None when unset."""
    import os

    path = os.environ.get(name)
    if not path:
        return None
    try:
        value = open(path, encoding="utf-8").read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"{name}: cannot read {path}: {type(exc).__name__}") from None
    if not value:
        raise Failure(f"{name}: {path} is empty")
    return value


@grafana.command("push")
@click.option("--url", envvar="GRAFANA_URL", default=None, help="Grafana base URL, e.g. http://localhost:3000 "
              "(or GRAFANA_URL)")
@click.option("--clickhouse-url", envvar="GRAFANA_CLICKHOUSE_URL", default="http://default@localhost:8123/npsflow",
              show_default=True, help="ClickHouse as Grafana reaches it: http(s)://user@host:port/db or "
              "clickhouse(s)://… (or GRAFANA_CLICKHOUSE_URL); its password: GRAFANA_CLICKHOUSE_PASSWORD_FILE "
              "(or in the URL's user:password, from the environment)")
@click.option("--folder-uid", default=None, help="Grafana folder for the dashboards (default: General)")
def grafana_push(url: str | None, clickhouse_url: str, folder_uid: str | None) -> None:
    """Create or update the data source and upload the dashboards (overwrite; the Segment by options:
    NPSFLOW_DIMENSIONS without overall). Secrets come from the environment: GRAFANA_TOKEN (or
    GRAFANA_TOKEN_FILE), GRAFANA_URL, GRAFANA_CLICKHOUSE_URL, GRAFANA_CLICKHOUSE_PASSWORD_FILE."""
    from npsflow.grafana import push
    from npsflow.redact import redact_dsn

    if not url:
        raise Failure("no Grafana URL: set GRAFANA_URL (or --url)")
    token = os.environ.get("GRAFANA_TOKEN") or None  # never an option: a command line is visible to every local user
    token_from_file = _secret_file("GRAFANA_TOKEN_FILE")
    if token and token_from_file:
        raise Failure("set GRAFANA_TOKEN or GRAFANA_TOKEN_FILE, not both")
    token = token or token_from_file
    if not token:
        raise Failure("no Grafana token: set GRAFANA_TOKEN or GRAFANA_TOKEN_FILE (a service account token)")
    ch_password = _secret_file("GRAFANA_CLICKHOUSE_PASSWORD_FILE")
    dimensions = _settings().dimensions
    shown = redact_dsn(url)
    try:
        done = push(url, token, clickhouse_url=clickhouse_url, folder_uid=folder_uid, dimensions=dimensions,
                    clickhouse_password=ch_password)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    except Exception as exc:  # connection refused, 401, 5xx …: one line, exit 1
        status = getattr(exc, "status_code", None)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        prefix = f"HTTP {status}: " if status else ""
        for secret in (token, ch_password):  # a library's message must not carry them onwards
            if secret:
                detail = detail.replace(secret, "***")
        raise Failure(f"grafana push to {shown} failed: {prefix}{detail}") from None
    for item in done:
        if item["kind"] == "datasource":
            click.echo(f"datasource {item['name']!r}: {item['action']}")
        else:
            click.echo(f"dashboard {item['uid']}: saved (version {item['version']}, {item['url']})")


@main.group("clickhouse")
def clickhouse() -> None:
    """ClickHouse schema tools."""


@clickhouse.command("ddl")
@click.option("--cluster", required=True, help="The cluster name of the ClickHouse servers (remote_servers).")
@click.option("--database", default="npsflow", show_default=True, help="Database name.")
@click.option("--retention", "retention", type=int, default=None,
              help="Also the TTLs of NPSFLOW_RETENTION (whole days) on the shards' tables.")
def clickhouse_ddl(cluster: str, database: str, retention: int | None) -> None:
    """Print the migrations in their cluster form (ON CLUSTER, Replicated*MergeTree, Distributed tables), then the
    views (and with --retention the TTLs) ON CLUSTER, to run with clickhouse-client on a multi-node ClickHouse;
    the application then uses the Distributed tables."""
    from sinks.cluster import cluster_ddl, cluster_extras

    try:
        migrations = cluster_ddl(cluster, database)
        extra = _settings().dispatch_extra_retention_days if retention is not None else 0  # as the worker does
        migrations += cluster_extras(cluster, database, retention, extra)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    for name, statements in migrations:
        click.echo(f"-- {name}")
        for statement in statements:
            click.echo(statement + ";\n")


@main.group("rollup")
def rollup_group() -> None:
    """The exact daily NPS rollup (table nps_daily) that keeps dashboards fast on big data."""


@rollup_group.command("refresh")
@click.option("--rebuild", is_flag=True, help="Forget every recomputation and recompute all days.")
@click.option("--repair", is_flag=True,
              help="Rewrite the day ledger from the responses table instead (once after upgrading from a version "
                   "before migration 0005, when the records in flight then are processed).")
@click.option("--quiet-seconds", default=60, show_default=True, type=click.IntRange(0, 86400),
              help="Only days without new answers for this long (a busy day is read from the ledger anyway).")
def rollup_refresh(rebuild: bool, repair: bool, quiet_seconds: int) -> None:
    """Recompute the days whose answers changed since their last recomputation. A running worker does this
    every 30 s by itself; the command is for a store no worker writes to (imports, a rebuild)."""
    from npsflow.reader import ReadError, open_store, worker_owns_store
    from sinks import rollup

    settings = _settings()
    if worker_owns_store(settings):
        raise Failure("a worker runs on this embedded ClickHouse and refreshes the rollup itself every 30 s "
                      "(chDB allows one process): stop it first to refresh from the command line")
    try:
        store = open_store(settings)
    except ReadError as exc:
        raise Failure(str(exc)) from None
    try:
        rollup.apply_view(store)
        if repair:
            written = rollup.repair(store)
            click.echo(f"ledger repaired: {written} rows rewritten; the days they touched are recomputed once "
                       f"quiet (a worker does it; else run `npsflow rollup refresh` in {rollup.MARGIN_SECONDS} s)")
            return
        result = (rollup.rebuild if rebuild else rollup.refresh)(store, quiet_seconds=quiet_seconds)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    finally:
        store.close()
    click.echo(result.summary())


# ----------------------------------------------------------------------------------------------- replay
@main.command()
@click.option("--from", "from_", metavar="TIMESTAMP|earliest",
              help="Start at the first record written to Kafka at or after this time (ISO-8601 with a zone: "
                   "2026-11-01T00:00:00Z), or at the oldest record Kafka still has.")
@click.option("--from-offset", metavar="P:O[,P:O…]",
              help="Start at these offsets of these partitions (only they are read); needs exactly one --table.")
@click.option("--to", metavar="TIMESTAMP|P:O[,P:O…]",
              help="Stop before this Kafka record time, or before these offsets (offsets: one --table). "
                   "Default: the end offsets when the replay starts.")
@click.option("--table", "tables", multiple=True, metavar="TABLE[,TABLE…]",
              help="Only these tables (repeatable): responses, window_updates, dead_letters, dispatches, cases, "
                   "alerts. Default: all.")
@click.option("--batch-rows", default=5000, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Records per partition batch (one insert, one deduplication token).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def replay(from_: str | None, from_offset: str | None, to: str | None, tables: tuple[str, ...], batch_rows: int,
           fmt: str) -> None:
    """Re-sink ClickHouse tables from their Kafka topics and recompute the rollup days they touch.

    Idempotent: a repeated range is dropped by ClickHouse (same insert tokens), anything else is an identical
    row that the latest-wins reads collapse. Reads Kafka with its own consumer (no group, no commits) and
    writes nothing to Kafka. With embedded chDB the worker must be stopped first (one process per store).
    Disaster recovery and adding a dimension after the fact: sinks/README.md, "Replay and backfill".
    """
    from npsflow import replay as rp

    start, stop, chosen = _replay_arguments(from_, from_offset, to, tables)
    settings = _settings()
    _refuse_embedded_worker(settings)
    bootstrap = _bootstrap(settings)
    from npsflow.reader import ReadError, open_store

    try:
        store = open_store(settings)
    except ReadError as exc:
        raise Failure(str(exc)) from None
    try:
        progress = click.echo if fmt == "table" else None
        result = rp.replay(settings, store, chosen, start, stop, bootstrap=bootstrap, batch_rows=batch_rows,
                           progress=progress)
    except rp.ReplayArgumentError as exc:
        raise click.UsageError(str(exc)) from None
    except rp.ReplayError as exc:
        raise Failure(str(exc)) from None
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), ensure_ascii=False, default=str))
    else:
        click.echo(result.lines()[-1] if "responses" in chosen else f"done in {result.seconds:.1f} s")


def _replay_arguments(from_: str | None, from_offset: str | None, to: str | None, tables: tuple[str, ...]):
    """Checked ``replay`` arguments → (start Bound, stop Bound or None, table names). Usage errors exit 2."""
    from npsflow import replay as rp

    if (from_ is None) == (from_offset is None):
        raise click.UsageError("give exactly one of --from TIMESTAMP|earliest and --from-offset P:O")
    try:
        chosen = rp.parse_tables(tables)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--table") from None
    if from_offset is not None:
        start = rp.Bound(offsets=_offsets_arg(from_offset, "--from-offset"))
    elif from_.strip().lower() == "earliest":
        start = rp.Bound(earliest=True)
    else:
        start = rp.Bound.at_time(_parse_time(from_, "from"))
    stop = None
    if to is not None:
        stop = (rp.Bound(offsets=_offsets_arg(to, "--to")) if rp.looks_like_offsets(to)
                else rp.Bound.at_time(_parse_time(to, "to")))
    uses_offsets = start.offsets is not None or (stop is not None and stop.offsets is not None)
    if uses_offsets and len(chosen) != 1:
        raise click.UsageError("offsets belong to one topic: with --from-offset or --to P:O give exactly one --table")
    if stop is not None and stop.timestamp_ms is not None and start.timestamp_ms is not None \
            and stop.timestamp_ms <= start.timestamp_ms:
        raise click.BadParameter("must be later than --from", param_hint="--to")
    return start, stop, chosen


def _offsets_arg(text: str, name: str) -> dict[int, int]:
    from npsflow.replay import parse_offsets

    try:
        return parse_offsets(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _refuse_embedded_worker(settings: cfg.Settings) -> None:
    """Embedded chDB opens in one process: a worker that holds the store (role all or sink) must stop first."""
    if not settings.is_embedded_clickhouse:
        return
    info = settings.worker_info()
    if info and info.get("role", "all") in ("all", "sink"):  # process and web never open chDB
        raise Failure(f"a worker (pid {info.get('pid')}) holds the embedded ClickHouse (chDB opens in one process "
                      f"only): stop it (`npsflow stack down`), replay, start it again — or use a ClickHouse "
                      f"server, where replay runs beside the workers")


# ----------------------------------------------------------------------------------------------- worker
@main.command()
@click.option("--loglevel", default="warning", show_default=True, envvar="NPSFLOW_LOGLEVEL",
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="Log level of the worker (NPSFLOW_LOGLEVEL); logs never hold addresses, comments or tokens.")
@click.option("--role", type=click.Choice(list(cfg.ROLES)), default=None,
              help="all: everything (default, NPSFLOW_ROLE); process: the stream agents only, no ClickHouse; "
                   "sink: the ClickHouse sinks and reads only (with embedded chDB: exactly one sink or all worker); "
                   "web: the listeners only (survey page, responses API, reads on a ClickHouse server); every role "
                   "answers GET /readyz")
def worker(loglevel: str, role: str | None) -> None:
    """Run the Faust worker (classify, windows, ClickHouse sink, HTTP API) in the foreground."""
    from dataclasses import replace

    from npsflow.worker import run

    settings = _settings()
    if role is not None:
        settings = replace(settings, role=role)
    try:
        run(settings, loglevel=loglevel)
    except cfg.ConfigError as exc:
        raise Failure(str(exc)) from None


@main.command("init")
@click.option("--no-clickhouse", is_flag=True, help="Only the topics (ClickHouse prepared elsewhere, e.g. from "
              "`npsflow clickhouse ddl --cluster`).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds to wait for Kafka (and for new topics to show leaders).")
def init_command(no_clickhouse: bool, timeout: float) -> None:
    """Prepare a deployment once, before its workers start (a compose init service, a Kubernetes Job): create
    every topic (NPSFLOW_PARTITIONS, NPSFLOW_REPLICATION_FACTOR, NPSFLOW_MIN_ISR) and apply the ClickHouse
    migrations, views and retention (NPSFLOW_RETENTION) as a sink worker does at its start. Idempotent; exit 1
    with one line when Kafka or ClickHouse cannot be reached."""
    from npsflow.prepare import init

    try:
        lines = init(_settings(), clickhouse=not no_clickhouse, timeout=timeout)
    except cfg.ConfigError as exc:
        raise Failure(str(exc)) from None
    for line in lines:
        click.echo(line)


# ----------------------------------------------------------------------------------------------- ingest
@main.group()
def ingest() -> None:
    """Send records from files into Kafka."""


def _ingest_file(file: str, topic_of, convert_factory, noun: str) -> None:
    """Shared by the ingest commands: parse, convert/validate, send, dead-letter the refused lines."""
    import io

    from npsflow.ingest import iter_file, parse_lines, plan_ingest
    from npsflow.producer import ProduceError, Producer
    from schemas import codec as avro

    settings = _settings()
    bootstrap = _bootstrap(settings)
    lines = (io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="replace") if file == "-"
             else iter_file(file))
    plan = plan_ingest(parse_lines(lines), avro.AvroCodec(), f"file:{file}", convert=convert_factory())
    topic = topic_of(settings.topics)
    try:
        with Producer(bootstrap, security=settings.kafka_security) as producer:
            for key, value in plan.records:
                producer.send(topic, key, value)
            for value in plan.dead_letters:
                producer.send(settings.topics.dead_letters, None, value)
    except ProduceError as exc:
        raise Failure(str(exc)) from None
    click.echo(f"sent {len(plan.records)} {noun} to {topic}")
    if plan.bad:
        for bad in plan.bad:
            click.echo(f"error: {bad.detail}", err=True)
        raise Failure(f"{len(plan.bad)} line(s) could not be sent (dead-lettered, see above)")


@ingest.command("responses")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def ingest_responses(file: str) -> None:
    """Send a JSON Lines FILE of responses to the raw responses topic.

    Every JSON object is sent; the classify agent validates it (bad ones land in dead letters with a
    reason). Lines that are not JSON objects, or cannot be encoded as Avro, are reported with their line
    numbers, dead-lettered, and make the command exit with code 1 (the rest of the file is still sent).
    """
    from npsflow.ingest import response_converter

    _ingest_file(file, lambda t: t.raw_responses, response_converter, "records")


@ingest.command("triggers")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def ingest_triggers(file: str) -> None:
    """Send a JSON Lines FILE of trigger events (purchases, finished jobs …) to the triggers topic.

    Each line is validated here (event_id, org_id, event_type, occurred_at with a zone, contact with
    contact_id and optional e-mail / E.164 phone / locale / IANA timezone, segment attributes). Malformed
    lines are dead-lettered with a reason (addresses redacted) and reported with their line numbers (exit
    code 1); the rest is sent, keyed by `<org_id>|<contact_id>` (a contact's triggers meet on one partition).
    """
    from npsflow.ingest import trigger_converter

    _ingest_file(file, lambda t: t.triggers, trigger_converter, "trigger events")


# ------------------------------------------------------------------------------------------------ cases
@main.group(invoke_without_command=True)
@click.option("--status", type=click.Choice(["open", "overdue", "closed"]), default=None,
              help="Only cases with this status (open: not yet overdue).")
@click.option("--owner", default=None, help="Only this owner's cases.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def cases(ctx: click.Context, status: str | None, owner: str | None, fmt: str) -> None:
    """Detractor follow-up cases (newest first) and their summary; subcommands act on one case."""
    if ctx.invoked_subcommand is not None:
        return
    from npsflow.reader import ReadError, cases as read_cases
    from npsflow.render import render_cases

    try:
        data = read_cases(_settings(), status, owner)
    except (ReadError, ValueError) as exc:
        raise Failure(str(exc)) from None
    _emit(data, fmt, render_cases)


def _actor(actor: str | None) -> str:
    import getpass
    import os

    return actor or os.environ.get("NPSFLOW_ACTOR") or getpass.getuser()


def _case_command(kind: str, case_id: str, actor: str | None, fmt: str, **fields) -> None:
    from npsflow.casecmd import CommandError, run_command
    from npsflow.reader import ReadError
    from npsflow.render import render_case

    settings = _settings()
    try:
        case = run_command(settings, _bootstrap(settings), kind, case_id, _actor(actor), **fields)
    except (CommandError, ReadError) as exc:
        raise Failure(str(exc)) from None
    _emit(case, fmt, render_case)


_ACTOR = click.option("--actor", default=None, help="Who acts (default: NPSFLOW_ACTOR, else the user name).")
_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)


@cases.command("ack")
@click.argument("case_id")
@click.option("--text", default=None, help="A note about the first contact.")
@_ACTOR
@_FORMAT
def cases_ack(case_id: str, text: str | None, actor: str | None, fmt: str) -> None:
    """Record the first contact with the respondent of CASE_ID."""
    _case_command("ack", case_id, actor, fmt, text=text)


@cases.command("note")
@click.argument("case_id")
@click.argument("text")
@_ACTOR
@_FORMAT
def cases_note(case_id: str, text: str, actor: str | None, fmt: str) -> None:
    """Add a note to CASE_ID."""
    _case_command("note", case_id, actor, fmt, text=text)


@cases.command("assign")
@click.argument("case_id")
@click.argument("owner")
@click.option("--text", default=None, help="Why (kept as a note).")
@_ACTOR
@_FORMAT
def cases_assign(case_id: str, owner: str, text: str | None, actor: str | None, fmt: str) -> None:
    """Give CASE_ID to OWNER (who is notified)."""
    _case_command("assign", case_id, actor, fmt, owner=owner, text=text)


@cases.command("close")
@click.argument("case_id")
@click.option("--reason", default=None, help="A word such as resolved, no_answer, duplicate (default: closed).")
@click.option("--text", default=None, help="A closing note.")
@_ACTOR
@_FORMAT
def cases_close(case_id: str, reason: str | None, text: str | None, actor: str | None, fmt: str) -> None:
    """Close CASE_ID."""
    _case_command("close", case_id, actor, fmt, reason=reason, text=text)


@cases.command("stats")
@click.option("--by", default="owner", show_default=True, help="owner or a segment dimension, e.g. location.")
@_FORMAT
def cases_stats(by: str, fmt: str) -> None:
    """Follow-up per owner or segment: time to first contact, share closed within the SLA."""
    from npsflow.reader import ReadError, case_stats
    from npsflow.render import render_case_stats

    try:
        rows = case_stats(_settings(), by)
    except (ReadError, ValueError) as exc:
        raise Failure(str(exc)) from None
    _emit(rows, fmt, render_case_stats)


# ----------------------------------------------------------------------------------------------- report
@main.command()
@click.option("--by", "by", default="", help="Comma-separated segment dimensions, e.g. location,channel.")
@click.option("--since", default=None, help="Only responses at or after this ISO-8601 time.")
@click.option("--until", default=None, help="Only responses before this ISO-8601 time.")
@click.option("--compare-previous", is_flag=True,
              help="Also the same segments in the previous period of equal length (needs --since; --until "
                   "defaults to now), with the change and whether it is significant at 95 %.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def report(by: str, since: str | None, until: str | None, compare_previous: bool, fmt: str) -> None:
    """NPS from ClickHouse, latest edit of every response counted once, with n and 95 % interval."""
    from npsflow.reader import ReadError, report as read_report

    dims = [d.strip() for d in by.split(",") if d.strip()]
    settings = _settings()
    try:
        data = read_report(settings, dims, _parse_time(since, "since"), _parse_time(until, "until"),
                           compare_previous=compare_previous)
    except (ReadError, ValueError) as exc:
        raise Failure(str(exc)) from None
    _emit(data, fmt, render_report)


def _term_options(fn):
    """The options `npsflow terms` and `npsflow themes` share (sinks.terms.TermQuery)."""
    options = [
        click.option("--category", type=click.Choice(["detractor", "passive", "promoter"]), default="detractor",
                     show_default=True, help="Whose words: lift, p and q compare this category with the rest."),
        click.option("--by", "by", default=None, help="One segment dimension: a slice per value (e.g. location)."),
        click.option("--lang", default=None, help="Only answers in this language (sv, da, fi, nb, en)."),
        click.option("--since", default=None, help="From this ISO-8601 time (default: until − 30 days)."),
        click.option("--until", default=None, help="Until this ISO-8601 time (default: now)."),
        click.option("--min-count", type=click.IntRange(1), default=10, show_default=True,
                     help="Minimum answers naming it."),
        click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="Entries per slice."),
        click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _term_query(category, by, lang, since, until, min_count, limit):
    from sinks.terms import TermQuery

    return TermQuery(since=_parse_time(since, "since"), until=_parse_time(until, "until"), by=by, lang=lang,
                     category=category, min_count=min_count, limit=limit)


def _run_terms(read, fmt: str, *args) -> None:
    from npsflow.reader import ReadError

    try:
        data = read(_settings(), _term_query(*args))
    except (ReadError, ValueError) as exc:
        raise Failure(str(exc)) from None
    _emit(data, fmt, render_terms)


@main.command()
@_term_options
def terms(category, by, lang, since, until, min_count, limit, fmt) -> None:
    """Which words respondents use (lemmas and negation bigrams, per answer): term NPS, lift among the category
    vs the rest with its interval, Fisher p and Benjamini–Hochberg q, impact on NPS, new terms, examples."""
    from npsflow.reader import terms as read_terms

    _run_terms(read_terms, fmt, category, by, lang, since, until, min_count, limit)


@main.command()
@_term_options
def themes(category, by, lang, since, until, min_count, limit, fmt) -> None:
    """Themes (NPSFLOW_THEMES: lemmas per language per theme) like `npsflow terms`, and the suggested themes:
    significant terms no theme covers."""
    from npsflow.reader import themes as read_themes

    _run_terms(read_themes, fmt, category, by, lang, since, until, min_count, limit)


@main.command()
@click.option("--days", type=click.IntRange(1, 3650), default=30, show_default=True, help="The last N days.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the SVG here (default: standard output).")
def wordcloud(days: int, output: str | None) -> None:
    """A word cloud of the last N days as a standalone SVG: the most named terms (by at least 3 respondents),
    sized by answers, coloured by their NPS band."""
    from datetime import timedelta, timezone

    from npsflow.reader import ReadError, cloud_words
    from web.wordcloud import layout, svg

    until = datetime.now(timezone.utc)
    try:
        words = cloud_words(_settings(), until - timedelta(days=days), until)
    except (ReadError, ValueError) as exc:
        raise Failure(str(exc)) from None
    picture = svg(layout(words), title=f"What respondents say, last {days} days")
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(picture)
        click.echo(f"{len(words)} words → {output}")
    else:
        click.echo(picture)


@main.command()
@click.option("--segment", default=None, help="Only this segment, as DIM=VALUE (e.g. location=Espoo).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def windows(segment: str | None, fmt: str) -> None:
    """The live rolling NPS windows (24h, 7d, 30d by default) per segment."""
    from npsflow.reader import ReadError, windows as read_windows

    seg = None
    if segment:
        from sinks.queries import validate_dimension

        dim, sep, value = segment.partition("=")
        if not sep or not dim:
            raise click.BadParameter("use DIM=VALUE, e.g. location=Espoo", param_hint="--segment")
        try:
            validate_dimension(dim.strip())
        except ValueError as exc:
            raise Failure(f"--segment: {exc}") from None
        seg = (dim.strip(), value)
    try:
        rows = read_windows(_settings(), seg)
    except (ReadError, ValueError) as exc:
        raise Failure(str(exc)) from None

    def render(rows):
        from rich.table import Table

        table = Table(title="Live rolling NPS windows")
        for col in ("segment", "window", "n", "NPS", "95% CI", "band", "window end"):
            table.add_column(col)
        for r in rows:
            nps = "—" if r["nps"] is None else f"{r['nps']:.2f}"
            table.add_row(f"{r['dimension']}={r['segment_value']}", r["window"], str(r["responses"]), nps,
                          f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]", r["band"] or "—", str(r["window_end"]))
        console().print(table)

    _emit(rows, fmt, render)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def deadletters(fmt: str) -> None:
    """Dead-lettered records: counts by stage and reason, with examples."""
    from npsflow.reader import ReadError, deadletters as read_deadletters

    try:
        data = read_deadletters(_settings())
    except ReadError as exc:
        raise Failure(str(exc)) from None

    def render(d):
        from rich.table import Table

        table = Table(title=f"Dead letters: {d['total']}")
        for col in ("stage", "reason", "count", "example"):
            table.add_column(col)
        for r in d["reasons"]:
            example = r["examples"][0]["detail"] if r["examples"] else ""
            table.add_row(r["stage"], r["reason"], str(r["count"]), example)
        console().print(table)

    _emit(data, fmt, render)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def dispatches(fmt: str) -> None:
    """Survey dispatches: invitations by status (sent, scheduled, suppressed, failed) and reason, reminders, cost so far."""
    from npsflow.reader import ReadError, dispatches as read_dispatches

    try:
        data = read_dispatches(_settings())
    except ReadError as exc:
        raise Failure(str(exc)) from None

    def status_table(title: str, section: dict):
        from rich.table import Table

        table = Table(title=f"{title}: {section['total']}")
        for col in ("status", "reason", "count"):
            table.add_column(col)
        for status, n in section["by_status"].items():
            table.add_row(status, "", str(n))
            for r in section["reasons"]:
                if r["status"] == status:
                    table.add_row("", r["reason"], str(r["count"]))
        return table

    def render(d):
        console().print(status_table("Invitations", d))
        reminders = d["reminders"]
        if reminders["total"]:
            console().print(status_table("Reminders", reminders))
        else:
            click.echo("reminders: 0")
        for kind, section in (d.get("promoter_actions") or {}).items():  # thank_you, review_request, reward
            console().print(status_table(f"Promoter action {kind}", section))
        click.echo("cost so far (invitations and reminders): "
                   + (", ".join(f"{amount(v)} {k}" for k, v in d["cost"].items()) or "0"))

    def amount(value: float) -> str:  # 0.45 -> "0.45", 0.301 -> "0.301" (e-mails cost fractions of a cent)
        whole, _, frac = f"{value:.6f}".partition(".")
        return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"

    _emit(data, fmt, render)


@main.command()
@click.option("--status", type=click.Choice(["open", "closed"]), default=None, help="Only open or closed alerts.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def alerts(status: str | None, fmt: str) -> None:
    """Significant changes of NPS per segment: the last 24 h against the 28 days before (z test) and sustained
    shifts (CUSUM), open ones first."""
    from npsflow.reader import ReadError, alerts as read_alerts

    try:
        data = read_alerts(_settings(), status)
    except (ReadError, ValueError) as exc:
        raise Failure(str(exc)) from None

    from npsflow.render import render_alerts

    _emit(data, fmt, render_alerts)


# --------------------------------------------------------------------------------------- simulate, demo
@main.command()
@click.option("--count", default=1000, show_default=True, type=click.IntRange(min=1), help="Responses to send.")
@click.option("--rate", default=200.0, show_default=True, type=click.FloatRange(min=0),
              help="Responses per second (0 = as fast as possible).")
@click.option("--seed", default=None, type=int, help="Random seed for a repeatable run.")
@click.option("--bad-ratio", default=0.01, show_default=True, type=click.FloatRange(0, 1),
              help="Share of invalid records (dead-lettered).")
@click.option("--duplicate-ratio", default=0.02, show_default=True, type=click.FloatRange(0, 1),
              help="Share of replayed records.")
@click.option("--edit-ratio", default=0.01, show_default=True, type=click.FloatRange(0, 1),
              help="Share of edited answers.")
@click.option("--days", default=None, type=click.FloatRange(min=0.05, max=60),
              help="Spread event times over the last N days (default: the last hour; 8 with --drop-location).")
@click.option("--drop-location", default=None,
              help="Plant a drop: this location's answers of the last 24 h are much worse (an alert to see).")
@click.option("--drop-points", default=50.0, show_default=True, type=click.FloatRange(1, 200),
              help="How many NPS points worse the planted drop makes the location.")
def simulate(count: int, rate: float, seed: int | None, bad_ratio: float, duplicate_ratio: float,
             edit_ratio: float, days: float | None, drop_location: str | None, drop_points: float) -> None:
    """Send realistic synthetic responses (Nordic locations, employees, channels, comments in sv/da/fi/nb/en)."""
    from npsflow.simulate import run_simulation

    settings = _settings()
    if drop_location and days is None:
        days = 8.0  # a baseline before the last day, and the evaluated hours
    try:
        sent = run_simulation(settings, _bootstrap(settings), count=count, rate=rate, seed=seed,
                              bad_ratio=bad_ratio, duplicate_ratio=duplicate_ratio, edit_ratio=edit_ratio,
                              days=days, drop_location=drop_location, drop_points=drop_points)
    except Exception as exc:
        raise Failure(f"simulation failed: {exc}") from None
    click.echo(f"sent {sent} records to {settings.topics.raw_responses}")


@main.command()
@click.option("--count", default=3000, show_default=True, type=click.IntRange(min=1),
              help="Trigger events to simulate.")
@click.option("--rate", default=150.0, show_default=True, type=click.FloatRange(min=1),
              help="Trigger events per second.")
@click.option("--keep-running", is_flag=True, help="Leave the stack running afterwards.")
@click.option("--seed", type=int, default=None, help="Seed of the simulated events and answers (a repeatable run).")
def demo(count: int, rate: float, keep_running: bool, seed: int | None) -> None:
    """Bring the stack up, simulate trigger events (finished jobs, delivered orders); the worker invites the
    customers (outbox) and simulated customers answer; show live NPS per location, then the report."""
    from npsflow.demo import run_demo

    try:
        run_demo(_settings(), count=count, rate=rate, keep_running=keep_running, seed=seed)
    except Failure:
        raise
    except Exception as exc:
        raise Failure(f"demo failed: {exc}") from None


@main.command()
@click.option("--org", "org", required=True, help="The organization's id (as in the programs file).")
@click.option("--contact", "contact", required=True, help="The contact's id in that organization (as in triggers).")
@click.option("--by", "by", default=None, help="Who asks for the erasure, for the audit (default: the OS user).")
@_FORMAT
def forget(org: str, contact: str, by: str | None, fmt: str) -> None:
    """Erase one contact (GDPR art. 17): its ClickHouse rows in every table that names it (answers, day ledgers,
    dispatches, cases, refused triggers), its outbox files, and record the request (no contact id, no address)
    in ClickHouse `erasures`. Running it again erases nothing more. Kafka topics keep their records until their
    retention; the state tables keep what they hold until their own expiry (see README "Erasure and retention")."""
    from npsflow.forget import ForgetError, forget as run_forget, identify
    from npsflow.reader import ReadError

    settings = _settings()
    try:
        record = run_forget(settings, identify(settings, org, contact), by)
    except (ForgetError, ReadError) as exc:
        raise Failure(str(exc)) from None

    def render(r: dict) -> None:
        erased = ", ".join(f"{k} {v}" for k, v in sorted(r["erased"].items()) if v) or "nothing (already erased?)"
        click.echo(f"erased {r['org_id']} contact {r['pseudonym']} ({r['request_id']}, by {r['by']}): {erased}")

    _emit(record, fmt, render)


@main.command("export-contact")
@click.option("--org", "org", required=True, help="The organization's id (as in the programs file).")
@click.option("--contact", "contact", required=True, help="The contact's id in that organization.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="json", show_default=True)
def export_contact(org: str, contact: str, fmt: str) -> None:
    """Everything ClickHouse holds of one contact (GDPR art. 15): its answers (every version, comments as stored:
    masked), dispatch decisions, cases and refused triggers, as JSON."""
    from npsflow.forget import ForgetError, export, identify
    from npsflow.reader import ReadError

    settings = _settings()
    try:
        data = export(settings, identify(settings, org, contact))
    except (ForgetError, ReadError) as exc:
        raise Failure(str(exc)) from None

    def render(d: dict) -> None:
        click.echo(f"{d['org']} contact {d['pseudonym']}: " + ", ".join(
            f"{len(d[k])} {k}" for k in ("responses", "dispatches", "cases", "dead_letters")))

    _emit(data, fmt, render)


if __name__ == "__main__":
    main()
