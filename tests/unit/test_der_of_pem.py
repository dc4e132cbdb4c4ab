"""``der_of_pem``'s shortcut for one block decodes exactly what its line-by-line reading decodes, or fails alike."""

from __future__ import annotations

import binascii

from hypothesis import given, settings, strategies as st

from commands.pki import _der_of_pem_lines, der_of_pem, pem

# what may surround or break up a block: line breaks of every kind splitlines knows, blanks str.strip removes, junk
blanks = st.sampled_from(["", " ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\xa0", "  \n"])
junk = st.sampled_from(["", "x", "-", "--", "-----", "=", "AAAA", "é", "-----END X-----", "-----BEGIN X-----"])


def outcome(decode, text: str):
    try:
        return ("ok", decode(text))
    except (binascii.Error, ValueError) as exc:
        return ("error", type(exc))


@settings(max_examples=500)
@given(st.binary(max_size=300), st.lists(st.tuples(st.integers(0, 10_000), blanks, junk), max_size=4))
def test_the_shortcut_reads_what_the_lines_say(der, edits):
    text = pem("CERTIFICATE", der)
    for at, blank, extra in edits:  # blanks and junk anywhere: before, inside and after the markers and the body
        at %= len(text) + 1
        text = text[:at] + blank + extra + text[at:]
    assert outcome(der_of_pem, text) == outcome(_der_of_pem_lines, text)


@given(st.binary(max_size=300))
def test_a_pem_block_decodes_to_its_der(der):
    assert der_of_pem(pem("CERTIFICATE", der)) == der
    assert der_of_pem("  \r\n" + pem("CERTIFICATE", der).replace("\n", "\r\n") + "\n\n") == der
