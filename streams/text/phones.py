"""Phone numbers in free text, validated with phonenumberslite against the numbering plan of a region.

A candidate is a run of digits with the separators people write (space, - . / parentheses), optionally led
by '+' or '00'. It is a phone number when
- it is written in international form (+NN… or 00NN…) and valid for the country it names, or
- it is valid in national form in the locale's region or in SE, FI or GB (whatever the locale); in regions
  with a trunk prefix ('0' in SE, FI, GB) it must start with that
  prefix (people write 070-123 45 67; without the 0 a digit run is more likely a date or an order number).
Dates (2024-03-15, 15.3.2024, 15/03/24) are never phone numbers. Several numbers in one run are found by
trying the longest run of whitespace-separated groups from each group on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers
from phonenumbers import NumberParseException

MIN_DIGITS = 7
MAX_DIGITS = 15  # E.164

_CANDIDATE = re.compile(r"(?<![\w+#/@])(?:\+|(?<!\d)00)?\(?\d[\d\-./() ]*\d\)?(?![\w@])")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")
_GROUPS = re.compile(r"\S+")


def _national_prefix(region: str) -> str | None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return metadata.national_prefix if metadata is not None else None


# Regions also tried for a number in national form beyond the locale's own: people write their home number
# whatever language they answer in (a Swede answering in English, an answer without a locale). Only the
# trunk-prefixed plans (a leading 0) are distinctive enough to try always; Danish and Norwegian numbers
# (8 digits, no prefix) only with a Danish or Norwegian locale — otherwise every 8-digit order number, or the
# first half of a card number, would be a phone number.
ALWAYS_TRIED = ("SE", "FI", "GB")


def _national(text: str, region: str) -> bool:
    prefix = _national_prefix(region)
    if prefix and not text.lstrip("(").startswith(prefix):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, region))
    except NumberParseException:
        return False


def _is_phone(text: str, region: str | None) -> bool:
    n_digits = sum(c.isdecimal() for c in text)
    if not MIN_DIGITS <= n_digits <= MAX_DIGITS or _DATE.fullmatch(text.strip("()")):
        return False
    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+"):
        try:
            return phonenumbers.is_valid_number(phonenumbers.parse(text, None))
        except NumberParseException:
            return False
    regions = ((region,) if region else ()) + ALWAYS_TRIED
    return any(_national(text, r) for r in dict.fromkeys(regions))


def phone_spans(text: str, region: str | None) -> Iterator[tuple[int, int]]:
    """(start, end) of each phone number in `text`, left to right, not overlapping."""
    for match in _CANDIDATE.finditer(text):
        groups = [(m.start() + match.start(), m.end() + match.start()) for m in _GROUPS.finditer(match.group())]
        i = 0
        while i < len(groups):
            for j in range(len(groups), i, -1):
                start, end = groups[i][0], groups[j - 1][1]
                if _is_phone(text[start:end], region):
                    yield start, end
                    i = j
                    break
            else:
                i += 1
