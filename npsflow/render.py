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


def _num(value, fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


def render_terms(data: dict) -> None:
    """Term or theme statistics (sinks.terms.terms / themes) as a table. Every cell is plain text (rich.Text):
    a comment's "[phone]" or "[bold]" is shown as written, never read as markup."""
    from rich.text import Text

    key = "theme" if "themes" in data else "term"
    scope = f" · {data['lang']}" if data.get("lang") else ""
    table = Table(title=f"{key.capitalize()}s of {data['category']}s, {data['since'][:10]} – {data['until'][:10]}{scope}"
                        + (f" by {data['by']}" if data["by"] else ""))
    columns = ([data["by"]] if data["by"] else []) + [key, "lang", "n", data["category"] + "s", "NPS", "lift [95% CI]",
                                                      "q", "impact", "new", "example"]
    for col in columns:
        table.add_column(col, overflow="fold")
    for e in data[f"{key}s"]:
        lift = "—" if e["lift"] is None else f"{e['lift']:.2f} [{e['lift_ci95'][0]:.2f}, {e['lift_ci95'][1]:.2f}]"
        cells = ([e[data["by"]]] if data["by"] else []) + [
            e[key], e["lang"], str(e["responses"]), str(e[data["category"] + "s"]), _num(e["nps"]), lift,
            _num(e["q_value"], "{:.2g}"), _num(e["impact"], "{:+.2f}"), "new" if e["new"] else "",
            (e.get("examples") or [""])[0]]
        table.add_row(*[Text(str(c)) for c in cells], style=None if e["significant"] else "dim")
    console().print(table)
    for s in data.get("suggested") or []:
        console().print(Text(f"suggested theme: {s['term']} ({s['lang']}, {s['responses']} answers, "
                             f"impact {_num(s['impact'], '{:+.2f}')})"))


def render_cases(data: dict) -> None:
    """``npsflow cases`` as a table (plain text cells: comments are the respondents' words, never markup)."""
    from rich.text import Text

    summary = data["summary"]
    table = Table(title=f"Follow-up cases · open {summary['open']} · overdue {summary['overdue']} · closed within "
                        f"SLA {summary['closed_within_sla']} · closed late {summary['closed_late']}")
    for col in ("case", "status", "owner", "score", "segment", "opened", "due", "first contact", "comment"):
        table.add_column(col, overflow="fold")
    for c in data["cases"]:
        segment = ", ".join(f"{k}={v}" for k, v in sorted(c["segment"].items()))
        status = c["status"] + (f" ({c['close_reason']})" if c.get("close_reason") else "")
        table.add_row(*(Text(str(v)) for v in (
            c["case_id"], status, c["owner"], c["score"], segment, (c["opened_at"] or "")[:16],
            (c["due_at"] or "")[:16], (c["first_contact_at"] or "—")[:16], (c["comment"] or "")[:80])))
    console().print(table)


def render_case(case: dict) -> None:
    """One case after a command."""
    from rich.text import Text

    line = (f"{case['case_id']}: {case['status']}" + (f" ({case['close_reason']})" if case.get("close_reason") else "")
            + f", owner {case['owner']}, score {case['score']}, due {case['due_at']}"
            + (f", first contact {case['first_contact_at']}" if case.get("first_contact_at") else ""))
    console().print(Text(line))
    for note in case.get("notes") or ():
        console().print(Text(f"  {note['at'][:16]} {note['actor']}: {note['text']}"))


def render_case_stats(rows: list[dict]) -> None:
    if not rows:
        console().print("no cases")
        return
    table = Table(title="Follow-up")
    for col in rows[0]:
        table.add_column(col, justify="left" if col == next(iter(rows[0])) else "right")
    for row in rows:
        table.add_row(*("—" if v is None else str(v) for v in row.values()))
    console().print(table)
