"""NPS math: classification, score, adjusted-Wald 95 % interval, bands.

Pure functions, no I/O. Every NPS npsflow shows comes from here.

Adjusted-Wald interval (Rocks 2016, "NPS confidence intervals", MeasuringU):
    n' = n + 3, p' = (P + 0.75) / n', d' = (D + 0.75) / n', NPS' = p' - d'
    SE = sqrt((p' + d' - NPS'^2) / n')
    interval = 100 * (NPS' +- 1.96 * SE), clipped to [-100, 100]
The NPS shown is the plain 100 * (P - D) / n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

Z95 = 1.959963984540054


class Category(str, Enum):
    PROMOTER = "promoter"
    PASSIVE = "passive"
    DETRACTOR = "detractor"


class Band(str, Enum):
    NEEDS_IMPROVEMENT = "needs_improvement"
    GOOD = "good"
    EXCELLENT = "excellent"
    WORLD_CLASS = "world_class"


def classify(score: int) -> Category:
    """Promoter 9-10, passive 7-8, detractor 0-6. Raises ValueError outside 0..10."""
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 10:
        raise ValueError(f"score must be an integer 0-10, got {score!r}")
    if score >= 9:
        return Category.PROMOTER
    if score >= 7:
        return Category.PASSIVE
    return Category.DETRACTOR


def band(nps: float) -> Band:
    """< 0 needs improvement, 0-<50 good, 50-<70 excellent, >= 70 world class."""
    if nps < 0:
        return Band.NEEDS_IMPROVEMENT
    if nps < 50:
        return Band.GOOD
    if nps < 70:
        return Band.EXCELLENT
    return Band.WORLD_CLASS


def nps_score(promoters: int, passives: int, detractors: int) -> float | None:
    """Plain NPS in -100..100; None when there are no responses."""
    n = promoters + passives + detractors
    if n == 0:
        return None
    return 100.0 * (promoters - detractors) / n


def adjusted_wald_ci(promoters: int, passives: int, detractors: int, z: float = 1.96) -> tuple[float, float]:
    """95 % adjusted-Wald interval for NPS, in -100..100. Defined for n = 0 too (wide)."""
    n_adj = promoters + passives + detractors + 3
    p = (promoters + 0.75) / n_adj
    d = (detractors + 0.75) / n_adj
    nps_adj = p - d
    se = math.sqrt(max(p + d - nps_adj * nps_adj, 0.0) / n_adj)
    lo = max(-100.0, 100.0 * (nps_adj - z * se))
    hi = min(100.0, 100.0 * (nps_adj + z * se))
    return lo, hi


def variance(promoters: int, passives: int, detractors: int) -> float:
    """Per-respondent variance of the NPS score variable (+1/0/-1): p + d - (p - d)^2."""
    n = promoters + passives + detractors
    if n == 0:
        return 0.0
    p, d = promoters / n, detractors / n
    return p + d - (p - d) ** 2


@dataclass(frozen=True, slots=True)
class NpsSummary:
    promoters: int
    passives: int
    detractors: int

    @property
    def responses(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def nps(self) -> float | None:
        return nps_score(self.promoters, self.passives, self.detractors)

    @property
    def ci95(self) -> tuple[float, float]:
        return adjusted_wald_ci(self.promoters, self.passives, self.detractors)

    @property
    def band(self) -> Band | None:
        value = self.nps
        return None if value is None else band(value)

    def as_dict(self, ndigits: int = 2) -> dict:
        value = self.nps
        lo, hi = self.ci95
        return {
            "responses": self.responses,
            "promoters": self.promoters,
            "passives": self.passives,
            "detractors": self.detractors,
            "nps": None if value is None else round(value, ndigits),
            "ci95": [round(lo, ndigits), round(hi, ndigits)],
            "band": None if value is None else band(value).value,
        }


def summarize(promoters: int, passives: int, detractors: int) -> NpsSummary:
    return NpsSummary(int(promoters), int(passives), int(detractors))


def compare(current: tuple[int, int, int], previous: tuple[int, int, int], z_crit: float = 1.96) -> dict:
    """Period-over-period change of NPS with a two-sample z-test (95 % by default).

    ``change`` is the plain difference of the two NPS (points; None when a period has no responses). The test
    uses the same adjusted-Wald estimates as the intervals we show (p′ = (P + ¾)/(n + 3), d′ = (D + ¾)/(n + 3),
    per-respondent variance p′ + d′ − (p′ − d′)², over n + 3): z = Δ(p′ − d′) / sqrt(σ₁²/(n₁+3) + σ₂²/(n₂+3)).
    With the plain estimates a period whose answers are all of one category has zero variance and every small
    sample looked "significant" (1 promoter vs 1 detractor); the adjusted ones agree with the overlapping
    intervals."""
    n1, n2 = sum(current), sum(previous)
    if n1 == 0 or n2 == 0:
        return {"change": None, "z": None, "significant": False}
    delta = (current[0] - current[2]) / n1 - (previous[0] - previous[2]) / n2

    def adjusted(p: int, d: int, n: int) -> tuple[float, float]:
        pa, da = (p + 0.75) / (n + 3), (d + 0.75) / (n + 3)
        return pa - da, (pa + da - (pa - da) ** 2) / (n + 3)

    m1, v1 = adjusted(current[0], current[2], n1)
    m2, v2 = adjusted(previous[0], previous[2], n2)
    z = (m1 - m2) / math.sqrt(v1 + v2)
    return {"change": round(100.0 * delta, 2), "z": round(z, 3), "significant": abs(z) > z_crit}
