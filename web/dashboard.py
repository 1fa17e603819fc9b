"""The built-in live dashboard (``GET /dashboard`` on the worker): NPS per segment with n, 95 % interval and band,
a 14-day trend sparkline per row, the latest comments, and what respondents say over the last 30 days — a word
cloud (web.wordcloud: words sized by answers, coloured by their NPS) and the top complaints (sinks.terms, the
same as ``npsflow terms``) — updating every few seconds without a reload, from ``GET /api/v1/dashboard``
(``sinks.queries.dashboard``, the same numbers as ``npsflow report``, and ``dashboard_words``).

One self-contained page: inline CSS and script under a nonce CSP, no external assets. The script writes every
value with ``textContent`` (never as HTML), so a comment containing ``<script>`` is shown as text.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta, timezone

from sinks import terms
from sinks.queries import validate_dimension
from web.wordcloud import layout

REFRESH_MS = 2000
WORD_DAYS = 30
COMPLAINTS = 8


def dashboard_words(store, now: datetime | None = None) -> dict:
    """The dashboard's words: the word cloud's layout and the top detractor terms of the last WORD_DAYS days
    (significant first, one example each). Apart from the numbers (``sinks.queries.dashboard``): refreshed less
    often, and its failure never hides the NPS table."""
    until = now or datetime.now(timezone.utc)
    since = until - timedelta(days=WORD_DAYS)
    complaints = terms.terms(store, terms.TermQuery(since=since, until=until, limit=COMPLAINTS, examples=1),
                             now=until)["terms"]
    return {"days": WORD_DAYS, "cloud": layout(terms.cloud_words(store, since, until)).as_dict(),
            "complaints": complaints}


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>npsflow · live NPS by {by}</title>
<style nonce="{nonce}">
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }}
header {{ background: #1f2937; color: #fff; padding: 12px 16px; }}
header h1 {{ font-size: 18px; margin: 0; }}
nav a {{ color: #c9d1d9; margin-right: 12px; }}
nav a[aria-current="page"] {{ color: #fff; font-weight: 600; }}
main {{ padding: 16px; max-width: 1100px; }}
table {{ border-collapse: collapse; width: 100%; background: #fff; }}
th, td {{ padding: 6px 10px; border-bottom: 1px solid #d0d7de; text-align: right; white-space: nowrap; }}
th:first-child, td:first-child {{ text-align: left; }}
tr.total td {{ font-weight: 600; border-top: 2px solid #1f2328; }}
.band {{ border-radius: 4px; padding: 1px 6px; color: #fff; font-size: 13px; }}
.needs_improvement {{ background: #b42318; }} .good {{ background: #8a6d00; }}
.excellent {{ background: #2e7d32; }} .world_class {{ background: #1b5e20; }}
svg {{ width: 120px; height: 28px; vertical-align: middle; }}
svg polyline {{ fill: none; stroke: #0969da; stroke-width: 2; }}
svg line {{ stroke: #d0d7de; stroke-width: 1; }}
svg circle {{ fill: #0969da; }}
#comments {{ list-style: none; padding: 0; }}
#comments li {{ background: #fff; border-left: 4px solid #d0d7de; margin: 6px 0; padding: 6px 10px; }}
#comments li.detractor {{ border-color: #b42318; }} #comments li.promoter {{ border-color: #2e7d32; }}
.meta {{ color: #57606a; font-size: 13px; }}
#status {{ color: #57606a; font-size: 13px; }}
#cloud {{ width: 100%; max-width: 640px; height: auto; background: #fff; display: block; }}
#complaints td.example {{ white-space: normal; text-align: left; color: #57606a; }}
tr.weak td {{ color: #8c959f; }}
tr.case.overdue td.due {{ color: #b42318; font-weight: 600; }}
#cases td.comment {{ white-space: normal; text-align: left; }}
#alerts {{ list-style: none; padding: 0; }}
#alerts li {{ background: #fff; border-left: 4px solid #b42318; margin: 6px 0; padding: 6px 10px; }}
</style>
</head>
<body>
<header><h1>Live NPS by {by}</h1>
<nav aria-label="Segment dimension">{nav}</nav></header>
<main>
<p id="status" role="status">Loading…</p>
<section id="alerts-section" hidden>
<h2>Open alerts <span class="meta">(significant changes: last 24 h vs the 28 days before)</span></h2>
<ul id="alerts"></ul>
</section>
<table aria-describedby="status">
<thead><tr><th scope="col">{by}</th><th scope="col">n</th><th scope="col">NPS</th><th scope="col">95% CI</th>
<th scope="col">band</th><th scope="col">trend (14 days)</th></tr></thead>
<tbody id="rows"></tbody>
</table>
<h2>Open follow-up cases <span class="meta" id="cases-summary"></span></h2>
<table>
<thead><tr><th scope="col">case</th><th scope="col">owner</th><th scope="col">score</th><th scope="col">segment</th>
<th scope="col">due</th><th scope="col">comment</th></tr></thead>
<tbody id="cases"></tbody>
</table>
<h2>Latest comments</h2>
<ul id="comments"></ul>
<h2>What respondents say <span class="meta">(last 30 days; words named by at least 3 respondents)</span></h2>
<svg id="cloud" viewBox="0 0 640 320" role="img" aria-label="Word cloud: no words yet"></svg>
<h3>Top complaints <span class="meta">(detractors' words; dimmed: not significant)</span></h3>
<table>
<thead><tr><th scope="col">term</th><th scope="col">lang</th><th scope="col">n</th><th scope="col">detractors</th>
<th scope="col">lift [95% CI]</th><th scope="col">impact</th><th scope="col">example</th></tr></thead>
<tbody id="complaints"></tbody>
</table>
</main>
<script nonce="{nonce}">
(function () {{
  "use strict";
  var by = {by_json};
  var api = "/api/v1/dashboard?by=" + encodeURIComponent(by);
  function el(tag, cls, text) {{
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }}
  function fmt(v) {{ return v === null || v === undefined ? "—" : Number(v).toFixed(2); }}
  function spark(series) {{
    var ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 120 28");
    svg.setAttribute("role", "img");
    var pts = [], n = series.length;
    series.forEach(function (p, i) {{
      if (p.nps !== null) pts.push((n > 1 ? i * 118 / (n - 1) + 1 : 60).toFixed(1) + "," + (14 - p.nps * 0.12).toFixed(1));
    }});
    svg.setAttribute("aria-label", "NPS per day: " + series.map(function (p) {{ return p.nps === null ? "none" : p.nps; }}).join(", "));
    var zero = document.createElementNS(ns, "line");
    zero.setAttribute("x1", "0"); zero.setAttribute("x2", "120"); zero.setAttribute("y1", "14"); zero.setAttribute("y2", "14");
    svg.appendChild(zero);
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.appendChild(line);
    if (pts.length === 1) {{  // one day with answers: a dot, a line needs two
      var dot = document.createElementNS(ns, "circle"), xy = pts[0].split(",");
      dot.setAttribute("cx", xy[0]); dot.setAttribute("cy", xy[1]); dot.setAttribute("r", "2.5");
      svg.appendChild(dot);
    }}
    return svg;
  }}
  function row(name, s, series, cls) {{
    var tr = el("tr", cls);
    tr.setAttribute("data-segment", name);
    tr.appendChild(el("td", "name", name));
    tr.appendChild(el("td", "n", s.responses));
    tr.appendChild(el("td", "nps", fmt(s.nps)));
    tr.appendChild(el("td", "ci", "[" + fmt(s.ci95[0]) + ", " + fmt(s.ci95[1]) + "]"));
    var b = el("td", "band-cell");
    if (s.band) b.appendChild(el("span", "band " + s.band, s.band));
    else b.textContent = "—";
    tr.appendChild(b);
    var t = el("td", "trend");
    if (series) t.appendChild(spark(series));
    tr.appendChild(t);
    return tr;
  }}
  function render(d) {{
    var body = document.getElementById("rows"), rows = document.createDocumentFragment();
    d.rows.forEach(function (r) {{ rows.appendChild(row(r[by], r, d.trend.segments[r[by]], "segment")); }});
    rows.appendChild(row("total", d.total, d.trend.total, "total"));
    body.replaceChildren(rows);
    var list = document.getElementById("comments"), items = document.createDocumentFragment();
    d.comments.forEach(function (c) {{
      var li = el("li", "comment " + c.category);
      li.appendChild(el("div", "text", c.comment));
      li.appendChild(el("div", "meta", c.score + " · " + c[by] + " · " + c.responded_at));
      items.appendChild(li);
    }});
    list.replaceChildren(items);
    if (d.words) renderWords(d.words);
    if (d.cases) renderCases(d.cases);
    renderAlerts(d.alerts || []);
    document.getElementById("status").textContent =
      d.total.responses + " responses · updated " + new Date().toLocaleTimeString();
  }}
  function renderCases(c) {{
    var s = c.summary;
    document.getElementById("cases-summary").textContent = "(" + s.open + " open · " + s.overdue + " overdue · " +
      s.closed_within_sla + " closed within SLA · " + s.closed_late + " closed late)";
    var body = document.getElementById("cases"), rows = document.createDocumentFragment();
    c.cases.forEach(function (k) {{
      var tr = el("tr", "case " + k.status);
      tr.appendChild(el("td", "id", k.case_id));
      tr.appendChild(el("td", "owner", k.owner));
      tr.appendChild(el("td", "score", k.score));
      tr.appendChild(el("td", "segment", Object.keys(k.segment).sort().map(function (d) {{
        return d + "=" + k.segment[d]; }}).join(", ")));
      tr.appendChild(el("td", "due", k.due_at.slice(0, 16).replace("T", " ") + (k.status === "overdue" ? " (overdue)" : "")));
      tr.appendChild(el("td", "comment", k.comment || ""));
      rows.appendChild(tr);
    }});
    body.replaceChildren(rows);
  }}
  function renderAlerts(alerts) {{
    var list = document.getElementById("alerts"), items = document.createDocumentFragment();
    alerts.forEach(function (a) {{
      var seg = Object.keys(a.segment).map(function (k) {{ return k + "=" + a.segment[k]; }}).join(", ");
      var li = el("li", "alert " + a.kind);
      li.appendChild(el("div", "text", a.kind + " in " + seg + ": NPS " + fmt(a.current.nps) + " (n=" +
        a.current.responses + ") vs " + fmt(a.baseline.nps) + " (n=" + a.baseline.responses + ")"));
      li.appendChild(el("div", "meta", "z " + fmt(a.z) + " · opened " + a.opened_at));
      items.appendChild(li);
    }});
    list.replaceChildren(items);
    document.getElementById("alerts-section").hidden = alerts.length === 0;
  }}
  var lastWords = null;
  function renderWords(w) {{
    var key = JSON.stringify(w);
    if (key === lastWords) return;  // unchanged: leave the picture (and screen readers) alone
    lastWords = key;
    var ns = "http://www.w3.org/2000/svg", svg = document.getElementById("cloud");
    svg.setAttribute("viewBox", "0 0 " + w.cloud.width + " " + w.cloud.height);
    var words = document.createDocumentFragment();
    w.cloud.words.forEach(function (word) {{
      var t = document.createElementNS(ns, "text");
      t.setAttribute("x", word.x); t.setAttribute("y", word.y); t.setAttribute("font-size", word.size);
      t.setAttribute("fill", word.color); t.setAttribute("text-anchor", "middle");
      t.setAttribute("dominant-baseline", "central");
      var title = document.createElementNS(ns, "title");
      title.textContent = word.term + ": " + word.responses + " answers, NPS " + fmt(word.nps);
      t.appendChild(title);
      t.appendChild(document.createTextNode(word.term));
      words.appendChild(t);
    }});
    svg.replaceChildren(words);
    svg.setAttribute("aria-label", w.cloud.words.length ? "Word cloud: " + w.cloud.words.slice(0, 10).map(
      function (word) {{ return word.term + " (" + word.responses + ")"; }}).join(", ") : "Word cloud: no words yet");
    var body = document.getElementById("complaints"), rows = document.createDocumentFragment();
    w.complaints.forEach(function (c) {{
      var tr = el("tr", c.significant ? "complaint" : "complaint weak");
      tr.appendChild(el("td", "term", c.term));
      tr.appendChild(el("td", "lang", c.lang));
      tr.appendChild(el("td", "n", c.responses));
      tr.appendChild(el("td", "detractors", c.detractors));
      tr.appendChild(el("td", "lift", c.lift === null ? "—" :
        fmt(c.lift) + " [" + fmt(c.lift_ci95[0]) + ", " + fmt(c.lift_ci95[1]) + "]"));
      tr.appendChild(el("td", "impact", fmt(c.impact)));
      tr.appendChild(el("td", "example", c.examples.length ? c.examples[0] : ""));
      rows.appendChild(tr);
    }});
    body.replaceChildren(rows);
  }}
  function tick() {{
    fetch(api, {{ cache: "no-store" }}).then(function (r) {{
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }}).then(render).catch(function (e) {{
      document.getElementById("status").textContent = "not updated: " + e.message;
    }}).finally(function () {{ setTimeout(tick, {refresh}); }});
  }}
  tick();
}})();
</script>
</body>
</html>
"""


def render_dashboard(*, by: str, dimensions: list[str] | tuple[str, ...], nonce: str) -> str:
    """The page for dimension ``by``, with links to the other ``dimensions``."""
    import json

    by = validate_dimension(by)
    current = ' aria-current="page"'
    nav = " ".join(f'<a href="/dashboard?by={html.escape(d)}"{current if d == by else ""}>{html.escape(d)}</a>'
                   for d in dimensions)
    return _PAGE.format(by=html.escape(by), by_json=json.dumps(by), nav=nav, nonce=html.escape(nonce),
                        refresh=REFRESH_MS)


def content_security_policy(nonce: str) -> str:
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; "
            "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
