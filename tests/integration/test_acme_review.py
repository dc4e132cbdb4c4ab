"""Security review of the ACME server, as an attacker would try it over HTTP: what a CSR may smuggle into a
certificate, JWS keys with private members, and an account of one tenant signing on another tenant's URLs."""

from __future__ import annotations

import ipaddress
import json

from acme_support import AcmeWorld, Client, Responder, _hierarchy, acme_world, registered, validated_order
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from test_acme_api import assert_acme_problem

from domain import jose


def _csr(key, subject: list[x509.NameAttribute], sans: list[x509.GeneralName], *extensions) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject)).add_extension(
        x509.SubjectAlternativeName(sans), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return jose.b64url_encode(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


async def test_a_csr_smuggles_neither_identity_attributes_nor_ca_powers_nor_other_names(tmp_path):
    """The ACME account proved control of DNS names only: the certificate names those and nothing else (no O, OU,
    C, emailAddress from the CSR), is no CA whatever the CSR asks, and a CSR with an IP, a weak key or the account's
    own key is badCSR."""
    async with acme_world(tmp_path) as world:
        responder = Responder(world.http01_port)
        try:
            client = await registered(world)
            order = await validated_order(client, responder, "node1.acme.test")
            key = ec.generate_private_key(ec.SECP256R1())
            dns = [x509.DNSName("node1.acme.test")]
            with_ip = _csr(key, [], [*dns, x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            assert_acme_problem(await client.post(order["finalize"], {"csr": with_ip}), 400, "badCSR", "csr")
            own = _csr(client.key, [], dns)  # the account key itself (RFC 8555 11.1: keep them apart)
            assert_acme_problem(await client.post(order["finalize"], {"csr": own}), 400, "badCSR", "csr")
            weak = _csr(rsa.generate_private_key(public_exponent=65537, key_size=1024), [], dns)
            assert_acme_problem(await client.post(order["finalize"], {"csr": weak}), 400, "badCSR")
            subject = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Some Bank Inc"),
                       x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Payments"),
                       x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ceo@bank.example"),
                       x509.NameAttribute(NameOID.COMMON_NAME, "node1.acme.test")]
            greedy = _csr(key, subject, dns, (x509.BasicConstraints(ca=True, path_length=None), True),
                          (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), True))
            done = await client.post(order["finalize"], {"csr": greedy})
            assert done.status_code == 200, done.text
            chain = await client.post(done.json()["certificate"], None)
            leaf = x509.load_pem_x509_certificates(chain.content)[0]
            assert [(a.oid, a.value) for a in leaf.subject] == [(NameOID.COMMON_NAME, "node1.acme.test")]
            assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
                x509.SubjectAlternativeName(dns)
            try:
                assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                pass
            usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
            assert not usage.key_cert_sign and not usage.crl_sign
        finally:
            responder.close()


async def test_private_jwks_and_accounts_of_another_tenant_are_refused(tmp_path):
    async with acme_world(tmp_path) as world:
        client = await registered(world)
        numbers = client.key.private_numbers()
        private = {**client.jwk, "d": jose.b64url_encode(numbers.private_value.to_bytes(32, "big"))}
        stranger = Client(world.api.client, world.directory)
        await stranger.start()
        stranger.key = client.key
        response = await stranger.post(stranger.directory["newAccount"], {}, use_jwk=True,
                                       protected={"jwk": private})
        assert_acme_problem(response, 400, "badPublicKey", "jwk")

        other = AcmeWorld(api=world.api, admin=world.admin, tenant="acme-u", tls_ca=world.tls_ca,
                          http01_port=world.http01_port)
        await _hierarchy(other)
        there = Client(world.api.client, other.directory, key=client.key)
        await there.start()
        # tenant A's account URL as kid on tenant B's URLs, and tenant B's URL form for the same account id
        there.kid = client.kid
        assert_acme_problem(await there.post(there.directory["newOrder"], {"identifiers": []}), 400,
                            "accountDoesNotExist", "protected.kid")
        there.kid = client.kid.replace(f"/acme/{world.tenant}/", "/acme/acme-u/")
        assert_acme_problem(await there.post(there.directory["newOrder"], {"identifiers": []}), 400,
                            "accountDoesNotExist", "protected.kid")
        # tenant A's URL signed, sent to tenant B's endpoint
        assert_acme_problem(await client.post(client.directory["newOrder"], {}, protected={
            "url": there.directory["newOrder"]}), 403, "unauthorized", "protected.url")


def _respelled(jwk: dict) -> dict:
    """The same EC key with ``x``'s two unused trailing bits set: another spelling, formerly another thumbprint."""
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(jwk["x"][-1])
    return {**jwk, "x": jwk["x"][:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 3]}


async def test_one_key_never_signs_for_two_accounts_whatever_its_spelling(tmp_path):
    """A key change onto another account's key, its JWK re-spelled, is refused: a key has one thumbprint."""
    async with acme_world(tmp_path) as world:
        first, second = await registered(world), await registered(world)
        url = second.directory["keyChange"]
        spelled = _respelled(first.jwk)
        payload = {"account": second.kid, "oldKey": second.jwk}
        inner = first.sign({"alg": "ES256", "jwk": spelled, "url": url}, json.dumps(payload).encode())
        refused = await second.post(url, inner)
        assert_acme_problem(refused, 400, "malformed", "payload.jwk.x")
        assert (await second.post(second.kid, None)).json()["key"] == second.jwk
        again = await first.post(first.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True,
                                 protected={"jwk": spelled})
        assert_acme_problem(again, 400, "malformed", "jwk.x")
