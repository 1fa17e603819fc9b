"""streams.termstats against independent computations: scipy (Fisher, binomial, BH, Katz relative risk) as the
oracle, NPS impacts recomputed by brute force from lists of scores, and a seeded synthetic slice per language."""

import ast
import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.stats.contingency import relative_risk

from streams import termstats as ts
from streams.nps import adjusted_wald_ci, classify
from streams.termstats import SliceTotals, TermCounts

Z = 1.959963984540054
REL = 1e-6  # lgamma of counts in the millions carries ~1e-9 relative error into the p-values


def close(ours: float, oracle: float, rel: float = REL) -> bool:
    return math.isclose(ours, oracle, rel_tol=rel, abs_tol=1e-300)


# --- a slice of responses, counted per response like the ClickHouse query --------------------------------------


@dataclass(frozen=True)
class Resp:
    score: int
    respondent: str
    terms: frozenset
    lang: str = "sv"


def nps_of(scores: list[int]) -> float | None:
    """NPS recomputed from raw scores, independently of streams.nps.nps_score."""
    if not scores:
        return None
    return 100.0 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / len(scores)


def count_slice(responses: list[Resp]) -> tuple[list[TermCounts], SliceTotals]:
    cats = Counter(classify(r.score).value for r in responses)
    totals = SliceTotals(len(responses), cats["promoter"], cats["passive"], cats["detractor"])
    per: dict[tuple[str, str], Counter] = defaultdict(Counter)
    people: dict[tuple[str, str], set] = defaultdict(set)
    for r in responses:
        for term in r.terms:  # a set: a response counts once per term
            per[(term, r.lang)][classify(r.score).value] += 1
            people[(term, r.lang)].add(r.respondent)
    terms = [TermCounts(term, lang, sum(c.values()), c["promoter"], c["passive"], c["detractor"],
                        len(people[(term, lang)])) for (term, lang), c in per.items()]
    return terms, totals


def table_of(term: TermCounts, totals: SliceTotals) -> list[list[int]]:
    a = term.detractors
    c = totals.detractors - a
    return [[a, term.responses - a], [c, totals.responses - term.responses - c]]


# --- Fisher exact, one-sided ------------------------------------------------------------------------------------

TABLES = [
    (10, 5, 20, 100), (0, 0, 0, 0), (0, 5, 7, 9), (5, 0, 0, 5), (3, 3, 3, 3), (1, 0, 0, 0), (12, 0, 40, 0),
    (100, 900, 5000, 94000), (3000, 2000, 200000, 800000), (1, 2000, 200000, 800000), (7, 1, 2, 9),
    (250000, 250000, 750000, 750000), (40, 60, 400, 1_500_000),
]


@pytest.mark.parametrize("a,b,c,d", TABLES)
def test_fisher_matches_scipy(a, b, c, d):
    oracle = sps.fisher_exact([[a, b], [c, d]], alternative="greater").pvalue
    assert close(ts.fisher_greater(a, b, c, d), oracle)


small = st.integers(0, 60)
large = st.integers(0, 3_000_000)


@settings(max_examples=400, deadline=None)
@given(small, small, small, small)
def test_fisher_small_tables_property(a, b, c, d):
    oracle = sps.fisher_exact([[a, b], [c, d]], alternative="greater").pvalue
    assert close(ts.fisher_greater(a, b, c, d), oracle)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 30_000), large, large)
def test_fisher_large_tables_property(a, b, c, d):
    oracle = sps.fisher_exact([[a, b], [c, d]], alternative="greater").pvalue
    assert close(ts.fisher_greater(a, b, c, d), oracle)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000))
def test_hypergeom_tail_is_a_probability_and_monotone(a, b, c, d):
    p = ts.fisher_greater(a, b, c, d)
    assert 0.0 <= p <= 1.0
    if b > 0 and c > 0:  # moving one response from b to a (and one from c to d) makes the table more extreme
        assert ts.fisher_greater(a + 1, b - 1, c - 1, d + 1) <= p * (1 + 1e-9)


def test_fisher_is_fast_on_millions():
    import time
    start = time.perf_counter()
    for a in (500, 1500, 2500, 3500):
        ts.fisher_greater(a, 5000 - a, 1_000_000, 3_000_000)
    assert time.perf_counter() - start < 2.0


# --- conditional binomial (rising) ------------------------------------------------------------------------------


@pytest.mark.parametrize("k,n,p", [(12, 20, 0.3), (0, 5, 0.5), (5, 5, 0.5), (3, 10, 0.0), (3, 10, 1.0),
                                   (900, 1000, 0.85), (10, 10, 0.5), (40_000, 100_000, 0.399)])
def test_binom_sf_matches_scipy(k, n, p):
    assert close(ts.binom_sf(k, n, p), sps.binomtest(k, n, p, alternative="greater").pvalue)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2000), st.integers(0, 2000), st.integers(1, 1_000_000), st.integers(1, 1_000_000))
def test_rising_matches_scipy_binomtest(k1, k0, n1, n0):
    k1, k0 = min(k1, n1), min(k0, n0)
    if k0 + k1 == 0:
        assert ts.rising_p_value(k1, n1, k0, n0) == 1.0
        return
    oracle = sps.binomtest(k1, k0 + k1, n1 / (n0 + n1), alternative="greater").pvalue
    assert close(ts.rising_p_value(k1, n1, k0, n0), oracle)


# --- Benjamini–Hochberg ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.01, 0.05, 1.0])), min_size=1,
                max_size=60))
def test_bh_matches_scipy(p_values):
    ours = ts.bh_adjust(p_values)
    oracle = sps.false_discovery_control(p_values, method="bh")
    assert all(math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15) for x, y in zip(ours, oracle))
    ranked = sorted(zip(p_values, ours))
    assert all(q1 <= q2 for (_, q1), (_, q2) in zip(ranked, ranked[1:]))  # monotone in p
    assert all(p <= q * (1 + 1e-12) and q <= 1.0 for p, q in zip(p_values, ours))  # q >= p up to rounding


def test_bh_empty():
    assert ts.bh_adjust([]) == []


# --- lift: relative risk with Katz's interval --------------------------------------------------------------------


def test_katz_by_hand():
    # 20 of 50 responses with the term are detractors, 40 of 200 without: RR = 0.4 / 0.2 = 2
    # SE(ln RR) = sqrt(1/20 - 1/50 + 1/40 - 1/200) = sqrt(0.05); interval 2·exp(±1.96·0.2236)
    rr, (lo, hi) = ts.lift_katz(20, 30, 40, 160)
    assert rr == pytest.approx(2.0)
    assert lo == pytest.approx(2 * math.exp(-Z * math.sqrt(0.05)))
    assert hi == pytest.approx(2 * math.exp(Z * math.sqrt(0.05)))
    assert (round(lo, 4), round(hi, 4)) == (1.2903, 3.1)  # exp(0.4383) = 1.5500


def test_katz_zero_cell_adds_half_to_every_cell():
    # a=5, b=0, c=10, d=85 -> 5.5, 0.5, 10.5, 85.5: RR = (5.5/6) / (10.5/96) = 8.38095...
    rr, (lo, hi) = ts.lift_katz(5, 0, 10, 85)
    assert rr == pytest.approx((5.5 / 6) / (10.5 / 96))
    se = math.sqrt(1 / 5.5 - 1 / 6 + 1 / 10.5 - 1 / 96)
    assert (lo, hi) == pytest.approx((rr * math.exp(-Z * se), rr * math.exp(Z * se)))
    rr0, (lo0, hi0) = ts.lift_katz(0, 20, 30, 50)  # no detractor with the term: finite, below 1
    assert rr0 == pytest.approx((0.5 / 21) / (30.5 / 81)) and lo0 < rr0 < hi0 < 1


def test_katz_undefined_without_a_comparison_group():
    assert ts.lift_katz(0, 0, 5, 5) is None
    assert ts.lift_katz(5, 5, 0, 0) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 5000), st.integers(1, 50_000), st.integers(0, 50_000))
def test_katz_matches_scipy_relative_risk(a, b, c, d):
    if 0 in (b, d):
        return  # the corrected tables are checked by hand above
    oracle = relative_risk(a, a + b, c, c + d)
    ci = oracle.confidence_interval(confidence_level=0.95)
    rr, (lo, hi) = ts.lift_katz(a, b, c, d)
    assert rr == pytest.approx(oracle.relative_risk, rel=1e-12)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-9)


# --- NPS impact by brute force -----------------------------------------------------------------------------------

responses_st = st.lists(st.tuples(st.integers(0, 10), st.booleans()), min_size=1, max_size=80)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses_st)
def test_impact_by_brute_force(rows):
    slice_ = [Resp(score, f"r{i}", frozenset({"x"} if has else set())) for i, (score, has) in enumerate(rows)]
    terms, totals = count_slice(slice_)
    if not terms:
        return
    term = terms[0]
    all_scores = [s for s, _ in rows]
    without = [s for s, has in rows if not has]
    expected = None if not without else nps_of(all_scores) - nps_of(without)
    got = ts.nps_impact(term, totals)
    assert (got is None) == (expected is None)
    if expected is not None:
        assert got == pytest.approx(expected, abs=1e-9)
    as_passives = [7 if has and s <= 6 else s for s, has in rows]
    assert ts.impact_if_passive(term, totals) == pytest.approx(nps_of(as_passives) - nps_of(all_scores), abs=1e-9)


def test_complaint_has_negative_impact():
    # 100 responses: 50 promoters, 20 passives, 30 detractors (NPS 20); the term is in 20 detractors' answers
    term = TermCounts("faktura", "sv", 20, 0, 0, 20, 20)
    totals = SliceTotals(100, 50, 20, 30)
    assert ts.nps_impact(term, totals) == pytest.approx(20 - 100 * (50 - 10) / 80)  # 20 - 50 = -30
    assert ts.impact_if_passive(term, totals) == pytest.approx(20.0)


# --- term_stats on whole slices ----------------------------------------------------------------------------------


def random_slice(rng: random.Random, n: int, vocab: int = 12) -> list[Resp]:
    out = []
    for i in range(n):
        score = rng.randint(0, 10)
        bias = 0.5 if score <= 6 else 0.15  # a few words lean towards detractors
        words = {f"w{j}" for j in range(vocab) if rng.random() < (bias if j < 3 else 0.25)}
        out.append(Resp(score, f"p{rng.randint(0, n // 2)}", frozenset(words)))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_every_field_against_the_oracles(seed):
    rng = random.Random(seed)
    slice_ = random_slice(rng, rng.randint(60, 600))
    terms, totals = count_slice(slice_)
    stats = ts.term_stats(terms, totals, min_responses=10, min_detractors=5, min_respondents=3)
    by_term = {t.term: t for t in terms}
    tested = [t for t in terms if t.responses >= 10 and t.detractors >= 5 and t.respondents >= 3]
    assert {s.term for s in stats} == {t.term for t in tested}
    fisher = {t.term: sps.fisher_exact(table_of(t, totals), alternative="greater").pvalue for t in tested}
    names = sorted(fisher)
    q_oracle = dict(zip(names, sps.false_discovery_control([fisher[n] for n in names], method="bh")))
    for s in stats:
        t = by_term[s.term]
        scores = [r.score for r in slice_ if s.term in r.terms]
        rest = [r.score for r in slice_ if s.term not in r.terms]
        assert s.nps == pytest.approx(nps_of(scores))
        assert s.nps_ci95 == adjusted_wald_ci(t.promoters, t.passives, t.detractors)
        assert close(s.p_value, fisher[s.term]) and close(s.q_value, q_oracle[s.term], 1e-9)
        assert s.significant == (s.q_value <= 0.05)
        assert s.impact == pytest.approx(nps_of(scores + rest) - nps_of(rest))
        (a, b), (c, d) = table_of(t, totals)
        rr = relative_risk(a, a + b, c, c + d)
        assert s.lift == pytest.approx(rr.relative_risk)
        ci = rr.confidence_interval(0.95)
        assert s.lift_ci95 == pytest.approx((ci.low, ci.high))
        assert s.rising_p is None and s.new is False


def test_sorting_is_deterministic_and_documented():
    rng = random.Random(7)
    terms, totals = count_slice(random_slice(rng, 800))
    stats = ts.term_stats(terms, totals)
    for _ in range(5):
        rng.shuffle(terms)
        assert ts.term_stats(terms, totals) == stats
    keys = [(not s.significant, s.impact, -s.responses, s.term) for s in stats]
    assert keys == sorted(keys)
    assert stats[0].significant


def test_promoter_category_sorts_most_positive_impact_first():
    rng = random.Random(3)
    slice_ = [Resp(r.score, r.respondent, r.terms | ({"snabb"} if r.score >= 9 and rng.random() < 0.5 else set()))
              for r in random_slice(rng, 600)]
    terms, totals = count_slice(slice_)
    stats = ts.term_stats(terms, totals, category="promoter")
    assert stats[0].term == "snabb" and stats[0].significant and stats[0].impact > 0 and stats[0].lift > 1
    promoter_table = [[60, 40], [100, 400]]
    oracle = sps.fisher_exact(promoter_table, alternative="greater").pvalue
    t = TermCounts("x", "sv", 100, 60, 30, 10, 100)
    s, = ts.term_stats([t], SliceTotals(600, 160, 200, 240), category="promoter")
    assert close(s.p_value, oracle)


# --- seeded synthetic dataset per language ------------------------------------------------------------------------

PLANTED = {"sv": ("faktura", "och"), "da": ("regning", "og"), "nb": ("faktura", "og"), "fi": ("lasku", "ja"),
           "en": ("invoice", "and")}


def synthetic_slice(lang: str, seed: int) -> list[Resp]:
    """1500 responses from 600 respondents; a complaint mostly in detractors' answers, a word everyone uses as
    often, filler words, one talkative respondent with a word of their own, and a rare detractor word."""
    complaint, common = PLANTED[lang]
    rng = random.Random(seed)
    out = []
    for i in range(1500):
        score = rng.choices(range(11), weights=[2, 1, 1, 2, 2, 3, 4, 8, 10, 14, 12])[0]
        words = {f"{lang}{j}" for j in range(20) if rng.random() < 0.08}
        if rng.random() < (0.35 if score <= 6 else 0.03):
            words.add(complaint)
        if rng.random() < 0.4:
            words.add(common)
        out.append(Resp(score, f"p{rng.randrange(600)}", frozenset(words), lang))
    for k in range(15):  # one person, many answers, always the same name: must never surface
        out.append(Resp(0, "talkative", frozenset({"svensson", complaint}), lang))
    for k in range(4):  # four detractors only: below min_detractors
        out.append(Resp(2, f"rare{k}", frozenset({"sällsynt"}), lang))
    return out


@pytest.mark.parametrize("seed,lang", list(enumerate(PLANTED)))
def test_planted_complaint_comes_first(seed, lang):
    complaint, common = PLANTED[lang]
    terms, totals = count_slice(synthetic_slice(lang, seed))
    stats = ts.term_stats(terms, totals)
    top = stats[0]
    assert top.term == complaint and top.lang == lang
    assert top.significant and top.q_value < 1e-6
    assert top.lift > 1 and top.lift_ci95[0] > 1
    assert top.impact < 0 and top.impact_if_passive > 0
    word = next(s for s in stats if s.term == common)
    assert not word.significant and word.lift_ci95[0] < 1 < word.lift_ci95[1]
    shown = {s.term for s in stats}
    assert "svensson" not in shown and "sällsynt" not in shown
    assert all(s.responses >= 10 and s.detractors >= 5 for s in stats)


def test_min_counts_never_let_one_persons_words_through():
    terms = [TermCounts("name", "sv", 40, 0, 0, 40, 1), TermCounts("pair", "sv", 40, 0, 0, 40, 2),
             TermCounts("few", "sv", 9, 0, 0, 9, 9), TermCounts("calm", "sv", 30, 26, 0, 4, 30),
             TermCounts("ok", "sv", 10, 0, 5, 5, 3)]
    stats = ts.term_stats(terms, SliceTotals(200, 100, 50, 50))
    assert [s.term for s in stats] == ["ok"]
    assert stats[0].q_value == stats[0].p_value  # a family of one


# --- edge cases --------------------------------------------------------------------------------------------------


def test_empty_slice():
    assert ts.term_stats([], SliceTotals(0, 0, 0, 0)) == []
    assert ts.term_stats([TermCounts("x", "sv", 0, 0, 0, 0, 0)], SliceTotals(0, 0, 0, 0), min_responses=0,
                         min_detractors=0, min_respondents=0) == []


def test_term_in_every_response():
    totals = SliceTotals(50, 20, 10, 20)
    s, = ts.term_stats([TermCounts("allt", "sv", 50, 20, 10, 20, 40)], totals)
    assert s.p_value == 1.0 and not s.significant
    assert s.lift is None and s.lift_ci95 is None and s.impact is None
    assert s.nps == pytest.approx(0.0) and s.impact_if_passive == pytest.approx(40.0)
    json.dumps(s.as_dict(), allow_nan=False)


def test_all_detractors():
    totals = SliceTotals(100, 0, 0, 100)
    s, = ts.term_stats([TermCounts("dålig", "sv", 30, 0, 0, 30, 30)], totals)
    assert s.p_value == 1.0 and not s.significant
    assert s.impact == pytest.approx(0.0) and s.impact_if_passive == pytest.approx(30.0)
    assert s.nps == -100.0
    assert s.lift == pytest.approx((30.5 / 31) / (70.5 / 71))  # b = d = 0: corrected
    assert s.lift_ci95[0] < 1 < s.lift_ci95[1]


def test_no_detractor_in_the_slice_is_tested_only_without_the_minimum():
    totals = SliceTotals(100, 60, 40, 0)
    term = TermCounts("bra", "sv", 30, 20, 10, 0, 30)
    assert ts.term_stats([term], totals) == []
    s, = ts.term_stats([term], totals, min_detractors=0)
    assert s.p_value == 1.0 and s.lift is not None and math.isfinite(s.lift)


@pytest.mark.parametrize("term,totals", [
    (TermCounts("x", "sv", 10, 5, 0, 4, 3), SliceTotals(100, 50, 20, 30)),  # parts don't sum
    (TermCounts("x", "sv", 10, 0, 0, 10, 11), SliceTotals(100, 50, 20, 30)),  # more respondents than responses
    (TermCounts("x", "sv", 40, 0, 0, 40, 3), SliceTotals(100, 50, 20, 30)),  # more detractors than the slice
    (TermCounts("x", "sv", 10, 0, 0, 10, 3), SliceTotals(100, 50, 20, 29)),  # totals don't sum
])
def test_inconsistent_counts_raise(term, totals):
    with pytest.raises(ValueError):
        ts.term_stats([term], totals)


def test_duplicates_and_unknown_category_raise():
    t = TermCounts("x", "sv", 10, 0, 0, 10, 3)
    with pytest.raises(ValueError):
        ts.term_stats([t, t], SliceTotals(100, 50, 20, 30))
    with pytest.raises(ValueError):
        ts.term_stats([t], SliceTotals(100, 50, 20, 30), category="angry")


def test_as_dict_keys_and_json():
    terms, totals = count_slice(synthetic_slice("fi", 1))
    stats = ts.term_stats(terms, totals, previous={"lasku": (3, 900)})
    d = stats[0].as_dict()
    assert list(d) == ["term", "lang", "responses", "detractors", "passives", "promoters", "nps", "nps_ci95",
                       "lift", "lift_ci95", "p_value", "q_value", "impact", "impact_if_passive", "new",
                       "rising_p", "significant"]
    json.loads(json.dumps([s.as_dict() for s in stats], allow_nan=False))


# --- new / rising ------------------------------------------------------------------------------------------------


def test_rising_against_scipy_and_new_definition():
    totals = SliceTotals(1000, 500, 200, 300)
    terms = [TermCounts("ny", "sv", 60, 5, 5, 50, 60),       # absent before: k0 = 0 out of 2000
             TermCounts("gammal", "sv", 60, 5, 5, 50, 60),   # 110 of 2000 before: not rising
             TermCounts("ökar", "sv", 60, 5, 5, 50, 60),     # 40 of 2000 before: rising, not new
             TermCounts("tunn", "sv", 12, 2, 3, 7, 12)]      # absent before, few now: still a significant rise
    previous = {"gammal": (110, 2000), "ökar": (40, 2000)}
    stats = {s.term: s for s in ts.term_stats(terms, totals, previous=previous)}
    for name, k0 in (("ny", 0), ("gammal", 110), ("ökar", 40), ("tunn", 0)):
        k1 = stats[name].responses
        oracle = sps.binomtest(k1, k0 + k1, 1000 / 3000, alternative="greater").pvalue
        assert close(stats[name].rising_p, oracle)
    rising_q = dict(zip(stats, sps.false_discovery_control([s.rising_p for s in stats.values()], method="bh")))
    for name, s in stats.items():
        k0 = previous.get(name, (0, 0))[0]
        assert s.new == (k0 == 0 and rising_q[name] <= 0.05)
    assert stats["ny"].new and not stats["ökar"].new and not stats["gammal"].new
    assert stats["tunn"].new  # (1/3)^12 ≈ 1.9e-6: twelve answers where none were is a real rise


def test_rising_lookup_rules():
    totals = SliceTotals(500, 200, 100, 200)
    t_sv = TermCounts("service", "sv", 40, 5, 5, 30, 40)
    t_en = TermCounts("service", "en", 40, 5, 5, 30, 40)
    by_lang = {s.lang: s for s in ts.term_stats([t_sv, t_en], totals,
                                                previous={("service", "sv"): (40, 500), "service": (0, 500)})}
    assert by_lang["sv"].rising_p > 0.4 and not by_lang["sv"].new
    assert by_lang["en"].new
    none_before = ts.term_stats([t_sv], totals, previous={"other": (5, 0)})
    assert none_before[0].rising_p is None and not none_before[0].new
    assert ts.term_stats([t_sv], totals, previous={})[0].rising_p is None
    assert ts.term_stats([t_sv], totals, previous={}, previous_total=500)[0].new
    with pytest.raises(ValueError):
        ts.term_stats([t_sv], totals, previous={"a": (1, 500), "b": (1, 600)})


# --- themes ------------------------------------------------------------------------------------------------------

THEMES = {"invoicing": {"sv": ["Faktura", "räkning"], "fi": ["lasku"], "en": ["invoice", "bill"]},
          "staff": {"sv": ["personal"], "en": ["staff"]}}


def test_themes_of_one_response():
    assert ts.themes_of(["faktura", "personal", "bra"], "sv", THEMES) == {"invoicing", "staff"}
    assert ts.themes_of(["lasku"], "sv", THEMES) == set()  # the Finnish lemma does not count in Swedish
    assert ts.themes_of(["LASKU"], "FI", THEMES) == {"invoicing"}


def test_theme_counts_are_per_response_then_term_stats():
    rng = random.Random(11)
    slice_ = []
    for i in range(900):
        score = rng.randint(0, 10)
        words = set()
        if rng.random() < (0.4 if score <= 6 else 0.05):
            words |= {"faktura", "räkning"} if rng.random() < 0.5 else {"faktura"}
        if rng.random() < 0.3:
            words.add("personal")
        slice_.append(Resp(score, f"p{i}", frozenset(words)))
    themed = [Resp(r.score, r.respondent, frozenset(ts.themes_of(r.terms, r.lang, THEMES)), "*") for r in slice_]
    counts, totals = count_slice(themed)
    stats = ts.theme_stats(counts, totals, THEMES)
    inv = next(s for s in stats if s.term == "invoicing")
    assert inv.responses == sum(1 for r in slice_ if r.terms & {"faktura", "räkning"})  # not a sum of lemmas
    assert stats[0].term == "invoicing" and inv.significant and inv.impact < 0
    expected = ts.term_stats(counts, totals)
    assert stats == expected
    with pytest.raises(ValueError):
        ts.theme_stats([TermCounts("billing", "*", 10, 0, 0, 10, 10)], totals, THEMES)


def test_suggested_themes():
    def stat(term, lang, significant):
        return ts.TermStat(term, lang, 20, 15, 3, 2, -65.0, (-80.0, -40.0), 3.0, (2.0, 4.0), 1e-5,
                           1e-4 if significant else 0.5, -5.0, 7.5, False, None, significant)
    stats = [stat("kö", "sv", True), stat("faktura fel", "sv", True), stat("räkning", "sv", True),
             stat("lasku", "sv", True), stat("väntetid", "sv", False), stat("staff", "en", True)]
    assert [s.term for s in ts.suggested_themes(stats, THEMES)] == ["kö", "lasku"]


def test_malformed_themes_raise():
    for bad in ({"x": ["faktura"]}, {"x": {"sv": "faktura"}}, {"x": {"sv": [""]}}):
        with pytest.raises(ValueError):
            ts.normalize_themes(bad)


# --- examples ----------------------------------------------------------------------------------------------------


def test_pick_examples_newest_first_without_near_duplicates():
    comments = [
        ("Fakturan kom  för sent igen", 100),
        ("fakturan kom för sent igen!", 90),          # same words: a near-duplicate
        ("Ingen svarade i telefon", 95),
        ("Fakturan kom för sent igen, och fel belopp", 80),  # 5 of 8 words shared: kept
        ("Bra personal", 70),
        ("   ", 110),
    ]
    assert ts.pick_examples(comments) == ["Fakturan kom för sent igen", "Ingen svarade i telefon",
                                          "Fakturan kom för sent igen, och fel belopp"]
    assert ts.pick_examples(comments, k=1) == ["Fakturan kom för sent igen"]
    assert ts.pick_examples([], k=3) == [] and ts.pick_examples(comments, k=0) == []


def test_pick_examples_truncates():
    long = "ord " * 100
    out, = ts.pick_examples([(long, 1)])
    assert len(out) <= ts.EXAMPLE_MAX_CHARS and out.endswith("ord…")
    one_word = "x" * 500
    assert ts.pick_examples([(one_word, 1)])[0] == "x" * (ts.EXAMPLE_MAX_CHARS - 1) + "…"


def test_jaccard_threshold_is_inclusive():
    base = " ".join(f"w{i}" for i in range(8))
    # 8 shared of 10 in the union: 0.8 -> duplicate; 8 of 11 -> kept
    assert ts.pick_examples([(base, 2), (base + " a b", 1)]) == [base]
    assert len(ts.pick_examples([(base, 2), (base + " a b c", 1)])) == 2


# --- the module stays pure ---------------------------------------------------------------------------------------


def test_module_imports_only_stdlib_and_nps():
    tree = ast.parse(Path(ts.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "math", "re", "unicodedata", "dataclasses", "typing", "streams.nps"}
