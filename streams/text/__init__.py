"""Text analytics of comments in sv, da, fi, nb and en: masking of personal data, language, lemma and
bigram terms. Pure (no I/O, no clock); the language data load lazily on first use. See README.md here."""

from .analysis import TextAnalysis, analyse
from .lang import _detector
from .lemmas import preload
from .mask import MASKS, mask

__all__ = ["MASKS", "TextAnalysis", "analyse", "mask", "warm_up"]

LANGS = ("sv", "da", "fi", "nb", "en")


def warm_up() -> None:
    """Load the five languages' lemma dictionaries and the language detector now (~4 s, ~190 MB): a worker
    does it in a background thread at start, so the first comments do not stall its event loop."""
    preload(LANGS)
    _detector()
