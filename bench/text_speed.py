"""streams.text speed: load time per language (simplemma dictionary, then the py3langid model), µs per comment
of 10–30 words with the languages warm, and the process RSS. Ends with ONE JSON line."""

from __future__ import annotations

import json
import resource
import time

from streams.text import analyse
from streams.text.lang import detect
from streams.text.lemmas import preload

COMMENTS = {
    "sv": ["Leveransen kom tre dagar för sent och kundtjänsten svarade aldrig på mina mejl om det",
           "Personalen i butiken var inte särskilt trevlig och priserna har höjts alldeles för mycket i år",
           "Appen fungerar inte, jag fick inget svar på min reklamation och fakturan var fel igen"],
    "da": ["Leveringen var ikke god og kundeservicen svarede aldrig på mine mails om fakturaen",
           "Venlig betjening i butikken men ventetiden i telefonkøen var alt for lang hver gang jeg ringede"],
    "nb": ["Pakken ble levert til feil adresse og kundeservice svarte aldri på e-posten min",
           "Veldig hyggelig og hjelpsom betjening, men prisene er altfor høye og appen virker ikke"],
    "fi": ["Laskussa oli virhe jo toista kertaa eikä asiakaspalvelu vastannut puhelimeen ollenkaan",
           "Tilaukseni saapui viikon myöhässä ja paketti oli rikki, en saanut vastausta sähköpostiini"],
    "en": ["The delivery came three days late and customer service never answered my emails about it",
           "Very friendly staff in the store but the prices are too high and the app does not work"],
}
ROUNDS = 2000


def _current_rss_mb() -> int | None:
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return None
    return round(int(line.split()[1]) / 1024)


def main() -> None:
    load_s = {}
    for lang in COMMENTS:
        t0 = time.perf_counter()
        preload((lang,))
        load_s[lang] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    detect("warm up")
    load_s["langid"] = round(time.perf_counter() - t0, 3)
    batch = [(c, lang) for lang, cs in COMMENTS.items() for c in cs]
    t0 = time.perf_counter()
    for comment, lang in batch:
        analyse(comment, lang)
    cold_us = (time.perf_counter() - t0) / len(batch) * 1e6  # every word a lemma-cache miss
    t0 = time.perf_counter()
    for _ in range(ROUNDS):
        for comment, lang in batch:
            analyse(comment, lang)
    per_comment_us = (time.perf_counter() - t0) / (ROUNDS * len(batch)) * 1e6
    words = sum(len(c.split()) for c, _ in batch) / len(batch)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, includes decompression
    for lang, seconds in load_s.items():
        print(f"load {lang:7s} {seconds:6.3f} s")
    print(f"analyse: {per_comment_us:.1f} µs per comment warm, {cold_us:.1f} µs with a cold lemma cache "
          f"({words:.1f} words on average), max RSS {rss_mb:.0f} MB, current {_current_rss_mb()} MB")
    print(json.dumps({"us_per_comment": round(per_comment_us, 1), "us_per_comment_cold_cache": round(cold_us, 1),
                      "words_per_comment": round(words, 1), "current_rss_mb": _current_rss_mb(),
                      "load_s": load_s, "max_rss_mb": round(rss_mb)}))


if __name__ == "__main__":
    main()
