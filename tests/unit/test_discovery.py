"""Discovery's pure parts (domain/discovery.py): the scan target grammar, as examples and as properties, and how a
scan's observations are checked, split into bounded events and recorded once."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import discovery
from domain.discovery import Observation, Target, TargetError, parse_target, parse_targets
from domain.errors import DomainError
from infra import discovery as scanner

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ports = st.integers(1, 65535)


def test_the_target_forms():
    assert parse_targets(["node1.db.acme.internal:9042"]) == [Target("node1.db.acme.internal", 9042)]
    assert parse_targets(["Node1.Example."], ports=[7000]) == [Target("node1.example", 7000)]
    assert parse_targets(["10.0.0.1"]) == [Target("10.0.0.1", p) for p in discovery.DEFAULT_PORTS]
    assert parse_targets(["[::1]:9042", "::1"], ports=[7001]) == [Target("::1", 9042), Target("::1", 7001)]
    assert parse_targets(["[2001:db8::1]"], ports=[9042]) == [Target("2001:db8::1", 9042)]
    assert parse_targets(["10.0.0.0/30"], ports=[9042]) == [Target("10.0.0.1", 9042, swept=True),
                                                            Target("10.0.0.2", 9042, swept=True)]
    assert parse_targets(["10.0.0.7/32:7001"]) == [Target("10.0.0.7", 7001, swept=True)]
    assert len(parse_targets(["2001:db8::/116"], ports=[9042])) == 4095  # IPv6 leaves out only the anycast address
    # an endpoint named on its own is recorded whatever it answers, even if a range covers it too
    assert parse_targets(["10.0.0.0/30", "10.0.0.1:9042"], ports=[9042]) == [
        Target("10.0.0.1", 9042), Target("10.0.0.2", 9042, swept=True)]


@pytest.mark.parametrize("value, says", [
    ("", "empty"), ("node:0", "port '0'"), ("node:65536", "port '65536'"), ("node:x", "port 'x'"),
    ("[::1", "without its ']'"), ("[::1]9042", "only ':PORT'"), ("10.0.0.0/33", "not a CIDR range"),
    ("under_score.example", "neither an IP address"), ("10.0.0.0/19", "more than 4096 endpoints"),
    ("10.0.0.0/21", "more than 4096 endpoints"),  # 2046 addresses x the three default ports
])
def test_bad_targets_are_refused_naming_the_value(value, says):
    with pytest.raises(TargetError) as refused:
        parse_targets([value])
    assert says in str(refused.value) and repr(value) in str(refused.value)


def test_a_bound_on_all_the_targets_together():
    assert len(parse_targets(["10.0.0.0/22"])) == 1022 * 3  # a /22 on the three default ports fits
    with pytest.raises(TargetError, match="'10.4.0.0/22'.*more than 4096 endpoints"):
        parse_targets(["10.0.0.0/22", "10.1.0.0/22", "10.2.0.0/22", "10.3.0.0/22", "10.4.0.0/22"], ports=[9042])


@given(st.ip_addresses(v=4), ports)
def test_any_ipv4_address_and_port(address, port):
    assert parse_target(f"{address}:{port}") == [Target(str(address), port)]


@given(st.ip_addresses(v=6), ports)
def test_any_ipv6_address_in_brackets_with_a_port_or_bare_with_the_default_ports(address, port):
    assert parse_target(f"[{address.exploded}]:{port}") == [Target(str(address), port)]
    assert parse_target(str(address), [port]) == [Target(str(address), port)]


@given(st.ip_addresses(v=4), st.integers(0, 32), st.lists(ports, min_size=1, max_size=3, unique=True))
def test_a_cidr_range_names_each_host_address_once_per_port_within_the_bound(address, prefix, chosen):
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    hosts = network.num_addresses if prefix >= 31 else network.num_addresses - 2
    value = f"{address}/{prefix}"
    if hosts * len(chosen) > discovery.MAX_ENDPOINTS:
        with pytest.raises(TargetError, match="more than 4096 endpoints") as refused:
            parse_targets([value], chosen)
        assert refused.value.value == value
        return
    targets = parse_targets([value], chosen)
    assert len(targets) == hosts * len(chosen) == len(set(targets))
    assert all(ipaddress.ip_address(t.host) in network and t.swept for t in targets)


@given(st.text(max_size=40))
def test_any_text_is_endpoints_or_a_target_error_naming_it(value):
    try:
        targets = parse_targets([value], [9042])
    except TargetError as refused:
        assert repr(value) in str(refused) or repr(value.strip()) in str(refused) or value.strip() == ""
    else:
        assert targets and all(1 <= t.port <= 65535 and t.host for t in targets)


# observations ------------------------------------------------------------------------------------------------------

PEM_DER = b"\x30\x03\x02\x01\x01"  # not a certificate, but a DER whose SHA-256 a PEM block must match
PEM = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"


def served(host="10.0.0.1", port=9042, **changes) -> Observation:
    fields = dict(host=host, port=port, observed_at=NOW, fingerprint_sha256=hashlib.sha256(PEM_DER).hexdigest(),
                  certificate_pem=PEM, not_after=NOW + timedelta(days=30), tls_version="TLSv1.3")
    return Observation(**{**fields, **changes})


def refused(host="10.0.0.2", port=9042) -> Observation:
    return Observation(host=host, port=port, observed_at=NOW, error="refused", reason="connection refused")


def test_a_scan_is_recorded_once_in_bounded_parts_and_a_different_scan_under_its_id_is_refused():
    many = [served(port=p) for p in range(1, 151)]
    events = discovery.decide_record(discovery.Scan(), "s1", many, NOW)
    assert [len(e.observations) for e in events] == [64, 64, 22]
    assert [(e.part, e.parts) for e in events] == [(1, 3), (2, 3), (3, 3)]
    state = discovery.fold(events)
    assert state.observations == 150 and state.version == 3
    assert discovery.decide_record(state, "s1", many, NOW) == []  # a retry
    with pytest.raises(DomainError) as exc:
        discovery.decide_record(state, "s1", many[:-1], NOW)
    assert (exc.value.code, exc.value.field) == ("scan_exists", "scan_id")
    assert discovery.fold(events[1:], start=discovery.fold(events[:1])) == state  # resumable


def test_large_certificates_split_parts_by_size_too():
    big = "-----BEGIN CERTIFICATE-----\n" + "A" * 40_000 + "\n-----END CERTIFICATE-----\n"
    parts = discovery.batches([served(port=p, certificate_pem=big) for p in range(1, 21)])
    assert [len(p) for p in parts] == [6, 6, 6, 2]
    assert all(sum(len(o.certificate_pem) for o in p) <= discovery.MAX_EVENT_BYTES for p in parts)


@pytest.mark.parametrize("observation, field, says", [
    (served(fingerprint_sha256="00" * 32), "observations[0].fingerprint_sha256", "not the SHA-256"),
    (served(fingerprint_sha256="XY"), "observations[0].fingerprint_sha256", "64 lower-case hex"),
    (served(certificate_pem="no pem here"), "observations[0].certificate_pem", "no PEM certificate block"),
    (served(host="bad host"), "observations[0].host", "neither an IP address"),
    (served(port=0), "observations[0].port", "not from 1 to 65535"),
    (served(observed_at=NOW + timedelta(minutes=6)), "observations[0].observed_at", "in the future"),
    (served(observed_at=datetime(2026, 1, 1)), "observations[0].observed_at", "offset"),
    (Observation(host="h", port=1, observed_at=NOW, error="exploded"), "observations[0].error", "not one of"),
    (Observation(host="h", port=1, observed_at=NOW, error="refused", fingerprint_sha256="ab" * 32),
     "observations[0].error", "not both"),
])
def test_observations_no_scan_could_make_are_refused_naming_the_field(observation, field, says):
    with pytest.raises(DomainError) as exc:
        discovery.decide_record(discovery.Scan(), "s1", [observation], NOW)
    assert (exc.value.code, exc.value.field) == ("invalid_observation", field) and says in exc.value.detail


def test_a_scan_with_no_observations_is_refused_and_one_a_little_ahead_of_the_clock_is_not():
    with pytest.raises(DomainError, match="at least one"):
        discovery.decide_record(discovery.Scan(), "s1", [], NOW)
    assert discovery.decide_record(discovery.Scan(), "s1", [served(observed_at=NOW + timedelta(minutes=4)),
                                                           refused()], NOW)


@pytest.mark.parametrize("scan_id", ["", "-x", "a b", "x" * 65, "a/b"])
def test_a_scan_id_that_names_no_stream_cleanly_is_refused(scan_id):
    with pytest.raises(DomainError) as exc:
        discovery.decide_record(discovery.Scan(), scan_id, [refused()], NOW)
    assert (exc.value.code, exc.value.field) == ("invalid_scan_id", "scan_id")


# the chain an endpoint sent, and what a TLS 1.2 first flight says ---------------------------------------------------

def link(subject: str = "CN=Acme Nodes CA", fingerprint: str = "cd" * 32) -> discovery.ChainCertificate:
    return discovery.ChainCertificate(fingerprint_sha256=fingerprint, subject_dn=subject, issuer_dn="CN=Acme Root")


@pytest.mark.parametrize("observation, field, says", [
    (served(chain=[link(fingerprint="XY")]), "observations[0].chain[0].fingerprint_sha256", "64 lower-case hex"),
    (served(chain=[link(subject="x" * 2001)]), "observations[0].chain[0].subject_dn", "longer than 2000"),
    (served(chain=[link()] * (discovery.MAX_CHAIN + 1)), "observations[0].chain", "at most"),
    (served(client_certificate="maybe"), "observations[0].client_certificate", "not one of"),
    (Observation(host="h", port=1, observed_at=NOW, error="refused", chain=[link()]), "observations[0].chain",
     "served no chain"),
])
def test_a_chain_or_client_certificate_no_scan_could_see_is_refused_naming_the_field(observation, field, says):
    with pytest.raises(DomainError) as exc:
        discovery.decide_record(discovery.Scan(), "s1", [observation], NOW)
    assert (exc.value.code, exc.value.field) == ("invalid_observation", field) and says in exc.value.detail


def test_a_path_is_incomplete_only_when_a_recorded_chain_lacks_the_issuer():
    assert not discovery.path_incomplete("CN=Acme Nodes CA", [link()])
    assert discovery.path_incomplete("CN=Acme Nodes CA", [])
    assert discovery.path_incomplete("CN=Acme Nodes CA", [link(subject="CN=Other CA")])
    assert not discovery.path_incomplete("CN=Acme Nodes CA", None)  # not recorded
    assert not discovery.path_incomplete(None, [])  # issuer unknown (an unparsed certificate)


def test_observations_recorded_before_the_chain_field_still_decode_and_fold():
    old = {"host": "10.0.0.1", "port": 9042, "observed_at": NOW.isoformat(), "fingerprint_sha256": "ab" * 32}
    decoded = msgspec.convert(old, Observation)
    assert decoded.chain is None and decoded.client_certificate is None
    assert discovery.decide_record(discovery.Scan(), "s1", [served(chain=[link()], client_certificate="required")],
                                   NOW)


def _record(kind: int, body: bytes) -> bytes:
    return bytes([kind, 3, 3]) + len(body).to_bytes(2, "big") + body


def _message(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def _certificate_message(ders: list[bytes]) -> bytes:
    listed = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return _message(11, len(listed).to_bytes(3, "big") + listed)


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5), st.booleans(),
       st.integers(1, 700))
def test_a_tls12_first_flight_gives_its_certificates_and_whether_one_was_asked_for(ders, asked, split):
    flight = _message(2, b"\x03\x03" + bytes(34)) + _certificate_message(ders)
    if asked:
        flight += _message(13, b"\x01\x40\x00\x00\x00\x00")
    flight += _message(14, b"")
    # handshake messages may be split over records anywhere
    records = b"".join(_record(22, flight[i:i + split]) for i in range(0, len(flight), split))
    assert scanner._tls12_messages(records + _record(20, b"\x01") + _record(22, b"encrypted")) == (ders, asked)


@given(st.binary(max_size=2000))
def test_any_bytes_received_give_whole_certificates_or_none_and_never_raise(received):
    certificates, asked = scanner._tls12_messages(received)
    assert isinstance(asked, bool) and all(isinstance(d, bytes) and d for d in certificates)


def test_a_certificate_message_cut_short_gives_no_certificate():
    flight = _certificate_message([b"x" * 100])
    assert scanner._tls12_messages(_record(22, flight[:-10])) == ([], False)
