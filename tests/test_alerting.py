"""streams.alerting against independent computations: the z and p of the issue's known cases by hand (and scipy's
normal tail), the CUSUM recomputed from raw -1/0/+1 score lists, planted drops and slides in deterministic data,
seeded stationary data for the false alarms, and replays/restarts for exactness."""

import json
import math
import random

import pytest
from scipy.stats import norm

from streams import alerting as al
from streams.alerting import AlertRules
from streams.nps import Category
from streams.windows import Delta, SegmentKey, WindowEngine

H = al.HOUR_MS
T0 = 1_700_000_000_000 - 1_700_000_000_000 % H  # an hour start
DAY = 24
BASE_END = 28 * DAY  # hour index where the first current window starts when evaluated at E = 29 days


def at(hour: int) -> int:
    return T0 + hour * H


def oracle_z(cur, base):
    """z by hand: adjusted-Wald p' = (P + .75)/(n + 3), d' likewise, variance (p' + d' - (p' - d')^2)/(n + 3)."""
    def est(c):
        n = sum(c) + 3
        p, d = (c[0] + 0.75) / n, (c[2] + 0.75) / n
        return p - d, (p + d - (p - d) ** 2) / n
    (m1, v1), (m2, v2) = est(cur), est(base)
    return (m1 - m2) / math.sqrt(v1 + v2)


def oracle_ci(c):
    n = sum(c) + 3
    p, d = (c[0] + 0.75) / n, (c[2] + 0.75) / n
    se = math.sqrt((p + d - (p - d) ** 2) / n)
    return [max(-100, 100 * (p - d - 1.96 * se)), min(100, 100 * (p - d + 1.96 * se))]


def spread(counts, first_hour, hours):
    """Spread (P, Pa, D) over ``hours`` hourly buckets deterministically (running totals track the shares)."""
    out = {}
    for i in range(hours):
        c = tuple((x * (i + 1)) // hours - (x * i) // hours for x in counts)
        out[at(first_hour + i)] = c
    return out


def two_windows(base, cur):
    b = spread(base, 0, BASE_END)
    b.update(spread(cur, BASE_END, DAY))
    return b


def run(buckets, start_hour, end_hour, rules=al.DEFAULT_RULES, segment="location=Espoo", state=None):
    """Evaluate hour by hour; returns (state, events)."""
    events = []
    for h in range(start_hour, end_hour + 1):
        state, ev = al.evaluate(segment, buckets, state, at(h) + 17, rules)
        events += ev
    return state, events


# ---------------------------------------------------------------- the two-sample test: the known cases
def test_known_case_20_10_vs_12_18_is_a_significant_drop():
    base, cur = (20, 0, 10), (12, 0, 18)
    state, events = al.evaluate("location=Espoo", two_windows(base, cur), None, at(29 * DAY), AlertRules(shift=False))
    assert len(events) == 1
    ev = events[0]
    z = oracle_z(cur, base)
    assert z == pytest.approx(-2.085, abs=1e-3) and round(abs(z), 1) == 2.1
    assert ev["event"] == "opened" and ev["kind"] == "drop" and ev["direction"] == "down"
    assert ev["z"] == pytest.approx(z, abs=5e-4)
    assert ev["p_value"] == pytest.approx(2 * norm.sf(abs(z)), abs=2e-4) and ev["p_value"] < 0.05
    assert ev["segment"] == {"location": "Espoo"}
    assert ev["baseline"]["responses"] == 30 and ev["current"]["responses"] == 30
    assert ev["baseline"]["nps"] == pytest.approx(100 * 10 / 30, abs=0.01)
    assert ev["current"]["nps"] == pytest.approx(-20.0)
    assert ev["baseline"]["ci95"] == pytest.approx(oracle_ci(base), abs=0.01)
    assert ev["current"]["ci95"] == pytest.approx(oracle_ci(cur), abs=0.01)
    assert ev["opened_at"] == at(29 * DAY) and ev["status"] == "open" and len(ev["alert_id"]) == 16
    assert state["open"]["down"]["alert_id"] == ev["alert_id"]


def test_the_same_change_upward_is_a_rise_only_when_rises_are_on():
    base, cur = (12, 0, 18), (20, 0, 10)
    b = two_windows(base, cur)
    assert al.evaluate("location=Espoo", b, None, at(29 * DAY), AlertRules(shift=False))[1] == []
    (ev,) = al.evaluate("location=Espoo", b, None, at(29 * DAY), AlertRules(shift=False, rise=True))[1]
    assert ev["kind"] == "rise" and ev["direction"] == "up" and ev["z"] == pytest.approx(oracle_z(cur, base), abs=5e-4)


def test_one_point_wobble_on_n_40_is_not_significant():
    base, cur = (20, 10, 10), (19, 11, 10)
    z = oracle_z(cur, base)
    assert abs(z) < 0.5 and 2 * norm.sf(abs(z)) > 0.05
    rules = AlertRules(rise=True)
    assert al.evaluate("location=Espoo", two_windows(base, cur), None, at(29 * DAY), rules)[1] == []


@pytest.mark.parametrize("base, cur, alerts", [
    ((30, 0, 0), (0, 0, 29), False),   # 29 current responses: a huge drop, still no alert
    ((29, 0, 0), (0, 0, 30), False),   # 29 baseline responses
    ((30, 0, 0), (0, 0, 30), True),    # 30 on each side: alert
])
def test_minimum_responses_on_each_side(base, cur, alerts):
    events = al.evaluate("location=Espoo", two_windows(base, cur), None, at(29 * DAY), AlertRules(shift=False))[1]
    assert bool(events) is alerts
    assert oracle_z(cur, base) < -5  # the change itself is overwhelming: only the minimum decides


def test_confidence_sets_the_critical_value():
    assert AlertRules().z_crit == pytest.approx(norm.ppf(0.975))
    assert AlertRules(confidence=0.99).z_crit == pytest.approx(norm.ppf(0.995))
    b = two_windows((20, 0, 10), (12, 0, 18))  # |z| = 2.085: significant at 95 %, not at 99 %
    assert al.evaluate("location=Espoo", b, None, at(29 * DAY), AlertRules(shift=False, confidence=0.99))[1] == []
