"""The register of forgotten answers (streams.forgotten), pure: against a plain set of ids as the oracle."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import forgotten
from streams.forgotten import ForgottenRegister, chunk_key

ids = st.text(min_size=1, max_size=12)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(forgotten, "CHUNK", 5)  # seal often


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(ids, max_size=9), max_size=8), probes=st.lists(ids, max_size=20))
def test_the_register_knows_exactly_the_ids_added_also_after_a_reload(batches, probes):
    store: dict[bytes, bytes] = {}
    register = ForgottenRegister(3, store.get)
    added: set[str] = set()
    for batch in batches:
        store.update(register.add(batch))
        added.update(batch)
    reloaded = ForgottenRegister(3, store.get)
    for rid in set(probes) | added:
        assert (rid in register) == (rid in added) == (rid in reloaded)
    assert len(register) == len(reloaded) == len(added)


def test_chunks_are_contiguous_full_sorted_little_endian_hashes():
    store: dict[bytes, bytes] = {}
    register = ForgottenRegister(0, store.get)
    names = [f"r{i}" for i in range(12)]
    for i in range(0, 12, 4):
        store.update(register.add(names[i:i + 4]))
    assert sorted(store) == [chunk_key(0, 0), chunk_key(0, 1), chunk_key(0, 2)]
    expected = sorted(int.from_bytes(hashlib.blake2b(n.encode(), digest_size=8).digest(), "little") for n in names)
    values = []
    for n in range(3):
        raw = store[chunk_key(0, n)]
        chunk = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
        assert chunk == sorted(chunk) and len(chunk) == (5 if n < 2 else 2)
        values += chunk
    assert sorted(values) == expected


def test_adding_an_id_twice_writes_nothing_new():
    store: dict[bytes, bytes] = {}
    register = ForgottenRegister(0, store.get)
    store.update(register.add(["a", "b"]))
    assert register.add(["a"]) == {chunk_key(0, 0): store[chunk_key(0, 0)]}  # the open chunk, unchanged
    assert len(register) == 2


def test_the_partitions_do_not_share_chunks():
    store: dict[bytes, bytes] = {}
    store.update(ForgottenRegister(1, store.get).add(["x"]))
    assert "x" not in ForgottenRegister(2, store.get) and "x" in ForgottenRegister(1, store.get)


def test_a_register_loaded_from_a_half_recovered_store_knows_it_is_not_current():
    """A table still recovering its changelog holds only the first chunks: a register loaded then must not be
    used (nor extended, which would overwrite a sealed chunk) once the store has more."""
    full: dict[bytes, bytes] = {}
    writer = ForgottenRegister(0, full.get)
    for i in range(0, 12, 3):
        full.update(writer.add([f"old{i}", f"old{i + 1}", f"old{i + 2}"]))
    assert sorted(full) == [chunk_key(0, 0), chunk_key(0, 1), chunk_key(0, 2)]  # 5 + 5 + 2 (CHUNK = 5)
    partial = {chunk_key(0, 0): full[chunk_key(0, 0)]}
    early = ForgottenRegister(0, partial.get)
    assert early.current(partial.get) and not early.current(full.get)
    assert writer.current(full.get)
    again = ForgottenRegister(0, full.get)  # what ForgottenRegisters.of does when current() is false
    assert all(f"old{i}" in again for i in range(12)) and again.current(full.get)
    assert not ForgottenRegister(0, {}.get).current(full.get)


def test_many_seals_keep_few_levels_and_every_id():
    store: dict[bytes, bytes] = {}
    register = ForgottenRegister(0, store.get)
    names = [f"id-{i}" for i in range(5 * 37 + 3)]
    for i in range(0, len(names), 4):
        store.update(register.add(names[i:i + 4]))
    assert len(register.levels) <= 7 and all(len(a) <= len(b) for b, a in zip(register.levels, register.levels[1:]))
    reloaded = ForgottenRegister(0, store.get)
    assert all(n in register and n in reloaded for n in names) and "id-x" not in reloaded
