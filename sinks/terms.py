"""Terms and themes, read side: which words each category of respondents uses, per slice (segment × period).

Counts come from ClickHouse, counted per answer (its latest version, like every other number): ``term_cells``
(sinks.rollup — the rollup ``terms_daily`` for clean days, the day ledger for the rest) for terms; the day
ledger itself for themes (a theme counts an answer once however many of its lemmas it has, which per-term
rows cannot tell). The statistics are ``streams.termstats``; this module only builds the queries and the
result.

The population a term is compared within is the slice's answers **in the term's language that have terms** (at
least one: an answer whose words are all function words, or in no known language, has none) (the
row ``term = ''`` of ``term_cells`` for that language): lift compares the answers naming a term with the other
answers that said something in the same language. Answers without a comment are mostly promoters, and the
languages' base NPS differ (each is mostly its own countries' locations): pooling either would make ordinary
words look like complaints. The Benjamini–Hochberg family is likewise one language of one slice. A theme spans
languages, so its population is every language of the slice.

``--lang`` narrows both the terms and the population to answers in that language. ``--by DIM`` makes one slice
per value of the segment dimension (an answer without it: "(none)").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from sinks.queries import NONE_VALUE, _ch_time, _utc, validate_dimension
from sinks.rollup import ANY_TEXT, _ledger_latest
from streams.nps import summarize
from streams.text.lang import parse_locale
from streams import termstats
from streams.termstats import SliceTotals, TermCounts

TERM_CELLS = "{db}.term_cells(since = {since:DateTime64(3, 'UTC')}, until = {until:DateTime64(3, 'UTC')})"
DEFAULT_DAYS = 30
HISTORY_PERIODS = 4  # "new / rising" compares with the 4 previous periods of the same length
EXAMPLE_CANDIDATES = 20  # recent comments fetched per term; pick_examples keeps up to 3 distinct ones
ALL = "all"  # the slice name without --by
#: the ledger days that can hold answers of [since, until) (a condition on the ledger's sorting key: a range read)
PERIOD_DAYS = ("day >= toDate32({since:DateTime64(3, 'UTC')}) "
               "AND day <= toDate32({until:DateTime64(3, 'UTC')} - toIntervalMillisecond(1))")
THEME_LANG = "*"  # a theme is counted across the languages of its lemmas


@dataclass(frozen=True)
class TermQuery:
    since: datetime | None = None  # default: until − 30 days
    until: datetime | None = None  # default: now
    by: str | None = None
    lang: str | None = None
    category: str = "detractor"
    min_count: int = 10  # minimum answers with the term
    min_category: int = 5  # minimum answers of the category with the term
    min_respondents: int = 3
    limit: int = 20  # entries per slice
    examples: int = 3

    def period(self, now: datetime) -> tuple[datetime, datetime]:
        until = _utc(self.until) if self.until else now
        since = _utc(self.since) if self.since else until - timedelta(days=DEFAULT_DAYS)
        if since >= until:
            raise ValueError("since must be earlier than until")
        return since, until

    def checked(self) -> "TermQuery":
        if self.by is not None:
            validate_dimension(self.by)
        if self.category not in termstats.CATEGORIES:
            raise ValueError(f"category must be one of {', '.join(termstats.CATEGORIES)}, got {self.category!r}")
        query = self
        if self.lang is not None:  # FI, fi-FI → fi; no, nn → nb
            lang = parse_locale(self.lang)[0] if self.lang != "und" else "und"
            if lang is None:
                raise ValueError(f"lang must be one of sv, da, fi, nb, en, und, got {self.lang!r}")
            query = dataclasses.replace(self, lang=lang)
        for name in ("min_count", "min_category", "min_respondents", "limit"):
            if getattr(query, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        return query


def _slice_expr(by: str | None, segment: str = "segment") -> str:
    if by is None:
        return f"'{ALL}'"
    return f"if({segment}[{{dim:String}}] = '', {{none:String}}, {segment}[{{dim:String}}])"


def _params(q: TermQuery, since: datetime, until: datetime, **extra) -> dict[str, Any]:
    return {"since": _ch_time(since), "until": _ch_time(until), "dim": q.by or "", "none": NONE_VALUE,
            "lang": q.lang or "", "any": ANY_TEXT, **extra}


def _lang_filter(q: TermQuery, column: str = "lang") -> str:
    return f" AND {column} = {{lang:String}}" if q.lang else ""


def _counts(store, q: TermQuery, since: datetime, until: datetime, terms: list[str] | None = None,
            minimum: int = 1) -> dict[str, dict[tuple[str, str], TermCounts]]:
    """slice → (term, lang) → counts (the ANY_TEXT row included), from ``term_cells``."""
    only = " AND term IN {terms:Array(String)}" if terms is not None else ""
    sql = (f"SELECT {_slice_expr(q.by)} AS slice, term, lang, sum(responses) AS n, sum(promoters) AS p, "
           f"sum(passives) AS pa, sum(detractors) AS d, uniqExactMerge(respondents) AS people "
           f"FROM {TERM_CELLS} WHERE 1{_lang_filter(q)}{only} "
           f"GROUP BY slice, term, lang HAVING n >= {{minimum:UInt64}} OR term = {{any:String}}")
    params = _params(q, since, until, minimum=minimum, terms=[ANY_TEXT, *(terms or [])])
    out: dict[str, dict[tuple[str, str], TermCounts]] = {}
    for r in store.query(sql, params):
        counts = TermCounts(r["term"], r["lang"], int(r["n"]), int(r["p"]), int(r["pa"]), int(r["d"]),
                            int(r["people"]))
        out.setdefault(r["slice"], {})[(r["term"], r["lang"])] = counts
    return out


def _totals(counts: dict[tuple[str, str], TermCounts], lang: str | None = None) -> SliceTotals:
    """Answers with at least one term in the slice: the ANY_TEXT row of ``lang``, or of every language (None or a theme's
    THEME_LANG: an answer has one language)."""
    rows = [c for (term, row_lang), c in counts.items()
            if term == ANY_TEXT and (lang in (None, THEME_LANG) or row_lang == lang)]
    return SliceTotals(sum(c.responses for c in rows), sum(c.promoters for c in rows),
                       sum(c.passives for c in rows), sum(c.detractors for c in rows))


def _history(before: dict) -> dict:
    """slice → lang → ((term, lang) → (answers naming it, answers with terms), answers with terms) in the
    previous periods, per population (a language, or THEME_LANG for themes)."""
    out = {}
    for name, counts in before.items():
        per_lang = {}
        for lang in {lang for (_, lang) in counts} | {THEME_LANG}:
            total = _totals(counts, lang).responses
            per_lang[lang] = ({key: (c.responses, total) for key, c in counts.items()
                               if key[0] != ANY_TEXT and (lang == THEME_LANG or key[1] == lang)}, total)
        out[name] = per_lang
    return out


def _previous(store, q: TermQuery, since: datetime, until: datetime, terms: list[str]):
    """``_history`` of the HISTORY_PERIODS periods before ``since``."""
    start = since - HISTORY_PERIODS * (until - since)
    return _history(_counts(store, q, start, since, terms=terms))


def _examples(store, q: TermQuery, since: datetime, until: datetime, wanted: dict[str, list[str]]):
    """(slice, term) → up to q.examples recent masked texts (the comment, and the follow-up answer the term may
    come from) of the category's answers with the term (sinks.termstats.pick_examples)."""
    terms = sorted({t for ts in wanted.values() for t in ts})
    if not terms or q.examples < 1:
        return {}
    text = "if(fu = '', txt, if(txt = '', fu, concat(txt, ' — ', fu)))"
    sql = (f"SELECT slice, term, groupArraySorted({EXAMPLE_CANDIDATES})((-ms, said)) AS ex FROM ("
           f" SELECT {_slice_expr(q.by, 'seg')} AS slice, arrayJoin(arrayIntersect(tm, {{terms:Array(String)}})) "
           f"AS term, {text} AS said, toUnixTimestamp64Milli(at) AS ms FROM (SELECT response_id, gone AS g, "
           f"comment AS txt, follow_up AS fu, category AS cat, terms AS tm, lang AS lg, responded_at AS at, "
           f"segment AS seg FROM {{db}}.comments_by_day FINAL WHERE {PERIOD_DAYS}) WHERE g = 0 AND said != '' "
           f"AND cat = {{category:String}} AND at >= {{since:DateTime64(3, 'UTC')}} "
           f"AND at < {{until:DateTime64(3, 'UTC')}}{_lang_filter(q, 'lg')}) GROUP BY slice, term")
    out = {}
    for r in store.query(sql, _params(q, since, until, terms=terms, category=q.category)):
        if r["term"] in wanted.get(r["slice"], ()):
            candidates = [(said, -neg_ms) for neg_ms, said in r["ex"]]  # newest first
            out[(r["slice"], r["term"])] = termstats.pick_examples(candidates, k=q.examples)
    return out


def _stats(q: TermQuery, current: dict, previous: dict, compute) -> dict[str, list[termstats.TermStat]]:
    """slice → its statistics (``compute`` = termstats.term_stats or theme_stats), each population (language)
    against its own answers with terms, ranked together, the first ``limit``."""
    picked = {}
    for name, counts in current.items():
        groups: dict[str, list[TermCounts]] = {}
        for (term, lang), c in counts.items():
            if term != ANY_TEXT:
                groups.setdefault(lang, []).append(c)
        stats = []
        for lang, group in groups.items():
            before, before_total = previous.get(name, {}).get(lang, ({}, 0))
            stats += compute(group, _totals(counts, lang), category=q.category, min_responses=q.min_count,
                             min_detractors=q.min_category, min_respondents=q.min_respondents,
                             previous=before if before_total else None, previous_total=before_total or None)
        picked[name] = termstats.rank(stats, q.category)[:q.limit]
    return picked


def _result(q: TermQuery, since: datetime, until: datetime, current: dict, picked: dict, examples: dict,
            key: str) -> dict:
    order = sorted(current, key=lambda n: (-_totals(current[n]).responses, n))
    entries = []
    for name in order:
        for stat in picked.get(name, ()):
            entry = {**stat.as_dict(), "examples": examples.get((name, stat.term), [])}
            if key != "term":
                entry = {key: entry.pop("term"), **entry}
            entries.append({q.by: name, **entry} if q.by else entry)
    return {"since": since.isoformat(), "until": until.isoformat(), "by": q.by, "category": q.category,
            "lang": q.lang, "slices": [{"slice": n, **_totals_dict(_totals(current[n]))} for n in order],
            f"{key}s": entries}


def terms(store, query: TermQuery, now: datetime | None = None) -> dict:
    """The term statistics of every slice: {"since", "until", "by", "category", "lang", "slices": [{slice,
    responses …}], "terms": [{term, lang, responses, …, examples, [by: slice]}]} — per slice sorted by
    significance then impact, at most ``limit`` each; slices by their answers with text, most first."""
    q = query.checked()
    since, until = q.period(now or datetime.now(timezone.utc))
    current = _counts(store, q, since, until, minimum=q.min_count)
    tested = sorted({t for counts in current.values() for (t, _) in counts if t != ANY_TEXT})
    previous = _previous(store, q, since, until, tested) if tested else {}
    picked = _stats(q, current, previous, termstats.term_stats)
    examples = _examples(store, q, since, until, {n: [s.term for s in st] for n, st in picked.items()})
    return _result(q, since, until, current, picked, examples, "term")


def _totals_dict(totals: SliceTotals) -> dict:
    return {"responses": totals.responses, "promoters": totals.promoters, "passives": totals.passives,
            "detractors": totals.detractors}


# ------------------------------------------------------------------------------------------------ themes


def _theme_counts(store, q: TermQuery, since: datetime, until: datetime, themes: dict) -> dict:
    """slice → (theme, "*") → counts per answer (an answer with several of a theme's lemmas counts once), from
    the day ledger (its latest version per day: sinks.rollup), plus the ANY_TEXT population from term_cells."""
    names, langs, lemmas = [], [], []
    for name, by_lang in themes.items():
        for lang, words in by_lang.items():
            names.append(name), langs.append(lang), lemmas.append(sorted(words))
    sql = (f"SELECT slice, theme, count() AS n, countIf(cat = 'promoter') AS p, countIf(cat = 'passive') AS pa, "
           f"countIf(cat = 'detractor') AS d, uniqExact(rk) AS people FROM (SELECT {_slice_expr(q.by, 'seg')} AS "
           f"slice, cat, rk, arrayJoin(arrayDistinct(arrayFilter((n, l, w) -> l = lg AND hasAny(tm, w), "
           f"{{names:Array(String)}}, {{langs:Array(String)}}, {{lemmas:Array(Array(String))}}))) AS theme "
           f"FROM {_ledger_latest(PERIOD_DAYS)} WHERE g = 0 AND at >= {{since:DateTime64(3, 'UTC')}} AND at < "
           f"{{until:DateTime64(3, 'UTC')}}{_lang_filter(q, 'lg')}) GROUP BY slice, theme")
    out = {name: {k: c for k, c in counts.items() if k[0] == ANY_TEXT}
           for name, counts in _counts(store, q, since, until, terms=[]).items()}
    for r in store.query(sql, _params(q, since, until, names=names, langs=langs, lemmas=lemmas)):
        out.setdefault(r["slice"], {})[(r["theme"], THEME_LANG)] = TermCounts(
            r["theme"], THEME_LANG, int(r["n"]), int(r["p"]), int(r["pa"]), int(r["d"]), int(r["people"]))
    return out


def themes(store, query: TermQuery, themes_config: dict, now: datetime | None = None) -> dict:
    """Theme statistics per slice like ``terms`` (key "theme" instead of "term"; no examples) and
    ``suggested``: per slice the significant terms no theme covers (streams.termstats.suggested_themes)."""
    q = query.checked()
    config = termstats.normalize_themes(themes_config)
    since, until = q.period(now or datetime.now(timezone.utc))
    current = _theme_counts(store, q, since, until, config)
    start = since - HISTORY_PERIODS * (until - since)
    previous = _history(_theme_counts(store, q, start, since, config))
    picked = _stats(q, current, previous, termstats.theme_stats)
    result = _result(q, since, until, current, picked, {}, "theme")
    term_result = terms(store, dataclasses.replace(q, examples=0), now=now)
    uncovered = []
    for entry in term_result["terms"]:
        if entry["significant"] and not termstats.themes_of([entry["term"], *entry["term"].split()], entry["lang"],
                                                            config):
            uncovered.append({k: entry[k] for k in (q.by, "term", "lang", "responses", "lift", "q_value", "impact")
                              if k})
    result["suggested"] = uncovered
    return result


EXAMPLE_THEMES = Path(__file__).resolve().parent.parent / "deploy" / "themes.example.yaml"


def load_themes(path: str | Path | None = None) -> dict:
    """The themes of a YAML file (``themes: {name: {lang: [lemma, …]}}``), normalized and checked; ``None``: the
    shipped example. ValueError with one line saying what is wrong."""
    path = Path(path) if path else EXAMPLE_THEMES
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"themes file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("themes"), dict):
        raise ValueError(f"themes file {path}: expected a mapping 'themes: {{name: {{lang: [lemma, …]}}}}'")
    return termstats.normalize_themes(data["themes"])


# ------------------------------------------------------------------------------------------------ dashboard
CLOUD_WORDS = 40
CLOUD_DAYS = 30


def cloud_words(store, since: datetime, until: datetime, limit: int = CLOUD_WORDS,
                min_respondents: int = 3) -> list[dict]:
    """The most named terms of the period with their NPS (of the answers naming them) — the word cloud's words.
    Only terms named by at least ``min_respondents`` distinct respondents: no name or single person's words."""
    q = TermQuery(since=since, until=until)
    sql = (f"SELECT term, sum(responses) AS n, sum(promoters) AS p, sum(passives) AS pa, sum(detractors) AS d, "
           f"uniqExactMerge(respondents) AS people FROM {TERM_CELLS} WHERE term != {{any:String}} "
           f"GROUP BY term HAVING people >= {{people:UInt64}} ORDER BY n DESC, term LIMIT {{limit:UInt32}}")
    rows = store.query(sql, _params(q, since, until, people=min_respondents, limit=limit))
    return [{"term": r["term"], "responses": int(r["n"]),
             "nps": summarize(int(r["p"]), int(r["pa"]), int(r["d"])).as_dict()["nps"]} for r in rows]
