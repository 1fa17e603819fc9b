"""Text analytics of comments in sv, da, fi, nb and en: masking of personal data, language, lemma and
bigram terms. Pure (no I/O, no clock); the language data load lazily on first use. See README.md here."""

from .analysis import TextAnalysis, analyse
from .mask import MASKS, mask

__all__ = ["MASKS", "TextAnalysis", "analyse", "mask"]
