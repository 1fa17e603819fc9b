"""Check digits and date rules of the identifiers `mask` recognises. Pure functions on digit strings.

Sources (the official definitions, not other code):
- Luhn (ISO/IEC 7812-1 annex B): card numbers; Swedish personnummer/samordningsnummer (Skatteverket SKV 704).
- Swedish personnummer: YYMMDD-NNNC, '+' separator from the year the holder turns 100; samordningsnummer
  adds 60 to the day (SKV 707). Luhn over the ten digits YYMMDDNNNC.
- Danish CPR (CPR-kontoret): DDMMYY-SSSS; the 7th digit with the year gives the century. The modulus-11
  check is no longer guaranteed (numbers without it are issued since 2007), so only the date is checked.
- Norwegian fødselsnummer (Skatteetaten): DDMMYYIIIKK, two modulus-11 check digits with weights
  3 7 6 1 8 9 4 5 2 and 5 4 3 2 7 6 5 4 3 2; D-number adds 4 to the first day digit (day + 40),
  H-number adds 4 to the first month digit (month + 40). The individual number gives the century.
- Finnish henkilötunnus (DVV): DDMMYYCZZZQ, Q = "0123456789ABCDEFHJKLMNPRSTUVWXY"[DDMMYYZZZ mod 31];
  century sign '+' 1800s, '-' and U V W X Y 1900s, A B C D E F 2000s (the extra signs since 2023).
- IBAN (ISO 13616): move the first four characters to the end, letters A=10 … Z=35, the number mod 97 is 1.
"""

from __future__ import annotations

import calendar

HETU_CHECK = "0123456789ABCDEFHJKLMNPRSTUVWXY"
HETU_CENTURY = {"+": 1800, "-": 1900, "U": 1900, "V": 1900, "W": 1900, "X": 1900, "Y": 1900,
                "A": 2000, "B": 2000, "C": 2000, "D": 2000, "E": 2000, "F": 2000}
_FNR_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_FNR_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def digits(text: str) -> list[int]:
    """The decimal digits of `text` (any script's Nd digits), others ignored."""
    return [int(c) for c in text if c.isdecimal()]


def luhn_ok(number: str) -> bool:
    ds = digits(number)
    if not ds:
        return False
    total = 0
    for i, d in enumerate(reversed(ds)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def date_ok(year: int, month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def date_any_century_ok(yy: int, month: int, day: int) -> bool:
    """A YYMMDD date valid in some century (29 February needs a leap year: 2000 covers yy == 0)."""
    return any(date_ok(century + yy, month, day) for century in (1900, 2000))


def se_personnummer_ok(ten: str, century: int | None = None) -> bool:
    """`ten` = YYMMDDNNNC; `century` (e.g. 1900) when the number was written with twelve digits."""
    if len(ten) != 10 or not ten.isdecimal():
        return False
    yy, month, day = int(ten[0:2]), int(ten[2:4]), int(ten[4:6])
    if day > 60:  # samordningsnummer
        day -= 60
    valid_date = date_ok(century + yy, month, day) if century else date_any_century_ok(yy, month, day)
    return valid_date and luhn_ok(ten)


def dk_cpr_ok(ten: str) -> bool:
    """`ten` = DDMMYYSSSS; date valid in the century the 7th digit gives (no modulus-11, see above)."""
    if len(ten) != 10 or not ten.isdecimal():
        return False
    day, month, yy, seventh = int(ten[0:2]), int(ten[2:4]), int(ten[4:6]), int(ten[6])
    if seventh <= 3:
        century = 1900
    elif seventh in (4, 9):
        century = 2000 if yy <= 36 else 1900
    else:
        century = 2000 if yy <= 57 else 1800
    return date_ok(century + yy, month, day)


def _no_century(yy: int, individual: int) -> int | None:
    if individual <= 499:
        return 1900
    if individual <= 749 and yy >= 54:
        return 1800
    if individual >= 900 and yy >= 40:
        return 1900
    if yy <= 39:
        return 2000
    return None


def _mod11_digit(ds: list[int], weights: tuple[int, ...]) -> int | None:
    check = 11 - sum(d * w for d, w in zip(ds, weights)) % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def no_fodselsnummer_ok(eleven: str) -> bool:
    """`eleven` = DDMMYYIIIKK; fødselsnummer, D-number (day + 40) or H-number (month + 40)."""
    if len(eleven) != 11 or not eleven.isdecimal():
        return False
    ds = [int(c) for c in eleven]
    if _mod11_digit(ds[:9], _FNR_W1) != ds[9] or _mod11_digit(ds[:10], _FNR_W2) != ds[10]:
        return False
    day, month, yy = int(eleven[0:2]), int(eleven[2:4]), int(eleven[4:6])
    if day > 40:
        day -= 40
    if month > 40:
        month -= 40
    century = _no_century(yy, int(eleven[6:9]))
    return century is not None and date_ok(century + yy, month, day)


def fi_hetu_ok(hetu: str) -> bool:
    """`hetu` = DDMMYYCZZZQ (eleven characters, century sign C, check character Q; case-insensitive)."""
    hetu = hetu.upper()
    if len(hetu) != 11 or hetu[6] not in HETU_CENTURY:
        return False
    head, tail = hetu[:6], hetu[7:10]
    if not (head.isdecimal() and tail.isdecimal() and head.isascii() and tail.isascii()):
        return False
    if HETU_CHECK[int(head + tail) % 31] != hetu[10]:
        return False
    return date_ok(HETU_CENTURY[hetu[6]] + int(head[4:6]), int(head[2:4]), int(head[0:2]))


def iban_ok(compact: str) -> bool:
    """`compact` = the IBAN without spaces (case-insensitive): ISO 13616 mod-97 == 1."""
    s = compact.upper()
    if not (15 <= len(s) <= 34 and s.isascii() and s.isalnum() and s[:2].isalpha() and s[2:4].isdecimal()):
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1
