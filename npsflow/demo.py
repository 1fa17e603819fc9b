"""`npsflow demo`: stack up → simulated trigger events → invitations → simulated answers → a live NPS table per
location → the final report."""

from __future__ import annotations

import threading
import time

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from npsflow import stack as st
from npsflow.config import Settings
from npsflow.reader import ReadError, alerts, cases, cloud_words, deadletters, dispatches, report, terms
from npsflow.render import console as make_console, render_alerts, render_cases, render_report, render_terms

BAND_STYLE = {"needs_improvement": "red", "good": "yellow", "excellent": "green", "world_class": "bold green"}


def location_table(data: dict, status: str) -> Group:
    table = Table(title="Live NPS per location (from ClickHouse, latest edit wins)", expand=False)
    for col, justify in (("location", "left"), ("n", "right"), ("NPS", "right"), ("95% CI", "right"),
                         ("band", "left")):
        table.add_column(col, justify=justify)
    for row in sorted(data["rows"], key=lambda r: -(r["nps"] if r["nps"] is not None else -999)):
        style = BAND_STYLE.get(row["band"] or "", "")
        nps = "—" if row["nps"] is None else f"{row['nps']:.1f}"
        table.add_row(str(row["location"]), str(row["responses"]), Text(nps, style=style),
                      f"[{row['ci95'][0]:.1f}, {row['ci95'][1]:.1f}]", Text(row["band"] or "—", style=style))
    total = data["total"]
    table.add_section()
    table.add_row("all", str(total["responses"]), "—" if total["nps"] is None else f"{total['nps']:.1f}",
                  f"[{total['ci95'][0]:.1f}, {total['ci95'][1]:.1f}]", total["band"] or "—")
    return Group(table, Text(status, style="dim"))


def status_line(progress, elapsed: float) -> str:
    return (f"triggers {progress.triggers_sent + progress.refused}/{progress.target} "
            f"({progress.refused} malformed, {progress.repeated} repeated) · "
            f"invitations sent {progress.invitations} · "
            f"answers on the survey page {progress.responses} · {elapsed:.0f}s")


def show_words(console, settings: Settings, internal_url: str) -> None:
    """What respondents said: the detractors' top terms (npsflow terms) and the word cloud as an SVG file."""
    from datetime import datetime, timedelta, timezone

    from sinks.terms import TermQuery
    from web.wordcloud import layout, svg

    console.print()
    console.print("[bold]What respondents say[/bold] (npsflow terms: detractors' words, counted per answer):")
    complaints = terms(settings, TermQuery(limit=8))
    if complaints["terms"]:
        render_terms(complaints)
    else:
        console.print("no word reaches the minimum counts yet (≥ 10 answers, ≥ 5 detractors, ≥ 3 respondents)")
    until = datetime.now(timezone.utc)
    words = cloud_words(settings, until - timedelta(days=30), until)
    path = settings.home / "wordcloud.svg"
    cloud = layout(words)
    path.write_text(svg(cloud, title="What respondents say, last 30 days"), encoding="utf-8")
    console.print(f"word cloud: {len(cloud.words)} words → {path} (live on the dashboard: {internal_url}/dashboard; "
                  f"`npsflow terms --by location`, `npsflow themes`)")


def demo_cases_path():
    """The installed path of ``npsflow/demo_cases.yaml``: the demo organization's follow-up (NPSFLOW_CASES)."""
    from importlib import resources
    from pathlib import Path

    return Path(str(resources.files("npsflow").joinpath("demo_cases.yaml")))


def show_cases(console, settings: Settings) -> None:
    """The follow-up cases the detractors opened (npsflow cases) and where their notifications went."""
    console.print()
    console.print("[bold]Follow-up cases[/bold] (npsflow cases: one per detractor, owner by location):")
    data, seen, deadline = cases(settings), [], time.monotonic() + 20
    while time.monotonic() < deadline and seen[-3:] != [len(data["cases"])] * 3:  # the cases sink catches up
        seen.append(len(data["cases"]))
        time.sleep(1.0)
        data = cases(settings)
    render_cases({**data, "cases": data["cases"][:8]})
    mails = list((settings.home / "outbox" / "notifications").glob("*.eml"))
    console.print(f"{len(data['cases'])} cases · owners notified by e-mail: {len(mails)} messages in "
                  f"{settings.home / 'outbox' / 'notifications'} · act with `npsflow cases ack|note|assign|close "
                  f"CASE_ID`")


DROP_LOCATION = "Stockholm"


HISTORY = 4000  # answers of the imported history


def import_history(console, settings: Settings, bootstrap: str, seed: int | None) -> None:
    """Eight days of answers before the live ones (answers without an organization: they open no case), with a
    drop planted in one location's last 24 hours — what the alerts compare. First: answers that arrive later
    than NPSFLOW_LATENESS behind the live ones would not count in the live windows."""
    from npsflow.simulate import run_simulation

    console.print(f"importing {HISTORY} answers of the last 8 days, with a drop planted in {DROP_LOCATION}'s last "
                  f"24 hours (npsflow simulate --days 8 --drop-location {DROP_LOCATION}) …")
    run_simulation(settings, bootstrap, count=HISTORY, rate=0, seed=seed, bad_ratio=0, duplicate_ratio=0,
                   edit_ratio=0, days=8, drop_location=DROP_LOCATION)


def show_alerts(console, settings: Settings) -> None:
    """What the windows agent raised on the imported history (npsflow alerts)."""
    console.print()
    console.print(f"[bold]Alerts[/bold] (npsflow alerts: the last 24 h of every segment against the days before; "
                  f"a drop was planted in {DROP_LOCATION}):")
    found, deadline = alerts(settings, "open"), time.monotonic() + 90
    while time.monotonic() < deadline and not any(a["segment"].get("location") == DROP_LOCATION
                                                  for a in found["alerts"]):
        time.sleep(1.0)
        found = alerts(settings, "open")
    render_alerts(found)
    console.print("alerts: `npsflow alerts`, the dashboard, Grafana annotations; owners of alerts get an e-mail "
                  "(notify.email.alerts in NPSFLOW_CASES)")


def run_demo(settings: Settings, count: int, rate: float, keep_running: bool = False,
             seed: int | None = None) -> None:
    """The survey flow end to end: simulated trigger events → contact rules → invitations in the outbox
    (``$NPSFLOW_HOME/outbox``) → simulated respondents answer some → live NPS per location → final report."""
    from dataclasses import replace

    from npsflow.simulate import demo_programs_path
    from npsflow.survey_sim import SurveySimulation, run_survey_simulation

    if settings.programs_file is None:
        settings = replace(settings, programs_file=demo_programs_path())
    if settings.cases_file is None:
        settings = replace(settings, cases_file=demo_cases_path())
    # every simulated respondent comes from 127.0.0.1: lift the per-client page limit for the demo's worker
    settings = replace(settings, page_rate=max(settings.page_rate, 1000.0))
    console = make_console()
    console.print("[bold]npsflow demo[/bold]: starting a real Kafka broker and the worker …")
    state = st.up(settings)
    console.print(f"kafka {state['kafka'].get('bootstrap')} · survey page {state['worker']['public_url']}/s/… · "
                  f"dashboard {state['worker']['internal_url']}/dashboard · survey programs {settings.programs_file}")
    bootstrap = state["kafka"]["bootstrap"]
    import_history(console, settings, bootstrap, seed)
    progress = {"sim": SurveySimulation(target=count), "error": None, "done": False}

    def simulate() -> None:
        try:
            run_survey_simulation(settings, bootstrap, count=count, rate=rate, seed=seed,
                                  max_seconds=count / max(rate, 1) + 120,
                                  on_progress=lambda p: progress.__setitem__("sim", p))
        except Exception as exc:  # surfaced after the live view
            progress["error"] = exc
        progress["done"] = True

    thread = threading.Thread(target=simulate, name="simulator", daemon=True)
    started = time.monotonic()
    thread.start()
    data = {"rows": [], "total": {"responses": 0, "nps": None, "ci95": [-100, 100], "band": None}}
    try:
        with Live(console=console, refresh_per_second=4) as live:
            settled = 0
            while True:
                try:
                    data = report(settings, ["location"], None, None)
                except ReadError as exc:
                    console.print(f"[yellow]waiting for the worker: {exc}[/yellow]")
                live.update(location_table(data, status_line(progress["sim"], time.monotonic() - started)))
                if progress["done"]:
                    # wait until the sink caught up (the total equals the answers sent, or stops changing)
                    settled = settled + 1 if data["total"]["responses"] == progress.get("last_total") else 0
                    progress["last_total"] = data["total"]["responses"]
                    if data["total"]["responses"] >= HISTORY + progress["sim"].responses or settled >= 5:
                        break
                time.sleep(1.0)
        if progress["error"]:
            raise RuntimeError(f"simulator failed: {progress['error']}")
        console.print()
        console.print("[bold]Final report[/bold] (npsflow report --by location):")
        render_report(data)
        d = dispatches(settings)
        console.print(f"dispatches (npsflow dispatches): {d['total']} triggers decided · "
                      + ", ".join(f"{k}={v}" for k, v in d["by_status"].items()) + " · suppressed: "
                      + ", ".join(f"{r['reason']}={r['count']}" for r in d["reasons"] if r["status"] == "suppressed")
                      + " · cost " + (", ".join(f"{v:.2f} {k}" for k, v in d["cost"].items()) or "0"))
        actions = d.get("promoter_actions") or {}
        if actions:  # thank-you, review request, reward code (streams.promoter)
            console.print("promoter actions: " + " · ".join(
                f"{kind} " + ", ".join(f"{k}={v}" for k, v in a["by_status"].items())
                + "".join(f" ({r['reason']}={r['count']})" for r in a["reasons"]) for kind, a in actions.items()))
        dl = deadletters(settings)
        console.print(f"dead letters: {dl['total']} "
                      + ", ".join(f"{r['reason']}={r['count']}" for r in dl["reasons"]))
        console.print(f"invitations written to {settings.home / 'outbox'} (e-mails as .eml, SMS in sms.jsonl)")
        show_words(console, settings, state["worker"]["internal_url"])
        show_cases(console, settings)
        show_alerts(console, settings)
    finally:
        if not keep_running:
            st.down(settings)
            console.print("stack stopped (data kept under %s; `npsflow report` still works)" % settings.home)
