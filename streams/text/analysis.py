"""`analyse(comment, locale)`: mask, choose the language, extract terms. Pure: no I/O, no clock."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from . import lang as language
from .mask import mask
from .terms import terms_of
from .tokens import clauses


@dataclass(frozen=True, slots=True)
class TextAnalysis:
    lang: str                      # "sv" | "da" | "fi" | "nb" | "en" | "und" (no text / unknown)
    masked: str                    # the comment with personal data replaced by placeholders; "" for none
    terms: tuple[str, ...]         # distinct lemmas and bigrams, first-occurrence order
    masked_kinds: tuple[str, ...]  # distinct kinds masked, in MASKS order


EMPTY = TextAnalysis(language.UNDETERMINED, "", (), ())


def analyse(comment: str | None, locale: str | None) -> TextAnalysis:
    if comment is None or not comment.strip():
        return EMPTY
    locale_lang, region = language.parse_locale(locale)
    masked, kinds = mask(unicodedata.normalize("NFC", comment), region)
    parts = clauses(masked)
    n_words = sum(len(c) for c in parts)
    if n_words == 0:
        return TextAnalysis(locale_lang or language.UNDETERMINED, masked, (), kinds)
    words = [w for c in parts for w in c]
    lang = language.choose(" ".join(words), n_words, locale_lang, words)
    terms = () if lang == language.UNDETERMINED else terms_of(parts, lang)
    return TextAnalysis(lang, masked, terms, kinds)

