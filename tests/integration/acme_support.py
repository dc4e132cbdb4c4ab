"""Shared fixtures for the ACME tests: the app over HTTPS (uvicorn's TLS) on a random port, a tenant with a CA
hierarchy and EAB keys, a hosts file pointing test names at 127.0.0.1, a small JWS-signing ACME client, and the
running and checking of real clients (certbot, lego) and openssl.

Imported by the test_acme_*.py modules; it holds no tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from api.app import create_app
from api.server import build_server
from domain import jose
from infra.config import Settings
from acme_tls import server_tls
from test_api_support import Api, _stopped

NAMES = ("node1.acme.test", "node2.acme.test", "node3.acme.test", "node4.acme.test", "evil.acme.test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AcmeWorld:
    api: Api
    admin: dict
    tenant: str
    tls_ca: Path
    http01_port: int
    root_pem: str = ""
    issuing: str = ""
    directory: str = ""

    async def eab_key(self, **body) -> dict:
        response = await self.api.client.post(f"/v1/tenants/{self.tenant}/acme/eab-keys", headers=self.admin,
                                              json={"ca_id": self.issuing, **body})
        assert response.status_code == 201, response.text
        return response.json()


@contextlib.asynccontextmanager
async def acme_world(tmp_path: Path, tenant: str = "acme-t", *, http01_port: int | None = None, reuse: bool = False,
                     **overrides):
    """The app over HTTPS with ACME validation into 127.0.0.0/8 on a random port, names from a hosts file.

    ``reuse``: the data directory holds the tenant and its CAs already (a restart)."""
    tls_ca, cert, key = server_tls(tmp_path)
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"127.0.0.1 {name}\n" for name in NAMES))
    port = http01_port or free_port()
    settings = Settings(data_dir=tmp_path / "data", port=0, checkpoint_interval=0.2, poll_interval=0.05,
                        max_body_bytes=1 << 20, read_your_writes_timeout=10.0, tls_cert_file=cert, tls_key_file=key,
                        acme_http01_port=port, acme_validation_networks=("127.0.0.0/8",), acme_hosts_file=hosts,
                        acme_validation_timeout=3.0, **overrides)
    app = create_app(settings)
    server = build_server(settings, app)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    base_url = f"https://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        verify = ssl.create_default_context(cafile=str(tls_ca))
        async with httpx.AsyncClient(base_url=base_url, timeout=60, verify=verify) as client:
            api = Api(app=app, client=client, base_url=base_url)
            world = AcmeWorld(api=api, admin=await api.admin(), tenant=tenant, tls_ca=tls_ca, http01_port=port)
            if not reuse:
                await _hierarchy(world)
            else:
                world.directory = f"{base_url}/acme/{tenant}/directory"
            yield world
    finally:
        server.should_exit = True
        await _stopped(task)


async def _hierarchy(world: AcmeWorld) -> None:
    api, headers, tenant = world.api, world.admin, world.tenant
    await api.create_tenant(headers, tenant)
    root = (await api.client.post("/v1/cas", headers=headers, json={
        "kind": "root", "tenant_id": tenant, "name": "Root", "algorithm": "ecdsa-p384",
        "subject": {"common_name": f"{tenant} root"}})).json()
    inter = (await api.client.post("/v1/cas", headers=headers, json={
        "kind": "intermediate", "tenant_id": tenant, "parent_id": root["ca_id"], "name": "Issuing",
        "algorithm": "ecdsa-p384", "subject": {"common_name": f"{tenant} issuing"}})).json()
    chain = await api.client.get(f"/v1/cas/{root['ca_id']}/chain", headers=headers,
                                 params={"min_position": inter["global_position"]})
    assert chain.status_code == 200, chain.text
    world.root_pem, world.issuing = chain.text, inter["ca_id"]
    world.directory = f"{api.base_url}/acme/{tenant}/directory"


def _b64(data: bytes) -> str:
    return jose.b64url_encode(data)


@dataclass
class Client:
    """A minimal ACME client over httpx: ES256 account key, flattened JWS, nonces from Replay-Nonce."""

    http: httpx.AsyncClient
    directory_url: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    kid: str | None = None
    nonce: str | None = None
    directory: dict = field(default_factory=dict)

    @property
    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x.to_bytes(32, "big")),
                "y": _b64(numbers.y.to_bytes(32, "big"))}

    def sign(self, protected: dict, payload: bytes | None) -> dict:
        head = _b64(json.dumps(protected).encode())
        body = "" if payload is None else _b64(payload)
        r, s = decode_dss_signature(self.key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
        return {"protected": head, "payload": body, "signature": _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}

    async def start(self) -> None:
        self.directory = (await self.http.get(self.directory_url)).json()
        self.nonce = (await self.http.head(self.directory["newNonce"])).headers["Replay-Nonce"]

    async def post(self, url: str, payload: dict | None, *, use_jwk: bool = False, nonce: str | None = None,
                   protected: dict | None = None) -> httpx.Response:
        header = {"alg": "ES256", "nonce": nonce or self.nonce, "url": url,
                  **({"jwk": self.jwk} if use_jwk or not self.kid else {"kid": self.kid}), **(protected or {})}
        body = self.sign(header, None if payload is None else json.dumps(payload).encode())
        response = await self.http.post(url, content=json.dumps(body),
                                        headers={"Content-Type": "application/jose+json"})
        self.nonce = response.headers.get("Replay-Nonce", self.nonce)
        return response

    def eab(self, key_id: str, hmac_key: str) -> dict:
        import hmac as hmac_module

        head = _b64(json.dumps({"alg": "HS256", "kid": key_id, "url": self.directory["newAccount"]}).encode())
        payload = _b64(json.dumps(self.jwk).encode())
        mac = hmac_module.new(jose.b64url_decode(hmac_key, "k"), f"{head}.{payload}".encode(), "sha256").digest()
        return {"protected": head, "payload": payload, "signature": _b64(mac)}

    async def register(self, key_id: str, hmac_key: str) -> httpx.Response:
        response = await self.post(self.directory["newAccount"], {
            "termsOfServiceAgreed": True, "externalAccountBinding": self.eab(key_id, hmac_key)}, use_jwk=True)
        if response.status_code in (200, 201):
            self.kid = response.headers["Location"]
        return response


async def run_tool(*argv: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    """Run an ACME client (certbot, lego) or openssl; it must succeed."""
    result = await asyncio.to_thread(subprocess.run, list(argv), env={**os.environ, **env}, capture_output=True,
                                     text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


async def verify_chain(world: AcmeWorld, tmp_path: Path, fullchain: Path, *names: str) -> x509.Certificate:
    """openssl verify against the tenant's root, with the chain's intermediates as untrusted; the leaf names
    exactly ``names`` (in the certificate's order)."""
    root = tmp_path / "root.pem"
    root.write_text(world.root_pem)
    pems = fullchain.read_text()
    leaf_pem = pems[:pems.index("-----END CERTIFICATE-----") + 25] + "\n"
    (tmp_path / "leaf.pem").write_text(leaf_pem)
    await run_tool(shutil.which("openssl") or "openssl", "verify", "-CAfile", str(root), "-untrusted",
                   str(fullchain), "-purpose", "sslserver", str(tmp_path / "leaf.pem"), env={})
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == list(names)
    return leaf


async def registered(world: AcmeWorld, **eab) -> Client:
    """A client of the tenant's directory, registered with a new EAB key (``eab``: the key's fields)."""
    client = Client(world.api.client, world.directory)
    await client.start()
    key = await world.eab_key(**eab)
    response = await client.register(key["key_id"], key["hmac_key"])
    assert response.status_code == 201, response.text
    return client


async def order_one(client: Client, name: str) -> tuple[str, str]:
    """A new order for ``name``: (its URL, its authorization's URL)."""
    created = await client.post(client.directory["newOrder"], {"identifiers": [{"type": "dns", "value": name}]})
    assert created.status_code == 201, created.text
    return created.headers["Location"], created.json()["authorizations"][0]


class Responder:
    """An http-01 responder on 127.0.0.1:port (what certbot --standalone runs): serves the key authorizations."""

    def __init__(self, port: int) -> None:
        import http.server
        import threading

        answers: dict[str, str] = {}
        self.answers, self.requests = answers, []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                requests.append((self.path, self.headers.get("Host")))
                token = self.path.rsplit("/", 1)[-1]
                body = answers.get(token, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def one_handshake(context: ssl.SSLContext):
    """A TLS server on 127.0.0.1 that takes one connection, makes the handshake and waits for a byte: yields its
    port (a tls-alpn-01 responder, or a server that is none)."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError, ssl.SSLError), context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


def http01(authz_response) -> dict:
    """The http-01 challenge of an authorization answer."""
    return next(c for c in authz_response.json()["challenges"] if c["type"] == "http-01")


async def poll(client: Client, url: str, done=("valid", "invalid"), seconds: float = 20) -> dict:
    """POST-as-GET ``url`` until its status is one of ``done``."""
    for _ in range(int(seconds / 0.1)):
        body = (await client.post(url, None)).json()
        if body.get("status") in done:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} stayed {body}")


async def started_challenge(client: Client, name: str) -> tuple[str, dict]:
    """A new order for ``name`` and its http-01 challenge started (``processing``): (the authorization's URL, the
    challenge)."""
    _, authz_url = await order_one(client, name)
    challenge = http01(await client.post(authz_url, None))
    started = await client.post(challenge["url"], {})
    assert started.json()["status"] == "processing", started.text
    return authz_url, challenge


@dataclass
class Restarted:
    """The server started again on a data directory (the same, or a restored one), and an account's client there."""

    world: AcmeWorld
    client: Client
    responder: Responder
    before: AcmeWorld

    def url(self, url: str) -> str:
        """``url`` of the server before, at the restarted server's address."""
        return url.replace(self.before.api.base_url, self.world.api.base_url)


@contextlib.asynccontextmanager
async def restarted(before: AcmeWorld, directory: Path, client: Client, challenge: dict):
    """The app started again in ``directory`` (an ``acme_world`` directory whose data holds the tenant already) on
    ``before``'s http-01 port, and a responder there answering ``challenge``: yields ``Restarted``, with ``client``'s
    account (its key and kid) on the new server."""
    responder = Responder(before.http01_port)
    try:
        responder.answers[challenge["token"]] = jose.key_authorization(challenge["token"], jose.thumbprint(client.jwk))
        async with acme_world(directory, http01_port=before.http01_port, reuse=True) as world:
            again = Client(world.api.client, world.directory, key=client.key,
                           kid=client.kid.replace(before.api.base_url, world.api.base_url))
            await again.start()
            yield Restarted(world=world, client=again, responder=responder, before=before)
    finally:
        responder.close()


def csr_der(*names: str, key=None) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER), key


async def validated_order(client: Client, responder: Responder, *names: str) -> dict:
    """A new order for ``names``, each challenge answered and validated: the ready order (with its URL)."""
    created = await client.post(client.directory["newOrder"], {"identifiers": [{"type": "dns", "value": n}
                                                                                 for n in names]})
    assert created.status_code == 201, created.text
    order, order_url = created.json(), created.headers["Location"]
    for authz_url in order["authorizations"]:
        challenge = http01(await client.post(authz_url, None))
        responder.answers[challenge["token"]] = jose.key_authorization(challenge["token"], jose.thumbprint(client.jwk))
        started = await client.post(challenge["url"], {})
        assert started.status_code == 200, started.text
        assert (await poll(client, authz_url))["status"] == "valid"
    return {**(await poll(client, order_url, done=("ready", "invalid"))), "url": order_url}
