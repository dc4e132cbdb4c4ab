"""infra.crypto.crl_delta and the artifact store: a superseded CRL kept as a delta reads back byte for byte."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import example, given, settings as hsettings, strategies as st

from commands.crl import CRL_MEDIA_TYPE
from infra import artifacts
from infra.artifacts import CorruptArtifact, SQLiteArtifactStore
from infra.crypto import crl_delta

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
KEY = ec.generate_private_key(ec.SECP384R1())
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Acme Issuing CA")])


def crl(serials: list[int], number: int = 1) -> bytes:
    """A real CRL (cryptography, ECDSA P-384) listing ``serials`` in that order, some with a reason."""
    entries = []
    for serial in serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - timedelta(seconds=serial % 10**9))
        if serial % 3 == 0:
            entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
        entries.append(entry.build())
    built = (x509.CertificateRevocationListBuilder(revoked_certificates=entries).issuer_name(NAME)
             .last_update(NOW + timedelta(seconds=number)).next_update(NOW + timedelta(days=7))
             .add_extension(x509.CRLNumber(number), critical=False).sign(KEY, hashes.SHA384()))
    return built.public_bytes(serialization.Encoding.DER)


_SERIALS = st.lists(st.integers(1, 2**159 - 1), max_size=12)


@hsettings(max_examples=60, deadline=None)
@given(older=_SERIALS, newer=_SERIALS)
@example(older=[5, 6, 7], newer=[6, 7, 8])  # the usual step: the oldest expired, a new revocation appended
@example(older=[1, 2, 3], newer=[3, 2, 1])
@example(older=[1, 1, 2], newer=[1, 2])
def test_any_crl_is_given_back_byte_for_byte_from_any_other(older, newer):
    newer_der, older_der = crl(newer, 2), crl(older, 1)
    delta = crl_delta.encode(newer_der, older_der)
    if not older or not newer:  # nothing to share: the store keeps such CRLs whole
        assert delta is None
        return
    assert crl_delta.decode(newer_der, delta) == older_der


def test_consecutive_crls_of_a_thousand_entries_differ_by_a_few_hundred_bytes():
    older, newer = crl(list(range(1, 1001)), 1), crl(list(range(2, 1002)), 2)
    delta = crl_delta.encode(newer, older)
    assert len(older) > 25_000 and len(delta) < 600
    assert crl_delta.decode(newer, delta) == older


@hsettings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=300))
def test_a_malformed_delta_or_document_is_a_value_error_never_a_crash(garbage):
    base = crl([1, 2, 3])
    for call in (lambda: crl_delta.decode(base, garbage), lambda: crl_delta.decode(garbage, garbage)):
        try:
            call()
        except ValueError:
            pass
    assert crl_delta.split(garbage) is None or isinstance(crl_delta.split(garbage)[1], list)
    assert crl_delta.encode(garbage, base) is None or crl_delta.split(garbage) is not None


def test_a_delta_copying_entries_its_base_lacks_is_refused():
    delta = crl_delta.encode(crl([1, 2, 3, 4]), crl([1, 2, 3]))
    with pytest.raises(ValueError, match="copies entries"):
        crl_delta.decode(crl([1]), delta)


def publish(store: SQLiteArtifactStore, documents: list[bytes]) -> list[str]:
    """Each document supersedes the one before, as commands.crl publishes a CA's CRLs."""
    names = []
    for document in documents:
        names.append(store.put_sync(document, CRL_MEDIA_TYPE))
        if len(names) > 1:
            store.supersede_sync(names[-1], [names[-2]])
    return names


def rows(tmp_path) -> dict[str, tuple]:
    with sqlite3.connect(tmp_path / "artifacts.db") as conn:
        return {r[0]: r[1:] for r in conn.execute("SELECT sha256, base, depth, length(body) FROM artifacts")}


def test_a_cas_crls_take_space_in_proportion_to_its_revocations_and_every_one_reads_back(tmp_path):
    documents = [crl(list(range(1, n + 1)), n) for n in range(1, 201)]  # one more revocation each time
    store = SQLiteArtifactStore(tmp_path)
    names = publish(store, documents)
    stored = rows(tmp_path)
    assert stored[names[-1]][0] is None  # the current CRL is kept whole: serving it undoes nothing
    assert all(stored[name][0] == newer for name, newer in zip(names, names[1:]))
    whole = sum(len(d) for d in documents)
    assert store.stored_bytes()[1] < len(documents[-1]) + 200 * 300 < whole / 5  # not the square of 200
    for name, document in zip(names, documents):
        assert store.get_sync(name) == document
    store.close()
    reopened = SQLiteArtifactStore(tmp_path)  # from the file, not from anything this process kept
    assert reopened.get_sync(names[0]) == documents[0]


def test_chains_stop_at_max_depth_and_start_again(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "MAX_DEPTH", 3)
    documents = [crl(list(range(1, n + 1)), n) for n in range(1, 11)]
    store = SQLiteArtifactStore(tmp_path)
    names = publish(store, documents)
    stored = rows(tmp_path)
    whole = [n for n in names if stored[n][0] is None]
    assert whole == [names[3], names[7], names[9]]  # every 4th kept whole: no read undoes more than 3 deltas
    assert max(depth for _, depth, _ in stored.values()) == 3
    assert [store.get_sync(n) for n in names] == documents


def test_a_lost_attempt_and_an_unrelated_document_stay_readable(tmp_path):
    store = SQLiteArtifactStore(tmp_path)
    first, lost, second = crl([1, 2], 1), crl([1, 2, 3], 2), crl([1, 2, 3, 4], 2)
    other = b"not a CRL at all"
    names = [store.put_sync(d, CRL_MEDIA_TYPE) for d in (first, lost, second)]
    opaque = store.put_sync(other, "application/octet-stream")
    assert store.supersede_sync(names[2], [names[0], names[1], opaque, "0" * 64, names[2]]) == 2
    assert store.supersede_sync(names[2], [names[0]]) == 0  # already a delta: left as it is
    assert [store.get_sync(n) for n in names] == [first, lost, second] and store.get_sync(opaque) == other


def test_a_damaged_delta_or_a_missing_base_is_reported_as_corruption(tmp_path):
    store = SQLiteArtifactStore(tmp_path)
    names = publish(store, [crl([1, 2], 1), crl([1, 2, 3], 2)])
    store.close()
    with sqlite3.connect(tmp_path / "artifacts.db") as conn:
        conn.execute("UPDATE artifacts SET body = ? WHERE sha256 = ?",
                     (crl_delta.encode(crl([1, 2, 3], 2), crl([1, 9], 1)), names[0]))
    with pytest.raises(CorruptArtifact, match="no longer hashes"):
        SQLiteArtifactStore(tmp_path).get_sync(names[0])
    with sqlite3.connect(tmp_path / "artifacts.db") as conn:
        conn.execute("DELETE FROM artifacts WHERE sha256 = ?", (names[1],))
    with pytest.raises(CorruptArtifact, match="missing"):
        SQLiteArtifactStore(tmp_path).get_sync(names[0])


def test_a_file_from_before_deltas_gains_their_columns_and_keeps_its_documents(tmp_path):
    old = crl([1, 2], 1)
    name = hashlib.sha256(old).hexdigest()
    with sqlite3.connect(tmp_path / "artifacts.db") as conn:
        conn.execute("CREATE TABLE artifacts (sha256 TEXT PRIMARY KEY, media_type TEXT NOT NULL, body BLOB NOT NULL, "
                     "created_at TEXT NOT NULL) WITHOUT ROWID")
        conn.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?)", (name, CRL_MEDIA_TYPE, old, "2026-12-01T00:00:00Z"))
    store = SQLiteArtifactStore(tmp_path)
    assert store.get_sync(name) == old
    newer = crl([1, 2, 3], 2)
    assert store.supersede_sync(store.put_sync(newer, CRL_MEDIA_TYPE), [name]) == 1
    assert store.get_sync(name) == old
