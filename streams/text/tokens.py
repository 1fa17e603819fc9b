"""Normalisation and tokenisation: NFC, casefold (diacritics kept: får ≠ far), words with internal hyphens or
apostrophes, grouped into clauses. Words with digits are dropped; placeholders of `mask` are clause breaks."""

from __future__ import annotations

import re
import unicodedata

from .mask import MASKS

_WORD = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*")
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in MASKS.values()))
_APOSTROPHES = str.maketrans({"’": "'", "ʼ": "'", "‘": "'", "‐": "-", "‑": "-"})


_DIGIT = re.compile(r"\d")


def normalise(text: str) -> str:
    """NFC, then casefold (which keeps å ä ö ø æ: it never strips diacritics)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


def clauses(masked: str) -> list[list[str]]:
    """Casefolded words of `masked`, split into clauses at punctuation and placeholders.
    Words containing a digit are dropped (they still end nothing: "kom 3 dagar sent" stays one clause)."""
    text = _PLACEHOLDER.sub(" . ", masked)
    text = normalise(text).translate(_APOSTROPHES)
    result: list[list[str]] = [[]]
    pos = 0
    for match in _WORD.finditer(text):
        gap = text[pos:match.start()]
        if gap.strip():
            result.append([])
        pos = match.end()
        word = match.group()
        if not _DIGIT.search(word):
            result[-1].append(word)
    return [c for c in result if c]
