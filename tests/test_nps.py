import math

import pytest

from streams.nps import Band, Category, adjusted_wald_ci, band, classify, nps_score, summarize, variance


@pytest.mark.parametrize(
    "score,expected",
    [(0, Category.DETRACTOR), (6, Category.DETRACTOR), (7, Category.PASSIVE), (8, Category.PASSIVE),
     (9, Category.PROMOTER), (10, Category.PROMOTER)],
)
def test_classify_boundaries(score, expected):
    assert classify(score) is expected


@pytest.mark.parametrize("bad", [-1, 11, 7.5, "9", True, None])
def test_classify_rejects_non_scores(bad):
    with pytest.raises(ValueError):
        classify(bad)


def test_oracle_nine_promoters_two_detractors():
    s = summarize(9, 0, 2).as_dict()
    assert s == {"responses": 11, "promoters": 9, "passives": 0, "detractors": 2, "nps": 63.64,
                 "ci95": [8.0, 92.0], "band": "excellent"}


def test_oracle_negative():
    s = summarize(1, 2, 3).as_dict()
    assert s["nps"] == -33.33
    assert s["ci95"] == [-71.19, 26.74]
    assert s["band"] == "needs_improvement"


def test_interval_formula_by_hand():
    P, Pa, D = 40, 35, 25
    n1 = P + Pa + D + 3
    p, d = (P + 0.75) / n1, (D + 0.75) / n1
    se = math.sqrt((p + d - (p - d) ** 2) / n1)
    lo, hi = adjusted_wald_ci(P, Pa, D)
    assert lo == pytest.approx(100 * (p - d - 1.96 * se))
    assert hi == pytest.approx(100 * (p - d + 1.96 * se))
    assert lo < nps_score(P, Pa, D) < hi


def test_interval_is_clipped():
    lo, hi = adjusted_wald_ci(1000, 0, 0)
    assert hi == 100.0 and lo < 100
    lo, hi = adjusted_wald_ci(0, 0, 1000)
    assert lo == -100.0 and hi > -100
    lo, hi = adjusted_wald_ci(0, 0, 0)
    assert -100 <= lo < 0 < hi <= 100


def test_empty_has_no_nps_or_band():
    s = summarize(0, 0, 0).as_dict()
    assert s["nps"] is None and s["band"] is None and s["responses"] == 0


@pytest.mark.parametrize(
    "value,expected",
    [(-0.01, Band.NEEDS_IMPROVEMENT), (0, Band.GOOD), (49.99, Band.GOOD), (50, Band.EXCELLENT),
     (69.99, Band.EXCELLENT), (70, Band.WORLD_CLASS), (100, Band.WORLD_CLASS), (-100, Band.NEEDS_IMPROVEMENT)],
)
def test_bands(value, expected):
    assert band(value) is expected


def test_variance_matches_definition():
    assert variance(5, 0, 5) == pytest.approx(1.0)
    assert variance(0, 10, 0) == 0.0
    assert variance(3, 3, 4) == pytest.approx(0.3 + 0.4 - (0.3 - 0.4) ** 2)


# z by hand with the adjusted-Wald estimates p' = (P+.75)/(n+3), d' = (D+.75)/(n+3), var p'+d'-(p'-d')² over n+3
@pytest.mark.parametrize("current,previous,change,z,significant", [
    ((9, 0, 2), (1, 2, 3), 96.97, 2.194, True),      # 0.5 vs −0.2222: 0.7222 / sqrt(0.045918 + 0.062414)
    ((30, 40, 30), (35, 40, 25), -10.0, -0.905, False),  # 0 vs 0.0971: −0.0971 / sqrt(0.005797 + 0.005705)
    ((5, 0, 0), (0, 0, 5), 200.0, 3.849, True),     # 0.625 vs −0.625: 1.25 / sqrt(2 × 0.052734)
    ((1, 0, 0), (0, 0, 1), 200.0, 0.943, False),    # one answer each: far from significant
    ((5, 0, 0), (5, 0, 0), 0.0, 0.0, False),
    ((1, 0, 0), (0, 0, 0), None, None, False),      # an empty period: nothing to compare
])
def test_period_over_period_change_and_its_significance(current, previous, change, z, significant):
    from streams.nps import compare

    assert compare(current, previous) == {"change": change, "z": z, "significant": significant}
