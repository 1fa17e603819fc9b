"""A word cloud's layout, pure: words sized by how many answers name them, coloured by their NPS.

``layout(words)`` places each word (biggest first) on an Archimedean spiral from the centre at the first spot
where its box overlaps no word placed before and lies inside the canvas; a word that finds no spot is left
out (reported in ``Cloud.dropped``). Box sizes are estimated from the font size (``CHAR_WIDTH`` em per
character, ``LINE_HEIGHT`` em high): no font metrics are available on the server, so the estimate is
generous, which keeps real glyphs from touching. ``svg(cloud)`` renders it as a standalone SVG with every word
escaped; the live dashboard draws the same layout with ``textContent`` (web.dashboard).

Colours follow the NPS bands (streams.nps.band) on a red → green scale, so the cloud reads like the rest of the
dashboard; each word's NPS and n are in its ``<title>`` for screen readers and hover.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from streams.nps import band

WIDTH, HEIGHT = 640, 320
MIN_SIZE, MAX_SIZE = 12.0, 44.0
CHAR_WIDTH = 0.62  # em per character (generous for the system sans-serif fonts)
LINE_HEIGHT = 1.15  # em
COLORS = {"needs_improvement": "#b42318", "good": "#8a6d00", "excellent": "#2e7d32", "world_class": "#1b5e20"}
NO_NPS = "#57606a"


@dataclass(frozen=True, slots=True)
class Placed:
    term: str
    responses: int
    nps: float | None
    x: float  # centre of the word's box
    y: float
    size: float  # font size, px
    color: str

    def box(self) -> tuple[float, float, float, float]:
        return _box(self.term, self.x, self.y, self.size)


@dataclass
class Cloud:
    width: int
    height: int
    words: list[Placed] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "dropped": self.dropped,
                "words": [{"term": w.term, "responses": w.responses, "nps": w.nps, "x": round(w.x, 1),
                           "y": round(w.y, 1), "size": round(w.size, 1), "color": w.color} for w in self.words]}


def _box(term: str, x: float, y: float, size: float) -> tuple[float, float, float, float]:
    half_w, half_h = len(term) * CHAR_WIDTH * size / 2, LINE_HEIGHT * size / 2
    return x - half_w, y - half_h, x + half_w, y + half_h


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def color_of(nps: float | None) -> str:
    return NO_NPS if nps is None else COLORS[band(nps).value]


def font_size(responses: int, most: int, least: int) -> float:
    """Square-root scale between MIN_SIZE and MAX_SIZE (areas grow with the count, not heights)."""
    if most <= least:
        return (MIN_SIZE + MAX_SIZE) / 2
    share = (math.sqrt(responses) - math.sqrt(least)) / (math.sqrt(most) - math.sqrt(least))
    return MIN_SIZE + share * (MAX_SIZE - MIN_SIZE)


def _spot(term: str, size: float, placed: list[Placed], width: int, height: int) -> tuple[float, float] | None:
    cx, cy = width / 2, height / 2
    for step in range(2000):
        angle = step * 0.35
        radius = 2.2 * angle
        x, y = cx + radius * math.cos(angle), cy + 0.6 * radius * math.sin(angle)  # a wide canvas: an ellipse
        box = _box(term, x, y, size)
        if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
            if radius > max(width, height):
                return None
            continue
        if not any(_overlaps(box, p.box()) for p in placed):
            return x, y
    return None


def layout(words: list[dict], width: int = WIDTH, height: int = HEIGHT) -> Cloud:
    """``words``: [{"term", "responses", "nps"}]. The biggest first; ties by term (a stable picture)."""
    ordered = sorted(words, key=lambda w: (-w["responses"], w["term"]))
    cloud = Cloud(width, height)
    if not ordered:
        return cloud
    most, least = ordered[0]["responses"], ordered[-1]["responses"]
    for word in ordered:
        # a long word (a Finnish compound) is made smaller rather than left out
        size = min(font_size(word["responses"], most, least), 0.95 * width / (len(word["term"]) * CHAR_WIDTH))
        spot = _spot(word["term"], size, cloud.words, width, height)
        if spot is None:
            cloud.dropped.append(word["term"])
            continue
        cloud.words.append(Placed(word["term"], word["responses"], word.get("nps"), spot[0], spot[1], size,
                                  color_of(word.get("nps"))))
    return cloud


def svg(cloud: Cloud, title: str = "Word cloud") -> str:
    """A standalone SVG (no external assets, every text escaped)."""
    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {cloud.width} {cloud.height}" '
             f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>']
    for w in cloud.words:
        nps = "no NPS" if w.nps is None else f"NPS {w.nps:.1f}"
        parts.append(f'<text x="{w.x:.1f}" y="{w.y:.1f}" font-size="{w.size:.1f}" fill="{w.color}" '
                     f'text-anchor="middle" dominant-baseline="central" font-family="system-ui, sans-serif">'
                     f'<title>{esc(w.term)}: {w.responses} answers, {nps}</title>{esc(w.term)}</text>')
    parts.append("</svg>")
    return "".join(parts)
