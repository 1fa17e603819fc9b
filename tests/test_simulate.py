"""The simulators: responses and trigger events (pure, seeded generators), simulated respondents, the demo's
survey programs file, plus run_simulation against the real broker."""

import json
import math
import re
import tomllib
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from npsflow.simulate import (BAD_TRIGGER_KINDS, BUSINESS_CHANNELS, COMMENTS, COUNTRIES, DEMO_OPT_OUT,
                              DEMO_ORG_ID, EMAIL_DOMAINS, EMAIL_KNOWN_SHARE, JOB_SHARE, LOCALES, LOCATIONS,
                              PHONE_KNOWN_SHARE, REGULAR_CONTACTS, REGULAR_SHARE, Respondent,
                              ResponseSimulator, TriggerSimulator, category_of, comment_locale,
                              demo_programs_path, run_simulation)

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
KEYS = {"response_id", "survey_id", "score", "comment", "responded_at", "locale", "segment"}


def fixed_clock():
    return NOW


def ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def generate(seed=1, count=2000, **ratios):
    sim = ResponseSimulator(seed, clock=fixed_clock)
    return sim, list(sim.labeled_records(count, **ratios))


def is_valid_score(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10


# --------------------------------------------------------------------------------- determinism, format
def test_same_seed_same_records_other_seed_other_records():
    a = list(ResponseSimulator(42, clock=fixed_clock).records(500, bad_ratio=0.05, duplicate_ratio=0.05,
                                                              edit_ratio=0.05))
    b = list(ResponseSimulator(42, clock=fixed_clock).records(500, bad_ratio=0.05, duplicate_ratio=0.05,
                                                              edit_ratio=0.05))
    c = list(ResponseSimulator(43, clock=fixed_clock).records(500, bad_ratio=0.05, duplicate_ratio=0.05,
                                                              edit_ratio=0.05))
    assert a == b
    assert a != c
    assert len({r.get("response_id") for r in a} & {r.get("response_id") for r in c}) <= 1  # only None


def test_records_are_json_lines_in_the_ingest_format():
    _, labeled = generate(count=1000)
    for kind, record in labeled:
        assert kind == "valid"
        line = json.dumps(record, ensure_ascii=False)
        assert json.loads(line) == record
        assert set(record) == KEYS
        assert re.fullmatch(r"r-[0-9a-f]{16}", record["response_id"])
        assert record["survey_id"].startswith("s-")
        assert is_valid_score(record["score"])
        assert record["comment"] is None or (isinstance(record["comment"], str) and record["comment"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["responded_at"])
        assert record["locale"] in LOCALES
        seg = record["segment"]
        assert set(seg) - {"campaign"} == {"location", "employee", "channel"}
        assert all(isinstance(v, str) for v in seg.values())
        assert seg["channel"] in ("sms", "email", "newsletter")
    assert len({r["response_id"] for _, r in labeled}) == len(labeled)
    assert any("campaign" in r["segment"] for _, r in labeled)


def test_world_locations_employees_channels_locales():
    sim, labeled = generate(count=5000)
    assert len(sim.locations) == 12
    country = {name: locale for name, _, locale, _, _ in LOCATIONS}
    for loc in sim.locations:
        assert 3 <= len(loc.employees) <= 8
        assert all(re.fullmatch(rf"e-{loc.code}-\d\d", e.id) for e in loc.employees)
    records = [r for _, r in labeled]
    assert {r["segment"]["location"] for r in records} == set(country)
    for r in records:
        employee = r["segment"]["employee"]
        loc = next(x for x in sim.locations if x.name == r["segment"]["location"])
        assert employee in {e.id for e in loc.employees}
        # local language, English, or Swedish in Finland
        assert r["locale"] in (country[loc.name], "en") or (country[loc.name] == "fi" and r["locale"] == "sv")
    locales = Counter(r["locale"] for r in records)
    assert 0.05 < locales["en"] / len(records) < 0.2
    channels = Counter(r["segment"]["channel"] for r in records)
    assert channels["sms"] > channels["email"] > channels["newsletter"] > 0.08 * len(records)


def test_score_distribution_is_skewed_like_real_nps():
    _, labeled = generate(count=5000)
    scores = Counter(r["score"] for _, r in labeled)
    n = sum(scores.values())
    top = (scores[8] + scores[9] + scores[10]) / n
    assert top > 0.6
    assert 0.1 < sum(scores[s] for s in range(7)) / n < 0.35
    assert scores[10] > scores[7] > scores[3]
    assert all(scores[s] > 0 for s in range(11))


# ------------------------------------------------------------------------------------ event time
def test_event_time_from_start_up_to_now_and_never_in_the_future():
    _, labeled = generate(count=3000)
    times = [ts(r["responded_at"]) for _, r in labeled]
    assert all(NOW - timedelta(hours=1) <= t <= NOW for t in times)
    assert times == sorted(times)  # valid records only: event time advances
    assert times[0] < NOW - timedelta(minutes=55)
    assert times[-1] > NOW - timedelta(minutes=5)
    # spread over the hour, not bunched
    quarters = Counter(int((t - (NOW - timedelta(hours=1))).total_seconds() // 900) for t in times)
    assert all(quarters[q] > 3000 / 4 * 0.7 for q in range(4))


def test_moving_clock_is_respected_record_by_record():
    current = [NOW]

    def clock():
        return current[0]

    sim = ResponseSimulator(5, start=NOW - timedelta(minutes=10), clock=clock)
    for kind, record in sim.labeled_records(1000, duplicate_ratio=0.05, edit_ratio=0.05):
        current[0] += timedelta(milliseconds=700)
        if kind != "bad":
            assert ts(record["responded_at"]) <= clock()
            assert ts(record["responded_at"]) >= NOW - timedelta(minutes=10)


def test_explicit_start_and_a_start_in_the_future_is_capped():
    sim = ResponseSimulator(3, start=NOW + timedelta(hours=2), clock=fixed_clock)
    assert all(ts(r["responded_at"]) <= NOW for r in sim.records(50))
    sim = ResponseSimulator(3, clock=fixed_clock)
    assert sim.start == NOW - timedelta(hours=1)


# --------------------------------------------------------------------------- bad, duplicates, edits
def test_ratios_are_roughly_respected_and_counted():
    sim, labeled = generate(count=10000, bad_ratio=0.05, duplicate_ratio=0.04, edit_ratio=0.03)
    kinds = Counter(kind for kind, _ in labeled)
    stats = sim.stats
    assert stats.total == 10000
    assert (stats.valid, stats.bad, stats.duplicates, stats.edits) == (
        kinds["valid"], kinds["bad"], kinds["duplicate"], kinds["edit"])
    assert 400 < stats.bad < 600
    assert 300 < stats.duplicates < 500
    assert 200 < stats.edits < 400
    assert set(stats.bad_kinds) == {"score_decimal", "score_text", "score_too_high", "score_negative",
                                    "missing_response_id", "missing_score", "bad_timestamp"}
    assert sum(stats.bad_kinds.values()) == stats.bad
    # no noise asked for, none generated
    sim, labeled = generate(count=1000)
    assert sim.stats.as_dict()["valid"] == 1000 and {k for k, _ in labeled} == {"valid"}


def test_invalid_ratios_are_refused():
    sim = ResponseSimulator(1, clock=fixed_clock)
    with pytest.raises(ValueError):
        sim.records(10, bad_ratio=1.5)  # checked at the call, not at the first record
    with pytest.raises(ValueError):
        sim.records(10, bad_ratio=0.6, duplicate_ratio=0.6)
    with pytest.raises(ValueError):
        sim.labeled_records(-1)


def test_duplicates_are_exact_replays_and_edits_are_later_with_another_score():
    _, labeled = generate(seed=9, count=6000, bad_ratio=0.03, duplicate_ratio=0.06, edit_ratio=0.06)
    latest: dict[str, dict] = {}
    seen_dups = seen_edits = 0
    for kind, record in labeled:
        if kind == "bad":
            assert record.get("response_id") not in latest
            continue
        rid = record["response_id"]
        if rid not in latest:
            assert kind == "valid"
        elif record == latest[rid]:
            assert kind == "duplicate"
            seen_dups += 1
        else:
            assert kind == "edit"
            before = latest[rid]
            assert ts(record["responded_at"]) > ts(before["responded_at"])
            assert record["score"] != before["score"]
            assert is_valid_score(record["score"])
            assert record["segment"] == before["segment"] and record["locale"] == before["locale"]
            seen_edits += 1
        latest[rid] = record
    assert seen_dups > 200 and seen_edits > 200


def test_bad_records_are_rejected_and_good_ones_accepted_by_the_classify_rules():
    from npsflow.ingest import to_raw_response
    from streams.responses import Rejected, validate

    _, labeled = generate(seed=11, count=3000, bad_ratio=0.2, duplicate_ratio=0.02, edit_ratio=0.02)
    reasons = Counter()
    for kind, record in labeled:
        raw = to_raw_response(json.loads(json.dumps(record)), source="simulator", received_at=NOW)
        if kind == "bad":
            with pytest.raises(Rejected) as exc:
                validate(raw, NOW)
            reasons[exc.value.args[0] if exc.value.args else "?"] += 1
        else:
            response = validate(raw, NOW)
            assert response.score == record["score"]
    assert sum(reasons.values()) > 400


# ------------------------------------------------------------------------------------ comments, NPS
# each location's recurring complaint, as the lemma its local language gives (written by hand, not computed)
COMPLAINT_LEMMAS = {
    "Stockholm": {"kö"}, "Göteborg": {"faktura"}, "Malmö": {"kö"}, "København": {"levering"}, "Aarhus": {"app"},
    "Odense": {"faktura"}, "Helsinki": {"lasku"}, "Espoo": {"sovellus", "ei toimia"}, "Tampere": {"jono"},
    "Oslo": {"leveranse"}, "Bergen": {"app"}, "Trondheim": {"faktura"},
}


def test_each_location_has_a_recurring_complaint_that_comes_out_first_among_its_detractors():
    """The demo's words are meaningful: per location, analysed by streams.text and counted per answer, the
    location's own complaint is among the top detractor terms (lift significant), and phone numbers or
    addresses some respondents leave are masked before anything is counted."""
    from streams import termstats
    from streams.text import analyse

    _, labeled = generate(seed=5, count=30000)
    per_location: dict[str, list] = defaultdict(list)
    masked_kinds = Counter()
    for _, r in labeled:
        if r["comment"]:
            text = analyse(r["comment"], r["locale"])
            masked_kinds.update(text.masked_kinds)
            assert not re.search(r"\d{3}", text.masked) and "@" not in text.masked
            per_location[r["segment"]["location"]].append((category_of(r["score"]), set(text.terms)))
    assert masked_kinds["phone"] > 20
    for location, lemmas in COMPLAINT_LEMMAS.items():
        answers = per_location[location]
        totals = Counter(category for category, _ in answers)
        counts: dict[str, Counter] = defaultdict(Counter)
        for category, terms in answers:
            for term in terms:
                counts[term][category] += 1
        stats = termstats.term_stats(
            [termstats.TermCounts(t, "", sum(c.values()), c["promoter"], c["passive"], c["detractor"], sum(c.values()))
             for t, c in counts.items()],
            termstats.SliceTotals(len(answers), totals["promoter"], totals["passive"], totals["detractor"]))
        top = [s.term for s in stats[:3] if s.significant]
        assert lemmas & set(top), (location, [s.term for s in stats[:6]])


def test_comments_in_every_locale_matching_language_and_category():
    _, labeled = generate(seed=2, count=8000)
    records = [r for _, r in labeled]
    share = sum(r["comment"] is not None for r in records) / len(records)
    assert 0.28 <= share <= 0.42
    used = defaultdict(set)
    for r in records:
        if r["comment"] is None:
            continue
        category = category_of(r["score"])
        phrases = COMMENTS[r["locale"]][category]
        assert r["comment"].startswith(phrases), (r["locale"], category, r["comment"])
        for phrase in phrases:
            if r["comment"].startswith(phrase):
                used[(r["locale"], category)].add(phrase)
    for locale in LOCALES:
        assert locale in {"sv", "da", "fi", "nb", "en"}
        for category in ("detractor", "passive", "promoter"):
            assert len(COMMENTS[locale][category]) >= 8
            assert len(used[(locale, category)]) >= 8, (locale, category)
    letters = {"sv": "åäö", "da": "æøå", "nb": "æøå", "fi": "äö"}
    for locale, chars in letters.items():
        text = "".join(p for cat in COMMENTS[locale].values() for p in cat)
        assert all(c in text for c in chars), locale
    assert not any(c in "".join(p for cat in COMMENTS["sv"].values() for p in cat) for c in "æø")


def test_location_nps_differs_clearly():
    _, labeled = generate(seed=4, count=5000)
    counts = defaultdict(Counter)
    for _, r in labeled:
        counts[r["segment"]["location"]][category_of(r["score"])] += 1
    nps = {loc: 100 * (c["promoter"] - c["detractor"]) / sum(c.values()) for loc, c in counts.items()}
    assert len(nps) == 12
    assert max(nps.values()) - min(nps.values()) > 30
    assert max(nps.values()) > 50 and min(nps.values()) < 20


def test_records_encode_with_the_real_avro_codec():
    avro = pytest.importorskip("schemas.codec")
    from npsflow.ingest import to_raw_response

    codec = avro.AvroCodec()
    _, labeled = generate(seed=12, count=500, bad_ratio=0.2, duplicate_ratio=0.05, edit_ratio=0.05)
    for _, record in labeled:
        assert codec.encode(avro.RAW_RESPONSE, to_raw_response(record, source="simulator"))


# =========================================================================== trigger events (issue 3)
TRIGGER_KEYS = {"event_id", "org_id", "event_type", "occurred_at", "contact", "segment"}
COUNTRY_OF = {name: locale for name, _, locale, _, _ in LOCATIONS}


def binomial_bounds(n: int, p: float, z: float = 5.0) -> tuple[float, float]:
    """Bounds for a Binomial(n, p) count: mean ± z standard deviations (z = 5: a false alarm ~1 in 10⁶)."""
    mean, sd = n * p, math.sqrt(n * p * (1.0 - p))
    return mean - z * sd, mean + z * sd


def within(count: int, n: int, p: float) -> bool:
    low, high = binomial_bounds(n, p)
    return low <= count <= high


def triggers(seed=1, count=2000, **ratios):
    sim = TriggerSimulator(seed, clock=fixed_clock)
    return sim, list(sim.labeled_records(count, **ratios))


NOISY = {"duplicate_ratio": 0.05, "bad_ratio": 0.05, "no_contact_ratio": 0.05}


def test_generated_triggers_pass_validation_and_bad_ones_are_refused_with_their_reason():
    from npsflow.ingest import trigger_converter
    from schemas import codec as avro
    from streams.responses import Rejected
    from streams.triggers import validate_trigger

    codec = avro.AvroCodec()
    convert = trigger_converter(NOW)
    sim, labeled = triggers(seed=3, count=3000, **NOISY)
    reasons = Counter()
    for kind, record in labeled:
        obj = json.loads(json.dumps(record, ensure_ascii=False))  # as a JSON line
        if kind == "bad":
            with pytest.raises(Rejected) as exc:
                validate_trigger(obj, NOW)
            reasons[exc.value.reason] += 1
            continue
        event = validate_trigger(obj, NOW)
        assert event["event_id"] == record["event_id"] and event["org_id"] == DEMO_ORG_ID
        assert event["segment"] == record["segment"]
        _, subject, avro_record = convert(obj)  # what `npsflow ingest triggers` sends
        assert codec.encode(subject, avro_record)
    # every bad kind is refused with the reason it stands for, and nothing else is refused
    assert reasons == Counter({BAD_TRIGGER_KINDS[k]: n for k, n in sim.stats.bad_kinds.items()})
    assert set(sim.stats.bad_kinds) == set(BAD_TRIGGER_KINDS)


def test_trigger_format_contacts_and_segments_match_the_world():
    sim, labeled = triggers(seed=2, count=3000)
    locations = {loc.name: loc for loc in sim.locations}
    phone_digits = {"sv": 9, "da": 8, "fi": 9, "nb": 8}  # national significant number of a mobile
    for kind, record in labeled:
        assert kind == "valid"
        assert set(record) == TRIGGER_KEYS
        assert re.fullmatch(r"(job|ord)-[0-9a-f]{16}", record["event_id"])
        assert record["org_id"] == DEMO_ORG_ID
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["occurred_at"])
        seg = record["segment"]
        assert set(seg) - {"campaign"} == {"location", "employee", "channel"}
        assert seg["employee"] in {e.id for e in locations[seg["location"]].employees}
        assert seg["channel"] in dict(BUSINESS_CHANNELS[record["event_type"]])
        contact = record["contact"]
        assert set(contact) <= {"contact_id", "email", "phone", "locale", "timezone"}
        assert re.fullmatch(r"c-\d{5}", contact["contact_id"])
        assert "email" in contact or "phone" in contact
        country = COUNTRY_OF[seg["location"]]
        calling_code, zone = COUNTRIES[country]
        assert contact["timezone"] == zone
        assert contact["locale"] in (country, "en") or (country == "fi" and contact["locale"] == "sv")
        if "phone" in contact:
            assert re.fullmatch(rf"\{calling_code}\d{{{phone_digits[country]}}}", contact["phone"])
        if "email" in contact:
            assert contact["email"].split("@")[1] in EMAIL_DOMAINS  # reserved domains: nobody gets mail
        if record["event_type"] == "order.delivered":
            assert "email" in contact  # a web order always has the e-mail address
    records = [r for _, r in labeled]
    assert {r["segment"]["location"] for r in records} == set(COUNTRY_OF)
    assert {r["segment"]["channel"] for r in records} == {"store", "field", "web"}
    assert any("campaign" in r["segment"] for r in records)
    assert len({r["event_id"] for r in records}) == len(records)


def test_same_seed_same_triggers_other_seed_other_triggers_and_the_response_world():
    a = TriggerSimulator(42, clock=fixed_clock).records(800, **NOISY)
    b = TriggerSimulator(42, clock=fixed_clock).records(800, **NOISY)
    c = TriggerSimulator(43, clock=fixed_clock).records(800, **NOISY)
    assert isinstance(a, list) and len(a) == 800
    assert a == b
    assert a != c
    assert not {r.get("event_id") for r in a} & {r.get("event_id") for r in c} - {None}
    # the same seed gives the same employees as the response simulator (live windows look as before)
    employees = lambda locs: [(loc.name, [(e.id, e.weight, e.nps_offset) for e in loc.employees]) for loc in locs]
    assert employees(TriggerSimulator(42).locations) == employees(ResponseSimulator(42).locations)
    # a contact is the same person whenever they come back
    seen = {}
    for r in a:
        contact = r.get("contact")
        if isinstance(contact, dict) and contact.get("email") and contact.get("contact_id"):
            assert seen.setdefault(contact["contact_id"], contact["email"]) == contact["email"]


def test_event_times_are_recent_ordered_and_never_in_the_future():
    sim, labeled = triggers(seed=5, count=2000, duplicate_ratio=0.05, no_contact_ratio=0.05)
    assert sim.start == NOW - timedelta(minutes=5)
    times = [ts(r["occurred_at"]) for kind, r in labeled if kind != "duplicate"]
    assert all(NOW - timedelta(minutes=5) <= t <= NOW for t in times)
    assert times == sorted(times)
    assert times[-1] > NOW - timedelta(seconds=30)
    # a moving clock is re-read for every record, and a start in the future is capped
    current = [NOW]

    def clock():
        return current[0]

    sim = TriggerSimulator(6, start=NOW - timedelta(minutes=2), clock=clock)
    for kind, record in sim.labeled_records(500, **NOISY):
        current[0] += timedelta(milliseconds=300)
        if kind != "bad":
            assert NOW - timedelta(minutes=2) <= ts(record["occurred_at"]) <= clock()
    sim = TriggerSimulator(6, start=NOW + timedelta(hours=1), clock=fixed_clock)
    assert all(ts(r["occurred_at"]) <= NOW for r in sim.records(50))


def test_trigger_ratios_are_roughly_respected_and_counted():
    n = 2000
    sim, labeled = triggers(seed=7, count=n, **NOISY)
    kinds = Counter(kind for kind, _ in labeled)
    stats = sim.stats
    assert stats.total == n
    assert (stats.valid, stats.no_contact, stats.bad, stats.duplicates) == (
        kinds["valid"], kinds["no_contact"], kinds["bad"], kinds["duplicate"])
    assert within(kinds["bad"], n, NOISY["bad_ratio"])
    assert within(kinds["duplicate"], n, NOISY["duplicate_ratio"])
    assert within(kinds["no_contact"], n, NOISY["no_contact_ratio"])
    assert sum(stats.bad_kinds.values()) == stats.bad
    # event types among the fresh triggers
    fresh = [r for kind, r in labeled if kind in ("valid", "no_contact")]
    jobs = sum(r["event_type"] == "job.completed" for r in fresh)
    assert within(jobs, len(fresh), JOB_SHARE)
    assert stats.event_types == dict(Counter(r["event_type"] for r in fresh))
    # addresses, per distinct contact (a contact's addresses are drawn once, independently of the others)
    with_phone, with_email_on_jobs = {}, {}
    for kind, r in labeled:
        if kind != "valid":
            continue
        cid = r["contact"]["contact_id"]
        with_phone[cid] = "phone" in r["contact"]
        if r["event_type"] == "job.completed":
            with_email_on_jobs[cid] = "email" in r["contact"]
    assert within(sum(with_phone.values()), len(with_phone), PHONE_KNOWN_SHARE)
    # e-mail known, or the only address when the phone is unknown
    p_email = EMAIL_KNOWN_SHARE + (1 - EMAIL_KNOWN_SHARE) * (1 - PHONE_KNOWN_SHARE)
    assert within(sum(with_email_on_jobs.values()), len(with_email_on_jobs), p_email)
    # contacts repeat within the run (quarantine suppressions): at least the regulars' repeats
    fresh_contacts = [r["contact"]["contact_id"] for r in fresh]
    repeats = len(fresh_contacts) - len(set(fresh_contacts))
    assert repeats >= binomial_bounds(len(fresh), REGULAR_SHARE)[0] - REGULAR_CONTACTS > 0
    # no noise asked for, none generated
    sim, labeled = triggers(seed=7, count=500)
    assert {k for k, _ in labeled} == {"valid"} and sim.stats.as_dict()["valid"] == 500


def test_duplicates_are_exact_replays_and_no_contact_triggers_have_no_address():
    from streams.triggers import validate_trigger

    _, labeled = triggers(seed=8, count=3000, **NOISY)
    first: dict[str, dict] = {}
    for kind, record in labeled:
        if kind == "bad":
            continue
        if kind == "duplicate":
            assert record == first[record["event_id"]]
            continue
        assert record["event_id"] not in first
        first[record["event_id"]] = record
        if kind == "no_contact":
            contact = validate_trigger(record, NOW)["contact"]
            assert contact["email"] is None and contact["phone"] is None
            assert contact["contact_id"] not in DEMO_OPT_OUT  # would be suppressed as opted_out first


def test_invalid_trigger_options_are_refused():
    sim = TriggerSimulator(1, clock=fixed_clock)
    with pytest.raises(ValueError):
        sim.labeled_records(10, bad_ratio=1.5)  # checked at the call, not at the first record
    with pytest.raises(ValueError):
        sim.records(10, bad_ratio=0.5, duplicate_ratio=0.3, no_contact_ratio=0.3)
    with pytest.raises(ValueError):
        sim.records(-1)
    with pytest.raises(ValueError):
        TriggerSimulator(1, contact_pool=10)


# ------------------------------------------------------------------------------- demo programs file
@pytest.fixture(scope="module")
def demo_programs():
    from npsflow.programs import load_programs

    return load_programs(demo_programs_path())


def test_demo_programs_file_is_installed_and_loads(demo_programs):
    path = demo_programs_path()
    assert path.is_file() and path.name == "demo_programs.yaml" and path.parent.name == "npsflow"
    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert "demo_programs.yaml" in pyproject["tool"]["setuptools"]["package-data"]["npsflow"]

    assert demo_programs.version == 1
    org = demo_programs.organization(DEMO_ORG_ID)
    assert org is not None and org.name == "Nordlys Service"
    assert org.timezone == "Europe/Stockholm" and org.default_locale == "sv"
    brand = org.branding["sv"]
    assert brand.sender_email and brand.sms_sender_id and brand.logo_url.startswith("https://")
    assert brand.colors is not None and org.review_url.startswith("https://")

    _, service = demo_programs.program_for(DEMO_ORG_ID, "job.completed")
    assert service.id == "service" and service.channels == ("sms", "email")
    assert service.delay == timedelta(0) and service.quiet_hours is None and service.daily_cap is None
    assert service.sampling_rate == 0.8 and service.quarantine == timedelta(days=30)
    assert service.reminder_after == timedelta(days=1)
    assert (service.cost_of("sms"), service.cost_of("email"), service.cost.currency) == (0.15, 0.002, "EUR")
    _, webshop = demo_programs.program_for(DEMO_ORG_ID, "order.delivered")
    assert webshop.id == "webshop" and webshop.channels == ("email",)
    assert webshop.delay == timedelta(0) and webshop.quiet_hours is None and webshop.sampling_rate == 1.0
    assert webshop.cost_of("email") == 0.002


def test_demo_programs_cover_what_the_simulator_emits(demo_programs):
    sim, labeled = triggers(seed=9, count=2000, **NOISY)
    emitted = {(r["org_id"], r["event_type"]) for kind, r in labeled if kind != "bad"}
    assert emitted == {(DEMO_ORG_ID, "job.completed"), (DEMO_ORG_ID, "order.delivered")}
    assert all(demo_programs.program_for(org, event_type) for org, event_type in emitted)
    opt_out = demo_programs.organization(DEMO_ORG_ID).opt_out.ids
    assert opt_out == set(DEMO_OPT_OUT) and 1 <= len(opt_out) <= 2
    assert opt_out <= set(sim.contact_ids())
    used = Counter(r["contact"]["contact_id"] for kind, r in labeled if kind == "valid")
    assert all(used[c] > 0 for c in opt_out)  # the simulator actually uses them


def test_demo_run_through_the_contact_rules_shows_every_expected_outcome(demo_programs):
    """What the dispatch agent will do with the demo's triggers, with the pure contact rules: dedup by
    event_id, dead letters for bad triggers, and sent / opted_out / no_contact / quarantine / sampled_out."""
    from npsflow.programs import rule_config
    from streams.contact_rules import SENT, contact_key, decide
    from streams.responses import Rejected, validate
    from streams.triggers import validate_trigger
    from npsflow.ingest import to_raw_response

    secret = "demo-secret"
    sim, labeled = triggers(seed=10, count=2000, **NOISY)
    respondent = Respondent(10, locations=sim.locations, clock=fixed_clock)
    outcomes = Counter()
    contacts: dict[str, object] = {}
    org_day = None
    seen: set[str] = set()
    responses = []
    for kind, record in labeled:
        try:
            trigger = validate_trigger(record, NOW)
        except Rejected:
            outcomes["dead_letter"] += 1
            continue
        if trigger["event_id"] in seen:
            outcomes["deduplicated"] += 1
            continue
        seen.add(trigger["event_id"])
        org, program = demo_programs.program_for(trigger["org_id"], trigger["event_type"])
        key = contact_key(org.id, trigger["contact"]["contact_id"], secret)
        decision = decide(trigger, rule_config(org, program), contacts.get(key), org_day, NOW, secret,
                          opted_out=org.is_opted_out(trigger["contact"]["contact_id"]))
        contacts[key], org_day = decision.contact_state, decision.org_day_state
        outcomes[decision.status if decision.status == SENT else decision.reason or decision.status] += 1
        if decision.status == SENT:
            invitation = {"invitation_id": f"inv-{trigger['event_id']}", "survey_id": program.survey_id,
                          "channel": decision.channel, "locale": trigger["contact"]["locale"],
                          "segment": trigger["segment"]}
            answer = respondent.respond(invitation)
            if answer is not None:
                responses.append((invitation, answer))
    for outcome in ("dead_letter", "deduplicated", "sent", "opted_out", "no_contact", "quarantine",
                    "sampled_out"):
        assert outcomes[outcome] > 0, (outcome, outcomes)
    assert set(outcomes) <= {"dead_letter", "deduplicated", "sent", "opted_out", "no_contact", "quarantine",
                             "sampled_out"}  # never too_old, scheduled (quiet hours) or capped
    assert within(len(responses), outcomes["sent"], respondent.response_rate)
    for invitation, answer in responses:
        response = validate(to_raw_response(answer, source="simulator", received_at=NOW), NOW)
        assert response.invitation_id == invitation["invitation_id"]
        assert response.segment == invitation["segment"]


# ------------------------------------------------------------------------------------- respondents
def invitation(i: int, location="Stockholm", employee="e-STO-01", locale="sv", channel="sms", **extra):
    return {"invitation_id": f"inv-{i:05d}", "survey_id": "s-service", "channel": channel, "locale": locale,
            "segment": {"location": location, "employee": employee, "channel": "store"}, **extra}


def test_respondent_output_passes_response_validation_and_carries_the_invitation():
    from npsflow.ingest import to_raw_response
    from schemas import codec as avro
    from streams.responses import validate

    codec = avro.AvroCodec()
    respondent = Respondent(1, response_rate=1.0, clock=fixed_clock)
    sim = TriggerSimulator(1, clock=fixed_clock)
    for i, (_, trigger) in enumerate(sim.labeled_records(600)):
        inv = {"invitation_id": f"inv-{i}", "survey_id": "s-webshop", "channel": "email",
               "locale": trigger["contact"]["locale"], "segment": dict(trigger["segment"])}
        answer = respondent.respond(inv)
        assert set(answer) == {"response_id", "invitation_id", "survey_id", "score", "comment",
                               "responded_at", "locale", "segment"}
        assert answer["response_id"] == answer["invitation_id"] == inv["invitation_id"]
        assert answer["segment"] == inv["segment"] and answer["segment"] is not inv["segment"]
        assert answer["locale"] == inv["locale"] and answer["survey_id"] == "s-webshop"
        assert answer["responded_at"] == "2026-11-20T10:00:00Z"
        raw = to_raw_response(json.loads(json.dumps(answer)), source="simulator", received_at=NOW)
        assert codec.encode(avro.RAW_RESPONSE, raw)
        response = validate(raw, NOW)
        assert response.response_id == response.invitation_id == inv["invitation_id"]
        assert response.score == answer["score"] and response.segment == inv["segment"]
        assert response.survey_id == "s-webshop" and response.locale == inv["locale"]
        if answer["comment"] is not None:
            assert answer["comment"].startswith(COMMENTS[comment_locale(inv["locale"])][category_of(answer["score"])])


def test_respondent_is_deterministic_per_invitation_and_respects_the_response_rate():
    n = 4000
    invitations = [invitation(i) for i in range(n)]
    a = Respondent(3, clock=fixed_clock)
    forward = [a.respond(inv) for inv in invitations]
    backward = [a.respond(inv) for inv in reversed(invitations)][::-1]
    assert forward == backward  # order of calls does not matter; the same invitation, the same answer
    assert forward == [Respondent(3, clock=fixed_clock).respond(inv) for inv in invitations]
    assert [a.answers(inv) for inv in invitations] == [r is not None for r in forward]
    other = [Respondent(4, clock=fixed_clock).respond(inv) for inv in invitations]
    assert [r is not None for r in other] != [r is not None for r in forward]
    assert a.response_rate == 0.35
    assert within(sum(r is not None for r in forward), n, 0.35)
    rate = Respondent(3, response_rate=0.6, clock=fixed_clock)
    assert within(sum(rate.answers(inv) for inv in invitations), n, 0.6)
    assert not any(Respondent(3, response_rate=0.0).respond(inv) for inv in invitations[:200])
    assert all(Respondent(3, response_rate=1.0).respond(inv) for inv in invitations[:200])


def test_respondent_scores_follow_the_location_nps_and_comments_the_language():
    respondent = Respondent(5, response_rate=1.0, clock=fixed_clock)
    nps = {}
    for location, code in (("Bergen", "BER"), ("Malmö", "MAL")):
        counts = Counter(category_of(respondent.respond(invitation(i, location, f"e-{code}-01"))["score"])
                         for i in range(3000))
        nps[location] = 100 * (counts["promoter"] - counts["detractor"]) / 3000
    assert nps["Bergen"] - nps["Malmö"] > 40
    # comments in the invitation's language (its language part; English when there are none)
    for locale, language in (("fi", "fi"), ("sv-FI", "sv"), ("no", "nb"), ("de", "en"), (None, "en")):
        answers = [respondent.respond(invitation(i, locale=locale)) for i in range(300)]
        commented = [r for r in answers if r["comment"]]
        assert commented and all(r["locale"] == locale for r in answers)
        assert all(r["comment"].startswith(COMMENTS[language][category_of(r["score"])]) for r in commented)
    # an unknown location or employee still answers (a neutral NPS model)
    unknown = respondent.respond(invitation(1, location="Reykjavík", employee="e-X"))
    assert unknown["segment"]["location"] == "Reykjavík" and 0 <= unknown["score"] <= 10


def test_respondent_refuses_bad_input():
    with pytest.raises(ValueError):
        Respondent(1, response_rate=1.5)
    with pytest.raises(ValueError):
        Respondent(1).respond({"segment": {"location": "Oslo"}})
    with pytest.raises(ValueError):
        Respondent(1).answers({"invitation_id": "  "})


# ----------------------------------------------------------------------------------- run_simulation
@pytest.mark.kafka
@pytest.mark.parametrize("rate", [0, 1000.0])
def test_run_simulation_sends_keyed_avro_records_to_the_real_broker(tmp_path, kafka_bootstrap, rate):
    from npsflow.stack import ensure_topics
    from schemas import codec as avro
    from tests.e2e_helpers import make_env, read_topic

    settings = make_env(tmp_path, kafka_bootstrap).settings
    ensure_topics(settings, kafka_bootstrap)
    progress = []
    sent = run_simulation(settings, kafka_bootstrap, count=120, rate=rate, seed=8, bad_ratio=0.1,
                          duplicate_ratio=0.05, edit_ratio=0.05, on_progress=progress.append)
    assert sent == 120
    assert progress[-1] == 120 and progress == sorted(progress)
    if rate:
        assert len(progress) > 2  # throttled: sent in several small batches

    codec = avro.AvroCodec()
    messages = read_topic(kafka_bootstrap, settings.topics.raw_responses, 120)
    assert len(messages) == 120
    for m in messages:
        record = codec.decode(m.value, expected=avro.RAW_RESPONSE)
        assert record["source"] == "simulator"
        rid = record["response_id"]
        assert m.key == (rid.strip().encode() if rid and rid.strip() else None)


def test_a_planted_drop_makes_one_location_worse_in_its_last_day_only():
    from datetime import datetime, timedelta, timezone

    from npsflow.simulate import ResponseSimulator, category_of

    now = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    sim = ResponseSimulator(7, start=now - timedelta(days=8), clock=lambda: now, drop_location="Espoo")
    cut = (now - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def nps(records):
        cats = [category_of(r["score"]) for r in records]
        return 100 * (cats.count("promoter") - cats.count("detractor")) / len(cats)

    records = list(sim.records(20_000))
    espoo = [r for r in records if r["segment"]["location"] == "Espoo"]
    before, after = [r for r in espoo if r["responded_at"] < cut], [r for r in espoo if r["responded_at"] >= cut]
    assert len(after) >= 30 and nps(before) - nps(after) > 30
    oslo = [r for r in records if r["segment"]["location"] == "Oslo"]
    assert abs(nps([r for r in oslo if r["responded_at"] < cut]) - nps([r for r in oslo if r["responded_at"] >= cut])) < 20
    with pytest.raises(ValueError, match="unknown location"):
        ResponseSimulator(1, drop_location="Atlantis")
