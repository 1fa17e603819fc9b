"""The respondent's survey pages (web.survey_page): structure, accessibility, escaping, texts, contrast."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from npsflow.programs import SHIPPED_LOCALES, branding, load_programs, texts
from web import survey_page as sp
from web.survey_page import (
    MESSAGE_KINDS,
    PAGE_TEXT_KEYS,
    PAGE_TEXTS,
    content_security_policy,
    contrast_ratio,
    page_locale,
    page_texts,
    palette,
    relative_luminance,
    render_message,
    render_survey,
    render_thanks,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "programs.example.yaml"
NONCE = "n0nce-Abc123_xyz"
ACTION = "/s/eyJpIjoiYWJjIn0.c2ln"
EVIL = '<script>alert("x")</script>'

# ---------------------------------------------------------------------------------------------------------
# A tiny DOM from the stdlib parser


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: "Node | None"):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str, **attrs: str) -> list["Node"]:
        return [n for n in self.iter() if n.tag == tag and all(n.attrs.get(k) == v for k, v in attrs.items())]

    def find(self, tag: str, **attrs: str) -> "Node":
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]

    def by_id(self, ident: str) -> "Node":
        found = [n for n in self.iter() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"expected one element with id {ident!r}, found {len(found)}"
        return found[0]

    def text(self) -> str:
        out = []
        for child in self.children:
            out.append(child if isinstance(child, str) else child.text())
        return " ".join(" ".join(out).split())

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.current = self.root
        self.doctype = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        assert tag not in VOID, f"end tag for void element {tag}"
        assert self.current.tag == tag, f"</{tag}> closes <{self.current.tag}>"
        self.current = self.current.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    assert builder.current is builder.root, "unclosed elements"
    assert builder.doctype and builder.doctype.lower() == "doctype html"
    return builder.root


def visible_text_and_attrs(doc: Node) -> list[str]:
    """Every text node outside <style>/<script>, and every attribute value."""
    out: list[str] = []
    for node in doc.iter():
        out.extend(v for v in node.attrs.values() if v is not None)
        if node.tag not in ("style", "script"):
            out.extend(c for c in node.children if isinstance(c, str))
    return out


def textarea_value(node: Node) -> str:
    raw = "".join(c for c in node.children if isinstance(c, str))
    return raw[1:] if raw.startswith("\n") else raw  # browsers drop the newline right after <textarea>


# ---------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def programs():
    return load_programs(EXAMPLE)


def example_pages(programs):
    """(org, program, locale, brand, texts) for every org, program and shipped locale of the example file."""
    for org in programs.organizations:
        for program in org.programs:
            for locale in SHIPPED_LOCALES:
                yield org, program, locale, branding(org, locale), texts(org, locale, program)


def survey(**over) -> str:
    args = dict(brand={"name": "Nordvik Rör", "logo_url": "https://cdn.example.se/logo.png",
                       "colors": {"primary": "#0B5FFF", "background": "#FFFFFF", "text": "#1A1A1A"}},
                texts={"question": "How likely is it that you would recommend Nordvik Rör?",
                       "low_label": "Not at all likely", "high_label": "Extremely likely",
                       "comment_prompt": "Why?", "subject": "A quick question"},
                locale="en", action=ACTION, csrf="csrf-token-1", nonce=NONCE)
    args.update(over)
    return render_survey(**args)


def thanks(**over) -> str:
    args = dict(brand={"name": "Nordvik Rör"}, texts={"thank_you": "Thanks a lot!",
                                                     "detractor_follow_up": "What should we improve?",
                                                     "promoter_follow_up": "What did you like most?",
                                                     "review_invitation": "Would you review us?"},
                locale="en", category="promoter", action="/s/tok/follow-up", csrf="csrf-2", nonce=NONCE,
                review_url="https://g.page/r/example/review")
    args.update(over)
    return render_thanks(**args)


# ---------------------------------------------------------------------------------------------------------
# Page texts


def test_every_shipped_locale_has_every_page_text():
    assert set(PAGE_TEXTS) == set(SHIPPED_LOCALES)
    expected = {"submit", "optional", "comment_label", "pick_score", "saved", "change_answer", "follow_up_submit",
                "skip", "review_button", "confirm_notice", "confirm_score", "close_page", "send_again",
                "you_answered", "saving", "not_saved_yet"}
    expected |= {f"{kind}_{part}" for kind in MESSAGE_KINDS for part in ("title", "body")}
    assert set(PAGE_TEXT_KEYS) == expected
    for locale, table in PAGE_TEXTS.items():
        assert set(table) == expected, locale
        for key, value in table.items():
            assert isinstance(value, str) and value.strip() == value and value, (locale, key)
            assert ("{score}" in value) == (key in ("you_answered", "saving")), (locale, key)  # the one field
            assert "{" not in value.replace("{score}", "") and "}" not in value.replace("{score}", ""), (locale, key)
    # really translated, not copies of English (the words that are the same in Danish/Norwegian aside)
    for locale in ("sv", "da", "fi", "nb"):
        for kind in MESSAGE_KINDS:
            assert PAGE_TEXTS[locale][f"{kind}_body"] != PAGE_TEXTS["en"][f"{kind}_body"], (locale, kind)


@pytest.mark.parametrize("header, expected", [
    ("sv-SE,sv;q=0.9,en;q=0.8", "sv"),  # a Swedish browser
    ("de-DE,de;q=0.9,fi;q=0.5,en;q=0.3", "fi"),  # German first: not shipped, the next one that is
    ("en;q=0.5, nb", "nb"),  # q decides, not the order
    ("da;q=0.8, sv;q=0.8", "da"),  # equal q: the header's order
    ("no", "nb"), ("nb-NO", "nb"), ("FI", "fi"), ("sv_FI", "sv"),
    ("fi;q=0, da", "da"),  # q=0: "not this one"
    ("sv;q=abc, da;q=0.5", "da"),  # an unreadable q counts as 0
    ("*", "en"), ("de, fr", "en"), ("", "en"), (None, "en"), (",,;q=1,", "en"),
])
def test_the_browsers_language_picks_the_page_language(header, expected):
    assert sp.preferred_locale(header) == expected


def test_page_texts_resolve_like_programs():
    assert page_texts("sv") == PAGE_TEXTS["sv"]
    assert page_locale("sv-FI") == "sv" and page_texts("sv-FI")["submit"] == "Skicka"
    assert page_locale("fi_FI") == "fi"
    assert page_locale("no") == "nb" and page_locale("nn-NO") == "en"
    assert page_locale("NB") == "nb"
    assert page_locale("de-DE") == "en" and page_texts("de") == PAGE_TEXTS["en"]
    assert page_locale(None) == "en" and page_locale("") == "en"
    got = page_texts("da")
    assert list(got) == list(PAGE_TEXT_KEYS)
    got["submit"] = "changed"
    assert PAGE_TEXTS["da"]["submit"] == "Send"  # a copy


# ---------------------------------------------------------------------------------------------------------
# Survey page


def test_survey_page_for_every_example_org_and_locale_is_complete(programs):
    seen = 0
    for org, program, locale, brand, strings in example_pages(programs):
        html = render_survey(brand=brand, texts=strings, locale=locale, action=ACTION, csrf="c", nonce=NONCE,
                             preselected=7, errors=["pick_score"])
        doc = parse(html)
        for chunk in visible_text_and_attrs(doc):
            assert "{" not in chunk and "}" not in chunk, (org.id, locale, chunk)
        assert "None" not in html, (org.id, locale)
        assert doc.find("html").attrs["lang"] == locale
        assert doc.find("legend").text() == strings["question"]
        assert brand["name"] in strings["question"]
        assert doc.by_id("low").text() == f"0 = {strings['low_label']}"
        assert doc.by_id("high").text() == f"10 = {strings['high_label']}"
        label = doc.find("label", **{"for": "comment"}).text()
        assert label.startswith(strings["comment_prompt"]) and PAGE_TEXTS[locale]["optional"] in label
        assert doc.find("button", type="submit").text() == PAGE_TEXTS[locale]["submit"]
        assert doc.find("div", role="alert").text() == PAGE_TEXTS[locale]["pick_score"]
        assert len(html.encode()) < 20_000
        seen += 1
    assert seen == 4 * len(SHIPPED_LOCALES)


def test_scale_is_a_fieldset_of_eleven_labelled_radios():
    doc = parse(survey(preselected=None))
    fieldset = doc.find("fieldset")
    legend = fieldset.find("legend")
    assert legend.parent is fieldset and fieldset.children.index(legend) == next(
        i for i, c in enumerate(fieldset.children) if isinstance(c, Node))  # legend comes first
    assert legend.text() == "How likely is it that you would recommend Nordvik Rör?"
    radios = doc.find_all("input", type="radio")
    assert len(radios) == 11
    assert [r.attrs["name"] for r in radios] == ["score"] * 11
    assert [r.attrs["value"] for r in radios] == [str(n) for n in range(11)]
    for radio in radios:
        assert fieldset in radio.ancestors()
        assert "checked" not in radio.attrs
        labels = doc.find_all("label", **{"for": radio.attrs["id"]})
        assert len(labels) == 1 and labels[0].text() == radio.attrs["value"]
    assert [r.attrs["id"] for r in radios] == [f"score-{n}" for n in range(11)]
    assert doc.by_id("send").attrs["type"] == "submit"
    # end labels associated (group and end radios), and they exist with the texts
    assert fieldset.attrs["aria-describedby"].split() == ["low", "high"]
    assert radios[0].attrs["aria-describedby"] == "low" and radios[10].attrs["aria-describedby"] == "high"
    assert "Not at all likely" in doc.by_id("low").text() and "Extremely likely" in doc.by_id("high").text()
    form = doc.find("form")
    assert form.attrs["method"] == "post" and form.attrs["action"] == ACTION
    assert all(form in r.ancestors() for r in radios)


def test_survey_form_fields_and_preselection():
    doc = parse(survey(preselected=9, comment="line one\nline two"))
    radios = doc.find_all("input", type="radio")
    assert [r.attrs["value"] for r in radios if "checked" in r.attrs] == ["9"]
    hidden = doc.find("input", type="hidden")
    assert hidden.attrs == {"type": "hidden", "name": "csrf", "value": "csrf-token-1"}
    assert doc.find("form") in hidden.ancestors()
    area = doc.find("textarea")
    assert area.attrs["name"] == "comment" and area.attrs["id"] == "comment"
    assert int(area.attrs["maxlength"]) == sp.COMMENT_MAX_CHARS > 0
    assert textarea_value(area) == "line one\nline two"
    assert textarea_value(parse(survey(comment="\nstarts with a newline")).find("textarea")) == "\nstarts with a newline"
    assert doc.find("label", **{"for": "comment"}).text() == "Why? (optional)"
    assert parse(survey(preselected=0)).find("input", value="0").attrs.get("checked", "x") is None
    for bad in (11, -1, True, "9", 9.0):
        with pytest.raises(ValueError):
            survey(preselected=bad)


def test_survey_page_is_mobile_first_and_self_contained():
    html = survey()
    doc = parse(html)
    viewport = doc.find("meta", name="viewport")
    assert "width=device-width" in viewport.attrs["content"]
    assert doc.find("meta", name="referrer").attrs["content"] == "no-referrer"
    style = doc.find("style")
    assert style.attrs["nonce"] == NONCE
    css = style.text()
    assert "min-height:3rem" in css  # 48 px tap targets (tiles and buttons)
    assert ":focus-visible" in css and "outline:3px" in css
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    assert not doc.find_all("link") and not doc.find_all("script")
    assert not any("style" in n.attrs or any(a.startswith("on") for a in n.attrs) for n in doc.iter())
    assert doc.find("title").text() == "A quick question"


def test_only_logo_action_and_review_are_external_urls():
    allowed = {"https://cdn.example.se/logo.png", ACTION, "https://g.page/r/example/review"}
    for html in (survey(auto_submit=True, preselected=10), thanks(change_url="/s/tok"),
                 render_message(kind="expired", locale="sv", brand={"name": "X", "logo_url": "https://cdn.example.se/logo.png"},
                                nonce=NONCE)):
        doc = parse(html)
        urls = [v for n in doc.iter() for k, v in n.attrs.items() if k in ("src", "href", "action", "srcset", "poster")]
        external = {u for u in urls if "http" in u or u.startswith("//")}
        assert external <= allowed, external
    logo = parse(survey()).find("img")
    assert logo.attrs["src"] == "https://cdn.example.se/logo.png" and logo.attrs["alt"] == "Nordvik Rör"
    assert logo.attrs["referrerpolicy"] == "no-referrer"


def test_logo_only_when_safe_else_the_name():
    for bad in ("javascript:alert(1)", "data:image/png;base64,AAAA", "//evil.example/x.png", None, 42):
        doc = parse(survey(brand={"name": "Acme", "logo_url": bad}))
        assert not doc.find_all("img")
        assert doc.find("p", **{"class": "org"}).text() == "Acme"


def test_no_script_unless_auto_submit_and_then_only_with_the_nonce():
    assert "<script" not in survey(preselected=9)
    assert "<noscript" not in survey(preselected=9)
    assert "<script" not in survey(auto_submit=True, preselected=None)  # nothing to submit
    html = survey(auto_submit=True, preselected=9)
    doc = parse(html)
    scripts = doc.find_all("script")  # one in <head> hides the form before the first paint, one submits it
    assert len(scripts) == 2 and all(s.attrs == {"nonce": NONCE} for s in scripts)
    assert html.count("<script") == 2
    assert doc.find("head") in scripts[0].ancestors() and 'classList.add("js")' in scripts[0].text()
    assert 'getElementById("survey").submit()' in scripts[1].text() and "back_forward" in scripts[1].text()
    assert doc.find("form").attrs["id"] == "survey" and doc.find("form").attrs["class"] == "auto"
    saving = doc.find("p", role="status")  # what shows instead of the form while it submits itself
    assert saving.text() == "Saving your answer: 9 …" and "saving" in saving.attrs["class"].split()
    assert ".js #survey.auto{display:none}" in doc.find("style").text()
    noscript = doc.find("noscript")
    assert PAGE_TEXTS["en"]["confirm_notice"] in html
    confirm = [b for b in doc.find_all("button") if noscript in b.ancestors()]
    # html.parser reads <noscript> content as markup (scripting disabled), like a browser without scripts
    assert len(confirm) == 1 and confirm[0].text() == PAGE_TEXTS["en"]["confirm_score"]
    assert doc.find("form") in noscript.ancestors()
    assert doc.find("input", value="9").attrs.get("checked", "x") is None


def test_script_in_org_name_comment_texts_and_errors_is_inert():
    html = survey(brand={"name": EVIL, "colors": {"primary": "red;}</style><script>x</script>"}},
                  texts={"question": f"Q {EVIL}", "low_label": EVIL, "high_label": EVIL, "comment_prompt": EVIL,
                         "subject": EVIL},
                  comment=f"</textarea>{EVIL}", errors=[EVIL], csrf='"><script>x</script>')
    doc = parse(html)
    assert not doc.find_all("script") and "<script" not in html
    assert "&lt;script&gt;" in html
    assert doc.find("legend").text() == f"Q {EVIL}"
    assert textarea_value(doc.find("textarea")) == f"</textarea>{EVIL}"
    assert doc.find("p", **{"class": "org"}).text() == EVIL
    assert doc.find("input", type="hidden").attrs["value"] == '"><script>x</script>'
    assert doc.find("div", role="alert").text() == EVIL
    assert "</style><script>" not in html and "--pr:#1A73E8" in html  # bad color → default
    t = parse(thanks(brand={"name": EVIL}, texts={"thank_you": EVIL, "promoter_follow_up": EVIL,
                                                  "review_invitation": EVIL}))
    assert not t.find_all("script") and t.find("h1").text() == EVIL
    assert t.find("label", **{"for": "follow_up"}).text() == EVIL


def test_errors_are_translated_keys_or_given_texts_in_an_alert():
    assert 'role="alert"' not in survey()
    doc = parse(survey(locale="fi", errors=["pick_score", "Own message"]))
    alert = doc.find("div", role="alert")
    assert [li.text() for li in alert.find_all("li")] == [PAGE_TEXTS["fi"]["pick_score"], "Own message"]
    main = doc.find("main")
    first = next(c for c in main.children if isinstance(c, Node))
    assert first is alert  # at the top
    status = parse(survey(saved=True)).find("p", role="status")
    assert status.text() == PAGE_TEXTS["en"]["saved"]


def test_missing_texts_fall_back_and_org_is_filled_in():
    doc = parse(survey(locale="sv", brand={"name": "Acme"}, texts={"question": "Rekommendera {org}?"}))
    assert doc.find("legend").text() == "Rekommendera Acme?"
    assert doc.by_id("low").text() == "0 = Inte alls troligt"
    assert doc.find("label", **{"for": "comment"}).text() == f"{PAGE_TEXTS['sv']['comment_label']} (valfritt)"
    assert doc.find("title").text() == "En snabb fråga från Acme"


def test_action_and_nonce_are_checked():
    for bad in ("javascript:alert(1)", "//evil.example/s", "s/relative", "/s/a b", "", None):
        with pytest.raises(ValueError):
            survey(action=bad)
    assert parse(survey(action="https://nps.example.se/s/tok")).find("form").attrs["action"] == \
        "https://nps.example.se/s/tok"
    for bad in ("", "short", 'abc"def<ghi>', None):
        with pytest.raises(ValueError):
            survey(nonce=bad)


# ---------------------------------------------------------------------------------------------------------
# Contrast


def test_contrast_ratio_matches_wcag_values():
    assert contrast_ratio("#000000", "#FFFFFF") == pytest.approx(21.0)
    assert contrast_ratio("#FFFFFF", "#000000") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#FFFFFF") == pytest.approx(4.48, abs=0.005)
    assert contrast_ratio("#767676", "#FFFFFF") == pytest.approx(4.54, abs=0.005)
    assert contrast_ratio("#FFF", "#fff") == pytest.approx(1.0)
    assert contrast_ratio("#0000FF", "#FFFFFF") == pytest.approx(8.59, abs=0.01)
    assert contrast_ratio("#FF0000", "#FFFFFF") == pytest.approx(4.00, abs=0.005)
    assert relative_luminance("#FFFFFF") == pytest.approx(1.0)
    assert relative_luminance("#000") == 0.0
    assert relative_luminance("#808080") == pytest.approx(0.2159, abs=0.0001)
    with pytest.raises(ValueError):
        relative_luminance("red")


def test_palette_keeps_readable_brand_colors():
    got = palette({"primary": "#2e4a3f", "background": "#F7F4EF", "text": "#202020"})
    assert got["background"] == "#F7F4EF" and got["text"] == "#202020" and got["primary"] == "#2E4A3F"
    assert got["on_primary"] == "#F7F4EF"  # the brand background reads well on the brand primary
    assert got["accent"] == "#2E4A3F"


def test_low_contrast_brand_colors_fall_back():
    grey = palette({"primary": "#0B5FFF", "background": "#FFFFFF", "text": "#777777"})  # 4.48 < 4.5
    assert (grey["background"], grey["text"]) == ("#FFFFFF", "#222222")
    dark = palette({"primary": "#0B5FFF", "background": "#101010", "text": "#303030"})
    assert (dark["background"], dark["text"]) == ("#FFFFFF", "#222222")
    ok_dark = palette({"primary": "#FFD500", "background": "#101010", "text": "#F0F0F0"})
    assert (ok_dark["background"], ok_dark["text"]) == ("#101010", "#F0F0F0")
    # a yellow button gets a dark label, a light primary on white does not outline the tiles
    yellow = palette({"primary": "#FFD500", "background": "#FFFFFF", "text": "#1A1A1A"})
    assert yellow["on_primary"] == "#1A1A1A" and yellow["accent"] == "#1A1A1A"
    mid = palette({"primary": "#777777", "background": "#FFFFFF", "text": "#222222"})
    assert mid["on_primary"] != "#FFFFFF"
    # whatever the brand, every pair the page uses is readable
    for primary in ("#777777", "#FFD500", "#0B5FFF", "#FFFFFF", "#000000", "#808080", "#7F7F7F", "#FF0000"):
        for background, text in (("#FFFFFF", "#222222"), ("#000000", "#FFFFFF"), ("#777777", "#888888")):
            p = palette({"primary": primary, "background": background, "text": text})
            assert contrast_ratio(p["text"], p["background"]) >= 4.5
            assert contrast_ratio(p["on_primary"], p["primary"]) >= 4.5
            assert contrast_ratio(p["on_accent"], p["accent"]) >= 4.5
            assert contrast_ratio(p["accent"], p["background"]) >= 3
    # not a hex color: the default
    assert palette({"primary": "red", "background": "#FFFFFF80", "text": None}) == palette(None)
    html = survey(brand={"name": "X", "colors": {"primary": "#0B5FFF", "background": "#FFFFFF", "text": "#777777"}})
    assert "--fg:#222222" in html and "#777777" not in html


# ---------------------------------------------------------------------------------------------------------
# Thank-you page


@pytest.mark.parametrize("category, key", [("detractor", "detractor_follow_up"), ("passive", "detractor_follow_up"),
                                           ("promoter", "promoter_follow_up")])
def test_thanks_follow_up_question_per_category(programs, category, key):
    for org, program, locale, brand, strings in example_pages(programs):
        html = render_thanks(brand=brand, texts=strings, locale=locale, category=category, action="/s/t/f",
                             csrf="c9", nonce=NONCE, review_url=brand["review_url"], score=4, receipt="4.1.0.m")
        doc = parse(html)
        for chunk in visible_text_and_attrs(doc):
            assert "{" not in chunk and "}" not in chunk, (org.id, locale, chunk)
        assert "None" not in html and "<script" not in html
        assert doc.find("h1").text() == strings["thank_you"]
        assert doc.find("label", **{"for": "follow_up"}).text() == strings[key]
        form = doc.find("form")
        assert form.attrs["method"] == "post" and form.attrs["action"] == "/s/t/f"
        hidden = {i.attrs["name"]: i.attrs["value"] for i in doc.find_all("input", type="hidden")}
        assert hidden == {"csrf": "c9", "step": "follow_up", "a": "4.1.0.m"}
        assert all(form in i.ancestors() for i in doc.find_all("input"))
        assert doc.find("textarea").attrs["name"] == "follow_up"
        buttons = doc.find_all("button")
        assert [b.text() for b in buttons] == [PAGE_TEXTS[locale]["follow_up_submit"], PAGE_TEXTS[locale]["skip"]]
        assert buttons[1].attrs["name"] == "skip" and buttons[1].attrs["value"] == "1"
        links = [a for a in doc.find_all("a") if a.attrs["href"].startswith("http")]
        if category == "promoter":
            assert len(links) == 1 and links[0].attrs["href"] == brand["review_url"]
            assert links[0].text() == PAGE_TEXTS[locale]["review_button"]
            assert set(links[0].attrs["rel"].split()) == {"noopener", "noreferrer"}
            assert strings["review_invitation"] in doc.text()
        else:
            assert links == [] and strings["review_invitation"] not in html
        assert len(html.encode()) < 20_000


def test_review_link_only_for_promoters_with_an_https_url():
    assert "g.page" in thanks()
    assert "g.page" not in thanks(category="passive") and "Would you review us?" not in thanks(category="detractor")
    for bad in ("http://g.page/r/example/review", "javascript:alert(1)", "ftp://x.example/", None, ""):
        html = thanks(review_url=bad)
        assert "<a " not in html and "Would you review us?" not in html
    from streams.nps import Category
    assert "g.page" in thanks(category=Category.PROMOTER)
    with pytest.raises(ValueError):
        thanks(category="fan")


def test_thanks_says_the_score_and_its_follow_up_form_names_the_receipt():
    doc = parse(thanks(score=10, receipt="10.1764000000000.0.mac", follow_up='Kept "text" & <b>'))
    hidden = {i.attrs["name"]: i.attrs["value"] for i in doc.find_all("input", type="hidden")}
    assert hidden == {"csrf": "csrf-2", "step": "follow_up", "a": "10.1764000000000.0.mac"}  # no score/comment
    assert doc.find("form").attrs["action"] == "/s/tok/follow-up"
    assert doc.find("textarea").attrs["maxlength"] == str(sp.COMMENT_MAX_CHARS)
    assert textarea_value(doc.find("textarea")) == 'Kept "text" & <b>'  # prefilled (sent again), inert
    assert doc.by_id("answered").text() == "You answered 10."
    for locale, said in (("sv", "Du svarade 3."), ("fi", "Vastasit 3."), ("da", "Du svarede 3."),
                         ("nb", "Du svarte 3.")):
        assert parse(thanks(score=3, locale=locale, category="detractor")).by_id("answered").text() == said
    doc = parse(thanks(errors=["not_saved_yet"]))  # errors: keys translated, on top, in an alert
    assert doc.find("div", role="alert").text() == PAGE_TEXTS["en"]["not_saved_yet"]
    # without a receipt or score: only the csrf token and the step, nothing said about a score
    doc = parse(thanks())
    assert {i.attrs["name"] for i in doc.find_all("input", type="hidden")} == {"csrf", "step"}
    assert not doc.find_all("span", id="answered")
    for bad in (11, -1, True, "9"):
        with pytest.raises(ValueError):
            thanks(score=bad)


def test_thanks_after_follow_up_and_change_link():
    doc = parse(thanks(follow_up_done=True, category="detractor"))
    assert not doc.find_all("form") and not doc.find_all("textarea")
    assert PAGE_TEXTS["en"]["close_page"] in doc.text()
    doc = parse(thanks(follow_up_done=True, change_url="/s/tok?change=1"))
    change = doc.find("a", href="/s/tok?change=1")
    assert change.text() == PAGE_TEXTS["en"]["change_answer"] and "btn" in change.attrs["class"].split()
    assert doc.find("a", rel="noopener noreferrer").attrs["href"] == "https://g.page/r/example/review"
    assert PAGE_TEXTS["en"]["change_answer"] not in thanks() and 'href="/s/' not in thanks()
    with pytest.raises(ValueError):
        thanks(change_url="javascript:alert(1)")


# ---------------------------------------------------------------------------------------------------------
# Message pages


@pytest.mark.parametrize("kind", MESSAGE_KINDS)
def test_message_pages_for_every_kind_and_locale(kind):
    for locale in SHIPPED_LOCALES:
        html = render_message(kind=kind, locale=locale, nonce=NONCE)
        doc = parse(html)
        assert doc.find("html").attrs["lang"] == locale
        assert doc.find("h1").text() == PAGE_TEXTS[locale][f"{kind}_title"]
        assert doc.find("main").find("p").text() == PAGE_TEXTS[locale][f"{kind}_body"]
        assert doc.find("title").text() == PAGE_TEXTS[locale][f"{kind}_title"]
        assert not doc.find_all("header") and not doc.find_all("img") and "<script" not in html
        assert not doc.find_all("form") and "None" not in html
        for chunk in visible_text_and_attrs(doc):
            assert "{" not in chunk and "}" not in chunk
        branded = parse(render_message(kind=kind, locale=locale, nonce=NONCE,
                                       brand={"name": "Kaamos Koti", "colors": {"primary": "#2E4A3F"}}))
        assert branded.find("p", **{"class": "org"}).text() == "Kaamos Koti"
        assert branded.find("title").text() == f"{PAGE_TEXTS[locale][f'{kind}_title']} – Kaamos Koti"
        assert "--pr:#2E4A3F" in branded.find("style").text()
    assert sp.MESSAGE_STATUS[kind] >= 400


def test_message_page_locale_fallback_and_unknown_kind():
    doc = parse(render_message(kind="expired", locale="de-AT", nonce=NONCE))
    assert doc.find("h1").text() == PAGE_TEXTS["en"]["expired_title"]
    assert doc.find("html").attrs["lang"] == "de-AT"
    assert parse(render_message(kind="answered", locale="no", nonce=NONCE)).find("h1").text() == \
        PAGE_TEXTS["nb"]["answered_title"]
    assert parse(render_message(kind="invalid", locale='"><x', nonce=NONCE)).find("html").attrs["lang"] == "en"
    with pytest.raises(ValueError):
        render_message(kind="gone", locale="en", nonce=NONCE)


# ---------------------------------------------------------------------------------------------------------
# Content-Security-Policy


def test_content_security_policy_matches_the_pages():
    csp = content_security_policy(NONCE, logo_url="https://cdn.example.se:8443/logo.png?v=2")
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["style-src"] == f"'nonce-{NONCE}'" and directives["script-src"] == f"'nonce-{NONCE}'"
    assert directives["img-src"] == "https://cdn.example.se:8443"
    assert directives["form-action"] == "'self'"
    assert "img-src 'none'" in content_security_policy(NONCE, logo_url="javascript:x")
    assert "form-action 'self' https://nps.example.se;" in content_security_policy(
        NONCE, form_action="https://nps.example.se/s/tok")
    # the nonces in the page are the nonce of the policy
    html = survey(auto_submit=True, preselected=3)
    doc = parse(html)
    assert {n.attrs["nonce"] for n in doc.iter() if n.tag in ("style", "script")} == {NONCE}
