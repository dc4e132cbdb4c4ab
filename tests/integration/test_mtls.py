"""A real mutual-TLS handshake with certificates the service issued through its HTTP API.

A Python ``ssl`` server and client on 127.0.0.1 (system OpenSSL, the stack Cassandra's Python
driver uses) each hold a certificate from the same hierarchy and trust only its root, as served
by ``GET /v1/cas/{id}/chain``. The server holds a ``cassandra-node`` certificate (DNS SAN
``localhost``, IP SAN 127.0.0.1) with a key made and exported by the service; the client a
``cassandra-client`` certificate. A client certificate from another hierarchy is refused.
Hybrid certificates must look like ordinary EC certificates to a classical TLS stack.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_api_support import pki_api  # noqa: F401

PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)
HYBRID_EXTENSIONS = {"2.5.29.72", "2.5.29.73", "2.5.29.74"}
CLIENT_CN = "Reporting App"
SERVER_CN = "node1 localhost"

HIERARCHIES = {
    "classical": ("ecdsa-p384", "ecdsa-p256"),
    "hybrid": ("hybrid-p384-ml-dsa-65", "hybrid-p256-ml-dsa-44"),
}


def blocks(text: str) -> list[tuple[str, str]]:
    """Every PEM block of ``text`` as (label, block), in order."""
    return [(m.group(1), m.group(0)) for m in PEM_BLOCK.finditer(text)]


@dataclass
class Identity:
    """A certificate chain file and a key file ``ssl`` can load."""

    certfile: str
    keyfile: str
    certificate: x509.Certificate


async def ok(response, status=200):
    assert response.status_code == status, response.text
    return response


async def hierarchy(api, headers, tenant: str, ca_algorithm: str) -> tuple[str, str, str]:
    """Root and name-constrained intermediate in ``tenant``: (root id, intermediate id, root PEM)."""
    await api.create_tenant(headers, tenant)
    root = (await ok(await api.client.post("/v1/cas", headers=headers, json={
        "kind": "root", "tenant_id": tenant, "name": "Root", "algorithm": ca_algorithm,
        "subject": {"common_name": f"{tenant} mTLS root", "organization": tenant}}), 201)).json()
    inter = (await ok(await api.client.post("/v1/cas", headers=headers, json={
        "kind": "intermediate", "tenant_id": tenant, "parent_id": root["ca_id"], "name": "Issuing",
        "algorithm": ca_algorithm, "subject": {"common_name": f"{tenant} mTLS issuing", "organization": tenant},
        "name_constraints": {"permitted_dns": ["localhost"], "permitted_ip": ["127.0.0.0/8"]}}), 201)).json()
    root_pem = (await ok(await api.client.get(f"/v1/cas/{root['ca_id']}/chain", headers=headers,
                                              params={"min_position": inter["global_position"]}))).text
    assert [label for label, _ in blocks(root_pem)] == ["CERTIFICATE"], root_pem
    return root["ca_id"], inter["ca_id"], root_pem


async def server_side_identity(api, headers, tmp_path, tenant: str, ca_id: str, name: str, **body) -> Identity:
    """Issue with a key made by the service and export it (``include_key=true``) as PEM."""
    issued = (await ok(await api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": tenant, "ca_id": ca_id, **body}), 201)).json()
    exported = (await ok(await api.client.get(
        f"/v1/certificates/{issued['certificate_id']}/export", headers=headers,
        params={"format": "pem", "include_key": "true", "min_position": issued["global_position"]}))).text
    found = blocks(exported)
    certificates = [b for label, b in found if label == "CERTIFICATE"]
    keys = [b for label, b in found if label == "PRIVATE KEY"]
    assert len(certificates) == 3, exported  # leaf, intermediate, root
    if body["algorithm"].startswith("hybrid-"):
        # The classical key first (the one the certificate names), then the ML-DSA key.
        assert len(keys) == 2, [label for label, _ in found]
        assert not isinstance(serialization.load_pem_private_key(keys[1].encode(), None),
                              ec.EllipticCurvePrivateKey)
    else:
        assert len(keys) == 1, [label for label, _ in found]
    certificate = x509.load_pem_x509_certificate(certificates[0].encode())
    key = serialization.load_pem_private_key(keys[0].encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == certificate.public_key().public_numbers()
    return _write(tmp_path, name, certificates[:2], keys[0], certificate)


async def csr_identity(api, headers, tmp_path, tenant: str, ca_id: str, name: str, **body) -> Identity:
    """Issue from a CSR: the key never leaves this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, body["subject"]["common_name"])])).sign(key, hashes.SHA256())
    issued = (await ok(await api.client.post("/v1/certificates", headers=headers, json={
        "tenant_id": tenant, "ca_id": ca_id, "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        **body}), 201)).json()
    exported = (await ok(await api.client.get(
        f"/v1/certificates/{issued['certificate_id']}/export", headers=headers,
        params={"format": "pem", "min_position": issued["global_position"]}))).text
    certificates = [b for label, b in blocks(exported) if label == "CERTIFICATE"]
    assert len(certificates) == 3 and "PRIVATE KEY" not in exported, exported
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return _write(tmp_path, name, certificates[:2], key_pem,
                  x509.load_pem_x509_certificate(certificates[0].encode()))


def _write(tmp_path, name: str, certificates: list[str], key_pem: str, certificate: x509.Certificate) -> Identity:
    certfile, keyfile = tmp_path / f"{name}.crt.pem", tmp_path / f"{name}.key.pem"
    certfile.write_text("".join(certificates))  # leaf and intermediate: the peer has only the root
    keyfile.write_text(key_pem)
    keyfile.chmod(0o600)
    return Identity(str(certfile), str(keyfile), certificate)


def _strict(context: ssl.SSLContext, root_pem: str, identity: Identity) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cadata=root_pem)
    context.load_cert_chain(identity.certfile, identity.keyfile)
    return context


def server_context(root_pem: str, identity: Identity) -> ssl.SSLContext:
    context = _strict(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), root_pem, identity)
    context.verify_mode = ssl.CERT_REQUIRED  # a client without a certificate from our root is refused
    return context


def client_context(root_pem: str, identity: Identity) -> ssl.SSLContext:
    return _strict(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), root_pem, identity)  # CERT_REQUIRED, hostname checked


@dataclass
class Exchange:
    server_peer: dict | None = None
    client_peer: dict | None = None
    received: bytes | None = None
    reply: bytes | None = None
    server_error: BaseException | None = None
    client_error: BaseException | None = None
    versions: list[str] = field(default_factory=list)


def exchange(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> Exchange:
    """One connection: handshake, the client sends a line, the server echoes it back (blocking; run in a thread)."""
    result = Exchange()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            connection.settimeout(20)
            with server.wrap_socket(connection, server_side=True) as tls:
                result.server_peer = tls.getpeercert()
                result.versions.append(tls.version())
                result.received = tls.recv(1024)
                tls.sendall(b"echo:" + result.received)
        except (ssl.SSLError, OSError) as exc:
            result.server_error = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
                client.wrap_socket(raw, server_hostname=server_hostname) as tls:
            result.client_peer = tls.getpeercert()
            tls.sendall(b"SELECT now() FROM system.local\n")
            result.reply = tls.recv(1024)
            if not result.reply:  # TLS 1.3: a refused client certificate shows as a close after the handshake
                raise ConnectionAbortedError("the server closed the connection")
    except (ssl.SSLError, OSError) as exc:
        result.client_error = exc
    finally:
        thread.join(30)
        listener.close()
    assert not thread.is_alive(), "the server thread did not finish"
    return result


def subject_cn(peer: dict) -> str:
    return dict(attribute for rdn in peer["subject"] for attribute in rdn)["commonName"]


@pytest.mark.parametrize("kind", sorted(HIERARCHIES))
async def test_mutual_tls_with_service_issued_certificates_and_a_foreign_client_is_refused(pki_api, tmp_path, kind):
    api = pki_api
    ca_algorithm, leaf_algorithm = HIERARCHIES[kind]
    admin = await api.admin()
    _, issuing, root_pem = await hierarchy(api, admin, "acme", ca_algorithm)
    server_identity = await server_side_identity(
        api, admin, tmp_path, "acme", issuing, "server", profile="cassandra-node", algorithm=leaf_algorithm,
        subject={"common_name": SERVER_CN}, sans={"dns": ["localhost"], "ip": ["127.0.0.1"]})
    client_body = {"profile": "cassandra-client", "subject": {"common_name": CLIENT_CN, "organization": "acme"}}
    if kind == "hybrid":  # a CSR proves only a classical key: the hybrid leaf's key is made by the service
        client_identity = await server_side_identity(api, admin, tmp_path, "acme", issuing, "client",
                                                     algorithm=leaf_algorithm, **client_body)
    else:
        client_identity = await csr_identity(api, admin, tmp_path, "acme", issuing, "client", **client_body)
    for identity in (server_identity, client_identity):
        oids = {e.oid.dotted_string for e in identity.certificate.extensions}
        assert (HYBRID_EXTENSIONS <= oids) == (kind == "hybrid"), oids
        assert isinstance(identity.certificate.public_key(), ec.EllipticCurvePublicKey)

    server = server_context(root_pem, server_identity)
    for hostname in ("localhost", "127.0.0.1"):  # the DNS SAN, then the IP SAN
        done = await asyncio.to_thread(exchange, server, client_context(root_pem, client_identity), hostname)
        assert done.server_error is None and done.client_error is None, (done.server_error, done.client_error)
        assert done.received == b"SELECT now() FROM system.local\n"
        assert done.reply == b"echo:SELECT now() FROM system.local\n"
        assert subject_cn(done.client_peer) == SERVER_CN
        assert dict(done.client_peer["subjectAltName"]) == {"DNS": "localhost", "IP Address": "127.0.0.1"}
        assert subject_cn(done.server_peer) == CLIENT_CN  # the server saw, and verified, the client's certificate
        assert ("organizationName", "acme") in [a for rdn in done.server_peer["subject"] for a in rdn]

    # A client certificate from another root (another tenant's hierarchy, same algorithms) is refused.
    _, foreign_issuing, foreign_root_pem = await hierarchy(api, admin, "globex", ca_algorithm)
    foreign = await server_side_identity(api, admin, tmp_path, "globex", foreign_issuing, "foreign",
                                         algorithm=leaf_algorithm, profile="cassandra-client",
                                         subject={"common_name": CLIENT_CN, "organization": "acme"})
    assert foreign_root_pem != root_pem
    refused = await asyncio.to_thread(exchange, server, client_context(root_pem, foreign), "localhost")
    assert isinstance(refused.server_error, ssl.SSLError), refused
    assert "certificate verify failed" in str(refused.server_error), refused.server_error
    assert refused.server_peer is None and refused.received is None
    assert refused.client_error is not None and refused.reply in (None, b""), refused
