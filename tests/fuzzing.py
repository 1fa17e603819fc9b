"""What the fuzz tests share (issue 15): a fixed budget per test, and hostile inputs.

Every fuzz test runs in the default suite with ``budget(n)``: n examples, derandomized (the same inputs on every
run and machine: a CI failure reproduces locally), no example database, no deadline (the machine may be busy).
``NPSFLOW_FUZZ_SCALE=10 pytest -m fuzz`` multiplies every budget for a deeper local run — still derandomized;
``NPSFLOW_FUZZ_SEED=<n>`` (any integer) switches to random inputs from that seed, to explore beyond CI's.
A bug found is fixed and pinned with ``@example``.
"""

from __future__ import annotations

import os
import time

from hypothesis import HealthCheck, seed, settings, strategies as st

SCALE = max(0.01, float(os.environ.get("NPSFLOW_FUZZ_SCALE") or 1))
SEED = os.environ.get("NPSFLOW_FUZZ_SEED")


def budget(max_examples: int):
    """The settings of one fuzz test: ``max_examples`` (× NPSFLOW_FUZZ_SCALE) fixed examples; with
    NPSFLOW_FUZZ_SEED, random examples drawn from that seed (the same seed gives the same examples again)."""
    chosen = settings(max_examples=max(1, int(max_examples * SCALE)), deadline=None, derandomize=SEED is None,
                      database=None, print_blob=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                             HealthCheck.filter_too_much, HealthCheck.large_base_example])

    def apply(test):
        test = chosen(test)
        return seed(int(SEED))(test) if SEED is not None else test
    return apply


# Text over every Unicode category: lone surrogates (Cs) included where the caller's transport can carry them.
any_char = st.characters(exclude_categories=())  # every category, surrogates (Cs) too
any_text = st.text(any_char, max_size=80)
no_surrogates = st.characters(exclude_categories=("Cs",))
web_text = st.text(no_surrogates, max_size=80)

# Strings that break naive code: markup, quotes, RTL and zero-width controls, emoji sequences, NUL, huge numbers.
HOSTILE = [
    "<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "' onmouseover='x", "&amp;&lt;&#x27;",
    "</textarea><b>x</b>", "{{ 7*7 }}", "{% raw %}", "${7*7}", "\u202eevil\u202c", "\u200b\u200d\ufeff",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\U0001F1EB\U0001F1EE", "e\u0301", "\x00", "\r\n", "\\",
    "%00", "%ZZ", "+", "&", "=", ";", "\udc80", "NaN", "1e309", "-0", "9" * 40, "٣", "７", " 7 ", "7\x00",
]
HOSTILE_WEB = [text for text in HOSTILE if not any("\ud800" <= c <= "\udfff" for c in text)]  # what HTTP carries
hostile = st.sampled_from(HOSTILE_WEB)
markup_text = st.lists(st.one_of(hostile, web_text), max_size=4).map("".join)


class Clock:
    """Wall time of a block: ``with Clock() as c: ...; c.seconds``."""

    def __enter__(self) -> "Clock":
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.monotonic() - self.start
