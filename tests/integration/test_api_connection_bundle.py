"""The secure connection bundle (``format=bundle``) over HTTP: a zip a client or node connects with, as it is.

Its files are what their names say (the key decrypts with the export password and matches the certificate, the
keystores open, the truststores hold the CAs), a TLS handshake with hostname checking succeeds between a server
and a client built from bundle files alone, the password is in no file, the key's export is audited, and what
cannot be bundled is refused by name.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import socket
import ssl
import subprocess
import threading
import zipfile

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from test_api_pki import csr_pem, hierarchy, issue
from test_api_support import assert_problem, pki_api  # noqa: F401

PASSWORD = "bundle-password-42"
KEYTOOL = shutil.which("keytool")


async def bundle(api, headers, certificate_id, **params) -> zipfile.ZipFile:
    response = await api.client.get(f"/v1/certificates/{certificate_id}/export", headers=headers,
                                    params={"format": "bundle", **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/zip")
    assert response.headers["cache-control"] == "no-store"
    assert "connection-bundle.zip" in response.headers["content-disposition"]
    return zipfile.ZipFile(io.BytesIO(response.content))


def files(archive: zipfile.ZipFile) -> dict[str, bytes]:
    return {info.filename.split("/", 1)[1]: archive.read(info) for info in archive.infolist()}


async def test_a_server_side_key_bundle_connects_over_tls_and_carries_no_password(pki_api, tmp_path):
    api = pki_api
    admin = await api.admin()
    _root, inter = await hierarchy(api, admin)
    issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                         subject={"common_name": "node1.acme.internal"}, sans={"dns": ["node1.acme.internal"]})
    cid = issued["certificate_id"]
    archive = await bundle(api, {**admin, "X-Export-Password": PASSWORD}, cid,
                           contact_points="node1.acme.internal, 10.0.0.2:9142,[fd00::1]",
                           min_position=issued["global_position"])
    modes = {info.filename.split("/", 1)[1]: info.external_attr >> 16 for info in archive.infolist()}
    assert {info.filename.split("/", 1)[0] for info in archive.infolist()} == {"node1.acme.internal-connection-bundle"}
    got = files(archive)
    assert set(got) == {"certificate.pem", "chain.pem", "ca.pem", "truststore.p12", "truststore.jks",
                        "private-key.pem", "keystore.p12", "keystore.jks", "cqlshrc", "application.conf",
                        "connect.py", "README.txt", "manifest.json"}
    assert modes["private-key.pem"] == modes["keystore.jks"] == modes["keystore.p12"] == 0o600
    assert modes["ca.pem"] == 0o644
    assert all(PASSWORD.encode() not in body for body in got.values())
    manifest = json.loads(got["manifest.json"])
    assert manifest["certificate_id"] == cid and manifest["includes_private_key"]
    assert manifest["contact_points"] == ["node1.acme.internal:9042", "10.0.0.2:9142", "[fd00::1]:9042"]
    assert manifest["files"] == {name: hashlib.sha256(body).hexdigest() for name, body in got.items()
                                 if name != "manifest.json"}

    certificate = x509.load_pem_x509_certificate(got["certificate.pem"])
    key = serialization.load_pem_private_key(got["private-key.pem"], PASSWORD.encode())
    assert key.public_key().public_numbers() == certificate.public_key().public_numbers()
    chain = x509.load_pem_x509_certificates(got["chain.pem"])
    cas = x509.load_pem_x509_certificates(got["ca.pem"])
    assert chain[0] == certificate and chain[-1] == cas[-1] and len(cas) == 2  # issuing CA and root
    p12_key, p12_cert, p12_more = pkcs12.load_key_and_certificates(got["keystore.p12"], PASSWORD.encode())
    assert p12_cert == certificate and p12_more == chain[1:]
    trusted = pkcs12.load_pkcs12(got["truststore.p12"], PASSWORD.encode())
    assert [c.certificate for c in trusted.additional_certs] == cas
    assert "hostname = node1.acme.internal" in got["cqlshrc"].decode() and "certfile = ca.pem" in got["cqlshrc"].decode()
    conf = got["application.conf"].decode()
    assert '"node1.acme.internal:9042", "10.0.0.2:9142", "[fd00::1]:9042"' in conf
    assert "keystore-password = ${CSM_KEYSTORE_PASSWORD}" in conf
    compile(got["connect.py"], "connect.py", "exec")
    if KEYTOOL:
        for store in ("keystore.jks", "truststore.jks"):
            (tmp_path / store).write_bytes(got[store])
            listed = subprocess.run([KEYTOOL, "-list", "-keystore", tmp_path / store, "-storepass", PASSWORD],
                                    capture_output=True, text=True)
            assert listed.returncode == 0, listed.stdout + listed.stderr
            assert ("PrivateKeyEntry" if store == "keystore.jks" else "trustedCertEntry") in listed.stdout

    # a TLS server built from the bundle (chain + key), a client trusting ca.pem and checking the host name
    for name in ("chain.pem", "private-key.pem", "ca.pem"):
        (tmp_path / name).write_bytes(got[name])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "chain.pem", tmp_path / "private-key.pem", password=PASSWORD)
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    assert await asyncio.to_thread(handshake, server, client, "node1.acme.internal") == "TLSv1.3"
    audited = [e for e in await api.runtime.store.read_stream("acme", f"certificate-{cid}")
               if e.type == "certificate.private_key_exported"]
    assert [(e.payload["format"], e.payload["encrypted"]) for e in audited] == [("bundle", True)]


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> str:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as raw, client.wrap_socket(raw, server_hostname=hostname) as tls:
        version = tls.version()
        tls.send(b"x")
    thread.join(5)
    listener.close()
    return version


async def test_a_csr_bundle_has_no_key_and_refusals_name_their_field(pki_api):
    api = pki_api
    admin = await api.admin()
    _root, inter = await hierarchy(api, admin)
    csr, _key = csr_pem("node2.acme.internal", ["node2.acme.internal"])
    from_csr = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], csr=csr)
    secret = {**admin, "X-Export-Password": PASSWORD}
    got = files(await bundle(api, secret, from_csr["certificate_id"], min_position=from_csr["global_position"]))
    assert not {"private-key.pem", "keystore.p12", "keystore.jks"} & set(got)
    assert not json.loads(got["manifest.json"])["includes_private_key"]
    assert "CASSANDRA_HOST" in got["cqlshrc"].decode() and "yours stays with you" in got["README.txt"].decode()
    path = f"/v1/certificates/{from_csr['certificate_id']}/export"
    assert_problem(await api.client.get(path, headers=admin, params={"format": "bundle"}), 422, "password_required",
                   field="X-Export-Password")
    refused = await api.client.get(path, headers=secret, params={"format": "bundle", "contact_points": "a b:1"})
    assert_problem(refused, 422, "invalid_contact_point", field="contact_points")
    refused = await api.client.get(path, headers=secret, params={"format": "bundle", "contact_points": "h:70000"})
    assert_problem(refused, 422, "invalid_contact_point", field="contact_points")

    server_side = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                              subject={"common_name": "node3.acme.internal"}, sans={"dns": ["node3.acme.internal"]})
    viewer = await api.token("viewer", tenant_id="acme")  # cert:read, no key:export
    denied = await api.client.get(f"/v1/certificates/{server_side['certificate_id']}/export",
                                  headers={**viewer, "X-Export-Password": PASSWORD},
                                  params={"format": "bundle", "min_position": server_side["global_position"]})
    assert_problem(denied, 403, "forbidden")
