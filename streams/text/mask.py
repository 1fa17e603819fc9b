"""Personal data out of a comment before anything is stored or counted: `mask(text, region)`.

Each kind is replaced by its placeholder in `MASKS`, in this order (earlier kinds win where they overlap):
e-mail, URL, IBAN, card number, personal id number, phone number. Placeholders contain no digits, so a
later step never sees part of an earlier one. What counts as each kind is documented in checksums.py
(check digits) and phones.py (numbering plans); README.md in this package lists the decisions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from . import checksums
from .phones import phone_spans

MASKS: dict[str, str] = {
    "email": "[email]",
    "url": "[url]",
    "iban": "[iban]",
    "card": "[card]",
    "id": "[id]",
    "phone": "[phone]",
}

_EMAIL = re.compile(r"[\w.+\-]+@(?:[^\W_](?:[\w\-]*[^\W_])?\.)+[^\W\d_]{2,}")
_URL = re.compile(r"(?:\b[a-zA-Z][a-zA-Z0-9+.\-]*://|\bwww\.)[^\s<>\"]+")
_URL_TRAILING = ".,;:!?)]}'\"’»"
_IBAN = re.compile(r"(?<![^\W_])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,32}")
_DIGIT_GROUPS = re.compile(r"(?<!\d)\d+(?:[ \-]\d+)*(?!\d)")
_SE_ID = re.compile(r"(?<!\d)(1[89]|20)?(\d{6})([\-+]?)(\d{4})(?!\d)")
_DK_ID = re.compile(r"(?<!\d)(\d{6})-?(\d{4})(?!\d)")
_NO_ID = re.compile(r"(?<!\d)(\d{6}) ?(\d{5})(?!\d)")
_FI_ID = re.compile(r"(?<![^\W_])(\d{6})([+\-A-FU-Ya-fu-y])(\d{3})([0-9A-Ya-y])(?![^\W_])")

# ISO 13616 lengths of the countries a Nordic comment is likely to name; others: 15–34 and mod-97 only
IBAN_LENGTHS = {"AT": 20, "BE": 16, "CH": 21, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FO": 18,
                "FR": 27, "GB": 22, "GL": 18, "IE": 22, "IS": 26, "IT": 27, "LT": 20, "LV": 21, "NL": 18,
                "NO": 15, "PL": 28, "PT": 25, "SE": 24}


def _email_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _EMAIL.finditer(text):
        yield m.span()


def _url_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in _URL_TRAILING:
            end -= 1
        yield m.start(), end


def _iban_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        s = m.group()
        # cut points: the end of the match and every space (an IBAN ends at a group boundary)
        cuts = sorted({len(s)} | {i for i, c in enumerate(s) if c == " "}, reverse=True)
        for cut in cuts:
            compact = s[:cut].replace(" ", "")
            expected = IBAN_LENGTHS.get(compact[:2].upper())
            if (expected is None or len(compact) == expected) and checksums.iban_ok(compact):
                yield m.start(), m.start() + cut
                break


def _card_window_ok(groups: list[str]) -> bool:
    joined = "".join(groups)
    if not 13 <= len(joined) <= 19:
        return False
    if len(groups) > 1 and (len(groups[0]) != 4 or any(not 3 <= len(g) <= 6 for g in groups[1:])):
        return False
    return checksums.luhn_ok(joined)


def _card_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _DIGIT_GROUPS.finditer(text):
        parts = [(g.start() + m.start(), g.end() + m.start()) for g in re.finditer(r"\d+", m.group())]
        i = 0
        while i < len(parts):
            for j in range(len(parts), i, -1):
                if _card_window_ok([text[a:b] for a, b in parts[i:j]]):
                    yield parts[i][0], parts[j - 1][1]
                    i = j
                    break
            else:
                i += 1


def _id_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _SE_ID.finditer(text):
        century = int(m.group(1)) * 100 if m.group(1) else None
        if (century is None or m.group(3) != "+") and checksums.se_personnummer_ok(m.group(2) + m.group(4), century):
            yield m.span()
    for m in _DK_ID.finditer(text):
        if checksums.dk_cpr_ok(m.group(1) + m.group(2)):
            yield m.span()
    for m in _NO_ID.finditer(text):
        if checksums.no_fodselsnummer_ok(m.group(1) + m.group(2)):
            yield m.span()
    for m in _FI_ID.finditer(text):
        if checksums.fi_hetu_ok(m.group()):
            yield m.span()


def _replace(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    """`text` with each span replaced; overlapping spans merged."""
    out, pos = [], 0
    for start, end in sorted(spans):
        if end <= pos:
            continue
        start = max(start, pos)
        out.append(text[pos:start])
        out.append(placeholder)
        pos = end
    out.append(text[pos:])
    return "".join(out)


_DIGIT = re.compile(r"\d")


def _steps(region: str | None) -> list[tuple[str, Callable[[str], Iterator[tuple[int, int]]]]]:
    return [
        ("email", _email_spans),
        ("url", _url_spans),
        ("iban", _iban_spans),
        ("card", _card_spans),
        ("id", _id_spans),
        ("phone", lambda t: phone_spans(t, region)),
    ]


def mask(text: str, region: str | None = None) -> tuple[str, tuple[str, ...]]:
    """`text` with personal data replaced by the placeholders of `MASKS`, and the kinds masked (in
    `MASKS` order). `region` (ISO 3166 alpha-2, e.g. "SE") says how national phone numbers are written."""
    region = region.upper() if region else None
    kinds = []
    for kind, spans_of in _steps(region):
        if kind != "email" and kind != "url" and not _DIGIT.search(text):
            break  # every later kind needs digits
        spans = list(spans_of(text))
        if spans:
            text = _replace(text, spans, MASKS[kind])
            kinds.append(kind)
    return text, tuple(kinds)
