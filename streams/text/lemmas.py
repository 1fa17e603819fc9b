"""Lemmas with simplemma 2.0.0, loaded lazily: a language's dictionary is read on its first word, so a worker
that sees only Swedish never pays for the other four (about 0.2–3.5 s and up to ~40 MB each; Finnish is
the largest)."""

from __future__ import annotations

import simplemma

# One lemmatizer for the process; simplemma caches each language's dictionary on first use. Greedy mode:
# unknown compounds are lemmatised on their last part (kundtjänstpersonalen → kundtjänstpersonal; the
# non-greedy mode leaves that word as it is); on the labelled sample and the golden sentences it changes
# no other lemma.
_LEMMATIZER = simplemma.Lemmatizer(
    cache_max_size=200_000, lemmatization_strategy=simplemma.strategies.DefaultStrategy(greedy=True)
)


def lemma(word: str, lang: str) -> str:
    """The lemma of a casefolded `word`; the word itself when simplemma has nothing sensible."""
    found = _LEMMATIZER.lemmatize(word, lang).casefold()
    if not found or any(c.isspace() or c.isdecimal() for c in found):
        return word
    return found


def preload(langs: tuple[str, ...]) -> None:
    """Load the dictionaries of `langs` now (a worker's start-up, a benchmark)."""
    for lang in langs:
        lemma("a", lang)
