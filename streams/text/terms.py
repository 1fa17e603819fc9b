"""Terms of one response: lemmas of content words, negation bigrams and adjacent content-word bigrams.

- A negation (wordlists.NEGATIONS) pairs with the next content word of its clause within NEGATION_WINDOW
  words, skipping function words ("inte så bra" → "inte bra"); a breaker (men, but, mutta …) or another
  negation ends the search. In sv/da/nb the negation adverbs (inte, ikke, aldri …) follow the finite verb
  of a main clause and negate it: right after a content word they pair with it ("svarade aldrig" →
  "aldrig svara"), and with nothing in scope after them they pair with the content word before them
  ("fungerar verkligen inte" → "inte fungera"). The determiners (ingen, inget, intet …) pair forward.
  The pair is "negation lemma" (Finnish negation verbs → "ei", English n't → "not"): "ei toimia",
  "not work". The paired word is not also a unigram of that occurrence; an unpaired negation is no term.
- In English, two content words next to each other in a clause also form a bigram ("customer service",
  "credit card"): English writes compounds apart, sv/da/nb/fi write them as one word (kundtjänst,
  kundeservice, asiakaspalvelu), so no adjacent bigrams there.
- Terms are distinct, in first-occurrence order, at most MAX_TERMS: negation bigrams first, then unigrams,
  then adjacent bigrams when a long comment has more.
"""

from __future__ import annotations

from dataclasses import dataclass

from .lemmas import lemma
from .wordlists import BREAKERS, FUNCTION_WORDS, NEGATION_ADVERBS, NEGATION_FORM, NEGATIONS

MAX_TERMS = 64
NEGATION_WINDOW = 3
MIN_LENGTH = 2
ADJACENT_BIGRAM_LANGS = frozenset({"en"})
_EN_NOT = {"can": "can", "ca": "can", "wo": "will", "sha": "shall", "ai": "be"}

NEG, FUNC, BREAK, CONTENT = "neg", "func", "break", "content"


@dataclass(frozen=True, slots=True)
class Token:
    surface: str
    lemma: str
    kind: str


def _split_apostrophe(word: str, lang: str) -> list[str]:
    """English "didn't" → ["did", "not"]; elsewhere the part before an apostrophe ("customer's" → "customer")."""
    if "'" not in word:
        return [word]
    if lang == "en" and word.endswith("n't"):
        base = word[:-3]
        return [_EN_NOT.get(base, base), "not"]
    return [word.split("'", 1)[0]]


def _token(word: str, lang: str) -> Token:
    if word in NEGATIONS[lang]:
        return Token(word, _negation_lemma(word, lang), NEG)
    if word in BREAKERS[lang]:
        return Token(word, word, BREAK)
    lem = lemma(word, lang)
    if lem in NEGATIONS[lang]:
        return Token(word, _negation_lemma(lem, lang), NEG)
    functional = word in FUNCTION_WORDS[lang] or lem in FUNCTION_WORDS[lang] or len(lem) < MIN_LENGTH
    return Token(word, lem, FUNC if functional else CONTENT)


def _negation_lemma(word: str, lang: str) -> str:
    """The form of a negation in a bigram: NEGATION_FORM, else its lemma when that is a negation too
    (sv inget/inga → ingen), else the word."""
    if word in NEGATION_FORM:
        return NEGATION_FORM[word]
    lem = lemma(word, lang)
    return lem if lem in NEGATIONS[lang] else word


def tokens_of(words: list[str], lang: str) -> list[Token]:
    return [_token(part, lang) for word in words for part in _split_apostrophe(word, lang) if part]


def _after(clause: list[Token], i: int) -> tuple[int | None, bool]:
    """(the content word within NEGATION_WINDOW after the negation at `i`, whether its scope — up to a
    breaker, another negation or the clause end — has any content word)."""
    for j in range(i + 1, len(clause)):
        if clause[j].kind in (NEG, BREAK):
            break
        if clause[j].kind == CONTENT:
            return (j if j <= i + NEGATION_WINDOW else None), True
    return None, False


def _before(clause: list[Token], i: int, consumed: set[int]) -> int | None:
    for k in range(i - 1, max(-1, i - 1 - NEGATION_WINDOW), -1):
        if clause[k].kind in (NEG, BREAK):
            return None
        if clause[k].kind == CONTENT:
            return None if k in consumed else k
    return None


def _partner(clause: list[Token], i: int, lang: str, consumed: set[int]) -> int | None:
    """Index of the content word the negation at `i` scopes over, or None."""
    verb_second = clause[i].surface in NEGATION_ADVERBS.get(lang, ())
    if verb_second and i > 0 and clause[i - 1].kind == CONTENT and i - 1 not in consumed:
        return i - 1  # "svarade aldrig", "virker ikke": the finite verb before the negation
    after, scope_has_content = _after(clause, i)
    if after is not None or scope_has_content or not verb_second:
        return after
    return _before(clause, i, consumed)  # "fungerar verkligen inte."


def clause_terms(clause: list[Token], lang: str, offset: int) -> list[tuple[int, int, str]]:
    """(priority, position, term) of one clause; positions count from `offset`."""
    found: list[tuple[int, int, str]] = []
    consumed: set[int] = set()
    for i, tok in enumerate(clause):
        if tok.kind == NEG:
            j = _partner(clause, i, lang, consumed)
            if j is not None:
                consumed.add(j)
                found.append((0, offset + min(i, j), f"{tok.lemma} {clause[j].lemma}"))
    for i, tok in enumerate(clause):
        if tok.kind == CONTENT and i not in consumed:
            found.append((1, offset + i, tok.lemma))
            nxt = clause[i + 1] if i + 1 < len(clause) and lang in ADJACENT_BIGRAM_LANGS else None
            if nxt is not None and nxt.kind == CONTENT and i + 1 not in consumed:
                found.append((2, offset + i, f"{tok.lemma} {nxt.lemma}"))
    return found


def terms_of(clauses: list[list[str]], lang: str) -> tuple[str, ...]:
    """Distinct terms of a response (see the module docstring)."""
    found: list[tuple[int, int, str]] = []
    offset = 0
    for words in clauses:
        clause = tokens_of(words, lang)
        found.extend(clause_terms(clause, lang, offset))
        offset += len(clause)
    first: dict[str, tuple[int, int]] = {}
    for priority, position, term in found:
        if term not in first or (priority, position) < first[term]:
            first[term] = (priority, position)
    kept = sorted(first.items(), key=lambda item: item[1])[:MAX_TERMS]
    return tuple(term for term, _ in sorted(kept, key=lambda item: (item[1][1], item[1][0])))
