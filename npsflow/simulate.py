"""Realistic synthetic NPS survey responses for demos and benchmarks.

:class:`ResponseSimulator` is a pure, seeded generator (no I/O): it yields JSON objects in exactly the
``npsflow ingest`` line format::

    {"response_id": "r-…", "survey_id": "s-store-visit", "score": 9, "comment": "…",
     "responded_at": "2026-11-20T10:00:00Z", "locale": "sv",
     "segment": {"location": "Espoo", "employee": "e-ESP-03", "channel": "sms", "campaign": "…"}}

The world it simulates: twelve Nordic locations, each with its own quality (from world class to needs
improvement), 3–8 employees per location with their own quality, three channels (sms, email, newsletter)
with different volumes and moods, local languages (sv, da, fi, nb) plus English, comments in the
respondent's language matching the score category, and event times advancing through the last hour up to
the (injectable) clock's "now" — never beyond it. Optional noise: invalid records, exact replays, edits.

:func:`run_simulation` sends the records to the raw responses topic at a given rate.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

# ----------------------------------------------------------------------------------------- the world
# name, code, country locale, volume weight, target NPS (the location's "quality")
LOCATIONS: tuple[tuple[str, str, str, float, float], ...] = (
    ("Stockholm", "STO", "sv", 16, 45),
    ("Göteborg", "GOT", "sv", 10, 36),
    ("Malmö", "MAL", "sv", 7, -10),
    ("København", "KBH", "da", 14, 55),
    ("Aarhus", "AAR", "da", 7, 62),
    ("Odense", "ODE", "da", 4, 10),
    ("Helsinki", "HEL", "fi", 12, 30),
    ("Espoo", "ESP", "fi", 6, 70),
    ("Tampere", "TAM", "fi", 6, 18),
    ("Oslo", "OSL", "nb", 11, 48),
    ("Bergen", "BER", "nb", 6, 76),
    ("Trondheim", "TRD", "nb", 5, 24),
)
CAPITALS = {"Stockholm", "København", "Helsinki", "Oslo"}
# Swedish-speaking Finns
FINLAND_SWEDISH_SHARE = {"Helsinki": 0.08, "Espoo": 0.08, "Tampere": 0.02}

# channel: volume weight, NPS effect, comment propensity multiplier
CHANNELS: dict[str, tuple[float, float, float]] = {
    "sms": (0.50, 4.0, 0.85),
    "email": (0.32, 0.0, 1.15),
    "newsletter": (0.18, -9.0, 1.0),
}
CAMPAIGN_SHARE = {"sms": 0.08, "email": 0.35, "newsletter": 1.0}
CAMPAIGNS = ("black-week", "loyalty-club", "winter-sale", "new-store-opening", "spring-offers")

PASSIVE_SHARE = 0.24
PROMOTER_SCORES = ((9, 10), (45, 55))
PASSIVE_SCORES = ((7, 8), (40, 60))
DETRACTOR_SCORES = ((0, 1, 2, 3, 4, 5, 6), (6, 2, 3, 4, 6, 10, 14))
COMMENT_PROPENSITY = {"detractor": 0.55, "passive": 0.25, "promoter": 0.32}
TWO_SENTENCE_SHARE = 0.15

LOCALES = ("sv", "da", "fi", "nb", "en")

COMMENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "sv": {
        "detractor": (
            "Fick vänta alldeles för länge på att bli hjälpt.",
            "Personalen var ointresserad och otrevlig.",
            "Produkten gick sönder efter en vecka och ingen ville ta ansvar.",
            "Priserna är för höga för den service man får.",
            "Ingen svarade på mitt mejl trots flera påminnelser.",
            "Butiken var stökig och det var svårt att hitta något.",
            "Jag fick fel information om leveranstiden.",
            "Kön till kassan var enormt lång och bara en kassa var öppen.",
            "Returen krånglade och jag har fortfarande inte fått pengarna tillbaka.",
            "Jag kommer inte att handla här igen.",
        ),
        "passive": (
            "Helt okej, men inget som sticker ut.",
            "Bra sortiment men lite dyrt.",
            "Det fungerade, men väntetiden kunde ha varit kortare.",
            "Trevlig personal, men de hade inte det jag letade efter.",
            "Ganska nöjd överlag.",
            "Som vanligt, varken bättre eller sämre.",
            "Smidigt köp, men parkeringen är ett problem.",
            "Okej upplevelse, lite rörigt i butiken.",
            "Leveransen kom i tid, men förpackningen var skadad.",
        ),
        "promoter": (
            "Fantastisk service, tack så mycket!",
            "Personalen var otroligt hjälpsam och kunnig.",
            "Snabbt, enkelt och ett trevligt bemötande.",
            "Bästa butiken i stan, jag rekommenderar den varmt.",
            "Fick precis den hjälp jag behövde.",
            "Alltid lika trevligt att komma hit.",
            "Mycket nöjd med både produkten och servicen.",
            "Superbra råd, jag kommer definitivt tillbaka.",
            "Kort väntetid och ett vänligt bemötande.",
        ),
    },
    "da": {
        "detractor": (
            "Jeg ventede alt for længe på at blive betjent.",
            "Personalet var uinteresseret og uhøfligt.",
            "Varen gik i stykker efter en uge, og ingen ville tage ansvar.",
            "Priserne er for høje i forhold til servicen.",
            "Ingen svarede på min e-mail, selvom jeg rykkede flere gange.",
            "Butikken var rodet, og det var svært at finde noget.",
            "Jeg fik forkerte oplysninger om leveringstiden.",
            "Køen ved kassen var enormt lang, og kun én kasse var åben.",
            "Returneringen var besværlig, og jeg har stadig ikke fået pengene tilbage.",
            "Jeg handler ikke her igen.",
        ),
        "passive": (
            "Helt okay, men ikke noget særligt.",
            "Godt udvalg, men lidt dyrt.",
            "Det fungerede, men ventetiden kunne have været kortere.",
            "Venligt personale, men de havde ikke det, jeg ledte efter.",
            "Overordnet set ret tilfreds.",
            "Som altid, hverken bedre eller dårligere.",
            "Nemt køb, men parkeringen er et problem.",
            "Okay oplevelse, lidt rodet i butikken.",
            "Leveringen kom til tiden, men emballagen var beskadiget.",
        ),
        "promoter": (
            "Fantastisk service, tusind tak!",
            "Personalet var utroligt hjælpsomt og kompetent.",
            "Hurtig, nem og venlig betjening.",
            "Byens bedste butik, den kan varmt anbefales.",
            "Jeg fik præcis den hjælp, jeg havde brug for.",
            "Altid en fornøjelse at komme her.",
            "Meget tilfreds med både varen og servicen.",
            "Rigtig god rådgivning, jeg kommer helt sikkert igen.",
            "Kort ventetid og en venlig modtagelse.",
        ),
    },
    "fi": {
        "detractor": (
            "Jouduin odottamaan palvelua aivan liian kauan.",
            "Henkilökunta oli välinpitämätöntä ja epäkohteliasta.",
            "Tuote hajosi viikon käytön jälkeen, eikä kukaan ottanut vastuuta.",
            "Hinnat ovat liian korkeat saatuun palveluun nähden.",
            "Kukaan ei vastannut sähköpostiini useista muistutuksista huolimatta.",
            "Myymälä oli sotkuinen, ja sieltä oli vaikea löytää mitään.",
            "Sain väärää tietoa toimitusajasta.",
            "Kassajono oli todella pitkä, ja vain yksi kassa oli auki.",
            "Palautus oli hankala, enkä ole vieläkään saanut rahojani takaisin.",
            "En asioi täällä enää.",
        ),
        "passive": (
            "Ihan ok, mutta ei mitään erikoista.",
            "Hyvä valikoima, mutta vähän kallista.",
            "Asia hoitui, mutta odotusaika olisi voinut olla lyhyempi.",
            "Ystävällinen henkilökunta, mutta etsimääni tuotetta ei ollut.",
            "Melko tyytyväinen kokonaisuuteen.",
            "Ihan tavallinen käynti, ei parempi eikä huonompi kuin ennen.",
            "Ostos sujui helposti, mutta pysäköinti on ongelma.",
            "Kohtalainen kokemus, myymälässä oli vähän sekavaa.",
            "Toimitus tuli ajallaan, mutta pakkaus oli vaurioitunut.",
        ),
        "promoter": (
            "Loistavaa palvelua, kiitos paljon!",
            "Henkilökunta oli todella avuliasta ja asiantuntevaa.",
            "Nopeaa, helppoa ja ystävällistä palvelua.",
            "Kaupungin paras myymälä, suosittelen lämpimästi.",
            "Sain juuri sen avun, jota tarvitsin.",
            "Täällä on aina mukava asioida.",
            "Olen erittäin tyytyväinen sekä tuotteeseen että palveluun.",
            "Erinomaisia neuvoja, tulen ehdottomasti uudestaan.",
            "Lyhyt odotusaika ja ystävällinen vastaanotto.",
        ),
    },
    "nb": {
        "detractor": (
            "Jeg ventet altfor lenge på å bli hjulpet.",
            "Personalet var uinteressert og uhøflig.",
            "Varen gikk i stykker etter en uke, og ingen ville ta ansvar.",
            "Prisene er for høye i forhold til servicen.",
            "Ingen svarte på e-posten min, selv etter flere purringer.",
            "Butikken var rotete, og det var vanskelig å finne noe.",
            "Jeg fikk feil informasjon om leveringstiden.",
            "Køen i kassen var enormt lang, og bare én kasse var åpen.",
            "Returen var tungvint, og jeg har fortsatt ikke fått pengene tilbake.",
            "Jeg kommer ikke til å handle her igjen.",
        ),
        "passive": (
            "Helt greit, men ikke noe spesielt.",
            "Godt utvalg, men litt dyrt.",
            "Det fungerte, men ventetiden kunne vært kortere.",
            "Hyggelig personale, men de hadde ikke det jeg lette etter.",
            "Stort sett fornøyd.",
            "Som vanlig, verken bedre eller dårligere.",
            "Enkelt kjøp, men parkeringen er et problem.",
            "Grei opplevelse, litt rotete i butikken.",
            "Leveransen kom i tide, men emballasjen var skadet.",
        ),
        "promoter": (
            "Fantastisk service, tusen takk!",
            "Personalet var utrolig hjelpsomt og kunnskapsrikt.",
            "Rask, enkel og hyggelig betjening.",
            "Byens beste butikk, anbefales på det varmeste.",
            "Jeg fikk akkurat den hjelpen jeg trengte.",
            "Alltid like hyggelig å komme hit.",
            "Svært fornøyd med både varen og servicen.",
            "Veldig gode råd, jeg kommer garantert tilbake.",
            "Kort ventetid og en vennlig mottakelse.",
        ),
    },
    "en": {
        "detractor": (
            "Waited far too long before anyone helped me.",
            "The staff seemed uninterested and were rude.",
            "The product broke after a week and nobody would take responsibility.",
            "Prices are too high for the level of service.",
            "Nobody answered my email despite several reminders.",
            "The store was messy and it was hard to find anything.",
            "I was given the wrong delivery time.",
            "The checkout queue was huge and only one till was open.",
            "The return was a hassle and I still haven't got my money back.",
            "I won't be shopping here again.",
        ),
        "passive": (
            "Fine, but nothing special.",
            "Good selection, but a bit pricey.",
            "It worked out, but the wait could have been shorter.",
            "Friendly staff, but they didn't have what I was looking for.",
            "Fairly satisfied overall.",
            "Same as usual, neither better nor worse.",
            "Easy purchase, but parking is a problem.",
            "Okay experience, the store was a bit chaotic.",
            "The delivery arrived on time, but the packaging was damaged.",
        ),
        "promoter": (
            "Fantastic service, thank you so much!",
            "The staff were incredibly helpful and knowledgeable.",
            "Quick, easy and friendly service.",
            "Best store in town, I highly recommend it.",
            "Got exactly the help I needed.",
            "Always a pleasure to come here.",
            "Very happy with both the product and the service.",
            "Great advice, I'll definitely be back.",
            "Short wait and a warm welcome.",
        ),
    },
}

BAD_KINDS = ("score_decimal", "score_text", "score_too_high", "score_negative", "missing_response_id",
             "missing_score", "bad_timestamp")
POOL_SIZE = 5000  # earlier records that duplicates and edits are drawn from (bounded memory)


def category_of(score: int) -> str:
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def format_ts(value: datetime) -> str:
    return _as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Employee:
    id: str
    weight: float
    nps_offset: float


@dataclass
class Location:
    name: str
    code: str
    locale: str
    weight: float
    nps: float
    employees: list[Employee] = field(default_factory=list)


@dataclass
class SimulationStats:
    """Counts of what was generated (cumulative over every ``records`` call of one simulator)."""

    valid: int = 0  # fresh valid responses
    bad: int = 0  # invalid records (dead-lettered by the classify agent)
    duplicates: int = 0  # exact replays of an earlier record
    edits: int = 0  # same response_id as an earlier record, a different score, a later responded_at
    bad_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.valid + self.bad + self.duplicates + self.edits

    def as_dict(self) -> dict:
        return {"valid": self.valid, "bad": self.bad, "duplicates": self.duplicates, "edits": self.edits,
                "total": self.total, "bad_kinds": dict(self.bad_kinds)}


class ResponseSimulator:
    """Seeded generator of NPS responses. Deterministic for a given ``seed``, ``start`` and ``clock``.

    ``clock`` returns the current time (aware datetime; default: the wall clock in UTC). ``start`` is the
    event time of the first record (default: ``clock()`` minus one hour). Event times advance from there
    towards ``clock()`` (re-read for every record), so they are spread over the last hour and never lie in
    the future of the clock.
    """

    def __init__(self, seed: int | None = None, start: datetime | None = None,
                 clock: Callable[[], datetime] | None = None):
        self.seed = seed
        self._rng = random.Random(seed)
        self._clock = clock or _utc_now
        self.start = _as_utc(start) if start is not None else _as_utc(self._clock()) - timedelta(hours=1)
        self._cursor = self.start
        self.stats = SimulationStats()
        self._pool: list[dict] = []  # latest version of recent responses (one slot per response_id)
        self._pool_next = 0
        self.locations: list[Location] = []
        for name, code, locale, weight, nps in LOCATIONS:
            loc = Location(name, code, locale, weight, nps)
            for i in range(1, self._rng.randint(3, 8) + 1):
                offset = max(-22.0, min(22.0, self._rng.gauss(0.0, 10.0)))
                loc.employees.append(Employee(f"e-{code}-{i:02d}", self._rng.uniform(0.4, 1.6), offset))
            self.locations.append(loc)
        self._loc_weights = [loc.weight for loc in self.locations]
        self._channels = list(CHANNELS)
        self._channel_weights = [CHANNELS[c][0] for c in self._channels]

    # ------------------------------------------------------------------------------------- public
    def records(self, count: int, *, bad_ratio: float = 0.0, duplicate_ratio: float = 0.0,
                edit_ratio: float = 0.0) -> Iterator[dict]:
        """``count`` JSON objects in the ingest line format (lazily; ``stats`` counts them).

        Arguments are checked at once (ValueError); the records are generated as they are consumed.
        """
        labeled = self.labeled_records(count, bad_ratio=bad_ratio, duplicate_ratio=duplicate_ratio,
                                       edit_ratio=edit_ratio)
        return (record for _, record in labeled)

    def labeled_records(self, count: int, *, bad_ratio: float = 0.0, duplicate_ratio: float = 0.0,
                        edit_ratio: float = 0.0) -> Iterator[tuple[str, dict]]:
        """Like :meth:`records`, as ``(kind, record)`` with kind ``valid``, ``bad``, ``duplicate`` or ``edit``."""
        if count < 0:
            raise ValueError("count must be >= 0")
        for name, ratio in (("bad_ratio", bad_ratio), ("duplicate_ratio", duplicate_ratio),
                            ("edit_ratio", edit_ratio)):
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {ratio}")
        if bad_ratio + duplicate_ratio + edit_ratio > 1.0:
            raise ValueError("bad_ratio + duplicate_ratio + edit_ratio must not exceed 1")
        return self._generate(count, bad_ratio, duplicate_ratio, edit_ratio)

    def _generate(self, count: int, bad_ratio: float, duplicate_ratio: float,
                  edit_ratio: float) -> Iterator[tuple[str, dict]]:
        rng = self._rng
        for i in range(count):
            self._advance(count - i)
            u = rng.random()
            if u < bad_ratio:
                yield "bad", self._bad()
                continue
            if u < bad_ratio + duplicate_ratio and self._pool:
                original = self._pool[rng.randrange(len(self._pool))]
                self.stats.duplicates += 1
                yield "duplicate", _copy(original)
                continue
            if u < bad_ratio + duplicate_ratio + edit_ratio:
                edit = self._edit()
                if edit is not None:
                    yield "edit", edit
                    continue
            record = self._fresh()
            self._remember(record)
            self.stats.valid += 1
            yield "valid", _copy(record)

    # ------------------------------------------------------------------------------------ internals
    def _advance(self, remaining: int) -> None:
        """Move the event-time cursor towards now: Poisson-like gaps that spread the rest evenly."""
        now = _as_utc(self._clock())
        gap = self._rng.expovariate(1.0)  # always drawn: the random stream doesn't depend on the clock
        if self._cursor >= now:
            self._cursor = now
            return
        span = (now - self._cursor).total_seconds()
        self._cursor = min(now, self._cursor + timedelta(seconds=span / max(remaining, 1) * gap))

    def _fresh(self) -> dict:
        rng = self._rng
        loc = rng.choices(self.locations, weights=self._loc_weights)[0]
        emp = rng.choices(loc.employees, weights=[e.weight for e in loc.employees])[0]
        channel = rng.choices(self._channels, weights=self._channel_weights)[0]
        locale = self._locale(loc)
        score = self._score(loc.nps + emp.nps_offset + CHANNELS[channel][1])
        category = category_of(score)
        comment = None
        if rng.random() < COMMENT_PROPENSITY[category] * CHANNELS[channel][2]:
            comment = self._comment(locale, category)
        if channel == "sms":
            survey = "s-store-visit"
        elif channel == "email":
            survey = "s-store-visit" if rng.random() < 0.6 else "s-online-order"
        else:
            survey = "s-newsletter-pulse"
        segment = {"location": loc.name, "employee": emp.id, "channel": channel}
        if rng.random() < CAMPAIGN_SHARE[channel]:
            segment["campaign"] = rng.choice(CAMPAIGNS)
        return {
            "response_id": f"r-{rng.getrandbits(64):016x}",
            "survey_id": survey,
            "score": score,
            "comment": comment,
            "responded_at": format_ts(self._cursor),
            "locale": locale,
            "segment": segment,
        }

    def _locale(self, loc: Location) -> str:
        u = self._rng.random()
        english = 0.15 if loc.name in CAPITALS else 0.07
        if u < english:
            return "en"
        if u < english + FINLAND_SWEDISH_SHARE.get(loc.name, 0.0):
            return "sv"
        return loc.locale

    def _score(self, nps: float) -> int:
        rng = self._rng
        n = max(-0.72, min(0.72, nps / 100.0))
        p_promoter = (1.0 - PASSIVE_SHARE + n) / 2.0
        p_detractor = (1.0 - PASSIVE_SHARE - n) / 2.0
        u = rng.random()
        if u < p_promoter:
            values, weights = PROMOTER_SCORES
        elif u < p_promoter + p_detractor:
            values, weights = DETRACTOR_SCORES
        else:
            values, weights = PASSIVE_SCORES
        return rng.choices(values, weights=weights)[0]

    def _comment(self, locale: str, category: str) -> str:
        rng = self._rng
        phrases = COMMENTS[locale][category]
        if rng.random() < TWO_SENTENCE_SHARE:
            first, second = rng.sample(phrases, 2)
            return f"{first} {second}"
        return rng.choice(phrases)

    def _remember(self, record: dict) -> None:
        if len(self._pool) < POOL_SIZE:
            self._pool.append(record)
        else:
            self._pool[self._pool_next] = record
            self._pool_next = (self._pool_next + 1) % POOL_SIZE

    def _edit(self) -> dict | None:
        """A later version of an earlier response: a different score, a later responded_at (the cursor)."""
        rng = self._rng
        if not self._pool:
            return None
        cursor = format_ts(self._cursor)
        index = rng.randrange(len(self._pool))
        original = self._pool[index]
        if original["responded_at"] >= cursor:  # same second: pick the oldest remembered one instead
            index = self._pool_next if len(self._pool) == POOL_SIZE else 0
            original = self._pool[index]
            if original["responded_at"] >= cursor:
                return None
        old = original["score"]
        delta = rng.choice((-3, -2, -2, -1, -1, -1, 1, 1, 1, 2, 2, 3))
        new = min(10, max(0, old + delta))
        if new == old:
            new = old - delta if 0 <= old - delta <= 10 else (old + 1 if old < 10 else old - 1)
        edit = _copy(original)
        edit["score"] = new
        edit["responded_at"] = cursor
        category = category_of(new)
        if original["comment"] is not None and category != category_of(old):
            edit["comment"] = self._comment(original["locale"], category)
        elif original["comment"] is None and rng.random() < 0.3:
            edit["comment"] = self._comment(original["locale"], category)
        self._pool[index] = edit
        self.stats.edits += 1
        return _copy(edit)

    def _bad(self) -> dict:
        rng = self._rng
        record = self._fresh()
        kind = rng.choice(BAD_KINDS)
        if kind == "score_decimal":
            record["score"] = rng.choice(("7.5", "8,5", "9.5"))
        elif kind == "score_text":
            record["score"] = rng.choice(("abc", "ten", "tio"))
        elif kind == "score_too_high":
            record["score"] = rng.choice((11, 11, 12, 100))
        elif kind == "score_negative":
            record["score"] = -1
        elif kind == "missing_response_id":
            del record["response_id"]
        elif kind == "missing_score":
            del record["score"]
        else:
            record["responded_at"] = rng.choice((
                "2026-13-45T25:61:00Z",
                "yesterday",
                self._cursor.strftime("%d.%m.%Y %H:%M"),  # Nordic local format
                self._cursor.strftime("%Y-%m-%dT%H:%M:%S"),  # no time zone
            ))
        self.stats.bad += 1
        self.stats.bad_kinds[kind] = self.stats.bad_kinds.get(kind, 0) + 1
        return record


def _copy(record: dict) -> dict:
    out = dict(record)
    out["segment"] = dict(record["segment"])
    return out


# ------------------------------------------------------------------------------------------ to Kafka
TICK_SECONDS = 0.05


def run_simulation(settings, bootstrap: str, *, count: int, rate: float, seed: int | None, bad_ratio: float,
                   duplicate_ratio: float, edit_ratio: float,
                   on_progress: Callable[[int], None] | None = None) -> int:
    """Send ``count`` simulated records to the raw responses topic at ``rate`` records/s (0 = unthrottled).

    Records are sent in small batches every ~50 ms (as many as are due), keyed by response_id, and flushed
    at the end. ``on_progress(sent)`` is called after every batch and once after the final flush.
    Returns the number of records sent.
    """
    from npsflow.ingest import response_key, to_raw_response
    from npsflow.producer import Producer
    from schemas import codec as avro

    codec = avro.AvroCodec()
    topic = settings.topics.raw_responses
    simulator = ResponseSimulator(seed)
    records = simulator.records(count, bad_ratio=bad_ratio, duplicate_ratio=duplicate_ratio,
                                edit_ratio=edit_ratio)
    sent = 0

    def send(producer, obj: dict) -> None:
        record = to_raw_response(obj, source="simulator")
        producer.send(topic, response_key(record), codec.encode(avro.RAW_RESPONSE, record))

    with Producer(bootstrap) as producer:
        if rate <= 0:
            for obj in records:
                send(producer, obj)
                sent += 1
                if on_progress and sent % 500 == 0:
                    on_progress(sent)
        else:
            started = time.monotonic()
            while sent < count:
                due = min(count, int((time.monotonic() - started) * rate) + 1)
                while sent < due:
                    send(producer, next(records))
                    sent += 1
                if on_progress:
                    on_progress(sent)
                if sent < count:
                    # the next record is due in `wait` s: sleep at least one tick (small batches, not one
                    # wake-up per record), at most half a second (slow rates); never when behind schedule
                    wait = (sent / rate) - (time.monotonic() - started)
                    if wait > 0:
                        time.sleep(min(max(wait, TICK_SECONDS), 0.5))
        producer.flush()
    if on_progress:
        on_progress(sent)
    return sent
