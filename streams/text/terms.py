"""Terms of one response: lemmas of content words, negation bigrams and adjacent content-word bigrams.

- A negation (wordlists.NEGATIONS) pairs with the next content word of its clause within NEGATION_WINDOW
  words, skipping function words ("inte så bra" → "inte bra"); a breaker (men, but, mutta …) or another
  negation ends the search. In sv/da/nb, where the negation follows the finite verb ("appen fungerar
  inte"), a negation with nothing after it pairs with the content word just before it ("inte fungera").
  The pair is "negation lemma" (Finnish negation verbs → "ei", English n't → "not"): "ei toimia",
  "not work". The paired word is not also a unigram of that occurrence; an unpaired negation is no term.
- Two content words next to each other in a clause form a bigram ("lång väntetid", "customer service").
- Terms are distinct, in first-occurrence order, at most MAX_TERMS: negation bigrams first, then unigrams,
  then adjacent bigrams when a long comment has more.
"""

from __future__ import annotations

from dataclasses import dataclass

from .lemmas import lemma
from .wordlists import BREAKERS, FUNCTION_WORDS, NEGATION_FORM, NEGATIONS

MAX_TERMS = 64
NEGATION_WINDOW = 3
MIN_LENGTH = 2
_VERB_SECOND = frozenset({"sv", "da", "nb"})
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


def _partner(clause: list[Token], i: int, lang: str, consumed: set[int]) -> int | None:
    """Index of the content word the negation at `i` scopes over, or None."""
    scope_has_content = False
    for j in range(i + 1, len(clause)):
        if clause[j].kind in (NEG, BREAK):
            break
        if clause[j].kind == CONTENT:
            if j <= i + NEGATION_WINDOW:
                return j
            scope_has_content = True
            break
    if lang in _VERB_SECOND and not scope_has_content:
        for k in range(i - 1, max(-1, i - 1 - NEGATION_WINDOW), -1):
            if clause[k].kind in (NEG, BREAK):
                break
            if clause[k].kind == CONTENT and k not in consumed:
                return k
    return None


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
            nxt = clause[i + 1] if i + 1 < len(clause) else None
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
