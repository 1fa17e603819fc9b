"""The SQL examples of the BI guide (sinks/README.md) run on the real engine: a renamed column or view breaks
this test, not a BI user's query."""

from __future__ import annotations

import re
from pathlib import Path

from sinks import bi
from tests.test_grafana import seed

GUIDE = Path(__file__).resolve().parent.parent / "sinks" / "README.md"


def statements() -> list[str]:
    out = []
    for block in re.findall(r"```sql\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S):
        code = "\n".join("" if line.strip().startswith("--") else line.split(" -- ")[0]
                         for line in block.splitlines())
        out += [s.strip() for s in code.split(";") if s.strip()]
    return out


def test_every_sql_example_of_the_guide_runs(ch_store):
    bi.apply_views(ch_store)
    seed(ch_store)
    examples = statements()
    assert len(examples) >= 15
    for sql in examples:  # ClickHouse parses, resolves and runs each one (their periods are examples: rows or not)
        assert sql.lstrip().upper().startswith(("SELECT", "WITH")), sql  # the guide only reads
        assert isinstance(ch_store.query(sql.replace("npsflow.", "{db}.")), list)
