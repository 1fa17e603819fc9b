"""`npsflow demo`: stack up → simulated respondents → a live NPS table per location → the final report."""

from __future__ import annotations

import threading
import time

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from npsflow import stack as st
from npsflow.config import Settings
from npsflow.reader import ReadError, report

BAND_STYLE = {"needs_improvement": "red", "good": "yellow", "excellent": "green", "world_class": "bold green"}


def location_table(data: dict, sent: int, target: int, elapsed: float) -> Group:
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
    status = Text(f"sent {sent}/{target} simulated responses · {elapsed:.0f}s", style="dim")
    return Group(table, status)


def run_demo(settings: Settings, count: int, rate: float, keep_running: bool = False) -> None:
    from npsflow.simulate import run_simulation

    from npsflow.cli import console as make_console

    console = make_console()
    console.print("[bold]npsflow demo[/bold]: starting a real Kafka broker and the worker …")
    state = st.up(settings)
    console.print(f"kafka {state['kafka'].get('bootstrap')} · worker http://127.0.0.1:{state['worker']['web_port']}")
    bootstrap = state["kafka"]["bootstrap"]
    progress = {"sent": 0, "error": None}

    def simulate() -> None:
        try:
            run_simulation(settings, bootstrap, count=count, rate=rate, seed=None, bad_ratio=0.01,
                           duplicate_ratio=0.02, edit_ratio=0.01,
                           on_progress=lambda n: progress.__setitem__("sent", n))
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
                live.update(location_table(data, progress["sent"], count, time.monotonic() - started))
                if progress.get("done"):
                    # wait until the sink caught up (the total stops changing), at most ~15 s
                    settled = settled + 1 if data["total"]["responses"] == progress.get("last_total") else 0
                    progress["last_total"] = data["total"]["responses"]
                    if settled >= 3 or time.monotonic() - started > count / max(rate, 1) + 30:
                        break
                time.sleep(1.0)
        if progress["error"]:
            raise RuntimeError(f"simulator failed: {progress['error']}")
        console.print()
        console.print("[bold]Final report[/bold] (npsflow report --by location):")
        from npsflow.cli import _render_report

        _render_report(data)
        from npsflow.reader import deadletters

        dl = deadletters(settings)
        console.print(f"dead letters: {dl['total']} "
                      + ", ".join(f"{r['reason']}={r['count']}" for r in dl["reasons"]))
    finally:
        if not keep_running:
            st.down(settings)
            console.print("stack stopped (data kept under %s; `npsflow report` still works)" % settings.home)
