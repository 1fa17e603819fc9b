"""Realistic synthetic NPS survey responses and trigger events for demos and benchmarks.

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

Starting from trigger events instead (issue 3): :class:`TriggerSimulator` generates the business events of the
demo organization (``job.completed`` / ``order.delivered`` in the ``npsflow ingest triggers`` format, same
world), the dispatch agent turns them into invitations with the contact rules of ``demo_programs.yaml``
(:func:`demo_programs_path`), and :class:`Respondent` answers some of the sent invitations with raw responses
(``npsflow ingest responses`` format, ``response_id`` = ``invitation_id``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Mapping

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


def _check_ratios(**ratios: float) -> None:
    """Each share within 0..1 and all together at most 1 (every record is of one kind)."""
    for name, ratio in ratios.items():
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {ratio}")
    if sum(ratios.values()) > 1.0:
        raise ValueError(" + ".join(ratios) + " must not exceed 1")


def category_of(score: int) -> str:
    from streams.nps import classify

    return classify(score).value


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


def build_locations(rng: random.Random) -> list[Location]:
    """The twelve locations with 3–8 employees each (ids ``e-<CODE>-<nn>``, weights and quality drawn from
    ``rng``). The same seed gives the same employees in every simulator built from it."""
    locations: list[Location] = []
    for name, code, locale, weight, nps in LOCATIONS:
        loc = Location(name, code, locale, weight, nps)
        for i in range(1, rng.randint(3, 8) + 1):
            offset = max(-22.0, min(22.0, rng.gauss(0.0, 10.0)))
            loc.employees.append(Employee(f"e-{code}-{i:02d}", rng.uniform(0.4, 1.6), offset))
        locations.append(loc)
    return locations


def _advance_cursor(rng: random.Random, cursor: datetime, now: datetime, remaining: int) -> datetime:
    """Move an event-time cursor towards ``now``: Poisson-like gaps that spread the rest evenly."""
    gap = rng.expovariate(1.0)  # always drawn: the random stream doesn't depend on the clock
    if cursor >= now:
        return now
    span = (now - cursor).total_seconds()
    return min(now, cursor + timedelta(seconds=span / max(remaining, 1) * gap))


def _draw_locale(rng: random.Random, loc: Location) -> str:
    """A respondent's language at ``loc``: local, English (more in capitals) or Swedish in Finland."""
    u = rng.random()
    english = 0.15 if loc.name in CAPITALS else 0.07
    if u < english:
        return "en"
    if u < english + FINLAND_SWEDISH_SHARE.get(loc.name, 0.0):
        return "sv"
    return loc.locale


def _draw_score(rng: random.Random, nps: float) -> int:
    """A score 0–10 from the NPS model: promoter/detractor shares around ``nps``, realistic within each."""
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


# Recurring complaints: each location has one problem its unhappy customers keep naming (so the terms and the
# dashboard's top complaints differ per location), said in the comment's language.
COMPLAINTS: dict[str, dict[str, str]] = {
    "queue": {"sv": "Det var lång kö igen.", "da": "Køen var lang igen.", "fi": "Jono oli taas pitkä.",
              "nb": "Køen var lang igjen.", "en": "The queue was long again."},
    "invoice": {"sv": "Fakturan var fel igen.", "da": "Fakturaen var forkert igen.", "fi": "Laskussa oli taas virhe.",
                "nb": "Fakturaen var feil igjen.", "en": "The invoice was wrong again."},
    "delivery": {"sv": "Leveransen var försenad.", "da": "Leveringen var forsinket.", "fi": "Toimitus myöhästyi.",
                 "nb": "Leveransen var forsinket.", "en": "The delivery was late."},
    "app": {"sv": "Appen fungerar inte.", "da": "Appen virker ikke.", "fi": "Sovellus ei toimi.",
            "nb": "Appen fungerer ikke.", "en": "The app does not work."},
}
LOCAL_COMPLAINT = {"Stockholm": "queue", "Göteborg": "invoice", "Malmö": "queue", "København": "delivery",
                   "Aarhus": "app", "Odense": "invoice", "Helsinki": "invoice", "Espoo": "app", "Tampere": "queue",
                   "Oslo": "delivery", "Bergen": "app", "Trondheim": "invoice"}
COMPLAINT_SHARE = {"detractor": 0.5, "passive": 0.15, "promoter": 0.0}
# now and then a respondent leaves a phone number or an address in the comment: classify masks it
CONTACT_PHRASES = {"sv": "Ring mig på 070-123 45 67.", "da": "Ring på 20 12 34 56.", "fi": "Soittakaa 040 123 4567.",
                   "nb": "Ring meg på 912 34 567.", "en": "Call me on 07911 123456 or write to kim@example.com."}
CONTACT_SHARE = 0.03


def _draw_comment(rng: random.Random, locale: str, category: str, location: str | None = None) -> str:
    phrases = COMMENTS[locale][category]
    if rng.random() < TWO_SENTENCE_SHARE:
        first, second = rng.sample(phrases, 2)
        text = f"{first} {second}"
    else:
        text = rng.choice(phrases)
    complaint = LOCAL_COMPLAINT.get(location or "")
    if complaint and rng.random() < COMPLAINT_SHARE[category]:
        text = f"{text} {COMPLAINTS[complaint][locale]}"
    if category == "detractor" and rng.random() < CONTACT_SHARE:
        text = f"{text} {CONTACT_PHRASES[locale]}"
    return text


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

    A planted drop (``drop_location``, for the significant-change alerts): that location's answers in the last
    ``drop_hours`` before the clock's time at construction are drawn around a target NPS ``drop_points`` lower.
    """

    def __init__(self, seed: int | None = None, start: datetime | None = None,
                 clock: Callable[[], datetime] | None = None, drop_location: str | None = None,
                 drop_points: float = 50.0, drop_hours: float = 24.0):
        self.seed = seed
        self._rng = random.Random(seed)
        self._clock = clock or _utc_now
        self.start = _as_utc(start) if start is not None else _as_utc(self._clock()) - timedelta(hours=1)
        self._cursor = self.start
        self.stats = SimulationStats()
        self._pool: list[dict] = []  # latest version of recent responses (one slot per response_id)
        self._pool_next = 0
        self.locations: list[Location] = build_locations(self._rng)
        self._loc_weights = [loc.weight for loc in self.locations]
        self._channels = list(CHANNELS)
        self._channel_weights = [CHANNELS[c][0] for c in self._channels]
        names = [loc.name for loc in self.locations]
        if drop_location is not None and drop_location not in names:
            raise ValueError(f"unknown location {drop_location!r}: one of {', '.join(names)}")
        self.drop_location, self.drop_points = drop_location, float(drop_points)
        self.drop_since = _as_utc(self._clock()) - timedelta(hours=drop_hours)

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
        _check_ratios(bad_ratio=bad_ratio, duplicate_ratio=duplicate_ratio, edit_ratio=edit_ratio)
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
        self._cursor = _advance_cursor(self._rng, self._cursor, _as_utc(self._clock()), remaining)

    def _fresh(self) -> dict:
        rng = self._rng
        loc = rng.choices(self.locations, weights=self._loc_weights)[0]
        emp = rng.choices(loc.employees, weights=[e.weight for e in loc.employees])[0]
        channel = rng.choices(self._channels, weights=self._channel_weights)[0]
        locale = self._locale(loc)
        planted = loc.name == self.drop_location and self._cursor >= self.drop_since
        score = self._score(loc.nps + emp.nps_offset + CHANNELS[channel][1] - (self.drop_points if planted else 0.0))
        category = category_of(score)
        comment = None
        if rng.random() < COMMENT_PROPENSITY[category] * CHANNELS[channel][2]:
            comment = self._comment(locale, category, loc.name)
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
        return _draw_locale(self._rng, loc)

    def _score(self, nps: float) -> int:
        return _draw_score(self._rng, nps)

    def _comment(self, locale: str, category: str, location: str | None = None) -> str:
        return _draw_comment(self._rng, locale, category, location)

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
            edit["comment"] = self._comment(original["locale"], category, original["segment"].get("location"))
        elif original["comment"] is None and rng.random() < 0.3:
            edit["comment"] = self._comment(original["locale"], category, original["segment"].get("location"))
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


# ------------------------------------------------------------------------------------ trigger events
DEMO_ORG_ID = "demo"
DEMO_PROGRAMS_FILE = "demo_programs.yaml"
JOB_COMPLETED = "job.completed"
ORDER_DELIVERED = "order.delivered"
JOB_SHARE = 0.70  # the rest are web-shop deliveries
# business channel of an event type (where the customer met us): (channel, weight)
BUSINESS_CHANNELS: dict[str, tuple[tuple[str, float], ...]] = {
    JOB_COMPLETED: (("store", 0.6), ("field", 0.4)),
    ORDER_DELIVERED: (("web", 1.0),),
}
TRIGGER_CAMPAIGN_SHARE = {"store": 0.08, "field": 0.03, "web": 0.35}
TRIGGER_LOOKBACK = timedelta(minutes=5)  # default start: event times spread over the last five minutes

# location locale → (calling code, IANA timezone) of the country
COUNTRIES: dict[str, tuple[str, str]] = {
    "sv": ("+46", "Europe/Stockholm"),
    "da": ("+45", "Europe/Copenhagen"),
    "fi": ("+358", "Europe/Helsinki"),
    "nb": ("+47", "Europe/Oslo"),
}
# mobile number shapes: prefixes after the calling code, then that many random digits
MOBILE_NUMBERS: dict[str, tuple[tuple[str, ...], int]] = {
    "sv": (("70", "72", "73", "76", "79"), 7),
    "da": (("20", "22", "26", "28", "30", "31", "40", "42", "50", "51", "53", "60", "61", "71", "81", "91"), 6),
    "fi": (("40", "41", "44", "45", "46", "50"), 7),
    "nb": (("40", "41", "45", "46", "48", "90", "91", "92", "93", "94", "95", "97", "98", "99"), 6),
}
FIRST_NAMES: dict[str, tuple[str, ...]] = {  # ASCII: the local part of the demo e-mail addresses
    "sv": ("anna", "erik", "maria", "lars", "karin", "johan", "sara", "anders", "emma", "oskar"),
    "da": ("mette", "jens", "sofie", "mads", "anne", "rasmus", "ida", "frederik", "laerke", "soren"),
    "fi": ("aino", "mikko", "laura", "juha", "sanna", "antti", "emilia", "ville", "helmi", "eero"),
    "nb": ("ingrid", "ole", "kari", "henrik", "nora", "sindre", "marte", "jonas", "solveig", "haakon"),
}
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")  # reserved (RFC 2606): never real mailboxes
EMAIL_KNOWN_SHARE = 0.90  # service jobs: share of contacts whose e-mail the source system has
PHONE_KNOWN_SHARE = 0.60  # share of contacts with a mobile number

DEFAULT_CONTACT_POOL = 10_000
REGULAR_CONTACTS = 20  # c-00001 … c-00020: regular customers, a REGULAR_SHARE of all events
REGULAR_SHARE = 0.10
DEMO_OPT_OUT = ("c-00007", "c-00013")  # regulars on the opt-out list of demo_programs.yaml

# malformed triggers: kind → the reason streams.triggers.validate_trigger refuses it with
BAD_TRIGGER_KINDS: dict[str, str] = {
    "missing_contact": "missing_contact",
    "missing_contact_id": "missing_contact_contact_id",
    "bad_phone": "contact_phone_invalid",
    "bad_email": "contact_email_invalid",
    "unknown_timezone": "contact_timezone_invalid",
    "bad_occurred_at": "occurred_at_invalid",
    "missing_event_id": "missing_event_id",
}
TIMEZONE_TYPOS = {"sv": "Europe/Stockholmm", "da": "Europe/Copenhagn", "fi": "Europe/Helsingfors",
                  "nb": "Europe/Olso"}


def demo_programs_path() -> Path:
    """The installed path of ``npsflow/demo_programs.yaml``, the survey programs of the demo organization."""
    return Path(str(resources.files("npsflow").joinpath(DEMO_PROGRAMS_FILE)))


def contact_id(index: int) -> str:
    """The id of contact number ``index`` (1-based) of a simulated contact pool: ``c-00001`` …"""
    return f"c-{index:05d}"


@dataclass(frozen=True)
class Contact:
    """A simulated customer: a home location (so a phone number of that country), language, addresses."""

    contact_id: str
    location: Location
    locale: str
    timezone: str
    email: str
    phone: str
    email_known: bool  # on service jobs (a web order always carries the e-mail address)
    phone_known: bool


@dataclass
class TriggerStats:
    """Counts of generated triggers (cumulative over every call of one simulator)."""

    valid: int = 0  # fresh valid triggers with at least one address
    no_contact: int = 0  # fresh valid triggers without e-mail or phone (suppressed: no_contact)
    bad: int = 0  # malformed (refused by validate_trigger: dead-lettered)
    duplicates: int = 0  # exact replays of an earlier valid trigger (same event_id)
    bad_kinds: dict[str, int] = field(default_factory=dict)
    event_types: dict[str, int] = field(default_factory=dict)  # of fresh triggers (valid + no_contact)

    @property
    def total(self) -> int:
        return self.valid + self.no_contact + self.bad + self.duplicates

    def as_dict(self) -> dict:
        return {"valid": self.valid, "no_contact": self.no_contact, "bad": self.bad,
                "duplicates": self.duplicates, "total": self.total, "bad_kinds": dict(self.bad_kinds),
                "event_types": dict(self.event_types)}


class TriggerSimulator:
    """Seeded generator of trigger events of the demo organization (no I/O).

    Every trigger is a JSON object as ``npsflow ingest triggers`` accepts it::

        {"event_id": "job-…", "org_id": "demo", "event_type": "job.completed",
         "occurred_at": "2026-11-20T09:58:41Z",
         "contact": {"contact_id": "c-04711", "email": "anna.4711@example.com", "phone": "+46701234567",
                     "locale": "sv", "timezone": "Europe/Stockholm"},
         "segment": {"location": "Stockholm", "employee": "e-STO-03", "channel": "store"}}

    * The world is the one of :class:`ResponseSimulator`: the same locations, and for the same ``seed`` the
      same employees (so live windows per location look as before).
    * ``job.completed`` (≈70 %, business channel ``store`` or ``field``) or ``order.delivered`` (``web``).
    * Contacts come from a pool of ``contact_pool`` ids (``c-00001`` …); each has a home location (whose
      country gives the phone number, timezone and language), an e-mail address (reserved example domains)
      and a mobile number (for ≈60 %). Every tenth event is from one of 20 regular customers, so contacts
      repeat within a run (quarantine suppressions); ``DEMO_OPT_OUT`` are two of them.
    * Event times advance from ``start`` (default: ``clock()`` minus five minutes) towards ``clock()``,
      re-read for every record: recent (``max_event_age`` never suppresses them), never in the future.
    * Deterministic for a given ``seed``, ``start`` and ``clock``.
    """

    def __init__(self, seed: int | None = None, start: datetime | None = None,
                 clock: Callable[[], datetime] | None = None, contact_pool: int = DEFAULT_CONTACT_POOL):
        if not isinstance(contact_pool, int) or contact_pool < 2 * REGULAR_CONTACTS:
            raise ValueError(f"contact_pool must be an integer >= {2 * REGULAR_CONTACTS}, got {contact_pool!r}")
        self.seed = seed
        self._rng = random.Random(seed)
        self.locations: list[Location] = build_locations(self._rng)  # first: same employees as ResponseSimulator
        self._clock = clock or _utc_now
        self.start = _as_utc(start) if start is not None else _as_utc(self._clock()) - TRIGGER_LOOKBACK
        self._cursor = self.start
        self.contact_pool = contact_pool
        self.stats = TriggerStats()
        self._contact_salt = self._rng.getrandbits(64)
        self._contacts: dict[int, Contact] = {}
        self._pool: list[dict] = []  # recent valid triggers, replayed as duplicates
        self._pool_next = 0
        self._loc_weights = [loc.weight for loc in self.locations]

    # ------------------------------------------------------------------------------------- public
    def records(self, count: int, *, duplicate_ratio: float = 0.0, bad_ratio: float = 0.0,
                no_contact_ratio: float = 0.0) -> list[dict]:
        """``count`` trigger JSON objects (``stats`` counts them)."""
        return [record for _, record in self.labeled_records(
            count, duplicate_ratio=duplicate_ratio, bad_ratio=bad_ratio, no_contact_ratio=no_contact_ratio)]

    def labeled_records(self, count: int, *, duplicate_ratio: float = 0.0, bad_ratio: float = 0.0,
                        no_contact_ratio: float = 0.0) -> Iterator[tuple[str, dict]]:
        """Lazily, ``(kind, trigger)`` with kind ``valid``, ``no_contact``, ``duplicate`` or ``bad``.

        Arguments are checked at once (ValueError); a ``bad`` trigger's refusal reason is
        ``BAD_TRIGGER_KINDS[kind]`` (the kind is counted in ``stats.bad_kinds``).
        """
        if not isinstance(count, int) or count < 0:
            raise ValueError("count must be an integer >= 0")
        _check_ratios(duplicate_ratio=duplicate_ratio, bad_ratio=bad_ratio, no_contact_ratio=no_contact_ratio)
        return self._generate(count, duplicate_ratio, bad_ratio, no_contact_ratio)

    def contact(self, index: int) -> Contact:
        """Contact number ``index`` (1 … ``contact_pool``) of this simulator's pool (built on first use)."""
        if not 1 <= index <= self.contact_pool:
            raise ValueError(f"contact index must be between 1 and {self.contact_pool}, got {index}")
        found = self._contacts.get(index)
        if found is None:
            found = self._contacts[index] = self._build_contact(index)
        return found

    def contact_ids(self) -> list[str]:
        """Every contact id the simulator may use."""
        return [contact_id(i) for i in range(1, self.contact_pool + 1)]

    # ------------------------------------------------------------------------------------ internals
    def _generate(self, count: int, duplicate_ratio: float, bad_ratio: float,
                  no_contact_ratio: float) -> Iterator[tuple[str, dict]]:
        rng = self._rng
        for i in range(count):
            self._cursor = _advance_cursor(rng, self._cursor, _as_utc(self._clock()), count - i)
            u = rng.random()
            if u < bad_ratio:
                yield "bad", self._bad()
            elif u < bad_ratio + duplicate_ratio and self._pool:
                self.stats.duplicates += 1
                yield "duplicate", _copy_trigger(self._pool[rng.randrange(len(self._pool))])
            elif bad_ratio + duplicate_ratio <= u < bad_ratio + duplicate_ratio + no_contact_ratio:
                record = self._fresh(no_contact=True)
                self._remember(record)
                self.stats.no_contact += 1
                yield "no_contact", _copy_trigger(record)
            else:
                record = self._fresh()
                self._remember(record)
                self.stats.valid += 1
                yield "valid", _copy_trigger(record)

    def _build_contact(self, index: int) -> Contact:
        rng = random.Random(f"{self._contact_salt}:{index}")  # independent of the order contacts first appear
        loc = rng.choices(self.locations, weights=self._loc_weights)[0]
        locale = _draw_locale(rng, loc)
        calling_code, tz = COUNTRIES[loc.locale]
        prefixes, digits = MOBILE_NUMBERS[loc.locale]
        phone = calling_code + rng.choice(prefixes) + "".join(rng.choice("0123456789") for _ in range(digits))
        email = f"{rng.choice(FIRST_NAMES[loc.locale])}.{index}@{rng.choice(EMAIL_DOMAINS)}"
        email_known = rng.random() < EMAIL_KNOWN_SHARE
        phone_known = rng.random() < PHONE_KNOWN_SHARE
        if not (email_known or phone_known):
            email_known = True  # the source system has at least one address of a known customer
        return Contact(contact_id(index), loc, locale, tz, email, phone, email_known, phone_known)

    def _pick_contact(self, regulars: bool = True) -> Contact:
        rng = self._rng
        if regulars and rng.random() < REGULAR_SHARE:
            return self.contact(rng.randint(1, REGULAR_CONTACTS))
        # no regulars (no_contact triggers): an opted-out regular would be suppressed as opted_out first
        return self.contact(rng.randint(1 if regulars else REGULAR_CONTACTS + 1, self.contact_pool))

    def _fresh(self, no_contact: bool = False, counted: bool = True) -> dict:
        rng = self._rng
        event_type = JOB_COMPLETED if rng.random() < JOB_SHARE else ORDER_DELIVERED
        person = self._pick_contact(regulars=not no_contact)
        loc = person.location
        emp = rng.choices(loc.employees, weights=[e.weight for e in loc.employees])[0]
        names, weights = zip(*BUSINESS_CHANNELS[event_type])
        channel = rng.choices(names, weights=weights)[0]
        segment = {"location": loc.name, "employee": emp.id, "channel": channel}
        if rng.random() < TRIGGER_CAMPAIGN_SHARE[channel]:
            segment["campaign"] = rng.choice(CAMPAIGNS)
        contact: dict = {"contact_id": person.contact_id}
        if no_contact:  # neither address, written the ways source systems write "none"
            blank = rng.choice((None, "", "absent"))
            if blank != "absent":
                contact["email"] = blank
                contact["phone"] = blank
        else:
            if person.email_known or event_type == ORDER_DELIVERED:  # a web order always has the e-mail
                contact["email"] = person.email
            if person.phone_known:
                contact["phone"] = person.phone
        contact["locale"] = person.locale
        contact["timezone"] = person.timezone
        prefix = "job" if event_type == JOB_COMPLETED else "ord"
        if counted:
            self.stats.event_types[event_type] = self.stats.event_types.get(event_type, 0) + 1
        return {
            "event_id": f"{prefix}-{rng.getrandbits(64):016x}",
            "org_id": DEMO_ORG_ID,
            "event_type": event_type,
            "occurred_at": format_ts(self._cursor),
            "contact": contact,
            "segment": segment,
        }

    def _remember(self, record: dict) -> None:
        if len(self._pool) < POOL_SIZE:
            self._pool.append(record)
        else:
            self._pool[self._pool_next] = record
            self._pool_next = (self._pool_next + 1) % POOL_SIZE

    def _bad(self) -> dict:
        rng = self._rng
        record = self._fresh(counted=False)  # counted as bad, not as an event type
        kind = rng.choice(tuple(BAD_TRIGGER_KINDS))
        contact = record["contact"]
        country = next(loc.locale for loc in self.locations if loc.name == record["segment"]["location"])
        if kind == "missing_contact":
            del record["contact"]
        elif kind == "missing_contact_id":
            del contact["contact_id"]
        elif kind == "bad_phone":  # national formats without the country code
            prefixes, digits = MOBILE_NUMBERS[country]
            prefix = rng.choice(prefixes)
            rest = "".join(rng.choice("0123456789") for _ in range(digits))
            contact["phone"] = {
                "sv": f"0{prefix}-{rest}",
                "fi": f"0{prefix} {rest}",
                "da": f"{prefix} {rest[:2]} {rest[2:4]} {rest[4:]}",
                "nb": f"{prefix}{rest[0]} {rest[1:3]} {rest[3:]}",
            }[country]
        elif kind == "bad_email":
            user = f"{rng.choice(FIRST_NAMES[country])}.{rng.randint(1, 99)}"
            contact["email"] = rng.choice((f"{user}.example.com", f"{user}@example", f"{user} @example.com"))
        elif kind == "unknown_timezone":
            contact["timezone"] = rng.choice((TIMEZONE_TYPOS[country], "CET+1", "Nordic/Oslo"))
        elif kind == "bad_occurred_at":
            record["occurred_at"] = rng.choice((
                self._cursor.strftime("%d.%m.%Y %H:%M"),  # Nordic local format
                self._cursor.strftime("%Y-%m-%dT%H:%M:%S"),  # no time zone
                "igår",
            ))
        else:
            del record["event_id"]
        self.stats.bad += 1
        self.stats.bad_kinds[kind] = self.stats.bad_kinds.get(kind, 0) + 1
        return record


def _copy_trigger(record: dict) -> dict:
    out = dict(record)
    for key in ("contact", "segment"):
        if isinstance(out.get(key), dict):
            out[key] = dict(out[key])
    return out


# ------------------------------------------------------------------------------------ respondents
DEFAULT_RESPONSE_RATE = 0.35
UNKNOWN_LOCATION_NPS = 30.0  # the NPS model of a location the simulated world does not know


def comment_locale(locale: str | None) -> str:
    """The comment language for a contact locale: its language when comments exist for it (``sv-FI`` → sv,
    ``no`` → nb), otherwise English."""
    lang = (locale or "").strip().replace("_", "-").split("-", 1)[0].lower()
    lang = {"no": "nb"}.get(lang, lang)
    return lang if lang in COMMENTS else "en"


class Respondent:
    """Simulated contacts answering survey invitations. Pure: no I/O; the clock is injectable.

    ``respond(invitation)`` takes a sent invitation's summary (``invitation_id``, ``segment`` with
    ``location`` (and ``employee``), ``locale``; optional ``survey_id`` and the delivery ``channel``) and returns
    ``None`` (no answer) or a raw response JSON object as ``npsflow ingest responses`` accepts it::

        {"response_id": "<invitation_id>", "invitation_id": "<invitation_id>", "survey_id": "s-service",
         "score": 9, "comment": "…", "responded_at": "2026-11-20T10:00:00Z", "locale": "sv",
         "segment": {…the invitation's segment…}}

    The decision and the answer depend only on (``seed``, ``invitation_id``), not on the order of calls: the
    same invitation seen twice gets the same answer (same response_id: deduplicated downstream). Scores follow
    the location's NPS model of :class:`ResponseSimulator` (location quality + employee quality + the
    delivery channel's effect); comments are in the invitation's language. Pass ``locations`` (e.g. a
    :class:`TriggerSimulator`'s) so employee qualities match; by default they are built from ``seed``, which
    matches a simulator with the same (not None) seed.
    """

    def __init__(self, seed: int | None = None, *, response_rate: float = DEFAULT_RESPONSE_RATE,
                 locations: list[Location] | None = None, clock: Callable[[], datetime] | None = None):
        if isinstance(response_rate, bool) or not isinstance(response_rate, (int, float)) \
                or not 0.0 <= response_rate <= 1.0:
            raise ValueError(f"response_rate must be between 0 and 1, got {response_rate!r}")
        self.seed = seed
        self.response_rate = float(response_rate)
        self._salt = seed if seed is not None else random.Random().getrandbits(64)
        self.locations = list(locations) if locations is not None else build_locations(random.Random(seed))
        self._by_name = {loc.name: loc for loc in self.locations}
        self._clock = clock or _utc_now

    def _rng_for(self, invitation_id: str) -> random.Random:
        return random.Random(f"respondent:{self._salt}:{invitation_id}")

    @staticmethod
    def _invitation_id(invitation: Mapping) -> str:
        value = invitation.get("invitation_id") if isinstance(invitation, Mapping) else None
        if not isinstance(value, str) or not value.strip():
            raise ValueError("the invitation needs an invitation_id (a non-empty string)")
        return value

    def answers(self, invitation: Mapping) -> bool:
        """Whether this contact answers this invitation (probability ``response_rate``)."""
        return self._rng_for(self._invitation_id(invitation)).random() < self.response_rate

    def nps_of(self, segment: Mapping, channel: str | None = None) -> float:
        """The NPS the score model aims at for an invitation with this segment and delivery channel."""
        loc = self._by_name.get(str(segment.get("location"))) if segment else None
        nps = loc.nps if loc is not None else UNKNOWN_LOCATION_NPS
        if loc is not None:
            emp = next((e for e in loc.employees if e.id == segment.get("employee")), None)
            nps += emp.nps_offset if emp is not None else 0.0
        if channel in CHANNELS:
            nps += CHANNELS[channel][1]
        return nps

    def respond(self, invitation: Mapping) -> dict | None:
        """The raw response to ``invitation``, or None when the contact does not answer."""
        invitation_id = self._invitation_id(invitation)
        rng = self._rng_for(invitation_id)
        if not rng.random() < self.response_rate:
            return None
        raw_segment = invitation.get("segment") or {}
        segment = {str(k): str(v) for k, v in raw_segment.items()} if isinstance(raw_segment, Mapping) else {}
        channel = invitation.get("channel")
        score = _draw_score(rng, self.nps_of(segment, channel))
        category = category_of(score)
        locale = invitation.get("locale") if isinstance(invitation.get("locale"), str) else None
        comment = None
        propensity = COMMENT_PROPENSITY[category] * (CHANNELS[channel][2] if channel in CHANNELS else 1.0)
        if rng.random() < propensity:
            comment = _draw_comment(rng, comment_locale(locale), category, segment.get("location"))
        survey_id = invitation.get("survey_id")
        return {
            "response_id": invitation_id,
            "invitation_id": invitation_id,
            "survey_id": survey_id if isinstance(survey_id, str) else None,
            "score": score,
            "comment": comment,
            "responded_at": format_ts(self._clock()),
            "locale": locale,
            "segment": segment,
        }


# ------------------------------------------------------------------------------------------ to Kafka
TICK_SECONDS = 0.05


def run_simulation(settings, bootstrap: str, *, count: int, rate: float, seed: int | None, bad_ratio: float,
                   duplicate_ratio: float, edit_ratio: float,
                   on_progress: Callable[[int], None] | None = None, days: float | None = None,
                   drop_location: str | None = None, drop_points: float = 50.0) -> int:
    """Send ``count`` simulated records to the raw responses topic at ``rate`` records/s (0 = unthrottled).
    Event times span the last hour, or the last ``days``; ``drop_location`` plants a drop of ``drop_points``
    in that location's last 24 hours (see ResponseSimulator).

    Records are sent in small batches every ~50 ms (as many as are due), keyed by response_id, and flushed
    at the end. ``on_progress(sent)`` is called after every batch and once after the final flush.
    Returns the number of records sent.
    """
    from npsflow.ingest import response_key, to_raw_response
    from npsflow.producer import Producer
    from schemas import codec as avro

    codec = avro.AvroCodec()
    topic = settings.topics.raw_responses
    start = None if days is None else _utc_now() - timedelta(days=days)
    simulator = ResponseSimulator(seed, start=start, drop_location=drop_location, drop_points=drop_points)
    records = simulator.records(count, bad_ratio=bad_ratio, duplicate_ratio=duplicate_ratio,
                                edit_ratio=edit_ratio)
    sent = 0

    def send(producer, obj: dict) -> None:
        record = to_raw_response(obj, source="simulator")
        producer.send(topic, response_key(record), codec.encode(avro.RAW_RESPONSE, record))

    with Producer(bootstrap, security=settings.kafka_security) as producer:
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
