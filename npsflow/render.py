"""Terminal rendering shared by the CLI (npsflow.cli) and the demo (npsflow.demo)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table


def console():
    """A rich console; when output is not a terminal (pipes, CI logs) use 120 columns, not rich's 80."""
    return Console() if sys.stdout.isatty() else Console(width=120)


def render_report(data: dict) -> None:
    """A report (sinks.queries.report / report_compared) as a table on the console."""
    compared = "previous_period" in data
    title = "NPS" + (f" by {', '.join(data['by'])}" if data["by"] else "")
    if compared:
        title += (f" · {data['period']['since']} – {data['period']['until']} vs the previous period "
                  f"{data['previous_period']['since']} – {data['previous_period']['until']}")
    table = Table(title=title)
    for dim in data["by"]:
        table.add_column(dim)
    columns = ["n", "promoters", "passives", "detractors", "NPS", "95% CI", "band"]
    if compared:
        columns += ["prev n", "prev NPS", "change", "significant (95 %)"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("band", "significant (95 %)") else "right")

    def cells(row):
        nps = "—" if row["nps"] is None else f"{row['nps']:.2f}"
        out = [str(row["responses"]), str(row["promoters"]), str(row["passives"]), str(row["detractors"]), nps,
               f"[{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]", row["band"] or "—"]
        if compared:
            prev = row["previous"]
            out += [str(prev["responses"]), "—" if prev["nps"] is None else f"{prev['nps']:.2f}",
                    "—" if row["change"] is None else f"{row['change']:+.2f}",
                    "yes" if row["significant"] else "no"]
        return out

    for row in data["rows"]:
        table.add_row(*[str(row[d]) for d in data["by"]], *cells(row))
    if data["by"]:
        table.add_section()
    table.add_row(*(["total"] + [""] * (len(data["by"]) - 1) if data["by"] else []), *cells(data["total"]))
    console().print(table)
