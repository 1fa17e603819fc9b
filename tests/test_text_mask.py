"""streams.text.mask: each kind of personal data, valid and invalid checks, ordinary numbers untouched.

Check digits were computed by hand from the official definitions (see streams/text/checksums.py); the
arithmetic is in the comments. IBANs are the examples of the SWIFT IBAN registry; cards are the networks'
published test numbers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.text import MASKS, mask
from streams.text.checksums import luhn_ok


def test_placeholders():
    assert MASKS == {"email": "[email]", "url": "[url]", "iban": "[iban]", "card": "[card]", "id": "[id]",
                     "phone": "[phone]"}


# --- e-mail and URL ---------------------------------------------------------------------------------------

def test_email_in_the_middle_of_text():
    assert mask("Skriv till anna.svensson+nps@post.example.se så svarar jag.") == \
        ("Skriv till [email] så svarar jag.", ("email",))


def test_url_in_the_middle_of_text_without_trailing_punctuation():
    assert mask("Se https://example.com/order?id=77, eller www.example.fi/apua.") == \
        ("Se [url], eller [url].", ("url",))


# --- Swedish personnummer / samordningsnummer (Luhn over YYMMDDNNNC) ------------------------------------
# 811218-987?: 8·2=16→7, 1, 1·2=2, 2, 1·2=2, 8, 9·2=18→9, 8, 7·2=14→5; sum 44 → check digit 6
# 811278-987? (day 18 + 60): 7, 1, 2, 2, 7·2=14→5, 8, 9, 8, 5; sum 47 → check digit 3

@pytest.mark.parametrize("number", ["811218-9876", "8112189876", "19811218-9876", "198112189876", "811278-9873"])
def test_swedish_personnummer_masked(number):
    assert mask(f"Mitt nummer är {number}.", "SE") == ("Mitt nummer är [id].", ("id",))


@pytest.mark.parametrize("number", ["811218-9875", "19811218-9877", "811278-9874"])
def test_swedish_personnummer_with_a_wrong_check_digit_not_masked(number):
    # DD = 81 is no day, so these are no Danish CPR numbers either
    assert mask(f"Mitt nummer är {number}.", "SE") == (f"Mitt nummer är {number}.", ())


# --- Danish CPR (date with the century of the 7th digit; no modulus 11) -----------------------------------

@pytest.mark.parametrize("number", ["070761-4285", "0707614285", "290200-4285"])
def test_danish_cpr_masked(number):
    # 07-07-1961; 29-02-2000 (7th digit 4, year 00 ≤ 36 → 2000, a leap year)
    assert mask(f"CPR {number} tak", "DK") == ("CPR [id] tak", ("id",))


@pytest.mark.parametrize("number", ["320161-4285", "290201-4285", "071361-4285"])
def test_danish_cpr_with_an_impossible_date_not_masked(number):
    # day 32; 29 February 2001; month 13 (and none of them passes the Swedish Luhn check): never an [id]; a
    # digit run starting with 0 may still be a valid Swedish/Finnish/British phone number (masked as [phone])
    masked, kinds = mask(f"CPR {number} tak", "DK")
    assert "id" not in kinds and (masked == f"CPR {number} tak" or kinds == ("phone",))


# --- Norwegian fødselsnummer / D-number (two modulus-11 check digits) ---------------------------------------
# 010190 124: K1 = 11 − (0·3+1·7+0·6+1·1+9·8+0·9+1·4+2·5+4·2 = 102 mod 11 = 3) = 8
#             K2 = 11 − (0·5+1·4+0·3+1·2+9·7+0·6+1·5+2·4+4·3+8·2 = 110 mod 11 = 0) = 11 → 0
# 410190 124 (D-number, day 1 + 40): K1 = 11 − (114 mod 11 = 4) = 7; K2 = 11 − (128 mod 11 = 7) = 4

@pytest.mark.parametrize("number", ["01019012480", "010190 12480", "41019012474"])
def test_norwegian_fodselsnummer_masked(number):
    assert mask(f"Fnr {number}.", "NO") == ("Fnr [id].", ("id",))


@pytest.mark.parametrize("number", ["01019012481", "01019012470", "41019012475"])
def test_norwegian_fodselsnummer_with_a_wrong_check_digit_not_masked(number):
    masked, kinds = mask(f"Fnr {number}.", "NO")  # never an [id] (see the Danish case for [phone])
    assert "id" not in kinds and (masked == f"Fnr {number}." or kinds == ("phone",))


# --- Finnish henkilötunnus (check character = table[DDMMYYZZZ mod 31]) -------------------------------------
# 131052308 = 31 · 4227493 + 25 → table[25] = "T" (DVV's example); the century sign is not in the sum

@pytest.mark.parametrize("hetu", ["131052-308T", "131052Y308T", "131052A308T", "131052B308T"])
def test_finnish_henkilotunnus_masked(hetu):
    assert mask(f"Hetu {hetu}, kiitos", "FI") == ("Hetu [id], kiitos", ("id",))


@pytest.mark.parametrize("hetu", ["131052-308U", "131052G308T", "311152-308T"])
def test_finnish_henkilotunnus_invalid_not_masked(hetu):
    # wrong check character; G is no century sign; 31 November does not exist
    assert mask(f"Hetu {hetu}, kiitos", "FI") == (f"Hetu {hetu}, kiitos", ())


# --- IBAN (mod 97) ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("iban", ["SE45 5000 0000 0583 9825 7466", "SE4550000000058398257466",
                                  "FI21 1234 5600 0007 85", "DK50 0040 0440 1162 43", "NO93 8601 1117 947",
                                  "GB29 NWBK 6016 1331 9268 19"])
def test_iban_masked_and_the_next_word_kept(iban):
    assert mask(f"Konto {iban} tack", "SE") == ("Konto [iban] tack", ("iban",))


def test_iban_with_a_wrong_check_not_masked_as_iban():
    masked, kinds = mask("Konto SE46 5000 0000 0583 9825 7466 tack", "SE")
    assert "iban" not in kinds and "SE46" in masked


# --- cards (13–19 digits, Luhn) -----------------------------------------------------------------------------
# 4111 1111 1111 1111: doubled digits 4→8 and seven 1→2 = 22, undoubled eight 1 = 8; 30 ≡ 0 (mod 10)

@pytest.mark.parametrize("card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111",
                                  "3782 822463 10005"])
def test_card_masked(card):
    assert mask(f"Kortet {card} drogs två gånger", "SE") == ("Kortet [card] drogs två gånger", ("card",))


def test_card_with_a_wrong_check_digit_not_masked():
    assert mask("Kortet 4111 1111 1111 1112 drogs", None) == ("Kortet 4111 1111 1111 1112 drogs", ())


def test_card_followed_by_an_expiry_date():
    assert mask("4111 1111 1111 1111 12/27", "SE")[0] == "[card] 12/27"


# --- phone numbers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "region"), [
    ("070-123 45 67", "SE"), ("08-123 456 78", "SE"), ("+46 70 123 45 67", "SE"), ("0046 70 123 45 67", "FI"),
    ("040 123 4567", "FI"), ("+358 40 1234567", "SE"), ("22 33 44 55", "DK"), ("912 34 567", "NO"),
    ("020 7946 0958", "GB"), ("+47 912 34 567", None),
])
def test_phone_masked(text, region):
    assert mask(f"Ring {text} i morgon", region) == ("Ring [phone] i morgon", ("phone",))


def test_national_numbers_of_the_trunk_prefix_plans_are_masked_whatever_the_locale():
    # a Swede answering in English, an answer without a locale: 070-… is a Swedish mobile number all the same
    assert mask("Ring 070-123 45 67", None) == ("Ring [phone]", ("phone",))
    assert mask("Call 070-123 45 67", "GB") == ("Call [phone]", ("phone",))
    assert mask("Soita 040 123 4567", "SE") == ("Soita [phone]", ("phone",))
    # Danish and Norwegian numbers have no trunk prefix: only with their locale, else any 8-digit number would be
    assert mask("Ordre 20123456 kom", None) == ("Ordre 20123456 kom", ())
    assert mask("Ring 20 12 34 56", "DK") == ("Ring [phone]", ("phone",))


# --- ordinary numbers are not personal data ----------------------------------------------------------------

@pytest.mark.parametrize(("text", "region"), [
    ("Ordernummer 123456 kom aldrig", "SE"),
    ("Order 20240315 kom aldrig", "SE"),  # eight digits without the trunk 0: not a Swedish phone number
    ("Ordre #48213377 kom aldrig", "DK"),
    ("Ordre 4821337 kom aldrig", "DK"),
    ("Det kostade 1 299 kr, förra året 2 499,00 kr", "SE"),
    ("Beställt 2024-03-15, levererat 15.3.2024 kl. 14.30", "SE"),
    ("Tilaus 15/03/2024, hinta 129,90 €, vuonna 2023", "FI"),
    ("3 dagar och 45 minuter i kö, 100 % missnöjd", "SE"),
    ("Kvitto 1234 5678 90", "SE"),
])
def test_ordinary_numbers_untouched(text, region):
    assert mask(text, region) == (text, ())


def test_several_kinds_in_one_comment():
    text = ("Jag heter Anna, pnr 811218-9876, mejl anna@example.se, tel +46 70 123 45 67, "
            "kort 4111 1111 1111 1111, se https://example.se/x")
    masked, kinds = mask(text, "SE")
    assert masked == "Jag heter Anna, pnr [id], mejl [email], tel [phone], kort [card], se [url]"
    assert kinds == ("email", "url", "card", "id", "phone")


# --- properties -------------------------------------------------------------------------------------------

_DIGIT_RUN = re.compile(r"\d+")
_NUMBERISH = st.text(alphabet=st.sampled_from("0123456789    --+/.abc@"), max_size=80)


def _no_card_left(masked: str) -> bool:
    return not any(13 <= len(run) <= 19 and luhn_ok(run) for run in _DIGIT_RUN.findall(masked))


@settings(max_examples=500, deadline=None)
@given(_NUMBERISH, st.sampled_from([None, "SE", "DK", "NO", "FI", "GB"]))
def test_no_luhn_valid_digit_run_survives(text, region):
    masked, _ = mask(text, region)
    assert _no_card_left(masked)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=200),
       st.sampled_from([None, "SE", "DK", "xx", ""]))
def test_mask_never_raises_and_is_idempotent(text, region):
    masked, kinds = mask(text, region)
    assert _no_card_left(masked)
    assert mask(masked, region)[0] == masked
    assert set(kinds) <= set(MASKS)
