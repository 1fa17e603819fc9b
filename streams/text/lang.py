"""Language of a comment: the response's locale, overridden only by a confident detection on a long text.

Detection uses py3langid 0.4.0 restricted to the five languages (its "no" is Bokmål: reported as "nb"),
loaded lazily on the first text that needs it (~1.5 s). Thresholds come from the labelled sample in
tests/text_lang_sample.py (bench/text_lang_threshold.py prints the table they were read from):
- a locale in the five: kept unless the text has ≥ OVERRIDE_MIN_WORDS words and the detector gives
  another language probability ≥ OVERRIDE_MIN_PROB;
- no usable locale: the detected language when its probability is ≥ GUESS_MIN_PROB and the text has
  ≥ GUESS_MIN_WORDS words, otherwise "und".
"""

from __future__ import annotations

import re

LANGS = ("sv", "da", "fi", "nb", "en")
UNDETERMINED = "und"
OVERRIDE_MIN_WORDS = 8
OVERRIDE_MIN_PROB = 0.99
GUESS_MIN_WORDS = 2
GUESS_MIN_PROB = 0.9
PLAIN_MIN = 3  # function words of the locale's language that make a text plainly in it (see plainly_in)

# the locale's language → the language analysed; Norwegian (no, nb, nn) is analysed as Bokmål
_LANG_OF = {"sv": "sv", "swe": "sv", "da": "da", "dan": "da", "fi": "fi", "fin": "fi",
            "nb": "nb", "no": "nb", "nn": "nb", "nob": "nb", "nno": "nb", "nor": "nb", "en": "en", "eng": "en"}
# phone region when the locale names none: the country of the language (English: the United Kingdom)
DEFAULT_REGION = {"sv": "SE", "da": "DK", "fi": "FI", "nb": "NO", "en": "GB"}
_SUBTAG = re.compile(r"[-_.@]")

_identifier = None


def parse_locale(locale: str | None) -> tuple[str | None, str | None]:
    """(language in LANGS or None, region) of a BCP 47 / POSIX locale: "sv-SE", "fi_FI.UTF-8", "nn", "sv-FI"."""
    if not locale:
        return None, None
    parts = [p for p in _SUBTAG.split(locale.strip()) if p]
    if not parts:
        return None, None
    lang = _LANG_OF.get(parts[0].lower())
    region = next((p.upper() for p in parts[1:] if len(p) == 2 and p.isascii() and p.isalpha()), None)
    return lang, region or DEFAULT_REGION.get(lang or "")


def _detector():
    global _identifier
    if _identifier is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        identifier.set_languages(["sv", "da", "fi", "no", "en"])
        _identifier = identifier
    return _identifier


def detect(text: str) -> tuple[str, float]:
    """(language in LANGS, probability among the five) of `text`."""
    code, prob = _detector().classify(text)
    return ("nb" if code == "no" else code), prob


def plainly_in(lang: str, words: list[str]) -> bool:
    """Whether the function words of `words` are plainly `lang`'s: at least PLAIN_MIN of them, and more than of
    any other language. Such a text keeps its locale's language without asking the detector (~200 µs for a
    long comment; the detector could only confirm it, or — for close languages such as da/nb, which share
    most function words and so never pass this test — differ below the override probability)."""
    from .wordlists import FUNCTION_WORDS

    counts = {other: sum(w in listed for w in words) for other, listed in FUNCTION_WORDS.items()}
    own = counts.pop(lang, 0)
    return own >= PLAIN_MIN and all(own > n for n in counts.values())


def choose(text: str, n_words: int, locale_lang: str | None, words: list[str] | None = None) -> str:
    """The language to analyse `text` (with `n_words` words; `words`: its casefolded words) in."""
    if n_words == 0:
        return locale_lang or UNDETERMINED
    if locale_lang is not None:
        if n_words < OVERRIDE_MIN_WORDS or (words is not None and plainly_in(locale_lang, words)):
            return locale_lang
        detected, prob = detect(text)
        return detected if prob >= OVERRIDE_MIN_PROB else locale_lang
    if n_words < GUESS_MIN_WORDS:
        return UNDETERMINED
    detected, prob = detect(text)
    return detected if prob >= GUESS_MIN_PROB else UNDETERMINED
