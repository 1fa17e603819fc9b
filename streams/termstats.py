"""Term and theme statistics for one slice (segment × period): which words a category of respondents over-uses,
how sure we are, and what they cost in NPS.

Pure functions, no I/O, no clock, stdlib math only. The counts come from elsewhere (the text module extracts
the terms of each response, the ClickHouse queries count them); this module only does the arithmetic.

Counting is per response, not per token: a response that names a term twice counts once, so every statistic is
about responses (people's answers), and a talkative respondent cannot inflate a term.

For each term the slice splits into a 2×2 table, rows = responses with / without the term, columns = in the
analysed ``category`` (detractor by default) / not::

                 category   other
    with term       a         b
    without term    c         d

* **Term NPS** is the NPS of the responses with the term, with the adjusted-Wald interval of ``streams.nps``.
* **Lift** is the relative risk (a/(a+b)) / (c/(c+d)); its 95 % interval is Katz's log interval,
  exp(ln RR ± z·sqrt(1/a − 1/(a+b) + 1/c − 1/(c+d))). When any of the four cells is 0, 0.5 is added to every
  cell (the Haldane–Anscombe correction) for the lift *and* its interval, so the estimate stays finite and
  inside its interval. Lift is None when the term is in no response or in every response of the slice (there
  is nothing to compare with).
* **p_value** is the one-sided Fisher exact test that the term is over-represented in the category:
  P(X ≥ a) for X hypergeometric (N = a+b+c+d responses, K = a+c in the category, n = a+b with the term).
  It is computed exactly: the log of the first probability from ``math.lgamma``, then the tail by the ratio
  of successive probabilities, summed from the start outwards (terms shrink geometrically away from the mode,
  the sum stops when the rest cannot change it), so counts of millions cost a few thousand steps.
* **q_value** is the Benjamini–Hochberg adjustment over every term of the slice that was tested (passed the
  minimum counts): q_(i) = min over j ≥ i of m·p_(j)/j, capped at 1. ``significant`` means q ≤ alpha.
* **impact** = NPS of the slice − NPS of the slice without the term's responses, exactly as the issue defines
  it. A complaint (a term whose responses score below the rest) has a NEGATIVE impact; a praise a positive one.
  None when the term is in every response. ``impact_if_passive`` = 100·a_D/N, the points the slice NPS would
  gain if the term's detractors had been passives — the issue's "if these detractors were passives" bound
  (a fix that turned them into promoters would gain twice that; one that lost other respondents, less).
* **rising_p**: given k1 term responses among n1 now and k0 among n0 in the previous periods, under "no change"
  k1 ~ Binomial(k0 + k1, n1 / (n0 + n1)) conditionally on k0 + k1; rising_p = P(X ≥ k1) (exact, one-sided).
  ``new`` = there are previous responses (n0 > 0), the term had none of them (k0 = 0) and its rise is
  significant after Benjamini–Hochberg over the tested terms of the slice (adjusted rising p ≤ alpha). Without
  ``previous`` (or with no previous responses, n0 = 0) rising_p is None and new is False.

Limits:
* Multiple testing: a slice tests hundreds of terms; only q_value (not p_value) should decide what is shown as
  significant. BH controls the false discovery rate for independent or positively dependent tests; terms of
  the same responses are dependent, so treat q as a good guide, not a guarantee. The minimum counts are
  applied before the correction and one of them (``min_detractors``) is the very count that is tested, so the
  family is chosen with a look at the data: another reason for caution.
* Small slices: with few responses nothing can be significant, and the minimum counts (≥ 10 responses,
  ≥ 5 of the category, ≥ 3 distinct respondents by default) hide most terms — on purpose, so that no single
  person's words and no name surface.
* Per-response counting: terms overlap (one response has many terms), so impacts of different terms are not
  additive and a theme's impact is not the sum of its lemmas' impacts. Themes must be counted per response by
  the query (a response belongs to a theme if it has any of its lemmas), then go through ``theme_stats``.
* Lift is a ratio of proportions of this slice, not a causal effect.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Mapping

from streams.nps import Z95, adjusted_wald_ci, nps_score

CATEGORIES = ("detractor", "passive", "promoter")
EXAMPLE_MAX_CHARS = 200
NEAR_DUPLICATE_JACCARD = 0.8
_TAIL_EPS = 1e-17


@dataclass(frozen=True, slots=True)
class TermCounts:
    """Counts of one term (or theme) in one slice, per response."""

    term: str
    lang: str
    responses: int  # responses containing the term
    promoters: int
    passives: int
    detractors: int
    respondents: int  # distinct respondents among them (== responses when unknown)

    def of(self, category: str) -> int:
        return _category_count(self, category)


@dataclass(frozen=True, slots=True)
class SliceTotals:
    responses: int
    promoters: int
    passives: int
    detractors: int

    def of(self, category: str) -> int:
        return _category_count(self, category)


@dataclass(frozen=True, slots=True)
class TermStat:
    term: str
    lang: str
    responses: int
    detractors: int
    passives: int
    promoters: int
    nps: float
    nps_ci95: tuple[float, float]
    lift: float | None
    lift_ci95: tuple[float, float] | None
    p_value: float
    q_value: float
    impact: float | None
    impact_if_passive: float
    new: bool
    rising_p: float | None
    significant: bool

    def as_dict(self, ndigits: int = 2) -> dict:
        """JSON-ready; NPS points rounded to ``ndigits``, lift to 3 decimals, p and q unrounded."""
        return {
            "term": self.term,
            "lang": self.lang,
            "responses": self.responses,
            "detractors": self.detractors,
            "passives": self.passives,
            "promoters": self.promoters,
            "nps": round(self.nps, ndigits),
            "nps_ci95": [round(v, ndigits) for v in self.nps_ci95],
            "lift": _round_or_none(self.lift, 3),
            "lift_ci95": None if self.lift_ci95 is None else [round(v, 3) for v in self.lift_ci95],
            "p_value": self.p_value,
            "q_value": self.q_value,
            "impact": _round_or_none(self.impact, ndigits),
            "impact_if_passive": round(self.impact_if_passive, ndigits),
            "new": self.new,
            "rising_p": self.rising_p,
            "significant": self.significant,
        }


def _round_or_none(value: float | None, ndigits: int) -> float | None:
    return None if value is None else round(value, ndigits)


def _category_count(counts: TermCounts | SliceTotals, category: str) -> int:
    if category == "detractor":
        return counts.detractors
    if category == "passive":
        return counts.passives
    if category == "promoter":
        return counts.promoters
    raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")


# --- exact tails ---------------------------------------------------------------------------------------------


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _tail_sum(log_first: float, x: int, stop: int, ratio) -> float:
    """Sum of exp(log p(x)) + p(x±1) + ... up to ``stop`` (inclusive), stepping by ``ratio(x)`` = p(next)/p(x).

    The caller starts on the far side of the mode, so the ratios are < 1 and decrease (the distributions are
    log-concave): once the next term divided by (1 − its ratio) — a bound on everything left — is negligible
    against the sum, the rest is dropped."""
    step = 1 if stop >= x else -1
    term = math.exp(log_first)
    total = term
    while x != stop and term > 0.0:
        r = ratio(x)
        x += step
        term *= r
        total += term
        if r < 1.0 and term / (1.0 - r) <= total * _TAIL_EPS:
            break
    return total


def hypergeom_sf(a: int, population: int, successes: int, draws: int) -> float:
    """P(X ≥ a) for X hypergeometric: ``draws`` from ``population`` of which ``successes`` are marked."""
    N, K, n = population, successes, draws
    lo, hi = max(0, n + K - N), min(K, n)
    if a <= lo:
        return 1.0
    if a > hi:
        return 0.0

    def log_pmf(x: int) -> float:
        return _log_comb(K, x) + _log_comb(N - K, n - x) - _log_comb(N, n)

    def up(x: int) -> float:
        return (K - x) * (n - x) / ((x + 1) * (N - K - n + x + 1))

    def down(x: int) -> float:
        return x * (N - K - n + x) / ((K - x + 1) * (n - x + 1))

    mode = (n + 1) * (K + 1) // (N + 2)
    if a > mode:
        return min(1.0, _tail_sum(log_pmf(a), a, hi, up))
    return max(0.0, 1.0 - _tail_sum(log_pmf(a - 1), a - 1, lo, down))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    odds = p / (1.0 - p)

    def log_pmf(x: int) -> float:
        return _log_comb(n, x) + x * math.log(p) + (n - x) * math.log1p(-p)

    def up(x: int) -> float:
        return (n - x) / (x + 1) * odds

    def down(x: int) -> float:
        return x / (n - x + 1) / odds

    mode = math.floor((n + 1) * p)
    if k > mode:
        return min(1.0, _tail_sum(log_pmf(k), k, n, up))
    return max(0.0, 1.0 - _tail_sum(log_pmf(k - 1), k - 1, 0, down))


def fisher_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher exact p-value that the row (a, b) has more of the first column than the row (c, d)."""
    return hypergeom_sf(a, a + b + c + d, a + c, a + b)


def rising_p_value(k1: int, n1: int, k0: int, n0: int) -> float:
    """Exact conditional binomial test that a term's share rose from k0/n0 (before) to k1/n1 (now)."""
    if n0 + n1 == 0:
        return 1.0
    return binom_sf(k1, k0 + k1, n1 / (n0 + n1))


def bh_adjust(p_values: list[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values, in the input order; monotone in p, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = running
    return adjusted


# --- effect sizes --------------------------------------------------------------------------------------------


def lift_katz(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, tuple[float, float]] | None:
    """Relative risk (a/(a+b)) / (c/(c+d)) with Katz's log interval; 0.5 added to every cell when one is 0.

    None when a row is empty (the term is in no response, or in every response)."""
    if a + b == 0 or c + d == 0:
        return None
    if 0 in (a, b, c, d):
        a, b, c, d = a + 0.5, b + 0.5, c + 0.5, d + 0.5
    rr = (a / (a + b)) / (c / (c + d))
    se = math.sqrt(max(1 / a - 1 / (a + b) + 1 / c - 1 / (c + d), 0.0))
    log_rr = math.log(rr)
    return rr, (math.exp(log_rr - z * se), math.exp(log_rr + z * se))


def nps_impact(term: TermCounts, totals: SliceTotals) -> float | None:
    """NPS of the slice − NPS of the slice without the term's responses (negative = the term pulls it down)."""
    whole = nps_score(totals.promoters, totals.passives, totals.detractors)
    rest = nps_score(totals.promoters - term.promoters, totals.passives - term.passives,
                     totals.detractors - term.detractors)
    if whole is None or rest is None:
        return None
    return whole - rest


def impact_if_passive(term: TermCounts, totals: SliceTotals) -> float:
    """NPS points the slice would gain if the term's detractors had been passives."""
    if totals.responses == 0:
        return 0.0
    return 100.0 * term.detractors / totals.responses


# --- per-slice statistics ------------------------------------------------------------------------------------


def _check_counts(counts: TermCounts | SliceTotals) -> None:
    parts = (counts.promoters, counts.passives, counts.detractors)
    if min(parts) < 0 or sum(parts) != counts.responses:
        raise ValueError(f"promoters + passives + detractors must equal responses (all >= 0): {counts!r}")


def _check_term(term: TermCounts, totals: SliceTotals) -> None:
    _check_counts(term)
    if not min(1, term.responses) <= term.respondents <= term.responses:
        raise ValueError(f"respondents must be 1..responses (0 without responses): {term!r}")
    for name in ("responses", "promoters", "passives", "detractors"):
        if getattr(term, name) > getattr(totals, name):
            raise ValueError(f"{term.term!r}: more {name} with the term than in the slice")


def _passes(term: TermCounts, category: str, min_responses: int, min_category: int, min_respondents: int) -> bool:
    return (term.responses >= max(1, min_responses) and term.of(category) >= min_category
            and term.respondents >= min_respondents)


def _table(term: TermCounts, totals: SliceTotals, category: str) -> tuple[int, int, int, int]:
    a = term.of(category)
    c = totals.of(category) - a
    return a, term.responses - a, c, (totals.responses - term.responses) - c


def _previous_total(previous: Mapping, previous_total: int | None) -> int | None:
    if previous_total is not None:
        return previous_total
    totals = {n0 for _, n0 in previous.values()}
    if len(totals) > 1:
        raise ValueError(f"previous entries disagree on the total responses before: {sorted(totals)}")
    return totals.pop() if totals else None


def _rising(term: TermCounts, totals: SliceTotals, previous: Mapping | None,
            n0_default: int | None) -> tuple[int, float] | None:
    """(k0, rising p) of a term, or None without previous responses. Keys: (term, lang) first, then term."""
    if previous is None:
        return None
    before = previous.get((term.term, term.lang), previous.get(term.term))
    if before is None:
        if n0_default is None:
            return None
        before = (0, n0_default)
    k0, n0 = before
    if n0 <= 0:
        return None
    return k0, rising_p_value(term.responses, totals.responses, k0, n0)


def _new_flags(risings: list[tuple[int, float] | None], alpha: float) -> list[bool]:
    """new = the term had no responses before (k0 = 0, out of n0 > 0) and its BH-adjusted rising p ≤ alpha."""
    tested = [i for i, r in enumerate(risings) if r is not None]
    adjusted = dict(zip(tested, bh_adjust([risings[i][1] for i in tested])))
    return [i in adjusted and risings[i][0] == 0 and adjusted[i] <= alpha for i in range(len(risings))]


def _stat(term: TermCounts, totals: SliceTotals, category: str, p: float, q: float,
          rising: tuple[int, float] | None, new: bool, alpha: float) -> TermStat:
    lift = lift_katz(*_table(term, totals, category))
    return TermStat(
        term=term.term, lang=term.lang, responses=term.responses, detractors=term.detractors,
        passives=term.passives, promoters=term.promoters,
        nps=nps_score(term.promoters, term.passives, term.detractors),
        nps_ci95=adjusted_wald_ci(term.promoters, term.passives, term.detractors),
        lift=None if lift is None else lift[0], lift_ci95=None if lift is None else lift[1],
        p_value=p, q_value=q, impact=nps_impact(term, totals), impact_if_passive=impact_if_passive(term, totals),
        new=new, rising_p=None if rising is None else rising[1], significant=q <= alpha,
    )


def _sort_key(category: str):
    """Significant first; then impact in the category's direction (most negative first for detractors and
    passives, most positive first for promoters; None last); then more responses; then term, lang."""
    sign = -1.0 if category == "promoter" else 1.0

    def key(s: TermStat):
        impact = math.inf if s.impact is None else sign * s.impact
        return (not s.significant, impact, -s.responses, s.term, s.lang)

    return key


def rank(stats: Iterable[TermStat], category: str = "detractor") -> list[TermStat]:
    """Statistics of several populations (e.g. each language of a slice) in one order: ``term_stats``' own."""
    return sorted(stats, key=_sort_key(category))


def term_stats(terms: list[TermCounts], totals: SliceTotals, *, min_responses: int = 10, min_detractors: int = 5,
               min_respondents: int = 3, category: str = "detractor",
               previous: Mapping[str | tuple[str, str], tuple[int, int]] | None = None,
               previous_total: int | None = None, alpha: float = 0.05) -> list[TermStat]:
    """Statistics of the terms of one slice that pass the minimum counts, sorted (see ``_sort_key``).

    ``min_detractors`` is the minimum number of responses *of the analysed category* with the term (named for
    the default category). ``previous[term]`` (or ``previous[(term, lang)]``, looked up first) =
    (term responses, total responses) in the previous periods; a tested term missing from it had 0 responses
    before, out of ``previous_total`` (default: the total the entries agree on). Raises ValueError on
    inconsistent counts (parts not summing to responses, more with the term than in the slice, duplicates)."""
    _check_counts(totals)
    totals.of(category)
    seen: set[tuple[str, str]] = set()
    for term in terms:
        _check_term(term, totals)
        if (term.term, term.lang) in seen:
            raise ValueError(f"duplicate counts for {(term.term, term.lang)!r}")
        seen.add((term.term, term.lang))
    tested = [t for t in terms if _passes(t, category, min_responses, min_detractors, min_respondents)]
    p_values = [fisher_greater(*_table(t, totals, category)) for t in tested]
    q_values = bh_adjust(p_values)
    n0 = None if previous is None else _previous_total(previous, previous_total)
    risings = [_rising(t, totals, previous, n0) for t in tested]
    news = _new_flags(risings, alpha)
    stats = [_stat(t, totals, category, p, q, r, new, alpha)
             for t, p, q, r, new in zip(tested, p_values, q_values, risings, news)]
    return sorted(stats, key=_sort_key(category))


# --- themes --------------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def normalize_themes(raw: Mapping[str, Mapping[str, Iterable[str]]]) -> dict[str, dict[str, frozenset[str]]]:
    """Themes as loaded from YAML ({theme: {lang: [lemma, ...]}}) with every lemma NFC + casefolded, like the
    terms. Raises ValueError on a malformed structure."""
    themes: dict[str, dict[str, frozenset[str]]] = {}
    for name, by_lang in raw.items():
        if not isinstance(name, str) or not isinstance(by_lang, Mapping):
            raise ValueError(f"theme {name!r}: expected {{lang: [lemmas]}}")
        langs = {}
        for lang, lemmas in by_lang.items():
            if isinstance(lemmas, str) or not all(isinstance(x, str) and x.strip() for x in lemmas):
                raise ValueError(f"theme {name!r}, {lang!r}: expected a list of non-empty lemmas")
            langs[_norm(lang)] = frozenset(_norm(x.strip()) for x in lemmas)
        themes[name] = langs
    return themes


def themes_of(terms: Iterable[str], lang: str, themes: Mapping[str, Mapping[str, Iterable[str]]]) -> set[str]:
    """The themes one response belongs to: those with any of its lemmas (for the response's language) among the
    response's terms. The query must count themes this way, per response (ClickHouse: hasAny(terms, [...]))."""
    normalized = normalize_themes(themes)
    present = {_norm(t) for t in terms}
    return {name for name, by_lang in normalized.items() if present & by_lang.get(_norm(lang), frozenset())}


def theme_stats(theme_counts: list[TermCounts], totals: SliceTotals,
                themes: Mapping[str, Mapping[str, Iterable[str]]] | None = None, **kwargs) -> list[TermStat]:
    """Theme statistics: ``term_stats`` over per-theme counts (``TermCounts.term`` = theme name; ``lang`` the
    language of the count, or e.g. "*" when counted across languages). The counts must be per response (see
    ``themes_of``), never sums of the lemmas' counts. With ``themes``, unknown theme names raise ValueError."""
    if themes is not None:
        unknown = sorted({c.term for c in theme_counts} - set(themes))
        if unknown:
            raise ValueError(f"counts for unknown themes: {unknown}")
    return term_stats(theme_counts, totals, **kwargs)


def _covered(stat: TermStat, themes: dict[str, dict[str, frozenset[str]]]) -> bool:
    words = set(_norm(stat.term).split()) | {_norm(stat.term)}
    return any(words & by_lang.get(_norm(stat.lang), frozenset()) for by_lang in themes.values())


def suggested_themes(stats: list[TermStat], themes: Mapping[str, Mapping[str, Iterable[str]]]) -> list[TermStat]:
    """Significant terms no theme covers, in the order of ``stats``. A term is covered when it — or, for a
    bigram, any of its words — is a lemma of some theme in the term's language."""
    normalized = normalize_themes(themes)
    return [s for s in stats if s.significant and not _covered(s, normalized)]


# --- examples ------------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def _jaccard(x: frozenset[str], y: frozenset[str]) -> float:
    union = x | y
    return 1.0 if not union else len(x & y) / len(union)


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def pick_examples(comments: list[tuple[str, int]], k: int = 3, max_chars: int = EXAMPLE_MAX_CHARS) -> list[str]:
    """Up to ``k`` example comments, newest first (sorted by the timestamp, ties keep the given order).

    The comments must already be masked (this function does not mask). Whitespace is collapsed; a comment is
    skipped when it is empty or a near-duplicate of one already chosen: Jaccard similarity of their word sets
    (NFC + casefolded \\w+ tokens) ≥ 0.8. Each is cut to ``max_chars`` characters (at a word boundary when one
    is in the second half, ending with "…"). Rendering must still escape them."""
    chosen: list[str] = []
    chosen_words: list[frozenset[str]] = []
    for text, _ in sorted(comments, key=lambda item: -item[1]):
        if len(chosen) >= k:
            break
        clean = " ".join(text.split())
        if not clean:
            continue
        words = frozenset(_WORD.findall(_norm(clean)))
        if any(_jaccard(words, w) >= NEAR_DUPLICATE_JACCARD for w in chosen_words):
            continue
        chosen.append(_truncate(clean, max_chars))
        chosen_words.append(words)
    return chosen
