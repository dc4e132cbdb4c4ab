"""infra/acme/http01.py and tlsalpn.py against real servers on loopback: redirects, sizes, status codes, names,
addresses, ALPN and the acmeIdentifier certificate."""

from __future__ import annotations

import http.server
import ssl
import threading

import pytest
from acme_support import free_port, one_handshake
from acme_tls import server_tls

from domain.acme_networks import parse_networks
from infra.acme.http01 import MAX_BODY, Http01, ValidationFailed
from infra.acme.tlsalpn import TlsAlpn01


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        token = self.path.rsplit("/", 1)[-1]
        if token == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = {"big": b"x" * (MAX_BODY + 10), "ok": f"ok {self.headers['Host']}".encode()}.get(token)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield port
    httpd.shutdown()
    httpd.server_close()


def fetcher(tmp_path, port: int, networks=("127.0.0.0/8",)) -> Http01:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 node.test\n169.254.169.254 meta.test\n# a comment\nnot-an-address bad.test\n")
    return Http01(port=port, networks=parse_networks(networks), hosts_file=hosts, timeout=2.0)


def test_the_name_is_the_host_header_and_the_checked_address_is_connected(tmp_path, server):
    address, body = fetcher(tmp_path, server).fetch("node.test", "ok")
    assert address == "127.0.0.1" and body == f"ok node.test:{server}".encode()


@pytest.mark.parametrize("token, kind, words", [
    ("redirect", "unauthorized", "redirects are not followed"),
    ("big", "unauthorized", "more than"),
    ("missing", "unauthorized", "answered 404"),
])
def test_redirects_large_bodies_and_errors_fail(tmp_path, server, token, kind, words):
    with pytest.raises(ValidationFailed) as failed:
        fetcher(tmp_path, server).fetch("node.test", token)
    assert failed.value.error_type == kind and words in failed.value.detail


def test_addresses_outside_the_networks_are_never_connected(tmp_path, server):
    with pytest.raises(ValidationFailed) as failed:
        fetcher(tmp_path, server, networks=("10.0.0.0/8",)).fetch("node.test", "ok")  # loopback not listed
    assert failed.value.error_type == "rejectedIdentifier"
    with pytest.raises(ValidationFailed) as failed:
        fetcher(tmp_path, server, networks=("0.0.0.0/0",)).fetch("meta.test", "ok")
    assert "link-local" in failed.value.detail


def test_a_name_that_does_not_resolve_and_a_closed_port(tmp_path, server):
    with pytest.raises(ValidationFailed) as failed:
        fetcher(tmp_path, server).fetch("no-such-name.invalid", "ok")
    assert failed.value.error_type == "dns"
    with pytest.raises(ValidationFailed) as failed:
        fetcher(tmp_path, free_port()).fetch("node.test", "ok")
    assert failed.value.error_type == "connection"


@pytest.mark.parametrize("alpn, words", [(None, "did not negotiate ALPN"), (["acme-tls/1"], "is not one")])
def test_tls_alpn_01_needs_the_protocol_and_the_certificate(tmp_path, alpn, words):
    """A TLS server that is no tls-alpn-01 responder: without acme-tls/1, or with an ordinary certificate."""
    _, cert, key = server_tls(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if alpn:
        context.set_alpn_protocols(alpn)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 node.test\n")
    with one_handshake(context) as port:
        checker = TlsAlpn01(port=port, networks=parse_networks(["127.0.0.0/8"]), hosts_file=hosts, timeout=2.0)
        with pytest.raises(ValidationFailed) as failed:
            checker.check("node.test", "token.thumbprint")
    assert failed.value.error_type == "unauthorized" and words in failed.value.detail, failed.value.detail
