"""The respondent's survey pages as HTML (jinja2 templates in ./templates/survey). Pure: no I/O, no web framework.

    html = render_survey(brand=branding(org, loc), texts=texts(org, loc, program), locale=loc,
                         action="/s/<token>", csrf=csrf, preselected=9, auto_submit=True, nonce=nonce)
    html = render_thanks(brand=..., texts=..., locale=loc, category="promoter", action="/s/<token>",
                         csrf=csrf, nonce=nonce, review_url=org.review_url, score=9, comment=comment)
    html = render_message(kind="expired", locale="sv", brand=None, nonce=nonce)
    header = content_security_policy(nonce, logo_url=brand["logo_url"])

Form fields posted back: the survey form ``csrf``, ``score`` (0–10), ``comment``; the follow-up form (same
``action`` as the survey, as the worker serves it) ``csrf``, ``step=follow_up``, ``follow_up``, the first answer's
``score`` and ``comment`` again (hidden, when ``render_thanks`` got them: an answer is one response, a new version
replaces the old one whole), and ``skip=1`` when the respondent pressed "skip" (the follow-up text is then
meant to be ignored). Element ids: radios ``score-0`` … ``score-10``, ``comment``, ``follow_up``, the submit
button ``send``.

Decisions worth knowing:

* **Escaping**: every template is autoescaped and StrictUndefined; brand colors pass ``safe_color`` and must be
  ``#RGB``/``#RRGGBB`` (else the default), the logo and review URL pass ``safe_http_url`` (the review URL must
  also be https), ``action``/``change_url`` must be an absolute path (``/s/…``) or an http(s) URL (else
  ValueError), the nonce must be base64(url) characters (else ValueError).
* **CSP-ready**: no ``style=`` attributes, no event handlers; one ``<style nonce>``, and a ``<script nonce>``
  only for ``auto_submit``. No external CSS, JS or fonts; the only external resource is the brand logo.
  ``content_security_policy`` gives the matching header.
* **The token is in the page URL**: ``<meta name="referrer" content="no-referrer">`` (and
  ``referrerpolicy`` on the logo, ``rel="noopener noreferrer"`` on the review link) keep it from leaking to the
  logo host or the review site; ``noindex``.
* **One-click links**: mail scanners fetch links but do not run scripts; ``auto_submit`` (with a preselected
  score) submits the form from a nonce'd inline script on load, and a ``<noscript>`` notice with a confirm
  button covers browsers without scripts. A score is therefore only ever recorded by a POST.
* **Contrast** (WCAG 2.x): text on background must reach 4.5:1, else both fall back to the defaults
  (``#222222`` on ``#FFFFFF``); the button label is the first of brand background, white, brand text, black
  that reaches 4.5:1 on the brand primary (one of white/black always does); the scale tiles' border and
  selected fill use the primary only if it reaches 3:1 against the background (non-text contrast), else the
  text color. Colors other than hex (names, alpha) are replaced by the defaults (no contrast can be computed).
* **Texts**: survey texts come from ``npsflow.programs.texts`` (``{org}`` is filled in again with the brand
  name, harmlessly, in case a caller used ``fill_org=False``); a missing or empty key falls back to the shipped
  text of the page language. The page chrome (``PAGE_TEXTS``) ships for sv, da, fi, nb, en; other locales get
  English chrome (``lang`` stays the survey texts' locale).
* ``errors`` given to ``render_survey`` may be ``PAGE_TEXTS`` keys (``"pick_score"``, translated) or
  ready-made text (shown as is, escaped).
* **Size**: about 5 KB per page plus the texts; a re-rendered comment of ``COMMENT_MAX_CHARS`` adds its length.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

import jinja2

from npsflow.programs import DEFAULT_TEXTS, LOCALE_ALIASES, render_text
from sinks.channels.render import safe_color, safe_http_url
from streams.responses import MAX_COMMENT_CHARS

__all__ = [
    "CATEGORIES", "COMMENT_MAX_CHARS", "DEFAULT_PALETTE", "MESSAGE_KINDS", "MESSAGE_STATUS", "PAGE_TEXTS",
    "PAGE_TEXT_KEYS", "content_security_policy", "contrast_ratio", "page_locale", "page_texts", "palette",
    "preferred_locale",
    "relative_luminance", "render_message", "render_survey", "render_thanks",
]

TEMPLATES = Path(__file__).resolve().parent / "templates" / "survey"
# The textareas' maxlength (comment, follow-up): what the worker's form handler keeps (its body limit is 48 KiB);
# streams.responses.validate accepts up to MAX_COMMENT_CHARS (API batches).
COMMENT_MAX_CHARS = min(2000, MAX_COMMENT_CHARS)
CATEGORIES = ("detractor", "passive", "promoter")
MESSAGE_KINDS = ("invalid", "expired", "answered", "rate_limited", "too_large", "unavailable")
# The HTTP status a handler would naturally send with each message page.
MESSAGE_STATUS = {"invalid": 404, "expired": 410, "answered": 409, "rate_limited": 429, "too_large": 413,
                  "unavailable": 503}

# ---------------------------------------------------------------------------------------------------------
# Page chrome texts (the survey texts themselves come from npsflow.programs.texts)

PAGE_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "submit": "Send",
        "optional": "optional",
        "comment_label": "Would you like to tell us more?",
        "pick_score": "Please choose a score from 0 to 10.",
        "send_again": "This page was open for a long time. Please send your answer again.",
        "saved": "Your answer has been saved.",
        "change_answer": "Change your answer",
        "you_answered": "You answered {score}.",
        "saving": "Saving your answer: {score} …",
        "not_saved_yet": "Your answer is still being saved. Please send this again in a moment.",
        "follow_up_submit": "Send",
        "skip": "Skip",
        "review_button": "Write a review",
        "confirm_notice": "Please confirm your score with the button below.",
        "confirm_score": "Confirm my score",
        "close_page": "You can close this page now.",
        "invalid_title": "This link is not valid",
        "invalid_body": "Please check that you opened the whole link from your message.",
        "expired_title": "This link has expired",
        "expired_body": "The survey is no longer open for answers.",
        "answered_title": "You have already answered",
        "answered_body": "Thank you – your answer has been saved and can no longer be changed.",
        "rate_limited_title": "Too many attempts",
        "rate_limited_body": "Please wait a moment and try again.",
        "too_large_title": "Your answer is too long",
        "too_large_body": "Please shorten your comment and send it again.",
        "unavailable_title": "Something went wrong",
        "unavailable_body": "We have a temporary problem – please try again in a few minutes.",
    },
    "sv": {
        "submit": "Skicka",
        "optional": "valfritt",
        "comment_label": "Vill du berätta mer?",
        "pick_score": "Välj ett betyg mellan 0 och 10.",
        "send_again": "Sidan har varit öppen länge. Skicka ditt svar igen.",
        "saved": "Ditt svar har sparats.",
        "change_answer": "Ändra ditt svar",
        "you_answered": "Du svarade {score}.",
        "saving": "Ditt svar sparas: {score} …",
        "not_saved_yet": "Ditt svar håller fortfarande på att sparas. Skicka igen om en liten stund.",
        "follow_up_submit": "Skicka",
        "skip": "Hoppa över",
        "review_button": "Skriv ett omdöme",
        "confirm_notice": "Bekräfta ditt betyg med knappen nedan.",
        "confirm_score": "Bekräfta mitt betyg",
        "close_page": "Du kan stänga sidan nu.",
        "invalid_title": "Länken är inte giltig",
        "invalid_body": "Kontrollera att du har öppnat hela länken från meddelandet.",
        "expired_title": "Länken har gått ut",
        "expired_body": "Det går inte längre att svara på enkäten.",
        "answered_title": "Du har redan svarat",
        "answered_body": "Tack – ditt svar är sparat och kan inte längre ändras.",
        "rate_limited_title": "För många försök",
        "rate_limited_body": "Vänta en stund och försök sedan igen.",
        "too_large_title": "Svaret är för långt",
        "too_large_body": "Korta ner din kommentar och skicka den igen.",
        "unavailable_title": "Något gick fel",
        "unavailable_body": "Vi har ett tillfälligt problem – försök igen om några minuter.",
    },
    "da": {
        "submit": "Send",
        "optional": "valgfrit",
        "comment_label": "Vil du fortælle os mere?",
        "pick_score": "Vælg en vurdering fra 0 til 10.",
        "send_again": "Siden har været åben længe. Send venligst dit svar igen.",
        "saved": "Dit svar er gemt.",
        "change_answer": "Ret dit svar",
        "you_answered": "Du svarede {score}.",
        "saving": "Dit svar gemmes: {score} …",
        "not_saved_yet": "Dit svar er stadig ved at blive gemt. Send igen om et øjeblik.",
        "follow_up_submit": "Send",
        "skip": "Spring over",
        "review_button": "Skriv en anmeldelse",
        "confirm_notice": "Bekræft din vurdering med knappen nedenfor.",
        "confirm_score": "Bekræft min vurdering",
        "close_page": "Du kan lukke siden nu.",
        "invalid_title": "Linket er ikke gyldigt",
        "invalid_body": "Kontrollér, at du har åbnet hele linket fra beskeden.",
        "expired_title": "Linket er udløbet",
        "expired_body": "Undersøgelsen er ikke længere åben for svar.",
        "answered_title": "Du har allerede svaret",
        "answered_body": "Tak – dit svar er gemt og kan ikke længere ændres.",
        "rate_limited_title": "For mange forsøg",
        "rate_limited_body": "Vent et øjeblik, og prøv igen.",
        "too_large_title": "Dit svar er for langt",
        "too_large_body": "Gør din kommentar kortere, og send den igen.",
        "unavailable_title": "Noget gik galt",
        "unavailable_body": "Vi har et midlertidigt problem – prøv igen om et par minutter.",
    },
    "fi": {
        "submit": "Lähetä",
        "optional": "vapaaehtoinen",
        "comment_label": "Haluatko kertoa lisää?",
        "pick_score": "Valitse arvosana väliltä 0–10.",
        "send_again": "Sivu oli auki pitkään. Lähetä vastauksesi uudelleen.",
        "saved": "Vastauksesi on tallennettu.",
        "change_answer": "Muuta vastaustasi",
        "you_answered": "Vastasit {score}.",
        "saving": "Vastaustasi tallennetaan: {score} …",
        "not_saved_yet": "Vastaustasi tallennetaan vielä. Lähetä uudelleen hetken kuluttua.",
        "follow_up_submit": "Lähetä",
        "skip": "Ohita",
        "review_button": "Kirjoita arvostelu",
        "confirm_notice": "Vahvista arvosanasi alla olevalla painikkeella.",
        "confirm_score": "Vahvista arvosana",
        "close_page": "Voit nyt sulkea sivun.",
        "invalid_title": "Linkki on virheellinen",
        "invalid_body": "Tarkista, että avasit koko linkin viestistä.",
        "expired_title": "Linkki on vanhentunut",
        "expired_body": "Kyselyyn ei voi enää vastata.",
        "answered_title": "Olet jo vastannut",
        "answered_body": "Kiitos – vastauksesi on tallennettu, eikä sitä voi enää muuttaa.",
        "rate_limited_title": "Liian monta yritystä",
        "rate_limited_body": "Odota hetki ja yritä sitten uudelleen.",
        "too_large_title": "Vastaus on liian pitkä",
        "too_large_body": "Lyhennä kommenttiasi ja lähetä se uudelleen.",
        "unavailable_title": "Jokin meni vikaan",
        "unavailable_body": "Meillä on tilapäinen häiriö – yritä uudelleen muutaman minuutin kuluttua.",
    },
    "nb": {
        "submit": "Send",
        "optional": "valgfritt",
        "comment_label": "Vil du fortelle oss mer?",
        "pick_score": "Velg en vurdering fra 0 til 10.",
        "send_again": "Siden har vært åpen lenge. Send svaret ditt på nytt.",
        "saved": "Svaret ditt er lagret.",
        "change_answer": "Endre svaret ditt",
        "you_answered": "Du svarte {score}.",
        "saving": "Svaret ditt lagres: {score} …",
        "not_saved_yet": "Svaret ditt lagres fortsatt. Send igjen om et øyeblikk.",
        "follow_up_submit": "Send",
        "skip": "Hopp over",
        "review_button": "Skriv en anmeldelse",
        "confirm_notice": "Bekreft vurderingen din med knappen nedenfor.",
        "confirm_score": "Bekreft vurderingen",
        "close_page": "Du kan lukke siden nå.",
        "invalid_title": "Lenken er ikke gyldig",
        "invalid_body": "Sjekk at du har åpnet hele lenken fra meldingen.",
        "expired_title": "Lenken har utløpt",
        "expired_body": "Undersøkelsen er ikke lenger åpen for svar.",
        "answered_title": "Du har allerede svart",
        "answered_body": "Takk – svaret ditt er lagret og kan ikke lenger endres.",
        "rate_limited_title": "For mange forsøk",
        "rate_limited_body": "Vent litt og prøv igjen.",
        "too_large_title": "Svaret er for langt",
        "too_large_body": "Gjør kommentaren kortere og send den på nytt.",
        "unavailable_title": "Noe gikk galt",
        "unavailable_body": "Vi har et midlertidig problem – prøv igjen om noen minutter.",
    },
}
PAGE_TEXT_KEYS = tuple(PAGE_TEXTS["en"])


def page_locale(locale: str | None) -> str:
    """The shipped chrome locale for ``locale``: itself, its language (``sv-FI`` → ``sv``, ``no`` → ``nb``), en."""
    if isinstance(locale, str) and locale.strip():
        norm = locale.strip().replace("_", "-")
        lang = norm.split("-", 1)[0].lower()
        for candidate in (norm, norm.lower(), lang, LOCALE_ALIASES.get(lang, lang)):
            if candidate in PAGE_TEXTS:
                return candidate
    return "en"


def _shipped(tag: str) -> str | None:
    """The shipped chrome locale a language tag names (``sv-SE`` → sv, ``no`` → nb), else None."""
    lang = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    lang = LOCALE_ALIASES.get(lang, lang)
    return lang if lang in PAGE_TEXTS else None


def preferred_locale(accept_language: str | None) -> str:
    """The shipped chrome locale a browser prefers (its ``Accept-Language``: tags with q-values, RFC 9110 §12.5.4),
    for pages that cannot know the invitation's language (an invalid or truncated link); en when none is shipped.
    Equal q-values keep the header's order; q=0 means "not this one"."""
    ranked = []
    for position, item in enumerate((accept_language or "")[:1000].split(",")):
        tag, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        shipped = _shipped(tag) if tag.strip() not in ("", "*") else None
        if shipped and q > 0:
            ranked.append((-q, position, shipped))
    return min(ranked)[2] if ranked else "en"


def page_texts(locale: str | None) -> dict[str, str]:
    """Every ``PAGE_TEXT_KEYS`` text for ``locale`` (resolved by ``page_locale``)."""
    chosen = PAGE_TEXTS[page_locale(locale)]
    return {key: chosen.get(key) or PAGE_TEXTS["en"][key] for key in PAGE_TEXT_KEYS}


# ---------------------------------------------------------------------------------------------------------
# Colors (WCAG 2.x contrast)

DEFAULT_PALETTE = {"primary": "#1A73E8", "background": "#FFFFFF", "text": "#222222"}
_HEX = re.compile(r"^#(?:[0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})$")


def _rgb(color: str) -> tuple[int, int, int]:
    if not isinstance(color, str) or not _HEX.match(color.strip()):
        raise ValueError(f"not a #RGB or #RRGGBB color: {color!r}")
    digits = color.strip()[1:]
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def relative_luminance(color: str) -> float:
    """WCAG 2.x relative luminance of ``#RGB``/``#RRGGBB`` (0 black … 1 white)."""
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(v) for v in _rgb(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str, b: str) -> float:
    """WCAG contrast ratio of two colors, 1.0 … 21.0 (order does not matter)."""
    la, lb = relative_luminance(a), relative_luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def _hex_or(value: Any, default: str) -> str:
    value = safe_color(value, default)
    return value.upper() if _HEX.match(value) else default


def palette(colors: Mapping[str, Any] | None) -> dict[str, str]:
    """The page colors from brand colors {primary, background, text}, each pair readable (see module doc).

    Keys: background, text (≥ 4.5:1), primary, on_primary (button label, ≥ 4.5:1 on primary), accent (scale
    tile border and selected fill, ≥ 3:1 on background), on_accent (≥ 4.5:1 on accent)."""
    colors = colors if isinstance(colors, Mapping) else {}
    primary, background, text = (_hex_or(colors.get(k), DEFAULT_PALETTE[k]) for k in ("primary", "background", "text"))
    if contrast_ratio(text, background) < 4.5:
        background, text = DEFAULT_PALETTE["background"], DEFAULT_PALETTE["text"]

    def label_on(fill: str) -> str | None:
        return next((c for c in (background, "#FFFFFF", text, "#000000") if contrast_ratio(c, fill) >= 4.5), None)

    on_primary = label_on(primary)
    if on_primary is None:  # cannot happen (white or black always reaches 4.58:1), kept as a guard
        primary, on_primary = DEFAULT_PALETTE["primary"], "#FFFFFF"
    accent = primary if contrast_ratio(primary, background) >= 3 else text
    on_accent = label_on(accent) or "#FFFFFF"
    return {"background": background, "text": text, "primary": primary, "on_primary": on_primary,
            "accent": accent, "on_accent": on_accent}


# ---------------------------------------------------------------------------------------------------------
# Rendering

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_NONCE = re.compile(r"^[A-Za-z0-9+/_=-]{8,256}$")
_LANG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")


def _nonce(value: Any) -> str:
    if not isinstance(value, str) or not _NONCE.match(value):
        raise ValueError("nonce must be 8–256 base64/base64url characters")
    return value


def _target(value: Any, what: str) -> str:
    """A form action / link target: an absolute path on this site or an http(s) URL."""
    if isinstance(value, str) and value.isprintable() and " " not in value:
        if value.startswith("/") and not value.startswith(("//", "/\\")):
            return value
        if safe_http_url(value) == value:
            return value
    raise ValueError(f"{what} must be an absolute path (/s/…) or an http(s) URL, got {value!r}")


def _lang(locale: Any) -> str:
    if isinstance(locale, str) and _LANG.match(locale.strip().replace("_", "-")):
        return locale.strip().replace("_", "-")
    return page_locale(locale if isinstance(locale, str) else None)


def _brand(brand: Mapping[str, Any] | None) -> dict[str, Any]:
    brand = brand if isinstance(brand, Mapping) else {}
    name = brand.get("name")
    return {
        "name": " ".join(name.split()) if isinstance(name, str) else "",
        "logo_url": safe_http_url(brand.get("logo_url")),
        "colors": palette(brand.get("colors")),
    }


def _survey_texts(texts: Mapping[str, Any] | None, locale: str | None, org_name: str) -> dict[str, str]:
    """The survey texts, each key present: the given text, else the shipped one of the page language."""
    texts = texts if isinstance(texts, Mapping) else {}
    shipped = DEFAULT_TEXTS[page_locale(locale)]
    out = {}
    for key, fallback in shipped.items():
        value = texts.get(key)
        value = value if isinstance(value, str) and value.strip() else fallback
        out[key] = render_text(value, org=org_name or "")
    return out


def _render(template: str, *, brand: Mapping[str, Any] | None, locale: str | None, nonce: str,
            title: str, **context: Any) -> str:
    b = _brand(brand)
    return _ENV.get_template(template).render(
        lang=_lang(locale), nonce=_nonce(nonce), title=title, branded=brand is not None,
        org_name=b["name"], logo_url=b["logo_url"], c=b["colors"], p=page_texts(locale),
        max_chars=COMMENT_MAX_CHARS, **context)


def _title(*parts: str) -> str:
    return " – ".join(p for p in parts if p)


def render_survey(*, brand: Mapping[str, Any], texts: Mapping[str, Any], locale: str, action: str, csrf: str,
                  preselected: int | None = None, comment: str = "", auto_submit: bool = False, nonce: str,
                  errors: Iterable[str] = (), saved: bool = False) -> str:
    """The survey page: the 0–10 scale (radios named ``score``), an optional comment, POST to ``action``.

    ``auto_submit`` (one-click link, needs ``preselected``) submits on load by script, with a noscript
    confirm button; ``errors`` (PAGE_TEXTS keys or texts) go on top in role="alert"; ``saved`` adds the
    "your answer has been saved" notice (a respondent coming back to change an answer)."""
    if preselected is not None and (isinstance(preselected, bool) or not isinstance(preselected, int)
                                    or not 0 <= preselected <= 10):
        raise ValueError(f"preselected must be an integer 0–10 or None, got {preselected!r}")
    b = _brand(brand)
    t = _survey_texts(texts, locale, b["name"])
    p = page_texts(locale)
    given_prompt = texts.get("comment_prompt") if isinstance(texts, Mapping) else None
    comment_label = t["comment_prompt"] if isinstance(given_prompt, str) and given_prompt.strip() \
        else p["comment_label"]
    if isinstance(errors, str):
        errors = [errors]
    shown_errors = [p.get(e, e) if isinstance(e, str) else str(e) for e in errors]
    auto = bool(auto_submit) and preselected is not None
    return _render(
        "survey.html.j2", brand=brand, locale=locale, nonce=nonce,
        title=t["subject"],
        t=t, comment_label=comment_label, action=_target(action, "action"), csrf=str(csrf),
        preselected=preselected, comment=str(comment or ""), auto=auto,
        saving=p["saving"].replace("{score}", str(preselected)) if auto else "",
        errors=[e for e in shown_errors if e], saved=bool(saved))


def render_thanks(*, brand: Mapping[str, Any], texts: Mapping[str, Any], locale: str, category: str, action: str,
                  csrf: str, nonce: str, review_url: str | None, follow_up_done: bool = False,
                  change_url: str | None = None, score: int | None = None, receipt: str | None = None,
                  follow_up: str = "", errors: Iterable[str] = ()) -> str:
    """The thank-you page: "your answer has been saved", the ``score`` recorded ("You answered 3."), a "change your
    answer" button when ``change_url`` is given; unless ``follow_up_done``, a follow-up question
    (detractor_follow_up for detractors and passives, promoter_follow_up for promoters) posted to ``action`` as
    ``follow_up`` (or ``skip=1``), with the ``receipt`` of the answer it completes as a hidden field ``a`` and
    ``follow_up`` prefilled; ``errors`` (PAGE_TEXTS keys or texts) on top in role="alert"; for promoters with an
    https ``review_url``, the review invitation and a link to it."""
    category = category.value if isinstance(category, Enum) else category
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 10):
        raise ValueError(f"score must be an integer 0–10 or None, got {score!r}")
    b = _brand(brand)
    t = _survey_texts(texts, locale, b["name"])
    review = safe_http_url(review_url) if category == "promoter" else None
    if review is not None and urlsplit(review).scheme != "https":
        review = None
    p = page_texts(locale)
    errors = [errors] if isinstance(errors, str) else errors
    return _render(
        "thanks.html.j2", brand=brand, locale=locale, nonce=nonce, title=_title(t["thank_you"], b["name"]),
        t=t, follow_up_label=t["promoter_follow_up" if category == "promoter" else "detractor_follow_up"],
        action=_target(action, "action"), csrf=str(csrf), follow_up_done=bool(follow_up_done),
        review_url=review, change_url=_target(change_url, "change_url") if change_url else None,
        you_answered=p["you_answered"].replace("{score}", str(score)) if score is not None else "",
        receipt=str(receipt) if receipt else "", follow_up=str(follow_up or ""),
        errors=[p.get(e, e) for e in errors if isinstance(e, str) and e])


def render_message(*, kind: str, locale: str, brand: Mapping[str, Any] | None = None, nonce: str) -> str:
    """An error/notice page (``MESSAGE_KINDS``): title and one sentence; branded when ``brand`` is given."""
    if kind not in MESSAGE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MESSAGE_KINDS)}, got {kind!r}")
    p = page_texts(locale)
    name = _brand(brand)["name"] if brand is not None else ""
    return _render("message.html.j2", brand=brand, locale=locale, nonce=nonce,
                   title=_title(p[f"{kind}_title"], name), heading=p[f"{kind}_title"], body=p[f"{kind}_body"])


def _origin(url: str | None) -> str | None:
    url = safe_http_url(url)
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not re.match(r"^[A-Za-z0-9.:-]+$", host):
        return None
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return None
    return f"{parts.scheme}://{host}{port}"


def content_security_policy(nonce: str, *, logo_url: str | None = None, form_action: str | None = None) -> str:
    """The Content-Security-Policy header these pages work under: nothing but the nonce'd style/script, the
    logo's origin for images, forms to this site (and ``form_action``'s origin when it is an absolute URL)."""
    nonce = _nonce(nonce)
    img = _origin(logo_url) or "'none'"
    forms = " ".join(dict.fromkeys(["'self'", *([o] if (o := _origin(form_action)) else [])]))
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; img-src {img}; "
            f"form-action {forms}; base-uri 'none'; frame-ancestors 'none'")
