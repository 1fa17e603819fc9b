"""The built-in live dashboard (``GET /dashboard`` on the worker): NPS per segment with n, 95 % interval and band,
a 14-day trend sparkline per row, the latest comments, and what respondents say over the last 30 days — a word
cloud (web.wordcloud: words sized by answers, coloured by their NPS) and the top complaints (sinks.terms, the
same as ``npsflow terms``) — updating every few seconds without a reload, from ``GET /api/v1/dashboard``
(``sinks.queries.dashboard``, the same numbers as ``npsflow report``, and ``dashboard_words``).

One self-contained page: inline CSS and script under a nonce CSP, no external assets. The script writes every
value with ``textContent`` (never as HTML), so a comment containing ``<script>`` is shown as text.

Accessibility (issue 16): the page carries its first data (a JSON data block, drawn before the first paint: nothing
moves as it fills); a section is redrawn only when its data changed (focus and reading position stay); the live
region (``role="status"``) says only the numbers ("N responses · K open alerts") and is written only when they
change — the time of the last update is in a separate, silent element; a Pause/Resume button stops the updates
(WCAG 2.2.2); each table scrolls sideways inside its own focusable region, never the page (a 412 px phone); a
comment's text and a complaint's term and example carry ``lang`` (sinks.queries.comment_langs, the terms'
language) when it is known; bands read as words (BAND_LABELS), their identifiers stay the CSS classes.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timedelta, timezone

from sinks import terms
from sinks.queries import validate_dimension
from streams.nps import Band
from web.wordcloud import layout

REFRESH_MS = 2000
WORD_DAYS = 30
COMPLAINTS = 8
#: what the page shows for each band (the band's identifier stays its CSS class)
BAND_LABELS = {Band.NEEDS_IMPROVEMENT.value: "Needs improvement", Band.GOOD.value: "Good",
               Band.EXCELLENT.value: "Excellent", Band.WORLD_CLASS.value: "World class"}


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
nav a {{ color: #c9d1d9; margin-right: 12px; display: inline-block; padding: 4px 0; }}
nav a[aria-current="page"] {{ color: #fff; font-weight: 600; }}
main {{ padding: 16px; max-width: 1100px; }}
h2, h3 {{ overflow-wrap: anywhere; }}
.live {{ display: flex; align-items: center; gap: 12px; }}
.live p {{ margin: 0; flex: 1 1 auto; min-width: 0; }}
#updated {{ margin: 2px 0 12px; }}
#pause {{ flex: none; min-width: 10em; font: inherit; font-size: 14px; padding: 6px 12px; min-height: 32px;
  border: 1px solid #57606a; border-radius: 4px; background: #fff; color: #1f2328; cursor: pointer; }}
#pause:focus-visible, .scroll:focus-visible {{ outline: 3px solid #0969da; outline-offset: 2px; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
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
#comments li, #alerts li {{ background: #fff; border-left: 4px solid #d0d7de; margin: 6px 0; padding: 6px 10px;
  overflow-wrap: anywhere; }}
#comments li.detractor {{ border-color: #b42318; }} #comments li.promoter {{ border-color: #2e7d32; }}
.meta {{ color: #57606a; font-size: 13px; }}
#status {{ font-size: 13px; font-weight: 600; }}
#cloud {{ width: 100%; max-width: 640px; height: auto; background: #fff; display: block; }}
#complaints td.example {{ white-space: normal; text-align: left; color: #57606a; min-width: 12em; }}
tr.weak td {{ color: #656d76; }}  /* dimmed, still 5.25:1 on white (WCAG 1.4.3) */
tr.case.overdue td.due {{ color: #b42318; font-weight: 600; }}
#cases td.comment {{ white-space: normal; text-align: left; min-width: 12em; }}
#alerts {{ list-style: none; padding: 0; }}
#alerts li {{ border-color: #b42318; }}
</style>
</head>
<body>
<header><h1>Live NPS by {by}</h1>
<nav aria-label="Segment dimension">{nav}</nav></header>
<main>
<div class="live">
<p id="status" role="status">Loading…</p>
<button type="button" id="pause">Pause updates</button>
</div>
<p class="meta" id="updated">not updated yet</p>
<section id="alerts-section" hidden>
<h2>Open alerts <span class="meta">(significant changes: last 24 h vs the 28 days before)</span></h2>
<ul id="alerts"></ul>
</section>
<div class="scroll" tabindex="0" role="region" aria-label="NPS by {by}">
<table aria-describedby="status">
<thead><tr><th scope="col">{by}</th><th scope="col">n</th><th scope="col">NPS</th><th scope="col">95% CI</th>
<th scope="col">band</th><th scope="col">trend (14 days)</th></tr></thead>
<tbody id="rows"></tbody>
</table>
</div>
<h2>Open follow-up cases <span class="meta" id="cases-summary"></span></h2>
<div class="scroll" tabindex="0" role="region" aria-label="Open follow-up cases">
<table>
<thead><tr><th scope="col">case</th><th scope="col">owner</th><th scope="col">score</th><th scope="col">segment</th>
<th scope="col">due</th><th scope="col">comment</th></tr></thead>
<tbody id="cases"></tbody>
</table>
</div>
<h2 id="comments-heading">Latest comments</h2>
<ul id="comments" aria-labelledby="comments-heading"></ul>
<h2>What respondents say <span class="meta">(last 30 days; words named by at least 3 respondents)</span></h2>
<svg id="cloud" viewBox="0 0 640 320" role="img" aria-label="Word cloud: no words yet"></svg>
<h3>Top complaints <span class="meta">(detractors' words; dimmed: not significant)</span></h3>
<div class="scroll" tabindex="0" role="region" aria-label="Top complaints">
<table>
<thead><tr><th scope="col">term</th><th scope="col">lang</th><th scope="col">n</th><th scope="col">detractors</th>
<th scope="col">lift [95% CI]</th><th scope="col">impact</th><th scope="col">example</th></tr></thead>
<tbody id="complaints"></tbody>
</table>
</div>
</main>
<script type="application/json" id="initial-data">{initial}</script>
<script nonce="{nonce}">
(function () {{
  "use strict";
  var by = {by_json}, bandLabels = {band_labels};
  var api = "/api/v1/dashboard?by=" + encodeURIComponent(by);
  function $(id) {{ return document.getElementById(id); }}
  function el(tag, cls, text) {{
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }}
  var tag = /^[A-Za-z]{{2,3}}(-[A-Za-z0-9]{{1,8}})*$/;
  function withLang(e, lang) {{  // a text in another language than the page's: marked for screen readers
    if (typeof lang === "string" && lang !== "und" && tag.test(lang)) e.lang = lang;
    return e;
  }}
  function fmt(v) {{ return v === null || v === undefined ? "—" : Number(v).toFixed(2); }}
  var seen = {{}};
  function changed(name, value) {{  // redraw a section only when its data changed: focus and screen readers rest
    var key = JSON.stringify(value === undefined ? null : value);
    if (seen[name] === key) return false;
    seen[name] = key;
    return true;
  }}
  var said = null;
  function announce(text) {{  // the live region speaks only when what it says changes, never on a mere poll
    if (text === said) return;
    said = text;
    $("status").textContent = text;
  }}
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
    if (s.band) b.appendChild(el("span", "band " + s.band, bandLabels[s.band] || s.band));
    else b.textContent = "—";
    tr.appendChild(b);
    var t = el("td", "trend");
    if (series) t.appendChild(spark(series));
    tr.appendChild(t);
    return tr;
  }}
  function renderRows(d) {{
    var rows = document.createDocumentFragment();
    d.rows.forEach(function (r) {{ rows.appendChild(row(r[by], r, d.trend.segments[r[by]], "segment")); }});
    rows.appendChild(row("total", d.total, d.trend.total, "total"));
    $("rows").replaceChildren(rows);
  }}
  function renderComments(comments) {{
    var items = document.createDocumentFragment();
    comments.forEach(function (c) {{
      var li = el("li", "comment " + c.category);
      li.appendChild(withLang(el("div", "text", c.comment), c.lang));
      li.appendChild(el("div", "meta", c.score + " · " + c[by] + " · " + c.responded_at));
      items.appendChild(li);
    }});
    $("comments").replaceChildren(items);
  }}
  function summary(d) {{
    var alerts = (d.alerts || []).length;
    return d.total.responses + " responses" +
      (alerts ? " · " + alerts + (alerts === 1 ? " open alert" : " open alerts") : "");
  }}
  var updatedAt = null, paused = false, failure = null;
  function showUpdated() {{
    var when = updatedAt ? "updated " + updatedAt.toLocaleTimeString() : "not updated yet";
    $("updated").textContent = paused ? "updates paused · " + when :
      failure ? "not updating (" + failure + ") · " + when : when;
  }}
  function render(d) {{
    if (changed("rows", [d.rows, d.total, d.trend])) renderRows(d);
    if (changed("comments", d.comments)) renderComments(d.comments);
    if (d.words && changed("words", d.words)) renderWords(d.words);
    if (d.cases && changed("cases", d.cases)) renderCases(d.cases);
    if (changed("alerts", d.alerts || [])) renderAlerts(d.alerts || []);
    failure = null;
    announce(summary(d));
    updatedAt = new Date();
    showUpdated();
  }}
  function renderCases(c) {{
    var s = c.summary;
    $("cases-summary").textContent = "(" + s.open + " open · " + s.overdue + " overdue · " +
      s.closed_within_sla + " closed within SLA · " + s.closed_late + " closed late)";
    var rows = document.createDocumentFragment();
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
    $("cases").replaceChildren(rows);
  }}
  function renderAlerts(alerts) {{
    var items = document.createDocumentFragment();
    alerts.forEach(function (a) {{
      var seg = Object.keys(a.segment).map(function (k) {{ return k + "=" + a.segment[k]; }}).join(", ");
      var li = el("li", "alert " + a.kind);
      li.appendChild(el("div", "text", a.kind + " in " + seg + ": NPS " + fmt(a.current.nps) + " (n=" +
        a.current.responses + ") vs " + fmt(a.baseline.nps) + " (n=" + a.baseline.responses + ")"));
      li.appendChild(el("div", "meta", "z " + fmt(a.z) + " · opened " + a.opened_at));
      items.appendChild(li);
    }});
    $("alerts").replaceChildren(items);
    $("alerts-section").hidden = alerts.length === 0;
  }}
  function renderWords(w) {{
    var ns = "http://www.w3.org/2000/svg", svg = $("cloud");
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
    renderComplaints(w.complaints);
  }}
  function renderComplaints(complaints) {{
    var rows = document.createDocumentFragment();
    complaints.forEach(function (c) {{
      var tr = el("tr", c.significant ? "complaint" : "complaint weak");
      tr.appendChild(withLang(el("td", "term", c.term), c.lang));
      tr.appendChild(el("td", "lang", c.lang));
      tr.appendChild(el("td", "n", c.responses));
      tr.appendChild(el("td", "detractors", c.detractors));
      tr.appendChild(el("td", "lift", c.lift === null ? "—" :
        fmt(c.lift) + " [" + fmt(c.lift_ci95[0]) + ", " + fmt(c.lift_ci95[1]) + "]"));
      tr.appendChild(el("td", "impact", fmt(c.impact)));
      tr.appendChild(withLang(el("td", "example", c.examples.length ? c.examples[0] : ""), c.lang));
      rows.appendChild(tr);
    }});
    $("complaints").replaceChildren(rows);
  }}
  var timer = null, busy = false;
  function failed(e) {{
    failure = e.message;
    announce(said && said.indexOf(" · not updating") < 0 ? said + " · not updating" : said || "not updating");
    showUpdated();
  }}
  function tick() {{
    timer = null;
    if (paused) return;
    busy = true;
    fetch(api, {{ cache: "no-store" }}).then(function (r) {{
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }}).then(function (d) {{ if (!paused) render(d); }}, function (e) {{ if (!paused) failed(e); }})
      .finally(function () {{
        busy = false;
        if (!paused && timer === null) timer = setTimeout(tick, {refresh});
      }});
  }}
  $("pause").addEventListener("click", function () {{  // WCAG 2.2.2: moving content can be stopped
    paused = !paused;
    this.textContent = paused ? "Resume updates" : "Pause updates";
    if (paused && timer !== null) {{ clearTimeout(timer); timer = null; }}
    showUpdated();
    if (!paused && !busy) tick();
  }});
  var first = JSON.parse($("initial-data").textContent);  // drawn before the first paint: nothing shifts
  if (first) {{ render(first); timer = setTimeout(tick, {refresh}); }}
  else tick();
}})();
</script>
</body>
</html>
"""


def band_label(band: str | None) -> str:
    """The words shown for an NPS band ("needs_improvement" → "Needs improvement"); "—" for none."""
    if not band:
        return "—"
    return BAND_LABELS.get(band, band)


def _script_json(value) -> str:
    """``value`` as JSON that can sit inside a ``<script>`` element: no ``<``, ``>`` or ``&`` (so no ``</script>``
    nor ``<!--`` can end or change it), nothing else altered for ``JSON.parse``."""
    from web.common import _default

    text = json.dumps(value, default=_default, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_dashboard(*, by: str, dimensions: list[str] | tuple[str, ...], nonce: str,
                     initial: dict | None = None) -> str:
    """The page for dimension ``by``, with links to the other ``dimensions``. ``initial``: the data of
    ``GET /api/v1/dashboard`` when the worker has it — drawn before the first paint, so nothing moves as the
    page fills (None: the page fetches it)."""
    by = validate_dimension(by)
    current = ' aria-current="page"'
    nav = " ".join(f'<a href="/dashboard?by={html.escape(d)}"{current if d == by else ""}>{html.escape(d)}</a>'
                   for d in dimensions)
    return _PAGE.format(by=html.escape(by), by_json=_script_json(by), nav=nav, nonce=html.escape(nonce),
                        refresh=REFRESH_MS, band_labels=_script_json(BAND_LABELS), initial=_script_json(initial))


def content_security_policy(nonce: str) -> str:
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; "
            "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
