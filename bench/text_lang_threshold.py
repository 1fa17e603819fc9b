"""Language detection on the labelled sample (tests/text_lang_sample.py): py3langid restricted to the five
languages, per comment its words, the detected language and probability; then, for each (min words, min
probability) pair, how many detections would be accepted and how many of those are wrong. The thresholds in
streams/text/lang.py are the smallest that accept no wrong detection here. Ends with ONE JSON line."""

from __future__ import annotations

import json

from streams.text.lang import detect
from tests.text_lang_sample import SAMPLE


def main() -> None:
    rows = []
    for truth, text in SAMPLE:
        lang, prob = detect(text.casefold())
        rows.append((truth, len(text.split()), lang, prob))
        print(f"{truth} {len(text.split()):3d} {lang} {prob:.4f} {'' if lang == truth else 'WRONG'}  {text[:60]}")
    table = {}
    for min_words in (1, 2, 4, 6, 8, 10, 12):
        for min_prob in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
            accepted = [r for r in rows if r[1] >= min_words and r[3] >= min_prob]
            wrong = sum(1 for r in accepted if r[0] != r[2])
            table[f"{min_words}w_p{min_prob}"] = [len(accepted), wrong]
            print(f"words>={min_words:2d} p>={min_prob:<6} accepted {len(accepted):2d} wrong {wrong}")
    print(json.dumps({"sample": len(rows), "right": sum(r[0] == r[2] for r in rows), "accepted_wrong": table}))


if __name__ == "__main__":
    main()
