"""The response simulator: a pure, seeded generator, plus run_simulation against the real broker."""

import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from npsflow.simulate import (COMMENTS, LOCALES, LOCATIONS, ResponseSimulator, category_of,
                              run_simulation)

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
