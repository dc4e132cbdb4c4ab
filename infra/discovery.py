"""Scanning endpoints for the certificates they serve: TCP, then a TLS handshake that verifies nothing.

Each endpoint gets one connection (``timeout`` seconds for all of it) and a TLS 1.2+ handshake with verification
off (``CERT_NONE``, no host name check): the point is to see whatever is served, trusted or not. The handshake runs
over memory BIOs so that the bytes the peer sent are at hand when it fails. The leaf certificate is kept whole (PEM);
of the certificates sent after it (the chain) their fingerprints and names, enough to judge whether a client that
trusts only the root can build the path. Python 3.11's ``ssl`` has the peer chain only privately
(``_sslobj.get_unverified_chain``, public from 3.13); without it the chain is not recorded (None).

Whether the endpoint requires a client certificate (Cassandra's ``require_client_auth``) is judged too. Under TLS 1.2
the server's Certificate and CertificateRequest messages travel in the clear before it aborts, and are read from the
bytes received (``_tls12_messages``): asked and aborted is ``required``. Under TLS 1.3 the client's handshake
completes before the server judges the (empty) client certificate, so the scan waits briefly (``CLIENT_AUTH_WAIT``)
for the alert a requiring server sends; none is ``not_required``. Connection refused, timeouts, no route, a peer that
does not speak TLS and other handshake failures become an observation's ``error`` and ``reason`` instead.

Scans run from wherever the operator runs ``csm discover scan``; the API never connects to hosts a request names.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import socket
import ssl
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from domain.discovery import ChainCertificate, Observation, Target

MAX_RECEIVED = 256 * 1024  # bytes of handshake kept to find a TLS 1.2 Certificate message in
DEFAULT_TIMEOUT = 5.0
DEFAULT_CONCURRENCY = 64
CLIENT_AUTH_WAIT = 0.5  # seconds a TLS 1.3 scan waits after its handshake for a requiring server's alert
# alerts a server sends when it wants a client certificate it did not get (TLS 1.3's certificate_required; what Java
# and older servers send instead)
_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "certificate required", "BAD_CERTIFICATE", "bad certificate",
                       "HANDSHAKE_FAILURE", "handshake failure")
_DER = getattr(ssl._ssl, "ENCODING_DER", 2)  # noqa: SLF001 - the encoding constant of the private chain API
_NOT_TLS = ("WRONG_VERSION_NUMBER", "wrong version number", "record layer failure", "packet length too long",
            "unknown protocol", "http request", "RECORD_LAYER_FAILURE", "UNEXPECTED_RECORD")


def client_context() -> ssl.SSLContext:
    """TLS 1.2 or later, any certificate accepted, no host name checked: to see what is served, not to trust it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def certificate_facts(der: bytes) -> dict:
    """The public facts of a DER certificate as an observation records them (fingerprint, names, serial, validity,
    PEM); a certificate ``cryptography`` cannot parse keeps only its fingerprint and PEM."""
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(
        _b64_lines(der)) + "\n-----END CERTIFICATE-----\n"
    facts: dict = {"fingerprint_sha256": hashlib.sha256(der).hexdigest(), "certificate_pem": pem}
    try:
        cert = x509.load_der_x509_certificate(der)
        facts.update(subject_dn=cert.subject.rfc4514_string(), issuer_dn=cert.issuer.rfc4514_string(),
                     serial_hex=format(cert.serial_number, "x"), not_before=cert.not_valid_before_utc,
                     not_after=cert.not_valid_after_utc)
        facts["certificate_pem"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    except ValueError:
        pass  # not X.509 as cryptography reads it: the fingerprint still tells whether it is one of ours
    return facts


def _b64_lines(der: bytes) -> list[str]:
    text = base64.b64encode(der).decode()
    return [text[i:i + 64] for i in range(0, len(text), 64)]


def facts_of_pem(pem: str) -> dict:
    """``certificate_facts`` of a PEM certificate (an observation posted by a scanner elsewhere); ValueError if it is
    not one."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    return certificate_facts(cert.public_bytes(serialization.Encoding.DER))


def chain_entry(der: bytes) -> ChainCertificate:
    """What an observation keeps of a certificate sent after the leaf."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return ChainCertificate(fingerprint_sha256=hashlib.sha256(der).hexdigest())
    return ChainCertificate(fingerprint_sha256=hashlib.sha256(der).hexdigest(),
                            subject_dn=cert.subject.rfc4514_string(), issuer_dn=cert.issuer.rfc4514_string())


def _tls12_messages(received: bytes) -> tuple[list[bytes], bool]:
    """From a TLS 1.2 server's first flight in ``received`` (plaintext before ChangeCipherSpec): the certificates of
    its Certificate message, leaf first ([] if none arrived whole), and whether it sent a CertificateRequest."""
    handshake, i = bytearray(), 0
    while i + 5 <= len(received):
        kind, length = received[i], int.from_bytes(received[i + 3:i + 5], "big")
        if kind == 20:  # ChangeCipherSpec: what follows is encrypted
            break
        if kind == 22:
            handshake += received[i + 5:i + 5 + length]
        i += 5 + length
    certificates: list[bytes] = []
    asked, j = False, 0
    while j + 4 <= len(handshake):
        kind, length = handshake[j], int.from_bytes(handshake[j + 1:j + 4], "big")
        body = bytes(handshake[j + 4:j + 4 + length])
        if len(body) < length:
            break  # a message cut short: nothing in it is whole
        if kind == 11 and not certificates:  # Certificate: list length (3), then each certificate's length (3) + DER
            k, end = 3, min(len(body), 3 + int.from_bytes(body[:3], "big"))
            while k + 3 <= end:
                size = int.from_bytes(body[k:k + 3], "big")
                der = body[k + 3:k + 3 + size]
                if not size or len(der) != size:
                    break
                certificates.append(der)
                k += 3 + size
        elif kind == 13:  # CertificateRequest
            asked = True
        j += 4 + length
    return certificates, asked


def _peer_chain(tls: ssl.SSLObject) -> list[ChainCertificate] | None:
    """The certificates the peer sent after its leaf; None where this Python cannot tell."""
    chain = getattr(tls, "get_unverified_chain", None) or getattr(getattr(tls, "_sslobj", None),
                                                                  "get_unverified_chain", None)
    if chain is None:
        return None
    try:
        sent = chain() or []
        return [chain_entry(c if isinstance(c, bytes) else c.public_bytes(_DER)) for c in sent[1:]]
    except (ssl.SSLError, ValueError, TypeError):
        return None


def _error(target: Target, at: datetime, error: str, reason: str) -> Observation:
    return Observation(host=target.host, port=target.port, observed_at=at, error=error, reason=reason[:500])


async def observe(target: Target, *, timeout: float = DEFAULT_TIMEOUT, context: ssl.SSLContext | None = None,
                  now: Callable[[], datetime] = lambda: datetime.now(UTC), client_auth: bool = True) -> Observation:
    """What ``target`` serves: its leaf certificate and chain with the TLS version and cipher, or the error met;
    with ``client_auth``, whether it requires a client certificate (under TLS 1.3 that costs a short wait)."""
    context = context or client_context()
    at = now()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout(timeout):
            return await _handshake(target, context, at, deadline if client_auth else None)
    except TimeoutError:
        return _error(target, at, "timeout", f"no TLS handshake within {timeout:g} s")
    except ConnectionRefusedError as exc:
        return _error(target, at, "refused", exc.strerror or str(exc))
    except socket.gaierror as exc:
        return _error(target, at, "unreachable", f"name resolution: {exc.strerror or exc}")
    except OSError as exc:
        return _error(target, at, "unreachable", exc.strerror or str(exc) or type(exc).__name__)


async def _handshake(target: Target, context: ssl.SSLContext, at: datetime, deadline: float | None) -> Observation:
    """One connection and handshake; ``deadline`` (loop time) bounds the wait for a TLS 1.3 server's verdict on
    the missing client certificate (None: not judged)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection(target.host, target.port)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sni = None if _is_address(target.host) else target.host
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    received = bytearray()
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return _failed(target, at, exc, received)
            await _flush(outgoing, writer)
            data = await reader.read(65536)
            if not data:
                reason = "the peer closed the connection during the handshake"
                return _failed(target, at, ConnectionResetError(reason), received)
            if len(received) < MAX_RECEIVED:
                received += data
            incoming.write(data)
        await _flush(outgoing, writer)  # our Finished: a polite end to the handshake
        der = tls.getpeercert(binary_form=True)
        if not der:
            return _error(target, at, "handshake_failed", "the server sent no certificate")
        cipher, version = tls.cipher(), tls.version()
        client_certificate: str | None = "not_required"  # TLS 1.2: a requiring server would have aborted
        if deadline is None:
            client_certificate = None
        elif version == "TLSv1.3":  # wait a little longer on a slow link: twice what the handshake took
            wait = min(max(CLIENT_AUTH_WAIT, 2 * (loop.time() - started)), deadline - loop.time() - 0.05)
            client_certificate = await _client_auth_alert(tls, incoming, reader, wait) if wait > 0 else None
        return Observation(host=target.host, port=target.port, observed_at=at, tls_version=version,
                           cipher=cipher[0] if cipher else None, chain=_peer_chain(tls),
                           client_certificate=client_certificate, **certificate_facts(der))
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _client_auth_alert(tls: ssl.SSLObject, incoming: ssl.MemoryBIO, reader: asyncio.StreamReader,
                             wait: float) -> str | None:
    """After a TLS 1.3 handshake: ``required`` if the server then refused the connection for want of a client
    certificate, ``not_required`` if it said nothing of the kind within ``wait`` seconds (session tickets are read
    and ignored), None if it said something else."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            tls.read(1)
            return "not_required"  # it sent application data: it went on without a client certificate
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            return None  # a clean close: nothing said about a client certificate
        except ssl.SSLError as exc:
            text = f"{getattr(exc, 'reason', '')} {exc}"
            return "required" if any(alert in text for alert in _CLIENT_CERT_ALERTS) else None
        left = deadline - loop.time()
        if left <= 0:
            return "not_required"
        try:
            data = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            return "not_required"
        if not data:
            return None  # closed without an alert
        incoming.write(data)


async def _flush(outgoing: ssl.MemoryBIO, writer: asyncio.StreamWriter) -> None:
    data = outgoing.read()
    if data:
        writer.write(data)
        await writer.drain()


def _failed(target: Target, at: datetime, exc: Exception, received: bytes) -> Observation:
    """A handshake that failed: the certificate if the server had sent it in the clear (TLS 1.2 mutual TLS), else
    the error; a peer that answered with something other than TLS is ``not_tls``."""
    reason = getattr(exc, "reason", None) or str(exc)
    text = f"{reason}: {exc}" if getattr(exc, "reason", None) else str(exc)
    certificates, asked = _tls12_messages(bytes(received))
    if certificates:
        return Observation(host=target.host, port=target.port, observed_at=at, tls_version="TLSv1.2",
                           reason=f"handshake aborted after the server's certificate: {text}"[:500],
                           chain=[chain_entry(der) for der in certificates[1:]],
                           client_certificate="required" if asked else None, **certificate_facts(certificates[0]))
    not_tls = received[:1] and received[0] not in (21, 22)  # neither an alert nor a handshake record
    if not_tls or any(marker in text for marker in _NOT_TLS):
        return _error(target, at, "not_tls", f"the peer does not speak TLS here ({text})")
    return _error(target, at, "handshake_failed", text)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def scan(targets: Sequence[Target], *, timeout: float = DEFAULT_TIMEOUT, concurrency: int = DEFAULT_CONCURRENCY,
               progress: Callable[[Observation], None] | None = None) -> list[Observation]:
    """Observe every target, at most ``concurrency`` at once; results in the targets' order."""
    gate = asyncio.Semaphore(max(1, concurrency))
    context = client_context()

    async def one(target: Target) -> Observation:
        async with gate:
            observed = await observe(target, timeout=timeout, context=context)
        if progress is not None:
            progress(observed)
        return observed

    return list(await asyncio.gather(*(one(target) for target in targets)))


async def await_served(target: Target, fingerprint: str, *, within: float, interval: float = 1.0,
                       timeout: float = DEFAULT_TIMEOUT) -> tuple[Observation, int]:
    """Observe ``target`` until it serves the certificate of SHA-256 ``fingerprint`` or ``within`` seconds have
    passed (a reloading node takes a moment): the last observation and the number of handshakes tried."""
    loop, context = asyncio.get_running_loop(), client_context()
    deadline, attempts = loop.time() + within, 0
    while True:
        attempts += 1
        left = deadline - loop.time()
        observed = await observe(target, timeout=max(0.1, min(timeout, left)), context=context, client_auth=False)
        if observed.fingerprint_sha256 == fingerprint or loop.time() + interval >= deadline:
            return observed, attempts
        await asyncio.sleep(interval)
