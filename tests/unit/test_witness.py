"""The audit witness file (infra/audit/witness.py): two checksummed slots written in place.

Each test writes a real file. What must hold: a torn or half-read update costs at most that update;
the high-water mark never falls; a file of the earlier one-object format is read and upgraded
without a moment when it reads as empty; the reference verifier (tools/verify_chain.py) reads
the file the same way.
"""

from __future__ import annotations

import functools
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_reference_verifier import load_tool

from infra.audit.witness import SLOT, _slot_bytes, parse, read_witness, release_witness, write_witness


def rows(position: int, checkpoint: bool = False) -> list[tuple]:
    """One row shaped like the store's (_EVENT_COLUMNS): position, tenant, stream, version, type, ..., hash."""
    kind = "audit.checkpoint" if checkpoint else "certificate.issued"
    return [(position, "t", "s", position, "x", kind, "", b"", f"{position:064x}")]


@pytest.fixture
def witness(tmp_path):
    path = tmp_path / "audit-witness.json"
    yield path
    release_witness(path)


@functools.cache
def reference_reader():
    """tools/verify_chain.py's reader, loaded once (test_reference_verifier's loader)."""
    return load_tool().read_witness


def test_updates_alternate_between_two_slots_and_the_latest_is_read(witness):
    for position in (3, 5, 9):
        write_witness(witness, rows(position))
    data = witness.read_bytes()
    assert len(data) == 2 * SLOT and data[SLOT - 1:SLOT] == b"\n" and data.endswith(b"\n")
    assert [json.loads(data[i:i + SLOT])["high_water"] for i in (0, SLOT)] == [9, 5]  # seq 2 over seq 0; seq 1
    assert read_witness(witness) == {"high_water": 9} == reference_reader()(witness)


def test_a_checkpoint_is_kept_by_later_updates(witness):
    write_witness(witness, rows(4, checkpoint=True))
    write_witness(witness, rows(6))
    expected = {"high_water": 6, "checkpoint": {"position": 4, "version": 4, "hash": f"{4:064x}"}}
    assert read_witness(witness) == expected == reference_reader()(witness)


def test_a_torn_latest_slot_leaves_the_one_before(witness):
    write_witness(witness, rows(7))
    write_witness(witness, rows(8))
    seq, _ = parse(witness.read_bytes())
    with witness.open("r+b") as f:
        f.seek((seq % 2) * SLOT + 40)
        f.write(b"#")  # a byte of the latest record spoilt: its digest no longer matches
    assert read_witness(witness) == {"high_water": 7} == reference_reader()(witness)
    write_witness(witness, rows(9))  # the same seq again (the torn slot is ignored), over the torn record
    assert read_witness(witness) == {"high_water": 9}


def test_the_high_water_mark_never_falls(witness):
    write_witness(witness, rows(10))
    write_witness(witness, rows(4))  # a lower position (another process's late update): ignored
    assert read_witness(witness)["high_water"] == 10


def test_an_update_by_another_writer_of_the_file_is_kept(witness):
    write_witness(witness, rows(10))
    seq, _ = parse(witness.read_bytes())
    with witness.open("r+b") as f:  # another process wrote seq + 1, with a higher mark
        f.seek(((seq + 1) % 2) * SLOT)
        f.write(_slot_bytes(seq + 1, {"high_water": 50}))
    assert read_witness(witness) == {"high_water": 50}
    write_witness(witness, rows(12))
    assert read_witness(witness) == {"high_water": 50}


def test_a_replaced_file_is_written_from_then_on(witness, tmp_path):
    """A restore puts another file at the path: updates go to it (not to the old file this process held)."""
    write_witness(witness, rows(10))
    restored = tmp_path / "restored.json"
    restored.write_text(json.dumps({"high_water": 30}))  # a backup taken before this version
    os.replace(restored, witness)
    write_witness(witness, rows(31))
    assert read_witness(witness) == {"high_water": 31}


def test_the_earlier_format_is_read_and_upgraded_without_a_moment_unreadable(witness):
    old = {"checkpoint": {"hash": "ab" * 32, "position": 2, "version": 1}, "high_water": 3}
    witness.write_text(json.dumps(old, sort_keys=True))
    assert read_witness(witness) == old == reference_reader()(witness)
    write_witness(witness, rows(4))  # seq 1: the second slot; the old object is still there
    assert json.loads(witness.read_bytes()[:SLOT].rstrip(b"\x00")) == old
    assert read_witness(witness) == {**old, "high_water": 4} == reference_reader()(witness)
    write_witness(witness, rows(5))  # seq 2: over the old object
    assert read_witness(witness) == {**old, "high_water": 5} == reference_reader()(witness)


def test_a_file_with_nothing_valid_reads_as_no_witness_here_and_is_an_error_for_the_reference_tool(witness):
    witness.write_bytes(b"\x00garbage" * 200)
    assert read_witness(witness) == {}
    with pytest.raises(ValueError, match="no valid witness"):
        reference_reader()(witness)


@settings(max_examples=200, deadline=None)
@given(positions=st.lists(st.integers(1, 10**12), min_size=1, max_size=6), cut=st.integers(0, SLOT),
       noise=st.binary(min_size=0, max_size=SLOT))
def test_an_update_torn_anywhere_costs_at_most_that_update(tmp_path_factory, positions, cut, noise):
    """Whatever part of the last update reached the file (its first ``cut`` bytes, the rest old bytes or
    noise), the witness read is the last update's or the one before it: never nothing, never lower."""
    path = tmp_path_factory.mktemp("w") / "audit-witness.json"
    try:
        for position in positions[:-1]:
            write_witness(path, rows(position))
        before = read_witness(path)
        write_witness(path, rows(positions[-1]))
        after = read_witness(path)
        seq, _ = parse(path.read_bytes())
        data = bytearray(path.read_bytes())
        start = (seq % 2) * SLOT
        torn = data[start:start + cut] + (noise + data[start + cut:start + SLOT])[:SLOT - cut]
        data[start:start + SLOT] = torn
        path.write_bytes(bytes(data))
        got = read_witness(path)
        assert got in ((before, after) if before else (after, {}))  # {}: there was no update before
        if got:
            assert reference_reader()(path) == got
    finally:
        release_witness(path)
