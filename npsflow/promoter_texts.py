"""The texts of promoter actions (thank-you, review request, reward code) in the shipped locales.

Per action kind: ``subject`` (e-mail), ``body`` (e-mail, plain paragraphs) and ``sms`` (one message). Placeholders:
``{org}`` (the branding name), ``{link}`` (the organization's review_url: review_request only) and ``{code}``
(the reward code: reward only; filled in at send time, never stored). A locale that is not shipped gets English.
"""

from __future__ import annotations

PROMOTER_TEXTS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "thank_you": {
            "subject": "Thank you from {org}",
            "body": "Thank you for your kind words – we are very glad you are happy with {org}!",
            "sms": "Thank you for your kind words – we are very glad you are happy with {org}!",
        },
        "review_request": {
            "subject": "Would you share your experience with {org}?",
            "body": "Thank you for your great rating! Would you like to share your experience in a public review? "
                    "It only takes a minute: {link}",
            "sms": "Thank you for your great rating! Would you share it in a review? {link}",
        },
        "reward": {
            "subject": "A thank-you gift from {org}",
            "body": "Thank you for recommending {org}! Here is your personal code: {code}",
            "sms": "Thank you for recommending {org}! Your personal code: {code}",
        },
    },
    "sv": {
        "thank_you": {
            "subject": "Tack från {org}",
            "body": "Tack för dina fina ord – vi är jätteglada att du är nöjd med {org}!",
            "sms": "Tack för dina fina ord – vi är jätteglada att du är nöjd med {org}!",
        },
        "review_request": {
            "subject": "Vill du dela din upplevelse av {org}?",
            "body": "Tack för ditt fina betyg! Vill du dela din upplevelse i ett offentligt omdöme? "
                    "Det tar bara en minut: {link}",
            "sms": "Tack för ditt fina betyg! Vill du dela det i ett omdöme? {link}",
        },
        "reward": {
            "subject": "En tackgåva från {org}",
            "body": "Tack för att du rekommenderar {org}! Här är din personliga kod: {code}",
            "sms": "Tack för att du rekommenderar {org}! Din personliga kod: {code}",
        },
    },
    "da": {
        "thank_you": {
            "subject": "Tak fra {org}",
            "body": "Tak for de pæne ord – vi er meget glade for, at du er tilfreds med {org}!",
            "sms": "Tak for de pæne ord – vi er meget glade for, at du er tilfreds med {org}!",
        },
        "review_request": {
            "subject": "Vil du dele din oplevelse med {org}?",
            "body": "Tak for din flotte vurdering! Vil du dele din oplevelse i en offentlig anmeldelse? "
                    "Det tager kun et minut: {link}",
            "sms": "Tak for din flotte vurdering! Vil du dele den i en anmeldelse? {link}",
        },
        "reward": {
            "subject": "En tak-gave fra {org}",
            "body": "Tak, fordi du anbefaler {org}! Her er din personlige kode: {code}",
            "sms": "Tak, fordi du anbefaler {org}! Din personlige kode: {code}",
        },
    },
    "nb": {
        "thank_you": {
            "subject": "Takk fra {org}",
            "body": "Takk for de hyggelige ordene – vi er veldig glade for at du er fornøyd med {org}!",
            "sms": "Takk for de hyggelige ordene – vi er veldig glade for at du er fornøyd med {org}!",
        },
        "review_request": {
            "subject": "Vil du dele opplevelsen din med {org}?",
            "body": "Takk for den fine vurderingen! Vil du dele opplevelsen din i en offentlig anmeldelse? "
                    "Det tar bare et minutt: {link}",
            "sms": "Takk for den fine vurderingen! Vil du dele den i en anmeldelse? {link}",
        },
        "reward": {
            "subject": "En takkegave fra {org}",
            "body": "Takk for at du anbefaler {org}! Her er din personlige kode: {code}",
            "sms": "Takk for at du anbefaler {org}! Din personlige kode: {code}",
        },
    },
    # Finnish inflects names: the texts use the name in its base form before a colon or not at all.
    "fi": {
        "thank_you": {
            "subject": "{org}: kiitos!",
            "body": "Kiitos ystävällisistä sanoistasi – olemme iloisia, että olet tyytyväinen meihin!",
            "sms": "Kiitos ystävällisistä sanoistasi – olemme iloisia, että olet tyytyväinen meihin!",
        },
        "review_request": {
            "subject": "{org}: kertoisitko kokemuksestasi?",
            "body": "Kiitos hyvästä arviostasi! Haluaisitko kertoa kokemuksestasi julkisessa arvostelussa? "
                    "Se vie vain minuutin: {link}",
            "sms": "Kiitos hyvästä arviostasi! Kertoisitko siitä arvostelussa? {link}",
        },
        "reward": {
            "subject": "{org}: kiitoslahja sinulle",
            "body": "Kiitos, että suosittelet meitä! Tässä henkilökohtainen koodisi: {code}",
            "sms": "Kiitos, että suosittelet meitä! Henkilökohtainen koodisi: {code}",
        },
    },
}


def promoter_texts(locale: str | None, kind: str, org_name: str, review_url: str | None = None) -> dict[str, str]:
    """``subject``, ``body`` and ``sms`` of one action kind in ``locale`` (its language, else English), with
    ``{org}`` and ``{link}`` filled in; ``{code}`` is left for the send."""
    lang = (locale or "en").replace("_", "-").split("-", 1)[0].lower()
    lang = {"no": "nb"}.get(lang, lang)
    chosen = PROMOTER_TEXTS.get(lang) or PROMOTER_TEXTS["en"]
    return {k: v.replace("{org}", org_name).replace("{link}", review_url or "") for k, v in chosen[kind].items()}
