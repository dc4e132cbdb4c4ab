"""IP address identifiers (RFC 8738) end to end: lego obtains a certificate for 127.0.0.1 by http-01 and by
tls-alpn-01, the protocol through the tests' own client (certbot 2.1 refuses IP addresses itself: "Requested name
... is an IP address"), the validators against real servers on loopback (the Host header, the reverse-DNS SNI, the
iPAddress of the tls-alpn-01 certificate), and the guards: validation networks, special-purpose blocks, the EAB key's
networks, the tenant policy's allowed networks and the profile's SAN types."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import http.server
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading

import pytest
from acme_support import (Responder, acme_world, free_port, one_handshake, poll, registered, run_tool,
                          verify_chain)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domain import jose
from domain.acme_networks import parse_networks
from infra.acme.http01 import Http01, ValidationFailed
from infra.acme.tlsalpn import ACME_IDENTIFIER, TlsAlpn01

LEGO, OPENSSL = shutil.which("lego"), shutil.which("openssl")
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def ips(*values: str) -> list[dict]:
    return [{"type": "ip", "value": v} for v in values]


def ip_sans(leaf: x509.Certificate) -> list:
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)


def csr_for(dns: tuple[str, ...] = (), addresses: tuple[str, ...] = (), common_name: str | None = None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)] if common_name else [])
    names = [*(x509.DNSName(n) for n in dns), *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses)]
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.SubjectAlternativeName(names), critical=False).sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


# the validators against real servers --------------------------------------------------------------------------
class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        body = f"host {self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def echo_server(host: str):
    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    httpd = Server((host, 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_http_01_for_an_address_connects_to_it_with_the_address_as_host(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("10.9.9.9 127.0.0.1\n")  # a hosts file never redirects an address
    with echo_server("127.0.0.1") as port:
        fetcher = Http01(port=port, networks=parse_networks(["127.0.0.0/8"]), hosts_file=hosts, timeout=2.0)
        assert fetcher.fetch("127.0.0.1", "t", ip=True) == ("127.0.0.1", f"host 127.0.0.1:{port}".encode())


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_http_01_for_an_ipv6_address_brackets_it_in_the_host_header(tmp_path):
    with echo_server("::1") as port:
        fetcher = Http01(port=port, networks=parse_networks(["::1/128"]), hosts_file=None, timeout=2.0)
        assert fetcher.fetch("::1", "t", ip=True) == ("::1", f"host [::1]:{port}".encode())


@pytest.mark.parametrize("address, networks, says", [
    ("127.0.0.1", ["10.0.0.0/8"], "loopback"),  # loopback not listed
    ("10.0.0.5", ["127.0.0.0/8"], "outside the validation networks"),
    ("169.254.169.254", ["0.0.0.0/0"], "link-local"),  # cloud metadata, whatever is listed
    ("100.64.0.1", ["0.0.0.0/0"], "carrier-grade NAT"),
    ("64:ff9b::a9fe:a9fe", ["::/0", "0.0.0.0/0"], "169.254.169.254"),  # NAT64 to the metadata address
])
def test_an_address_validation_may_not_reach_is_never_connected(address, networks, says):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        for checker in (Http01(port=port, networks=parse_networks(networks), hosts_file=None, timeout=1.0),
                        TlsAlpn01(port=port, networks=parse_networks(networks), hosts_file=None, timeout=1.0)):
            with pytest.raises(ValidationFailed) as failed:
                checker.fetch(address, "t", ip=True) if isinstance(checker, Http01) else checker.check(
                    address, "t.k", ip=True)
            assert failed.value.error_type == "rejectedIdentifier" and says in failed.value.detail, failed.value.detail
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing came
    finally:
        listener.close()


def alpn_certificate(key_authorization: str, *names: x509.GeneralName, critical: bool = True) -> tuple[bytes, bytes]:
    """A tls-alpn-01 certificate (RFC 8737 3): self-signed, ``names``, the critical acmeIdentifier: (PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    digest = b"\x04\x20" + hashlib.sha256(key_authorization.encode()).digest()
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(x509.Name([]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(list(names)), critical=True)
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, digest), critical=critical)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@contextlib.contextmanager
def alpn_responder(tmp_path, cert_pem: bytes, key_pem: bytes):
    """One tls-alpn-01 handshake on 127.0.0.1 (ALPN acme-tls/1): yields (port, the SNI names it was asked for)."""
    (tmp_path / "alpn.pem").write_bytes(cert_pem)
    (tmp_path / "alpn.key").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "alpn.pem", tmp_path / "alpn.key")
    context.set_alpn_protocols(["acme-tls/1"])
    asked: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: asked.append(name)
    with one_handshake(context) as port:
        yield port, asked


def test_tls_alpn_01_for_an_address_sends_its_reverse_name_and_wants_its_ip_address(tmp_path):
    with alpn_responder(tmp_path, *alpn_certificate("t.k", x509.IPAddress(LOOPBACK))) as (port, asked):
        checker = TlsAlpn01(port=port, networks=parse_networks(["127.0.0.0/8"]), hosts_file=None, timeout=2.0)
        assert checker.check("127.0.0.1", "t.k", ip=True) == "127.0.0.1"
    assert asked == ["1.0.0.127.in-addr.arpa"]  # RFC 8738 6


@pytest.mark.parametrize("names", [
    (x509.DNSName("1.0.0.127.in-addr.arpa"),),  # the reverse name is the SNI, not the certificate's name
    (x509.DNSName("127.0.0.1"),),
    (x509.IPAddress(ipaddress.ip_address("127.0.0.2")),),
    (x509.IPAddress(LOOPBACK), x509.DNSName("node1.acme.test")),  # exactly the one address
    (x509.IPAddress(ipaddress.ip_address("::ffff:127.0.0.1")),),  # 16 bytes are not the 4 ordered
])
def test_tls_alpn_01_for_an_address_refuses_a_certificate_naming_anything_else(tmp_path, names):
    with alpn_responder(tmp_path, *alpn_certificate("t.k", *names)) as (port, _):
        checker = TlsAlpn01(port=port, networks=parse_networks(["127.0.0.0/8"]), hosts_file=None, timeout=2.0)
        with pytest.raises(ValidationFailed) as failed:
            checker.check("127.0.0.1", "t.k", ip=True)
    assert failed.value.error_type == "unauthorized" and "exactly 127.0.0.1" in failed.value.detail


# the protocol, through the tests' client -----------------------------------------------------------------------
async def test_an_address_is_ordered_proved_by_http_01_and_certified_as_an_ip_address_san(tmp_path):
    # resolvers configured: a name would be offered dns-01 too, an address never (RFC 8738 7)
    async with acme_world(tmp_path, acme_dns_resolvers=("127.0.0.1:53",)) as world:
        client = await registered(world, allowed_names=[".acme.test", "127.0.0.0/8"])
        responder = Responder(world.http01_port)
        try:
            created = await client.post(client.directory["newOrder"], {"identifiers": [
                *ips("127.0.0.1"), {"type": "dns", "value": "node1.acme.test"}]})
            assert created.status_code == 201, created.text
            order, order_url = created.json(), created.headers["Location"]
            assert order["identifiers"] == [{"type": "dns", "value": "node1.acme.test"},
                                            {"type": "ip", "value": "127.0.0.1"}]
            authzs = [(url, (await client.post(url, None)).json()) for url in order["authorizations"]]
            by_type = {body["identifier"]["type"]: (url, body) for url, body in authzs}
            assert by_type["ip"][1]["identifier"] == {"type": "ip", "value": "127.0.0.1"}
            assert [c["type"] for c in by_type["ip"][1]["challenges"]] == ["http-01", "tls-alpn-01"]
            assert [c["type"] for c in by_type["dns"][1]["challenges"]] == ["http-01", "tls-alpn-01", "dns-01"]
            for url, body in authzs:
                challenge = next(c for c in body["challenges"] if c["type"] == "http-01")
                responder.answers[challenge["token"]] = jose.key_authorization(challenge["token"],
                                                                               jose.thumbprint(client.jwk))
                assert (await client.post(challenge["url"], {})).status_code == 200
                assert (await poll(client, url))["status"] == "valid"
            # the address was fetched at the address itself, named by it (RFC 8738 5)
            assert (f"127.0.0.1:{world.http01_port}" in {host for _, host in responder.requests})
            assert (await poll(client, order_url, done=("ready", "invalid")))["status"] == "ready"

            for wrong in (csr_for(("node1.acme.test",)),  # the address missing
                          csr_for(("node1.acme.test",), ("127.0.0.1", "127.0.0.2")),  # one more
                          csr_for(("node1.acme.test", "127.0.0.1"))):  # as a DNS name
                refused = await client.post(order["finalize"], {"csr": jose.b64url_encode(wrong)})
                assert refused.status_code == 400 and refused.json()["type"].endswith(":badCSR"), refused.text
            done = await client.post(order["finalize"], {"csr": jose.b64url_encode(
                csr_for(("node1.acme.test",), ("127.0.0.1",), common_name="127.0.0.1"))})
            assert done.status_code == 200, done.text
            chain = await client.post(done.json()["certificate"], None)
            assert chain.status_code == 200, chain.text
        finally:
            responder.close()
        (tmp_path / "chain.pem").write_text(chain.text)
        leaf = await verify_chain(world, tmp_path, tmp_path / "chain.pem", "node1.acme.test")
        assert ip_sans(leaf) == [LOOPBACK]
        text = (await run_tool(OPENSSL or "openssl", "x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-ext",
                               "subjectAltName", env={})).stdout
        assert "IP Address:127.0.0.1" in text and "DNS:node1.acme.test" in text
        # a TLS client that checks the address accepts it for 127.0.0.1, and not for another address
        await run_tool(OPENSSL or "openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                       str(tmp_path / "chain.pem"), "-verify_ip", "127.0.0.1", str(tmp_path / "leaf.pem"), env={})
        with pytest.raises(AssertionError, match="IP address mismatch"):
            await run_tool(OPENSSL or "openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                           str(tmp_path / "chain.pem"), "-verify_ip", "127.0.0.2", str(tmp_path / "leaf.pem"), env={})


async def _refused_order(client, *identifiers: dict) -> dict:
    refused = await client.post(client.directory["newOrder"], {"identifiers": list(identifiers)})
    assert refused.status_code == 400, refused.text
    assert refused.json()["type"] == "urn:ietf:params:acme:error:rejectedIdentifier", refused.text
    return refused.json()


async def test_an_order_refuses_addresses_the_key_the_tenant_policy_or_the_profile_do_not_allow(tmp_path):
    async with acme_world(tmp_path) as world:
        names_only = await registered(world, allowed_names=[".acme.test"])
        assert "networks this account may request" in (await _refused_order(names_only, *ips("127.0.0.1")))["detail"]
        anyone = await registered(world)
        for bad, says in (("::ffff:127.0.0.1", "IPv4-mapped"), ("fe80::1%lo", "zone id"), ("127.1", "not an IPv4"),
                          ("224.0.0.1", "multicast"), ("127.0.0.0/8", "not an IPv4")):
            assert says in (await _refused_order(anyone, *ips(bad)))["detail"]
        # the profile: cassandra-client certifies DNS names and email addresses only
        client_profile = await registered(world, profile="cassandra-client")
        body = await _refused_order(client_profile, *ips("127.0.0.1"))
        assert "does not allow IP addresses" in body["detail"]

        response = await world.api.client.put(f"/v1/tenants/{world.tenant}/policy", headers=world.admin,
                                              json={"allowed_ip_networks": ["10.0.0.0/8"]})
        assert response.status_code == 200, response.text
        await world.api.runtime.runner.wait_for(response.json()["global_position"], 10)
        body = await _refused_order(anyone, *ips("127.0.0.1"))
        assert "allowed networks" in body["detail"] and "san_not_allowed" in body["detail"]
        ordered = await anyone.post(anyone.directory["newOrder"], {"identifiers": ips("10.1.2.3")})
        assert ordered.status_code == 201, ordered.text


async def test_an_address_outside_the_validation_networks_fails_its_challenge_unconnected(tmp_path):
    async with acme_world(tmp_path) as world:  # validation into 127.0.0.0/8 only
        client = await registered(world)
        created = await client.post(client.directory["newOrder"], {"identifiers": ips("10.0.0.5")})
        assert created.status_code == 201, created.text
        authz_url = created.json()["authorizations"][0]
        challenge = next(c for c in (await client.post(authz_url, None)).json()["challenges"] if c["type"] == "http-01")
        assert (await client.post(challenge["url"], {})).status_code == 200
        assert (await poll(client, authz_url))["status"] == "invalid"
        failed = (await client.post(challenge["url"], None)).json()
        assert failed["error"]["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
        assert "outside the validation networks" in failed["error"]["detail"]


# lego ----------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(LEGO is None, reason="lego is not installed (Debian package lego)")
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize("challenge", ["http", "tls"])
async def test_lego_obtains_a_certificate_for_an_ip_address(tmp_path, challenge):
    tls_port = free_port()
    async with acme_world(tmp_path, acme_tls_alpn_port=tls_port) as world:
        key = await world.eab_key(allowed_names=["127.0.0.1"], description=f"lego {challenge} ip")
        path = tmp_path / "lego"
        listen = ["--http", "--http.port", f"127.0.0.1:{world.http01_port}"] if challenge == "http" else [
            "--tls", "--tls.port", f"127.0.0.1:{tls_port}"]
        argv = [LEGO, "--server", world.directory, "--path", str(path), "--email", "ops@acme.test", "--accept-tos",
                "--eab", "--kid", key["key_id"], f"--hmac={key['hmac_key']}", "--domains", "127.0.0.1", *listen,
                "run"]
        ran = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=180,
                                      env={**os.environ, "LEGO_CA_CERTIFICATES": str(world.tls_ca)})
        events = await world.api.runtime.store.read_all(0, 100_000)
        if ran.returncode != 0 and "order it as an identifier of type ip (RFC 8738)" in ran.stdout + ran.stderr:
            # A lego without RFC 8738 (Debian's 4.9.1) orders the address as a dns identifier: the server refuses it,
            # saying why, and issues nothing; the protocol itself is tested with the tests' client above.
            assert not [e for e in events if e.type in ("acme.order_created", "certificate.issued")], ran.stdout
            return
        assert ran.returncode == 0, ran.stdout + ran.stderr
        leaf = await verify_chain(world, tmp_path, path / "certificates" / "127.0.0.1.crt")
        assert ip_sans(leaf) == [LOOPBACK]
        await run_tool(OPENSSL, "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                       str(path / "certificates" / "127.0.0.1.crt"), "-verify_ip", "127.0.0.1",
                       str(tmp_path / "leaf.pem"), env={})
        events = await world.api.runtime.store.read_all(0, 100_000)  # again: now with the order's events
        [authz] = [e for e in events if e.type == "acme.authorization_created"]
        assert authz.payload["identifier"] == "127.0.0.1" and authz.payload["identifier_type"] == "ip"
        [validated] = [e for e in events if e.type == "acme.challenge_validated"]
        kinds = {c["challenge_id"]: c["challenge_type"] for c in authz.payload["challenges"]}
        assert kinds[validated.payload["challenge_id"]] == {"http": "http-01", "tls": "tls-alpn-01"}[challenge]
