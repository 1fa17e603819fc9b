"""Rendering of invitation texts (jinja2 templates in ./templates) shared by e-mail and newsletter.

HTML templates are autoescaped; colours are accepted only as #hex or plain colour names and the logo
only as an http(s) URL, so branding cannot inject CSS, markup or scripts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from sinks.channels.base import Invitation

TEMPLATES = Path(__file__).resolve().parent / "templates"

DEFAULT_TEXTS = {
    "subject": "A quick question from {org}",
    "intro": "",
    "question": "How likely are you to recommend {org} to a friend or colleague?",
    "low_label": "Not at all likely",
    "high_label": "Extremely likely",
    "sms_text": "{org}: how likely are you to recommend us? {link}",
    "footer": "",
    "reminder_prefix": "Reminder:",
}
DEFAULT_COLORS = {"primary": "#1a73e8", "background": "#f4f5f7", "text": "#222222", "button_text": "#ffffff"}

_COLOR = re.compile(r"^(#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})|[a-zA-Z]{3,20})$")


def _autoescape(name: str | None) -> bool:
    return bool(name) and name.endswith((".html.j2", ".html"))


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=_autoescape,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def safe_color(value: Any, default: str) -> str:
    return value.strip() if isinstance(value, str) and _COLOR.match(value.strip()) else default


def safe_http_url(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def one_line(value: Any) -> str:
    """Collapse whitespace (no CR/LF may reach a header)."""
    return " ".join(str(value).split())


def text(inv: Invitation, key: str) -> str:
    """A localized text, falling back to the English default (with {org} filled in)."""
    value = (inv.texts or {}).get(key)
    if value is None:
        value = DEFAULT_TEXTS.get(key, "").replace("{org}", inv.org_name)
    return str(value)


def subject(inv: Invitation) -> str:
    if not inv.survey:
        return one_line((inv.texts or {}).get("subject") or inv.org_name)
    s = one_line(text(inv, "subject"))
    if inv.reminder:
        prefix = one_line(text(inv, "reminder_prefix"))
        if prefix:
            s = f"{prefix} {s}"
    return s


def context(inv: Invitation) -> dict[str, Any]:
    use_reminder_intro = inv.reminder and (inv.texts or {}).get("reminder_intro")
    intro = text(inv, "reminder_intro") if use_reminder_intro else text(inv, "intro")
    return {
        **_branded(inv),
        "intro": intro,
        "question": text(inv, "question"),
        "low_label": text(inv, "low_label"),
        "high_label": text(inv, "high_label"),
        "footer": text(inv, "footer"),
        "survey_url": inv.survey_url,
        "scores": list(enumerate(inv.score_urls)),
    }


def _branded(inv: Invitation) -> dict[str, Any]:
    """What every message's template shows of the organization: language, name, logo, colors, subject."""
    branding = inv.branding or {}
    colors = branding.get("colors") or {}
    return {
        "lang": one_line(inv.locale or "en"),
        "org_name": str(branding.get("name") or inv.org_name),
        "logo_url": safe_http_url(branding.get("logo_url")),
        "colors": {k: safe_color(colors.get(k), d) for k, d in DEFAULT_COLORS.items()},
        "subject": subject(inv),
    }


def render(template: str, inv: Invitation) -> str:
    return _ENV.get_template(template).render(**context(inv))


def promoter_context(inv: Invitation) -> dict[str, Any]:
    """A promoter message (thank-you, review request, reward): its subject and body, the org's branding."""
    return {
        **_branded(inv),
        "body": str((inv.texts or {}).get("body") or ""),
        "link": safe_http_url(inv.survey_url) if inv.kind == "review_request" else None,
    }


def render_html(inv: Invitation) -> str:
    if not inv.survey:
        return _ENV.get_template("promoter.html.j2").render(**promoter_context(inv))
    return render("invitation.html.j2", inv)


def render_text(inv: Invitation) -> str:
    if not inv.survey:
        return _ENV.get_template("promoter.txt.j2").render(**promoter_context(inv))
    return render("invitation.txt.j2", inv)


def render_embed(inv: Invitation) -> str:
    return render("embed.html.j2", inv)
