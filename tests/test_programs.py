"""Survey programs: the versioned YAML file, its validation messages, shipped texts, SMS segments."""

from __future__ import annotations

import copy
import re
from datetime import time, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from npsflow.programs import (
    DEFAULT_TEXTS,
    REQUIRED_PLACEHOLDERS,
    SHIPPED_LOCALES,
    TEXT_KEYS,
    TYPICAL_LINK_LENGTH,
    Programs,
    ProgramsError,
    branding,
    load_programs,
    parse_programs,
    render_text,
    resolve_locale,
    sms_encoding,
    sms_segments,
    texts,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "programs.example.yaml"


@pytest.fixture(scope="module")
def example() -> Programs:
    return load_programs(EXAMPLE)


def example_doc() -> dict:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def errors_of(doc: dict | str, base_dir: Path | str = ".") -> list[str]:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    with pytest.raises(ProgramsError) as info:
        parse_programs(text, base_dir=base_dir)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


# ---------------------------------------------------------------------------------------------------------
# The example


def test_example_loads(example):
    assert example.version == 1
    assert [o.id for o in example.organizations] == ["nordvik-ror", "kaamos-koti"]
    org, program = example.program_for("nordvik-ror", "job.completed")
    assert org.id == "nordvik-ror" and program.id == "service-visit"
    assert program.delay == timedelta(hours=2)
    assert program.channels == ("sms", "email")
    assert program.quiet_hours.start == time(21) and program.quiet_hours.end == time(8)
    assert program.daily_cap == 200
    assert program.reminder_after == timedelta(days=2)
    assert program.cost.currency == "SEK" and program.cost_of("sms") == 0.45
    assert org.zone.key == "Europe/Stockholm"
    assert org.is_opted_out("c-1007") and not org.is_opted_out("c-1")


def test_defaults(example):
    org, program = example.program_for("nordvik-ror", "warranty.repair.completed")
    assert program.id == "installation"
    assert program.quarantine == timedelta(days=90)
    assert (program.quiet_hours.start, program.quiet_hours.end) == (time(21), time(8))
    assert program.daily_cap is None and program.reminder_after is None
    assert program.max_event_age == timedelta(days=7)
    assert program.cost_of("sms") == 0.0  # no price given
    _, support = example.program_for("kaamos-koti", "support.ticket.closed")
    assert support.quiet_hours is None and support.sampling_rate == 1.0
    assert support.cost.currency == "EUR" and support.cost_of("newsletter") == 0.0005


def test_program_for_unknown(example):
    assert example.program_for("nordvik-ror", "order.delivered") is None  # the other org's event type
    assert example.program_for("nobody", "job.completed") is None
    assert example.organization("kaamos-koti").name == "Kaamos Koti Oy"


def test_models_are_frozen(example):
    with pytest.raises(ValidationError, match="frozen"):
        example.organizations[0].programs[0].sampling_rate = 0.5


# ---------------------------------------------------------------------------------------------------------
# Texts and branding


def test_texts_layers_and_org_name(example):
    org, program = example.program_for("nordvik-ror", "installation.completed")
    t = texts(org, "sv", program)
    assert set(t) == set(TEXT_KEYS)
    assert t["question"] == "Hur troligt är det att du skulle rekommendera Nordvik Rör till en vän eller kollega?"
    assert t["intro"].startswith("Tack för att du lät Nordvik Rör installera")  # program override
    assert t["thank_you"] == "Tack för att du tog dig tid – vi läser varje svar!"  # org override
    assert "{link}" in t["sms_text"]  # left for the SMS channel
    other = texts(org, "sv")  # without the program: the org override only
    assert other["intro"] == DEFAULT_TEXTS["sv"]["intro"].replace("{org}", "Nordvik Rör")
    assert texts(org, "sv", fill_org=False)["question"] == DEFAULT_TEXTS["sv"]["question"]


@pytest.mark.parametrize(
    "asked, expected",
    [("sv", "sv"), ("sv-SE", "sv"), ("sv_FI", "sv"), ("SV", "sv"), ("en-GB", "en"), ("no", "nb"), ("nb-NO", "nb"),
     ("da", "da"), ("de", "fi"), ("", "fi"), (None, "fi")],
)
def test_locale_resolution(example, asked, expected):
    org = example.organization("kaamos-koti")  # default locale fi
    assert resolve_locale(org, asked) == expected


def test_texts_fall_back_to_org_default_then_english(example):
    org = example.organization("kaamos-koti")
    assert texts(org, "de")["question"] == \
        "Kuinka todennäköisesti suosittelisit yritystä Kaamos Koti ystävälle tai kollegalle?"
    doc = example_doc()
    doc["organizations"][1]["default_locale"] = "de"
    doc["organizations"][1]["branding"] = {"de": doc["organizations"][1]["branding"]["fi"]}
    doc["organizations"][1]["texts"] = {"de": {k: DEFAULT_TEXTS["en"][k] + " (de)" for k in TEXT_KEYS}}
    programs = parse_programs(yaml.safe_dump(doc, allow_unicode=True))
    org = programs.organization("kaamos-koti")
    assert texts(org, "pt")["thank_you"] == "Thank you for your feedback! (de)"
    assert texts(org, "sv")["thank_you"] == "Tack för din återkoppling!"


def test_branding_falls_back_field_by_field(example):
    org = example.organization("kaamos-koti")
    sv = branding(org, "sv-FI")
    assert sv["name"] == "Kaamos Hem" and sv["sender_email"] == "respons@kaamoskoti.fi"
    assert sv["sender_name"] == "Kaamos Koti"  # from fi
    assert sv["colors"] == {"primary": "#2E4A3F", "background": "#F7F4EF", "text": "#202020"}
    assert sv["logo_url"] == "https://static.kaamoskoti.fi/brand/logo.svg"
    assert branding(org, "en")["name"] == "Kaamos Koti"
    assert texts(org, "sv")["subject"] == "En snabb fråga från Kaamos Hem"


def test_every_shipped_locale_has_every_key_and_its_placeholders():
    assert set(DEFAULT_TEXTS) == set(SHIPPED_LOCALES) == {"sv", "da", "fi", "nb", "en"}
    for locale, strings in DEFAULT_TEXTS.items():
        assert set(strings) == set(TEXT_KEYS), locale
        for key, value in strings.items():
            assert value.strip() and value == value.strip(), (locale, key)
            for name in REQUIRED_PLACEHOLDERS.get(key, ()):
                assert "{" + name + "}" in value, (locale, key)
            assert set(re.findall(r"\{([^{}]*)\}", value)) <= ({"org", "link"} if key == "sms_text" else {"org"})
    assert DEFAULT_TEXTS["en"]["question"] == \
        "How likely is it that you would recommend {org} to a friend or colleague?"
    assert (DEFAULT_TEXTS["en"]["low_label"], DEFAULT_TEXTS["en"]["high_label"]) == \
        ("Not at all likely", "Extremely likely")
    assert DEFAULT_TEXTS["en"]["detractor_follow_up"] == "What should we improve?"
    assert DEFAULT_TEXTS["en"]["promoter_follow_up"] == "What did you like most?"


def test_shipped_texts_use_their_own_letters():
    assert "å" in DEFAULT_TEXTS["sv"]["subject"] and "ä" in DEFAULT_TEXTS["sv"]["question"]
    assert "ø" in DEFAULT_TEXTS["da"]["subject"] and "ø" in DEFAULT_TEXTS["nb"]["subject"]
    assert "ä" in DEFAULT_TEXTS["fi"]["question"]


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
def test_shipped_sms_fits_one_segment_with_a_60_char_link(locale):
    link = "https://nps.example.com/s/" + "a" * (TYPICAL_LINK_LENGTH - 26)
    assert len(link) == 60
    sms = render_text(DEFAULT_TEXTS[locale]["sms_text"], org="Nordvik Rör", link=link)
    assert sms_encoding(sms) == "gsm7"  # å ä ö æ ø are in the GSM-7 alphabet
    assert sms_segments(sms) == 1


# ---------------------------------------------------------------------------------------------------------
# SMS segments


@pytest.mark.parametrize(
    "text, encoding, segments",
    [
        ("", "gsm7", 0),
        ("a", "gsm7", 1),
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 306, "gsm7", 2),
        ("a" * 307, "gsm7", 3),
        ("€" * 80, "gsm7", 1),              # 160 septets
        ("€" * 81, "gsm7", 2),              # 162 septets
        ("a" * 159 + "[", "gsm7", 2),       # 161 septets
        ("{}" + "a" * 156, "gsm7", 1),      # 160 septets
        ("^{}\\[~]|€" + "a" * 142, "gsm7", 1),  # 9 extension chars = 18 septets + 142
        ("a" * 152 + "€" + "a" * 7, "gsm7", 2),  # the escape pair is not split: 152 | 2 + 7
        ("a" * 152 + "€" + "a" * 152, "gsm7", 3),  # 152 | 2 + 151 | 1
        ("åäöÅÄÖæøÆØéÉüÜñÑ@£$¥", "gsm7", 1),
        ("š", "ucs2", 1),
        ("a" * 69 + "š", "ucs2", 1),
        ("a" * 70 + "š", "ucs2", 2),
        ("š" * 134, "ucs2", 2),
        ("š" * 135, "ucs2", 3),
        ("😀" * 35, "ucs2", 1),             # 70 UTF-16 code units
        ("😀" * 36, "ucs2", 2),
        ("a" * 66 + "😀", "ucs2", 1),       # 68 units
        ("a" * 68 + "😀" + "b", "ucs2", 2),  # 71 units: 67 | 1 + 2 + 1
        ("ç", "ucs2", 1),                   # only capital Ç is in GSM-7
    ],
)
def test_sms_segments(text, encoding, segments):
    assert sms_encoding(text) == encoding
    assert sms_segments(text) == segments


def test_sms_segments_surrogate_pair_not_split():
    # 66 single units, then a pair: 66 + 2 = 68 > 67 → the pair starts segment 2.
    text = "a" * 66 + "😀" + "b" * 60  # 128 units
    assert sms_segments(text) == 2
    text = "a" * 66 + "😀" + "b" * 66  # 134 units, but the pair cannot straddle: 66 | 2 + 65 | 1
    assert sms_segments(text) == 3


# ---------------------------------------------------------------------------------------------------------
# Mistakes: one line each, with the YAML path


def _set(path: str, value):
    """A mutation of the example document: set (or delete, value=DELETE) the value at a dotted path."""

    def mutate(doc):
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        node = doc
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        last = parts[-1]
        key = int(last[1:-1]) if last.startswith("[") else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value

    return mutate


DELETE = object()
P0 = "organizations[0].programs[0]"
O0 = "organizations[0]"

MISTAKES = [
    (_set(f"{P0}.sampling_rate", 1.5), f"{P0}.sampling_rate: must be between 0 and 1, got 1.5"),
    (_set(f"{P0}.sampling_rate", "half"), f"{P0}.sampling_rate: must be a number, got 'half'"),
    (_set(f"{P0}.delay", "2 hours"), f"{P0}.delay: must be a duration like 30m, 2h or 1d, got '2 hours'"),
    (_set(f"{P0}.delay", 2), f"{P0}.delay: must be a duration like 30m, 2h or 1d, got 2"),
    (_set(f"{P0}.reminder_after", "0h"), f"{P0}.reminder_after: must be longer than 0, got '0h'"),
    (_set(f"{P0}.quiet_hours", {"start": "25:00", "end": "08:00"}),
     f"{P0}.quiet_hours.start: must be a time of day HH:MM (00:00–23:59, in quotes), got '25:00'"),
    (_set(f"{P0}.quiet_hours", {"start": "21:00"}), f"{P0}.quiet_hours.end: required"),
    (_set(f"{P0}.daily_cap", 0), f"{P0}.daily_cap: must be an integer ≥ 1 or null (no cap), got 0"),
    (_set(f"{P0}.daily_cap", True), f"{P0}.daily_cap: must be an integer ≥ 1 or null (no cap), got true"),
    (_set(f"{P0}.channels", ["sms", "fax"]), f"{P0}.channels: unknown channel 'fax' (known: sms, email, newsletter)"),
    (_set(f"{P0}.channels", ["sms", "sms"]), f"{P0}.channels: lists a channel twice: sms, sms"),
    (_set(f"{P0}.channels", []), f"{P0}.channels: must be a non-empty list of channels in fallback order "
                                 f"(sms, email, newsletter), got a list"),
    (_set(f"{P0}.event_types", ["Job Completed"]),
     f"{P0}.event_types: entry [0] must be an event type like job.completed (lowercase letters, digits, _ . -), "
     f"got 'Job Completed'"),
    (_set(f"{P0}.cost", {"sms": -1}), f"{P0}.cost.sms: must be at least 0, got -1"),
    (_set(f"{P0}.cost", {"sms": 0.1, "currency": "euro"}),
     f"{P0}.cost.currency: must be an ISO 4217 currency code like EUR or SEK, got 'euro'"),
    (_set(f"{P0}.survey_id", DELETE), f"{P0}.survey_id: required"),
    (_set(f"{P0}.id", "service visit"),
     f"{P0}.id: must be an id of 1–64 letters, digits or _ . : - (starting with a letter or digit), "
     f"got 'service visit'"),
    (_set(f"{O0}.timezone", "Europe/Stokholm"),
     f"{O0}.timezone: must be an IANA timezone like Europe/Stockholm, got 'Europe/Stokholm'"),
    (_set(f"{O0}.timezone", "CET+1"), f"{O0}.timezone: must be an IANA timezone like Europe/Stockholm, got 'CET+1'"),
    (_set(f"{O0}.api_keys", ["npk_the-key-itself"]), f"{O0}.api_keys: entry [0] must be a key hash like "
                                                     "sha256:<64 hex digits> (`npsflow api-key new` prints one), "
                                                     "not the key itself"),
    (_set(f"{O0}.api_keys", "sha256:" + "0" * 64), f"{O0}.api_keys: must be a list of key hashes like "
                                                    "sha256:<64 hex digits>, got a string"),
    (_set(f"{O0}.branding.sv.colors.primary", "blue"),
     f"{O0}.branding.sv.colors.primary: must be a color #RRGGBB, got 'blue'"),
    (_set(f"{O0}.branding.sv.colors.text", "#12345"),
     f"{O0}.branding.sv.colors.text: must be a color #RRGGBB, got '#12345'"),
    (_set(f"{O0}.branding.sv.logo_url", "http://cdn.nordvikror.se/logo.png"),
     f"{O0}.branding.sv.logo_url: must be an https:// URL (plain http is refused), "
     f"got 'http://cdn.nordvikror.se/logo.png'"),
    (_set(f"{O0}.review_url", "javascript:alert(1)"), f"{O0}.review_url: must be an https:// URL, "
                                                      f"got 'javascript:alert(1)'"),
    (_set(f"{O0}.branding.sv.sms_sender_id", "Nordvik Rör AB"),
     f"{O0}.branding.sv.sms_sender_id: must be 1–11 letters or digits (an alphanumeric SMS sender id), "
     f"got 'Nordvik Rör AB'"),
    (_set(f"{O0}.branding.sv.sms_sender_id", "NordvikRorAB"),
     f"{O0}.branding.sv.sms_sender_id: must be 1–11 letters or digits (an alphanumeric SMS sender id), "
     f"got 'NordvikRorAB'"),
    (_set(f"{O0}.branding.sv.sender_email", "nps.nordvikror.se"),
     f"{O0}.branding.sv.sender_email: must be an e-mail address, got 'nps.nordvikror.se'"),
    (_set(f"{O0}.branding.sv.sms_sender_id", DELETE),
     f"{O0}.branding.sv.sms_sender_id: required for the sms channel (used by programs[0])"),
    (_set(f"{O0}.default_locale", "de"), f"{O0}.branding.de: required (the default_locale is 'de')"),
    (_set(f"{O0}.default_locale", "de"),
     f"{O0}.default_locale: no texts for 'de' (shipped: sv, da, fi, nb, en; add them under {O0}.texts.de)"),
    (_set(f"{O0}.default_locale", "Swedish"), f"{O0}.default_locale: must be a locale code like sv, en or pt-BR, "
                                              f"got 'Swedish'"),
    (_set(f"{O0}.texts.sv.question", "Hur nöjd är du?"), f"{O0}.texts.sv.question: must contain the placeholder {{org}}"),
    (_set(f"{O0}.texts.sv.sms_text", "Svara här: {url}"),
     f"{O0}.texts.sv.sms_text: unknown placeholder {{url}} (allowed here: {{link}}, {{org}})"),
    (_set(f"{O0}.texts.sv.sms_text", "Hej! Vi på {org} vill gärna veta hur troligt det är att du skulle "
                                     "rekommendera oss till en vän eller kollega. Svara här: {link}"),
     f"{O0}.texts.sv.sms_text: must fit one SMS with a 60-character link, got 187 GSM-7 characters (limit 160)"),
    (_set(f"{O0}.texts.sv.sms_text", "Hej! Hur troligt är det att du rekommenderar oss? Svara här 👉 {link}"),
     f"{O0}.texts.sv.sms_text: must fit one SMS with a 60-character link, got 123 UCS-2 characters "
     f"(limit 70, because '👉' is not in the GSM-7 alphabet)"),
    (_set(f"{O0}.texts.sv.thank_you", ""), f"{O0}.texts.sv.thank_you: must be a non-empty text, got ''"),
    (_set(f"{O0}.texts.sv.thanks", "Tack!"),
     f"{O0}.texts.sv.thanks: unknown key (did you mean thank_you? allowed: " + ", ".join(TEXT_KEYS) + ")"),
    (_set(f"{O0}.texts.de", {"question": "Wie wahrscheinlich ist es, dass Sie {org} empfehlen?"}),
     f"{O0}.texts.de: locale 'de' is not shipped with npsflow, so every text is needed; missing: "
     + ", ".join(k for k in TEXT_KEYS if k != "question")),
    (_set(f"{P0}.event_types", ["job.completed", "job.completed"]),
     f"{P0}.event_types[1]: duplicate event type 'job.completed' (already in programs[0]; "
     f"an event type may trigger one program only)"),
    (_set("organizations[0].programs[1].event_types", ["job.completed"]),
     "organizations[0].programs[1].event_types[0]: duplicate event type 'job.completed' (already in programs[0]; "
     "an event type may trigger one program only)"),
    (_set("organizations[0].programs[1].id", "service-visit"),
     "organizations[0].programs[1].id: duplicate program id 'service-visit' (already used by programs[0])"),
    (_set("organizations[1].id", "nordvik-ror"),
     "organizations[1].id: duplicate organization id 'nordvik-ror' (already used by organizations[0])"),
    (_set(f"{O0}.opt_out", "c-1007"),
     f"{O0}.opt_out: must be a list of contact ids or {{file: <path>, contacts: [...]}}, got 'c-1007'"),
    (_set(f"{O0}.opt_out", {"contacts": "c-1007"}),
     f"{O0}.opt_out.contacts: must be a list of contact ids, got 'c-1007'"),
    (_set(f"{O0}.programs", []), f"{O0}.programs: must be a non-empty list of programs, got a list"),
]


@pytest.mark.parametrize("mutate, expected", MISTAKES, ids=[m[1].split(":")[0] + f"#{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_gives_its_path_and_message(mutate, expected):
    doc = example_doc()
    mutate(doc)
    assert expected in errors_of(doc)


@pytest.mark.parametrize(
    "where, key, suggestion",
    [("", "organisations", "organizations"),
     (O0, "time_zone", "timezone"),
     (P0, "sampling", "sampling_rate"),
     (f"{P0}.quiet_hours", "begin", None),
     (f"{O0}.branding.sv", "logo", "logo_url"),
     (f"{O0}.branding.sv.colors", "secondary", None),
     (f"{P0}.cost", "whatsapp", None)],
)
def test_unknown_keys_are_refused(where, key, suggestion):
    doc = example_doc()
    node = doc
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", where):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    node[key] = "x"
    path = f"{where}.{key}" if where else key
    [line] = [e for e in errors_of(doc) if e.startswith(path + ":")]
    assert line.startswith(f"{path}: unknown key (")
    if suggestion:
        assert f"did you mean {suggestion}?" in line
    else:
        assert "did you mean" not in line


def test_all_mistakes_are_collected_at_once():
    doc = example_doc()
    _set(f"{P0}.sampling_rate", 1.5)(doc)
    _set(f"{O0}.timezone", "Mars/Olympus")(doc)
    _set("organizations[1].branding.fi.logo_url", "http://x.example/logo.png")(doc)
    _set("organizations[0].programs[1].event_types", ["job.completed"])(doc)
    _set("organizations[1].programs[0].extra", 1)(doc)
    errors = errors_of(doc)
    assert len(errors) == 5, errors
    assert errors[0] == f"{O0}.timezone: must be an IANA timezone like Europe/Stockholm, got 'Mars/Olympus'"
    assert [e.split(":")[0] for e in errors] == [
        f"{O0}.timezone", f"{P0}.sampling_rate", "organizations[1].branding.fi.logo_url",
        "organizations[1].programs[0].extra", "organizations[0].programs[1].event_types[0]",
    ]


# ---------------------------------------------------------------------------------------------------------
# Version and YAML


@pytest.mark.parametrize(
    "version, expected",
    [(2, "version: unsupported version 2 (this npsflow reads version 1)"),
     ("1", "version: unsupported version '1' (this npsflow reads version 1)"),
     (True, "version: unsupported version true (this npsflow reads version 1)"),
     (DELETE, "version: required (the file must start with 'version: 1')")],
)
def test_version(version, expected):
    doc = example_doc()
    _set(f"{P0}.sampling_rate", 7)(doc)  # not reported: a file of another version is not looked into
    _set("version", version)(doc)
    assert errors_of(doc) == [expected]


def test_not_a_mapping_and_bad_yaml():
    assert errors_of("- just\n- a list\n") == ["(document): must be a mapping starting with 'version: 1', got a list"]
    [line] = errors_of("version: 1\norganizations: [\n")
    assert line.startswith("<programs>: line ") and "invalid YAML" in line
    with pytest.raises(ProgramsError) as info:
        load_programs("/nonexistent/programs.yaml")
    assert info.value.errors == ["/nonexistent/programs.yaml: cannot read: No such file or directory"]


def test_duplicate_yaml_keys_are_reported():
    line = "        sampling_rate: 1.0              # default 1.0\n"
    text = EXAMPLE.read_text(encoding="utf-8")
    assert line in text
    text = text.replace(line, line + "        sampling_rate: 0.1\n")
    errors = errors_of(text)
    assert len(errors) == 1 and re.fullmatch(r"line \d+: duplicate key 'sampling_rate' \(first at line \d+\)",
                                              errors[0]), errors


def test_yaml_12_scalars():
    """no stays a string (Norwegian), unquoted 21:00 is not the base-60 integer 1260, dates stay strings."""
    doc = example_doc()
    doc["organizations"][1]["branding"]["no"] = {"name": "Kaamos Hjem"}
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    text = text.replace("'no':", "no:").replace("start: '20:00'", "start: 20:00")
    assert "  no:" in text and "start: 20:00" in text
    programs = parse_programs(text)
    org = programs.organization("kaamos-koti")
    assert branding(org, "no")["name"] == "Kaamos Hjem"
    assert org.programs[0].quiet_hours.start == time(20)
    text = text.replace("id: nordvik-ror", "id: 2026-01-01")
    assert parse_programs(text).organizations[0].id == "2026-01-01"


def test_opt_out_file(tmp_path):
    (tmp_path / "opt-out").mkdir()
    (tmp_path / "opt-out" / "nordvik.txt").write_text("# contacts who said no\nc-9\n\n  c-10  # by phone\n",
                                                       encoding="utf-8")
    doc = example_doc()
    doc["organizations"][0]["opt_out"] = {"file": "opt-out/nordvik.txt", "contacts": ["c-1"]}
    path = tmp_path / "programs.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    org = load_programs(path).organization("nordvik-ror")
    assert org.opt_out.ids == {"c-1", "c-9", "c-10"}
    assert org.is_opted_out("c-10") and not org.is_opted_out("# contacts who said no")
    doc["organizations"][0]["opt_out"] = {"file": "opt-out/missing.txt"}
    errors = errors_of(doc, base_dir=tmp_path)
    assert errors == [f"{O0}.opt_out.file: cannot read opt-out file "
                      f"{str(tmp_path / 'opt-out' / 'missing.txt')!r}: No such file or directory"]


def test_minimal_organization():
    text = """
version: 1
organizations:
  - id: fjord
    name: Fjord Bilverksted AS
    timezone: Europe/Oslo
    default_locale: nb
    branding: {nb: {sms_sender_id: FjordBil}}
    programs:
      - {id: service, survey_id: s-1, event_types: [car.serviced], delay: 1h, channels: [sms]}
"""
    programs = parse_programs(text)
    org, program = programs.program_for("fjord", "car.serviced")
    assert branding(org, "nb")["name"] == "Fjord Bilverksted AS"  # falls back to the org name
    assert texts(org, "nb")["subject"] == "Et raskt spørsmål fra Fjord Bilverksted AS"
    assert program.sampling_rate == 1.0 and program.max_event_age == timedelta(days=7)
    assert org.opt_out.ids == frozenset()


def test_program_texts_may_add_a_locale_together_with_the_org():
    doc = example_doc()
    de = {k: DEFAULT_TEXTS["en"][k] for k in TEXT_KEYS}
    doc["organizations"][0]["texts"]["de"] = {k: v for k, v in de.items() if k != "question"}
    doc["organizations"][0]["programs"][0]["texts"] = {"de": {"question": "Würden Sie {org} empfehlen?"}}
    errors = errors_of(copy.deepcopy(doc))  # the org level alone is incomplete …
    assert errors == [f"{O0}.texts.de: locale 'de' is not shipped with npsflow, so every text is needed; "
                      f"missing: question"]
    doc["organizations"][0]["texts"]["de"]["question"] = "Wie wahrscheinlich empfehlen Sie {org}?"
    programs = parse_programs(yaml.safe_dump(doc, allow_unicode=True))  # … with it, both are complete
    org, program = programs.program_for("nordvik-ror", "job.completed")
    assert texts(org, "de-AT", program)["question"] == "Würden Sie Nordvik Rör empfehlen?"
    assert texts(org, "de")["question"] == "Wie wahrscheinlich empfehlen Sie Nordvik Rör?"


def test_rule_config_of_the_example_programs_drives_the_contact_rules():
    from datetime import datetime, timezone

    from npsflow.programs import rule_config
    from streams.contact_rules import decide

    programs = load_programs(EXAMPLE)
    checked = 0
    newsletter_only = 0
    for org in programs.organizations:
        for program in org.programs:
            config = rule_config(org, program)
            assert config.timezone == org.timezone and config.quarantine == program.quarantine
            assert config.channels == program.channels and config.event_types == frozenset(program.event_types)
            newsletter_only += config.channels == ("newsletter",)
            trigger = {"event_id": "ev-1", "org_id": org.id, "event_type": program.event_types[0],
                       "occurred_at": datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc),
                       "contact": {"contact_id": "c-1", "email": "a@example.se", "phone": "+46701234567",
                                   "locale": None, "timezone": None},
                       "segment": {}, "received_at": datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)}
            decision = decide(trigger, config, None, None, datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc),
                              b"0123456789abcdef0123")
            if decision.status == "suppressed":  # a fresh contact can only be sampled out
                assert decision.reason == "sampled_out" and program.sampling_rate < 1
            else:
                assert decision.channel == config.channels[0]  # the contact has every address
                assert decision.send_at >= trigger["occurred_at"] + program.delay
                assert (decision.status == "sent") == (decision.send_at == decision.decided_at)
            checked += 1
    assert checked >= 3 and newsletter_only == 1


def test_newsletter_reaches_contacts_without_any_address_and_ignores_quiet_hours():
    from datetime import datetime, timezone

    from streams.contact_rules import RuleConfig, decide

    config = RuleConfig(channels=("email", "newsletter"), quiet_hours_channels=("sms",), timezone="Europe/Helsinki")
    night = datetime(2026, 11, 20, 23, 30, tzinfo=timezone.utc)  # 01:30 in Helsinki
    base = {"event_id": "ev-1", "org_id": "o", "event_type": "x", "occurred_at": night, "segment": {},
            "received_at": night}
    with_email = decide({**base, "contact": {"contact_id": "a", "email": "a@example.fi"}}, config, None, None,
                        night, b"0123456789abcdef")
    without = decide({**base, "contact": {"contact_id": "b"}}, config, None, None, night, b"0123456789abcdef")
    only_sms = decide({**base, "contact": {"contact_id": "b"}}, RuleConfig(channels=("sms",)), None, None, night,
                      b"0123456789abcdef")
    assert (with_email.channel, with_email.status) == ("email", "sent")
    assert (without.channel, without.status, without.send_at) == ("newsletter", "sent", night)
    assert (only_sms.status, only_sms.reason) == ("suppressed", "no_contact")
