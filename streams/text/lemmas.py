"""Lemmas with simplemma 2.0.0, loaded lazily: a language's dictionary is read on its first word, so a worker
that sees only Swedish never pays for the other four (0.1–1.5 s and 10–45 MB each; Finnish is the
largest)."""

from __future__ import annotations

import functools
import re

import simplemma

# One lemmatizer for the process; simplemma caches each language's dictionary on first use. Low-memory
# dictionaries: all five languages take ~95 MB instead of ~650 MB (Finnish alone ~380 MB), at ~23 µs
# instead of ~6 µs per word not yet in the LRU cache (bench/text_speed.py). Greedy mode:
# unknown compounds are lemmatised on their last part (kundtjänstpersonalen → kundtjänstpersonal; the
# non-greedy mode leaves that word as it is); on the labelled sample and the golden sentences it changes
# no other lemma.
_LEMMATIZER = simplemma.Lemmatizer(
    cache_max_size=200_000, lemmatization_strategy=simplemma.strategies.DefaultStrategy(greedy=True, low_memory=True)
)


_ODD = re.compile(r"[\s\d]")


@functools.lru_cache(maxsize=200_000)
def lemma(word: str, lang: str) -> str:
    """The lemma of a casefolded `word`; the word itself when simplemma has nothing sensible."""
    found = _LEMMATIZER.lemmatize(word, lang).casefold()
    if not found or _ODD.search(found):
        return word
    return found


def preload(langs: tuple[str, ...]) -> None:
    """Load the dictionaries of `langs` now (a worker's start-up, a benchmark)."""
    for lang in langs:
        lemma("a", lang)
