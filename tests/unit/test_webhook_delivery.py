"""The delivery job: an unsendable URL, or a name resolving to a refused address, is a recorded failure, never an
exception of its own and never a request; a name that passes is sent to the address that was checked, as the name.

Receivers are real servers on 127.0.0.1 with random ports (allowed with ``allow_loopback``, as in tests).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from domain import webhook
from infra.webhooks.delivery import Deliverer, DeliveryFailed, HostRefused, encode_host
from infra.webhooks.log import DeliveryLog

BAD_HOST = "https://" + "a" * 2030  # the idna codec refuses it: "label too long"


def deliverer(tmp_path, url: str, monkeypatch, **options) -> tuple[Deliverer, str]:
    log = DeliveryLog(tmp_path / "webhooks.db")
    log.record_dispatch([("d1", "acme", "w1", "e1", "certificate.revoked", 1, b"{}")], 1)
    job = Deliverer(deliveries=log, views_path=tmp_path / "views.db", secret=lambda tenant, ref: b"whsec_x",
                    max_attempts=3, timeout=5.0, **options)
    hook = {"url": url, "status": "active", "enabled": True, "secret_ref": "key_1"}
    monkeypatch.setattr(job, "_subscription", lambda tenant_id, webhook_id: hook)
    return job, "d1"


@pytest.mark.parametrize("url", [BAD_HOST, "https://169.254.169.254/latest", "https://[fe80::1]/x",
                                 "https://☃.example/x"])  # IDNA 2003 maps the symbol, IDNA 2008 refuses it
def test_a_url_the_rules_refuse_fails_the_delivery_at_once(tmp_path, monkeypatch, url):
    """A subscription saved before these rules existed: no request is made, the delivery fails (and is reported)."""
    job, delivery_id = deliverer(tmp_path, url, monkeypatch)
    job(delivery_id)  # no exception: nothing for dramatiq to retry for ever
    row = job.deliveries.get(delivery_id)
    assert row["status"] == "failed" and row["attempts"] == 1 and row["last_error"].startswith(("invalid_url",
                                                                                                "url_host"))
    assert [r["delivery_id"] for r in job.deliveries.unreported_failures()] == [delivery_id]


HOSTS = ["hooks.example.com", "Hooks.Example.COM", "bücher.example", "straße.de", "ÄÖÜ.de", "例え.テスト",
         "xn--n3h.example", "☃.example", "♥.example", "a\u200db.example", "ǅ.example", "⒈.example", "ｆｕｌｌ.example",
         "a" * 64 + ".example", "-lead.example", "a_b.example"]


@pytest.mark.parametrize("host", HOSTS)
def test_the_url_rules_accept_only_hosts_the_http_client_can_send_to(host):
    """Saved URLs are checked with the delivery's own encoder: a host accepted when saved is one httpx sends to."""
    url = f"https://{host}/hooks"
    try:
        webhook.check_url(url, encode_host=encode_host)
    except webhook.InvalidWebhook as refused:
        assert refused.code == "invalid_url" and refused.field == "url"
        return
    assert httpx.URL(url).raw_host.decode("ascii") == encode_host(host)


def test_a_symbol_idna_2003_maps_but_idna_2008_refuses_is_refused_with_the_delivery_encoder():
    assert webhook.check_url("https://☃.example/x")  # the standard library's IDNA 2003 codec maps it
    with pytest.raises(webhook.InvalidWebhook, match="IDNA 2008") as refused:
        webhook.check_url("https://☃.example/x", encode_host=encode_host)
    assert refused.value.code == "invalid_url" and refused.value.field == "url"
    assert webhook.check_url("https://straße.de/x", encode_host=encode_host)  # IDNA 2008 keeps ß (xn--strae-oqa)


def test_posting_to_a_host_the_idna_codec_refuses_returns_an_error(tmp_path, monkeypatch):
    job, delivery_id = deliverer(tmp_path, BAD_HOST, monkeypatch)
    status, error = job._post(BAD_HOST, b"{}", job.deliveries.get(delivery_id), b"whsec_x")
    assert status is None and error.startswith("UnicodeError")


def test_loopback_follows_this_processs_setting(tmp_path, monkeypatch):
    """Loopback receivers only where this process allows them (CSM_WEBHOOK_ALLOW_LOOPBACK_HTTP, as at save)."""
    job, delivery_id = deliverer(tmp_path, "http://127.0.0.1:9/x", monkeypatch, allow_loopback=True)
    with pytest.raises(DeliveryFailed):  # port 9 (discard) refuses the connection: an ordinary failed attempt
        job(delivery_id)
    assert "ConnectError" in job.deliveries.get(delivery_id)["last_error"]
    job, delivery_id = deliverer(tmp_path / "off", "http://127.0.0.1:9/x", monkeypatch)
    job(delivery_id)
    assert job.deliveries.get(delivery_id)["last_error"].startswith("url_scheme")


# names are resolved at delivery ---------------------------------------------------------------------------------

@contextlib.contextmanager
def listener() -> Iterator[tuple[int, list]]:
    """A TCP port on 127.0.0.1 that records every connection made to it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, peer = server.accept()
                accepted.append(peer)
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(10)
        server.close()


def loopback_name() -> str:
    """A name the URL rules accept (not localhost) that this machine resolves to a loopback address: its own."""
    name = socket.gethostname()
    try:
        webhook.check_url(f"https://{name}/")
        found = sorted({str(info[4][0]) for info in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)})
    except (webhook.InvalidWebhook, OSError) as exc:
        pytest.skip(f"this machine's name {name!r} is not one to test with: {exc}")
    if not any(ipaddress.ip_address(address).is_loopback for address in found):
        pytest.skip(f"this machine's name {name!r} resolves to no loopback address ({', '.join(found)})")
    return name


def test_a_name_resolving_to_a_refused_address_fails_the_attempt_without_a_connection(tmp_path, monkeypatch):
    """A name the rules accept when it is saved, but that resolves (now, or after a DNS change) to loopback."""
    with listener() as (port, accepted):
        job, delivery_id = deliverer(tmp_path, f"https://{loopback_name()}:{port}/hooks?token=s3cret", monkeypatch)
        with pytest.raises(DeliveryFailed):  # an attempt that failed: retried, as a DNS answer may change
            job(delivery_id)
    assert accepted == [], "a connection was made to the refused address"
    row = job.deliveries.get(delivery_id)
    assert row["status"] == "pending" and row["attempts"] == 1 and row["last_status_code"] is None
    assert row["last_error"].startswith(f"url_host: {loopback_name()} resolves to a loopback address (127.")
    assert "s3cret" not in row["last_error"] and "/hooks" not in row["last_error"]


def test_localhost_is_refused_at_delivery_unless_loopback_is_allowed(tmp_path, monkeypatch):
    """A subscription saved where loopback was allowed is not delivered by a process that does not allow it."""
    with listener() as (port, accepted):
        job, delivery_id = deliverer(tmp_path, f"https://localhost:{port}/x", monkeypatch)
        job(delivery_id)
    assert accepted == []
    row = job.deliveries.get(delivery_id)
    assert row["status"] == "failed" and row["last_error"].startswith("url_host")


def test_every_address_a_name_resolves_to_is_checked_by_the_url_rules(tmp_path, monkeypatch):
    job, _ = deliverer(tmp_path, "https://localhost/x", monkeypatch)
    with pytest.raises(HostRefused, match=r"^url_host: localhost resolves to a loopback address \(127\."):
        job.vetted_addresses(httpx.URL("https://localhost:8443/x"))
    job.allow_loopback = True
    assert "127.0.0.1" in job.vetted_addresses(httpx.URL("https://localhost:8443/x"))
    assert job.vetted_addresses(httpx.URL("https://[::1]/x")) == ["::1"]  # an address stands for itself
    job.allow_loopback = False
    with pytest.raises(HostRefused, match="link-local"):
        job.vetted_addresses(httpx.URL("https://169.254.169.254/latest"))


@contextlib.contextmanager
def tls_receiver(tmp_path, name: str) -> Iterator[tuple[int, ssl.SSLContext, list, list]]:
    """An https receiver on 127.0.0.1 whose certificate names only ``name`` (from a CA of its own); it records
    the SNI name of each handshake and the Host header of each request, and answers 204."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test receivers CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False).sign(ca_key, hashes.SHA256()))
    chain, key_file = tmp_path / "receiver.pem", tmp_path / "receiver.key"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(chain, key_file)
    names, hosts = [], []
    server_context.sni_callback = lambda sock, server_name, context: names.append(server_name)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hosts.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    trust = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    try:
        yield server.server_address[1], trust, names, hosts
    finally:
        server.shutdown()
        server.server_close()


def test_a_vetted_name_is_sent_to_its_address_with_its_host_header_sni_and_certificate(tmp_path, monkeypatch):
    """The request goes to the address that was checked, yet TLS and HTTP still speak to the name: a certificate
    for the name alone verifies, SNI names it, and so does the Host header."""
    with tls_receiver(tmp_path, "localhost") as (port, trust, names, hosts):
        job, delivery_id = deliverer(tmp_path, f"https://localhost:{port}/hooks", monkeypatch, allow_loopback=True,
                                     verify=trust)
        job(delivery_id)
    row = job.deliveries.get(delivery_id)
    assert row["status"] == "delivered" and row["last_status_code"] == 204, row["last_error"]
    assert names == ["localhost"] and hosts == [f"localhost:{port}"]


def test_a_lookup_slower_than_the_delivery_timeout_is_a_failed_attempt_retried_like_a_connect_timeout(
        tmp_path, monkeypatch):
    """A slow resolver cannot hold a delivery worker beyond the delivery timeout.

    The resolver is the one thing stood in for: a slow DNS server is not cheap to run here, so ``socket.getaddrinfo``
    blocks (on an event the test sets afterwards) for the receiver's name only; every other lookup is the real one.
    The attempt fails, is recorded as pending with a ConnectTimeout like a connection that timed out, and is
    retried (DeliveryFailed); no connection was made, and the resolver was still answering when the job gave up.
    """
    real, release, asked, answered = socket.getaddrinfo, threading.Event(), threading.Event(), threading.Event()

    def slow_for_one_name(host, *args, **kwargs):
        if host == "slow-dns.example":
            asked.set()
            release.wait(30)
            answered.set()
            raise socket.gaierror(socket.EAI_AGAIN, "the test's resolver was released")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_for_one_name)
    job, delivery_id = deliverer(tmp_path, "https://slow-dns.example/hooks", monkeypatch)
    job.timeout = 0.2
    try:
        with pytest.raises(DeliveryFailed):
            job(delivery_id)
        still_resolving = asked.is_set() and not answered.is_set()  # the job returned while the lookup went on
    finally:
        release.set()
    assert still_resolving
    row = job.deliveries.get(delivery_id)
    assert row["status"] == "pending" and row["attempts"] == 1 and row["last_status_code"] is None
    assert row["last_error"] == "ConnectTimeout: slow-dns.example did not resolve within 0.2 s"


def test_wiring_the_service_does_not_import_the_http_client():
    import subprocess
    import sys

    code = "import infra.bootstrap, sys; print('httpx' in sys.modules)"  # a fresh interpreter: this one has httpx
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "False"
