"""Terms read side (sinks.terms) on real embedded ClickHouse: the counts behind the statistics are checked
against a plain Python count of the records (the oracle), the statistics' behaviour on a planted complaint."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from sinks import rollup
from sinks.terms import TermQuery, terms, themes
from tests.test_clickhouse import D, H, T0, insert_responses, response
from tests.test_rollup import edit

NOW = T0 + 10 * D
PERIOD = dict(since=T0 + 5 * D, until=T0 + 10 * D)


def answer(rid: str, score: int, at, words: list[str], comment: str | None = None, lang="fi", location="Oulu",
           respondent="", **extra):
    return response(rid, score, at=at, segment={"location": location}, lang=lang if words else "", terms=words,
                    comment=comment if comment is not None else (" ".join(words) or None), respondent=respondent,
                    **extra)


def dataset(seed: int = 7) -> list[dict]:
    """200 answers with text in the period (60 detractors, 40 passives, 100 promoters), the complaint "lasku"
    planted among detractors, "palvelu" used by a third of every category, a name used by one respondent only,
    100 promoters without text; 100 answers with text in the previous period, none with "lasku"."""
    rng = random.Random(seed)
    out = []
    scores = [rng.randrange(0, 7) for _ in range(60)] + [7, 8] * 20 + [9, 10] * 50
    for i, score in enumerate(scores):
        words = ["hyvä"] if score >= 9 else []
        if (score <= 6 and i < 30) or i in (150, 151, 152):
            words.append("lasku")
        if i % 3 == 0:
            words.append("palvelu")
        if i in range(40, 52):
            words.append("matti")  # twelve detractors' answers, one person: never shown
        words = words or ["kiitos"]
        at = T0 + 5 * D + timedelta(minutes=rng.randrange(5 * 24 * 60))
        out.append(answer(f"r{i}", score, at, words, respondent="k-matti" if "matti" in words else f"k{i}"))
    out += [answer(f"q{i}", 10, T0 + 6 * D + i * H, []) for i in range(100)]  # no text: not in the population
    out += [answer(f"old{i}", rng.randrange(11), T0 + i * H, ["palvelu"] if i % 3 == 0 else ["kiitos"])
            for i in range(100)]
    return out


def oracle(records, term: str) -> dict:
    chosen = [r for r in records if term in r["terms"] and T0 + 5 * D <= r["responded_at"] < T0 + 10 * D]
    cats = Counter(r["category"] for r in chosen)
    return {"responses": len(chosen), "detractors": cats["detractor"], "passives": cats["passive"],
            "promoters": cats["promoter"]}


@pytest.fixture
def store(ch_store):
    rollup.apply_view(ch_store, margin_seconds=0)
    return ch_store


def test_a_planted_complaint_comes_first_with_exact_counts_and_a_name_never_shows(store):
    records = dataset()
    insert_responses(store, records)
    result = terms(store, TermQuery(**PERIOD), now=NOW)
    by_term = {e["term"]: e for e in result["terms"]}
    assert result["slices"] == [{"slice": "all", "responses": 200, "promoters": 100, "passives": 40,
                                 "detractors": 60}]
    first = result["terms"][0]
    assert first["term"] == "lasku" and first["lang"] == "fi"
    assert {k: first[k] for k in ("responses", "detractors", "passives", "promoters")} == oracle(records, "lasku")
    assert first["significant"] and first["lift"] > 1 and first["lift_ci95"][0] > 1 and first["impact"] < 0
    assert first["new"] is True  # no "lasku" among the 100 answers with text of the previous periods
    palvelu = by_term["palvelu"]
    assert {k: palvelu[k] for k in ("responses", "detractors", "passives", "promoters")} == oracle(records, "palvelu")
    assert not palvelu["significant"] and palvelu["new"] is False
    assert oracle(records, "matti")["detractors"] == 12 and "matti" not in by_term  # one respondent
    assert "hyvä" not in by_term  # promoters' word: fewer than 5 detractors name it
    assert all(len(e["examples"]) <= 3 for e in result["terms"])


def test_each_language_is_compared_with_its_own_answers(store):
    """Finnish answers here are far less happy than Swedish ones: a word Finns use as often whatever their score
    must not look like a complaint just because Finnish answers hold more detractors than Swedish ones."""
    at = lambda i: T0 + 6 * D + i * H  # noqa: E731
    records = []
    for i in range(100):  # fi: 50 detractors, 50 promoters; "palvelu" in 40, in the same 50/50 mix
        records.append(answer(f"fi{i}", 2 if i % 2 else 10, at(i), ["palvelu"] if i < 40 else ["kiitos"],
                              respondent=f"f{i}"))
    for i in range(100):  # sv: 10 detractors, 90 promoters
        records.append(answer(f"sv{i}", 2 if i < 10 else 10, at(i), ["tack"], lang="sv", respondent=f"s{i}"))
    insert_responses(store, records)
    palvelu = next(e for e in terms(store, TermQuery(**PERIOD), now=NOW)["terms"] if e["term"] == "palvelu")
    # within Finnish: 20 of 40 with it vs 30 of 60 without — no difference at all
    assert palvelu["lift"] == pytest.approx(1.0) and not palvelu["significant"] and palvelu["p_value"] > 0.3
    assert palvelu["impact"] == pytest.approx(0.0)


def test_examples_are_recent_masked_comments_without_near_duplicates(store):
    at = lambda i: T0 + 6 * D + i * H  # noqa: E731
    records = [answer(f"d{i}", 2, at(i), ["lasku", "väärä"], comment=f"Lasku oli väärä, soittakaa [phone] {'!' * (i % 2)}")
               for i in range(8)]
    records += [answer("d8", 1, at(20), ["lasku"], comment="Laskussa virhe taas"),
                answer("d9", 0, at(21), ["lasku"], comment="Kallis lasku ja huono palvelu")]
    records += [answer(f"p{i}", 10, at(i), ["hyvä"], respondent=f"p{i}") for i in range(10)]
    records += [answer("p-newest", 10, at(30), ["lasku", "hyvä"], comment="Lasku tuli ajallaan, hyvä")]  # praise
    records += [answer("f-only", 3, at(25), ["lasku", "kallis"], comment="", follow_up="Lasku on liian kallis")]
    insert_responses(store, records)
    result = terms(store, TermQuery(**PERIOD, min_count=5, min_category=5), now=NOW)
    lasku = next(e for e in result["terms"] if e["term"] == "lasku")
    # detractors' texts only, newest first (a follow-up answer is one); the eight "Lasku oli väärä …" comments
    # differ only in "!": the newest of them is kept
    assert lasku["examples"] == ["Lasku on liian kallis", "Kallis lasku ja huono palvelu", "Laskussa virhe taas"]
    more = terms(store, TermQuery(**PERIOD, min_count=5, min_category=5, examples=5), now=NOW)
    assert next(e for e in more["terms"] if e["term"] == "lasku")["examples"][3:] == [
        "Lasku oli väärä, soittakaa [phone] !"]


def test_slices_by_location_and_language_filter(store):
    records = []
    for loc, n_complaints in (("Oulu", 20), ("Turku", 0)):
        for i in range(40):
            complaint = i < n_complaints
            records.append(answer(f"{loc}{i}", 2 if complaint or i % 4 == 0 else 10, T0 + 6 * D + i * H,
                                  ["lasku"] if complaint else ["kiitos"], location=loc))
    records += [answer(f"sv{i}", 1, T0 + 7 * D + i * H, ["faktura"], lang="sv", location="Oulu") for i in range(12)]
    insert_responses(store, records)
    result = terms(store, TermQuery(**PERIOD, by="location"), now=NOW)
    assert [s["slice"] for s in result["slices"]] == ["Oulu", "Turku"]  # most answers with text first
    assert result["slices"][0]["responses"] == 52
    oulu = [e for e in result["terms"] if e["location"] == "Oulu"]
    assert oulu[0]["term"] == "lasku" and oulu[0]["responses"] == 20
    assert not [e for e in result["terms"] if e["location"] == "Turku" and e["term"] == "lasku"]
    finnish = terms(store, TermQuery(**PERIOD, lang="FI"), now=NOW)  # a language code as people write it
    assert finnish["slices"][0]["responses"] == 80 and {e["lang"] for e in finnish["terms"]} == {"fi"}
    swedish = terms(store, TermQuery(**PERIOD, lang="sv", min_count=5), now=NOW)
    assert swedish["slices"][0]["responses"] == 12 and "lasku" not in {e["term"] for e in swedish["terms"]}


def test_an_edit_that_drops_a_word_drops_it_from_the_counts(store):
    records = [answer(f"d{i}", 1, T0 + 6 * D + i * H, ["lasku"]) for i in range(12)]
    records += [answer(f"p{i}", 10, T0 + 6 * D + i * H, ["kiitos"]) for i in range(12)]
    insert_responses(store, records)
    before = {e["term"]: e for e in terms(store, TermQuery(**PERIOD), now=NOW)["terms"]}
    assert before["lasku"]["responses"] == 12
    edited = edit(records[0], 9, T0 + 8 * D, terms=["kiitos"], comment="kiitos")
    insert_responses(store, [edited], first_offset=100)
    after = {e["term"]: e for e in terms(store, TermQuery(**PERIOD), now=NOW)["terms"]}
    assert after["lasku"]["responses"] == 11 and after["lasku"]["detractors"] == 11
    rollup.refresh(store, quiet_seconds=0, margin_seconds=0)  # the same from the rollup
    assert {e["term"]: e["responses"] for e in terms(store, TermQuery(**PERIOD), now=NOW)["terms"]} == \
        {t: e["responses"] for t, e in after.items()}


def test_bad_queries_are_refused(store):
    for bad in (dict(by="loc;drop"), dict(category="angry"), dict(lang="f'i"), dict(lang="de"), dict(limit=0),
                dict(since=NOW, until=NOW - D)):
        with pytest.raises(ValueError):
            terms(store, TermQuery(**bad), now=NOW)


def test_themes_count_an_answer_once_and_suggest_uncovered_terms(store):
    at = lambda i: T0 + 6 * D + i * H  # noqa: E731
    records = [answer(f"a{i}", 1, at(i), ["lasku", "laskutus"] if i % 2 else ["lasku"]) for i in range(10)]
    records += [answer(f"s{i}", 2, at(i), ["faktura"], lang="sv") for i in range(6)]
    records += [answer(f"k{i}", 3, at(i), ["kö"], lang="sv") for i in range(8)]  # no theme covers it
    records += [answer(f"p{i}", 10, at(i), ["kiitos"]) for i in range(40)]
    records += [answer(f"t{i}", 10, at(i), ["tack"], lang="sv") for i in range(20)]  # Swedish answers to compare with
    insert_responses(store, records)
    config = {"Invoicing": {"fi": ["lasku", "laskutus"], "sv": ["faktura"]}, "Queues": {"en": ["queue"]}}
    result = themes(store, TermQuery(**PERIOD, min_count=5, min_category=5), config, now=NOW)
    invoicing = next(e for e in result["themes"] if e["theme"] == "Invoicing")
    assert (invoicing["responses"], invoicing["detractors"], invoicing["lang"]) == (16, 16, "*")  # 10 + 6, once each
    assert invoicing["significant"] and invoicing["impact"] < 0
    assert "Queues" not in {e["theme"] for e in result["themes"]}  # named by nobody
    assert [s["term"] for s in result["suggested"]] == ["kö"]
    assert result["slices"][0]["responses"] == 84
    with pytest.raises(ValueError):
        themes(store, TermQuery(**PERIOD), {"Bad": ["not", "a", "mapping"]}, now=NOW)
