"""Certificates found on the network: scan targets, observations of what an endpoint served, and how they are recorded.

A scan (``csm discover scan``, or a scanner elsewhere posting to ``/v1/tenants/{id}/discovered``) connects to
``host:port`` endpoints, shakes hands over TLS without verifying anything, and observes either the leaf certificate
served (its SHA-256 fingerprint, public facts and PEM: nothing private) or why there was none (refused, timeout,
not TLS, a failed handshake). Each scan is its own stream (``discovery-scan-<scan_id>``, in the tenant's scope),
so a tenant's history of scans is never one ever-growing stream, and recording a scan again (a retry) appends
nothing. A scan's observations are split over events of at most ``MAX_PER_EVENT`` observations and
``MAX_EVENT_BYTES`` of certificates, so that a /22 swept on three ports is many small events, not one giant one.

The target grammar (``parse_targets``) is pure too: ``host``, ``host:port``, ``[v6]``, ``[v6]:port``, a bare IPv6
address, and CIDR ranges (IPv4 or IPv6) expanded to their host addresses, at most ``MAX_ENDPOINTS`` endpoints in all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import msgspec

from domain.errors import DomainError
from domain.events import Payload, event, resumable

STREAM_TYPE = "discovery"
DEFAULT_PORTS = (9042, 7000, 7001)  # native protocol; internode (4.0+: TLS on storage_port); legacy ssl_storage_port
MAX_ENDPOINTS = 4096  # addresses x ports one scan may name (a /21 on one port; a /22 on the three defaults)
MAX_OBSERVATIONS = 16_384  # per recorded scan (several scans' worth of the CLI's bound, for scanners elsewhere)
MAX_PER_EVENT = 64
MAX_EVENT_BYTES = 256 * 1024  # certificates' PEM per event (a hybrid ML-DSA certificate's is ~8 KiB)
MAX_PEM_BYTES = 64 * 1024
# why an endpoint served no certificate: connection refused, no answer in time, no route or name, not speaking TLS,
# a TLS handshake that failed before the certificate could be read (the reason says what the peer said)
ERRORS = ("refused", "timeout", "unreachable", "not_tls", "handshake_failed")
CONNECTION_ERRORS = frozenset({"refused", "timeout", "unreachable"})  # nothing answered at all
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*\.?$")
SCAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----")


class TargetError(ValueError):
    """A scan target that is not one: the message names the value and what is wrong with it."""

    def __init__(self, value: str, problem: str) -> None:
        super().__init__(f"target {value!r}: {problem}")
        self.value = value


class Target(msgspec.Struct, frozen=True, order=True):
    host: str  # a host name or an IP address (IPv6 without brackets)
    port: int
    swept: bool = False  # from a CIDR range: an address that did not answer is no endpoint, and is not recorded


def endpoint_name(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets: how findings and listings name an endpoint."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(value: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise TargetError(value, f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _split(value: str) -> tuple[str, int | None]:
    """(host or network, port or None) of one target as written."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            raise TargetError(value, "an opening '[' without its ']'")
        if rest and not rest.startswith(":"):
            raise TargetError(value, "after ']' only ':PORT' may follow")
        return host, _port(value, rest[1:]) if rest else None
    if value.count(":") > 1:  # a bare IPv6 address or network: no port can follow it
        return value, None
    host, colon, port = value.partition(":")
    return host, _port(value, port) if colon else None


def parse_target(value: str, ports: Sequence[int] = DEFAULT_PORTS) -> list[Target]:
    """The endpoints one target names: ``ports`` for a target without its own port."""
    text = value.strip()
    if not text:
        raise TargetError(value, "empty")
    host, port = _split(text)
    chosen = (port,) if port is not None else tuple(ports)
    if "/" in host:
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError as exc:
            raise TargetError(value, f"not a CIDR range ({exc})") from None
        count = network.num_addresses if network.num_addresses <= 2 else network.num_addresses - (
            2 if network.version == 4 else 1)
        if count * len(chosen) > MAX_ENDPOINTS:
            raise TargetError(value, f"{count} addresses x {len(chosen)} port(s) is more than {MAX_ENDPOINTS} "
                              "endpoints; scan a narrower range")
        return [Target(str(address), p, swept=True) for address in network.hosts() for p in chosen]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _HOST.match(host):
            raise TargetError(value, f"{host!r} is neither an IP address, a host name nor a CIDR range") from None
        return [Target(host.lower().rstrip("."), p) for p in chosen]
    return [Target(str(address), p) for p in chosen]


def parse_targets(values: Iterable[str], ports: Sequence[int] = DEFAULT_PORTS,
                  limit: int = MAX_ENDPOINTS) -> list[Target]:
    """Every endpoint the targets name, each once, in order; more than ``limit`` in all is refused."""
    if not ports:
        raise TargetError("", "no ports to scan")
    for port in ports:
        if not 1 <= port <= 65535:
            raise TargetError(str(port), "a port must be from 1 to 65535")
    seen: dict[tuple[str, int], Target] = {}
    for value in values:
        for target in parse_target(value, ports):
            key = (target.host, target.port)
            if key not in seen or not target.swept:  # named on its own, it is recorded whatever it answers
                seen[key] = target
            if len(seen) > limit:
                raise TargetError(value, f"the targets name more than {limit} endpoints; scan fewer at once")
    if not seen:
        raise TargetError("", "no targets")
    return list(seen.values())


CLIENT_CERTIFICATE = ("required", "not_required")  # whether the endpoint refused a handshake without a client one
MAX_CHAIN = 10  # certificates an endpoint sent after its leaf, as recorded


class ChainCertificate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One certificate an endpoint sent after its leaf (an intermediate, or a root it need not send): enough to tell
    whether the chain it serves lets a client that trusts only the root build the path."""

    fingerprint_sha256: str
    subject_dn: str | None = None  # RFC 4514; None when cryptography could not read the certificate
    issuer_dn: str | None = None


class Observation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one endpoint served when it was scanned: a certificate (``fingerprint_sha256`` and its facts), or
    ``error`` and why. The certificate's PEM is public; nothing private is ever observed.

    ``chain`` is what it sent after the leaf, in order (``[]``: the leaf alone; None: not recorded, as by scanners
    older than the field). ``client_certificate`` says whether it refused to go on without a client certificate
    (``required``: mutual TLS is enforced, as Cassandra's ``require_client_auth: true`` does), went on without one
    (``not_required``), or was not judged (None)."""

    host: str
    port: int
    observed_at: datetime
    fingerprint_sha256: str | None = None  # hex of SHA-256 over the leaf certificate's DER
    subject_dn: str | None = None  # RFC 4514
    issuer_dn: str | None = None
    serial_hex: str | None = None  # lower-case, no separators (as this service records its own)
    not_before: datetime | None = None
    not_after: datetime | None = None
    certificate_pem: str | None = None
    tls_version: str | None = None  # "TLSv1.3"
    cipher: str | None = None
    error: str | None = None  # one of ERRORS
    reason: str | None = None  # what the connection or the peer said
    chain: list[ChainCertificate] | None = None
    client_certificate: str | None = None  # one of CLIENT_CERTIFICATE, or None

    @property
    def endpoint(self) -> str:
        return endpoint_name(self.host, self.port)


def der_of(pem: str) -> bytes:
    """The DER of a PEM certificate (the first block); ValueError if there is none."""
    found = _PEM.search(pem)
    if found is None:
        raise ValueError("no PEM certificate block")
    try:
        return base64.b64decode("".join(found.group(1).split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in the PEM block: {exc}") from None


def _refuse(field: str, detail: str) -> DomainError:
    return DomainError("invalid_observation", detail, field=field)


FUTURE_SKEW = timedelta(minutes=5)  # a scanner's clock may run a little ahead; an observation from later is refused


def validate(observations: Sequence[Observation], now: datetime) -> None:
    """Refuse (422 ``invalid_observation``, naming the observation's field) what no scan could have observed (one
    from the future would stand as an endpoint's latest until then)."""
    if not observations:
        raise _refuse("observations", "a scan records at least one observation")
    if len(observations) > MAX_OBSERVATIONS:
        raise _refuse("observations", f"{len(observations)} observations; at most {MAX_OBSERVATIONS} per scan")
    for i, o in enumerate(observations):
        where = f"observations[{i}]"
        try:
            ipaddress.ip_address(o.host)
        except ValueError:
            if not _HOST.match(o.host):
                raise _refuse(f"{where}.host", f"{o.host!r} is neither an IP address nor a host name") from None
        if not 1 <= o.port <= 65535:
            raise _refuse(f"{where}.port", f"port {o.port} is not from 1 to 65535")
        if o.observed_at.tzinfo is None:
            raise _refuse(f"{where}.observed_at", "a time with its offset (RFC 3339)")
        if o.observed_at > now + FUTURE_SKEW:
            raise _refuse(f"{where}.observed_at", f"{o.observed_at.isoformat()} is in the future")
        for name in ("subject_dn", "issuer_dn", "tls_version", "cipher", "reason"):
            value = getattr(o, name)
            if value is not None and len(value) > 2000:
                raise _refuse(f"{where}.{name}", "longer than 2000 characters")
        if o.client_certificate is not None and o.client_certificate not in CLIENT_CERTIFICATE:
            raise _refuse(f"{where}.client_certificate", f"{o.client_certificate!r} is not one of "
                          f"{', '.join(CLIENT_CERTIFICATE)}")
        if o.error is not None:
            if o.chain:
                raise _refuse(f"{where}.chain", "an observation with an error served no chain")
            if o.error not in ERRORS:
                raise _refuse(f"{where}.error", f"{o.error!r} is not one of {', '.join(ERRORS)}")
            if o.fingerprint_sha256 is not None or o.certificate_pem is not None:
                raise _refuse(f"{where}.error", "an observation is an error or a certificate, not both")
            continue
        if o.fingerprint_sha256 is None or not _HEX64.match(o.fingerprint_sha256):
            raise _refuse(f"{where}.fingerprint_sha256", "64 lower-case hex digits, or an error")
        _validate_chain(o.chain or [], f"{where}.chain")
        if o.certificate_pem is not None:
            if len(o.certificate_pem) > MAX_PEM_BYTES:
                raise _refuse(f"{where}.certificate_pem", f"longer than {MAX_PEM_BYTES} characters")
            try:
                der = der_of(o.certificate_pem)
            except ValueError as exc:
                raise _refuse(f"{where}.certificate_pem", str(exc)) from None
            if hashlib.sha256(der).hexdigest() != o.fingerprint_sha256:
                raise _refuse(f"{where}.fingerprint_sha256", "is not the SHA-256 of certificate_pem's DER")


def _validate_chain(chain: Sequence[ChainCertificate], where: str) -> None:
    if len(chain) > MAX_CHAIN:
        raise _refuse(where, f"{len(chain)} certificates; at most {MAX_CHAIN} after the leaf")
    for j, c in enumerate(chain):
        if not _HEX64.match(c.fingerprint_sha256):
            raise _refuse(f"{where}[{j}].fingerprint_sha256", "64 lower-case hex digits")
        for name in ("subject_dn", "issuer_dn"):
            value = getattr(c, name)
            if value is not None and len(value) > 2000:
                raise _refuse(f"{where}[{j}].{name}", "longer than 2000 characters")


def path_incomplete(issuer_dn: str | None, chain: Sequence[ChainCertificate] | None) -> bool:
    """Whether a leaf issued by an intermediate under ``issuer_dn`` was served without its issuer's certificate: a
    client that trusts only the root cannot build the path (Java's default trust manager does not fetch missing
    intermediates). False when the chain was not recorded or the issuer is not known."""
    if chain is None or issuer_dn is None:
        return False
    return not any(c.subject_dn == issuer_dn for c in chain)


def chain_complete(issuer_dn: str | None, ca_kind: str | None,
                   chain: Sequence[ChainCertificate] | None) -> bool | None:
    """Whether a leaf the tenant's CA of kind ``ca_kind`` issued was served with its issuer's certificate; None when
    it is not judged: the chain was not recorded, a root issued it (its leaf needs no chain), or no CA of the tenant
    did (``ca_kind`` None). The one rule for the listing, the CLI and the compliance finding."""
    if chain is None or ca_kind in (None, "root"):
        return None
    return not path_incomplete(issuer_dn, chain)


@event("discovery.observed")
class ObservationsRecorded(Payload, frozen=True, kw_only=True):
    """Part ``part`` (from 1) of ``parts`` of scan ``scan_id``'s observations. ``digest`` (SHA-256 over the whole
    scan's observations) tells a retry of the scan from a different scan under the same id."""

    scan_id: str
    part: int
    parts: int
    digest: str
    observations: list[Observation]


class Scan(msgspec.Struct, frozen=True, kw_only=True):
    digest: str | None = None  # None: nothing recorded yet
    observations: int = 0
    version: int = 0


def stream_id(scan_id: str) -> str:
    return f"discovery-scan-{scan_id}"


@resumable
def fold(payloads: Iterable[Payload], start: Scan | None = None) -> Scan:
    state = Scan() if start is None else start
    for payload in payloads:
        if isinstance(payload, ObservationsRecorded):
            state = Scan(digest=payload.digest, observations=state.observations + len(payload.observations),
                         version=state.version + 1)
        else:
            state = msgspec.structs.replace(state, version=state.version + 1)
    return state


def digest(observations: Sequence[Observation]) -> str:
    return hashlib.sha256(msgspec.json.encode(list(observations), order="deterministic")).hexdigest()


def batches(observations: Sequence[Observation]) -> list[list[Observation]]:
    """The observations in order, in parts of at most MAX_PER_EVENT observations and MAX_EVENT_BYTES of PEM."""
    out: list[list[Observation]] = [[]]
    size = 0
    for o in observations:
        weight = len(o.certificate_pem or "")
        if out[-1] and (len(out[-1]) >= MAX_PER_EVENT or size + weight > MAX_EVENT_BYTES):
            out.append([])
            size = 0
        out[-1].append(o)
        size += weight
    return out


def decide_record(state: Scan, scan_id: str, observations: Sequence[Observation], now: datetime) -> list[Payload]:
    """The scan's events; none if this scan was recorded already with the same observations (a retry)."""
    if not SCAN_ID.match(scan_id):
        raise DomainError("invalid_scan_id", f"{scan_id!r}: up to 64 letters, digits, '.', '_' and '-', starting with "
                          "a letter or digit", field="scan_id")
    validate(observations, now)
    scanned = digest(observations)
    if state.digest is not None:
        if state.digest == scanned:
            return []
        raise DomainError("scan_exists", f"scan {scan_id} was recorded with other observations; give a new scan_id",
                          field="scan_id")
    parts = batches(observations)
    return [ObservationsRecorded(scan_id=scan_id, part=i, parts=len(parts), digest=scanned, observations=part)
            for i, part in enumerate(parts, 1)]
