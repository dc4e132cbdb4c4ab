"""A root's key rollover issues link certificates (RFC 4210 4.4), served with the chains handed to nodes.

A truststore exported before the rollover holds only the old root: with NewWithOld in a new node's chain it
accepts that node (`openssl verify`, and cryptography's own path builder as a second opinion), and without it
it does not. The reverse: a node keyed before the rollover, whose chain now carries OldWithNew, is accepted by a
relying party that holds only the new root.
"""

from __future__ import annotations

import datetime
import json

import msgspec
import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from test_api_ca_lifecycle import (assert_does_not_verify, assert_verifies, ca_pem, certificates, chain, create_ca,
                                   issue_leaf, leaf_with_chain, load, needs_openssl, ok, openssl_verify)
from test_api_revocation import ask, ocsp_request
from test_api_support import pki_api  # noqa: F401

from domain.ca import CaKeyRolledOver
from domain.events import decode_payload

try:
    from cryptography.x509 import verification
except ImportError:  # older cryptography: openssl's answer alone
    verification = None

STORE_PASSWORD = "changeit-changeit"


def ski(certificate: x509.Certificate) -> bytes:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def aki(certificate: x509.Certificate) -> bytes | None:
    return certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def assert_links(link: x509.Certificate, *, certified: x509.Certificate, signer: x509.Certificate,
                 old: x509.Certificate) -> None:
    """``link`` certifies ``certified``'s key for the root's own subject, signed by ``signer``'s key, as a CA
    certificate with the root's constraints, and does not outlive the old root certificate."""
    assert link.subject == link.issuer == old.subject
    assert spki(link) == spki(certified) and ski(link) == ski(certified) and aki(link) == ski(signer)
    link.verify_directly_issued_by(signer)
    constraints = link.extensions.get_extension_for_class(x509.BasicConstraints)
    root_constraints = old.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.critical and constraints.value.ca
    assert constraints.value.path_length == root_constraints.path_length
    usage = link.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert old.not_valid_before_utc <= link.not_valid_before_utc
    assert link.not_valid_after_utc <= old.not_valid_after_utc


async def truststore(api, headers, issued: dict) -> list[str]:
    """The PKCS#12 truststore a node of ``issued`` gets, as PEM certificates."""
    response = await ok(await api.client.get(f"/v1/certificates/{issued['certificate_id']}/export",
                                             headers={**headers, "X-Export-Password": STORE_PASSWORD},
                                             params={"format": "pkcs12-truststore",
                                                     "min_position": issued["global_position"]}))
    bundle = pkcs12.load_pkcs12(response.content, STORE_PASSWORD.encode())
    return [c.certificate.public_bytes(serialization.Encoding.PEM).decode() for c in bundle.additional_certs]


async def keystore_chain(api, headers, issued: dict) -> list[str]:
    """The chain in the node's PKCS#12 keystore (what it presents), after its own certificate."""
    response = await ok(await api.client.get(f"/v1/certificates/{issued['certificate_id']}/export",
                                             headers={**headers, "X-Export-Password": STORE_PASSWORD},
                                             params={"format": "pkcs12"}))
    bundle = pkcs12.load_pkcs12(response.content, STORE_PASSWORD.encode())
    return [c.certificate.public_bytes(serialization.Encoding.PEM).decode() for c in bundle.additional_certs]


def second_opinion(leaf: str, anchors: list[str], untrusted: list[str], host: str) -> list[x509.Certificate]:
    """cryptography's own RFC 5280 path building: the chain it validated, leaf first."""
    now = datetime.datetime.now(datetime.UTC)
    store = verification.Store([load(pem) for pem in anchors])
    verifier = verification.PolicyBuilder().store(store).time(now).build_server_verifier(x509.DNSName(host))
    return verifier.verify(load(leaf), [load(pem) for pem in untrusted])


@needs_openssl
@pytest.mark.parametrize("path_length", [1, 2])
async def test_a_root_rollover_links_old_and_new_keys_for_truststores_that_hold_only_one(pki_api, tmp_path,
                                                                                         path_length):
    """``path_length`` 1 leaves no room for one more CA below the root: RFC 5280 (6.1.4 (l)) does not count a
    self-issued certificate such as a link, and OpenSSL follows it; cryptography 50's verifier counts it, so it
    gives its second opinion on the root with room for one more (2) only."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root", path_length=path_length)
    before = await create_ca(api, admin, name="Acme Issuing 1", parent_id=root)
    l1 = await issue_leaf(api, admin, before, "old.acme.internal")
    old_store = await truststore(api, admin, l1)  # exported before the rollover: the old root, no other key
    old_root = await ca_pem(api, admin, root)
    assert old_root in old_store

    rolled = (await ok(await api.client.post(f"/v1/cas/{root}/rollover", headers=admin,
                                             json={"reason": "root key update"}))).json()
    read = (await ok(await api.client.get(f"/v1/cas/{root}", headers=admin,
                                          params={"min_position": rolled["global_position"]}))).json()
    links = {c["role"]: c["certificate_pem"] for c in read["link_certificates"]}
    assert sorted(links) == ["new_with_old", "old_with_new"]
    new_root = (await chain(api, admin, root))[-1]
    assert new_root != old_root
    old, new = load(old_root), load(new_root)
    new_with_old, old_with_new = load(links["new_with_old"]), load(links["old_with_new"])
    assert_links(new_with_old, certified=new, signer=old, old=old)
    assert_links(old_with_new, certified=old, signer=new, old=old)

    after = await create_ca(api, admin, name="Acme Issuing 2", parent_id=root)
    intermediate = (await ok(await api.client.get(f"/v1/cas/{after}", headers=admin))).json()
    assert intermediate["link_certificates"] == []  # only a root has them
    l2 = await issue_leaf(api, admin, after, "new.acme.internal")

    # The new key's node: its chain carries NewWithOld before the new root, so the old truststore accepts it.
    chain2 = await leaf_with_chain(api, admin, l2)
    assert chain2[2:] == [links["new_with_old"], new_root]
    assert_verifies(tmp_path, "new-node-old-store", chain2[0], "".join(old_store), chain2[1:])
    assert_does_not_verify(tmp_path, "new-node-old-store-unlinked", chain2[0], "".join(old_store),
                           [chain2[1], new_root])
    assert_verifies(tmp_path, "new-node-new-root", chain2[0], new_root, chain2[1:])  # and the new root as before
    assert (await keystore_chain(api, admin, l2))[1:] == [links["new_with_old"], new_root]
    assert await chain(api, admin, after) == [chain2[1], links["new_with_old"], new_root]
    assert await chain(api, admin, after, include_root="false") == [chain2[1], links["new_with_old"]]

    # A node keyed before the rollover, re-exported: OldWithNew lets a party holding only the new root accept it.
    chain1 = await leaf_with_chain(api, admin, l1)
    assert chain1[2:] == [links["old_with_new"], old_root]
    assert_verifies(tmp_path, "old-node-new-root", chain1[0], new_root, chain1[1:])
    assert_does_not_verify(tmp_path, "old-node-new-root-unlinked", chain1[0], new_root, [chain1[1], old_root])
    assert_verifies(tmp_path, "old-node-old-store", chain1[0], "".join(old_store), chain1[1:])

    # Truststores hold roots, not links: both root certificates, as before.
    assert links["new_with_old"] not in await truststore(api, admin, l2)

    if verification is None:
        pytest.skip("cryptography.x509.verification is not available: openssl's answer stands alone")
    if path_length < 2:
        return  # cryptography counts the self-issued link against the old root's path length (see above)
    path = second_opinion(chain2[0], [old_root], chain2[1:], "new.acme.internal")
    assert path[2:] == [new_with_old, old]
    with pytest.raises(verification.VerificationError):
        second_opinion(chain2[0], [old_root], [chain2[1], new_root], "new.acme.internal")
    path = second_opinion(chain1[0], [new_root], chain1[1:], "old.acme.internal")
    assert path[-2:] == [old_with_new, new]


@pytest.mark.parametrize("algorithm", ["hybrid-p384-ml-dsa-65", "ml-dsa-65"])
async def test_a_root_rollover_records_its_link_certificates_and_old_events_still_decode(pki_api, algorithm):
    """The link certificates are in the rollover's event (schema 2, now 3; certificates and key references, never a
    key), for post-quantum and hybrid roots too (a hybrid link's alternative signature is checked as it is signed);
    a schema 1 ``ca.key_rolled_over`` (before link certificates) still decodes, upcast to none, and a schema 2 one
    (before compromise rollovers) as routine."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root", algorithm=algorithm)
    old_root = load(await ca_pem(api, admin, root))
    rolled = (await ok(await api.client.post(f"/v1/cas/{root}/rollover", headers=admin,
                                             json={"reason": "root key update"}))).json()
    last = (await api.runtime.services.store.read_stream("acme", f"ca-{root}"))[-1]
    assert (last.type, last.schema_version, last.version) == ("ca.key_rolled_over", 3, rolled["version"])
    assert last.payload["compromised"] is False
    assert "PRIVATE KEY" not in json.dumps(last.payload)
    current = decode_payload(last)
    assert isinstance(current, CaKeyRolledOver) and current.new_with_old and current.old_with_new
    assert current.new_with_old.key_ref == current.certificate.key_ref  # the key it certifies, by reference
    assert current.new_with_old.facts.algorithm == current.old_with_new.facts.algorithm == algorithm
    new_root = load(current.certificate.certificate_pem)
    load(current.new_with_old.certificate_pem).verify_directly_issued_by(old_root)
    load(current.old_with_new.certificate_pem).verify_directly_issued_by(new_root)
    assert len(certificates(current.old_with_new.certificate_pem)) == 1

    v2 = {k: v for k, v in last.payload.items() if k != "compromised"}
    assert decode_payload(msgspec.structs.replace(last, schema_version=2, payload=v2)) == current
    v1 = {k: v for k, v in v2.items() if k not in ("new_with_old", "old_with_new")}
    old = decode_payload(msgspec.structs.replace(last, schema_version=1, payload=v1))
    assert isinstance(old, CaKeyRolledOver) and (old.new_with_old, old.old_with_new) == (None, None)
    assert old.certificate == current.certificate and old.compromised is False


async def test_the_roots_ocsp_responder_answers_good_for_its_link_certificates(pki_api):
    """Each link certificate names its signing key's OCSP responder (the root's): that responder knows it as a
    certificate the key signed and answers good, as for an intermediate's certificate, not unknown (which an
    OCSP-checking client such as Java's PKIX with revocation enabled refuses)."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root", path_length=2)
    old = load(await ca_pem(api, admin, root))
    rolled = (await ok(await api.client.post(f"/v1/cas/{root}/rollover", headers=admin,
                                             json={"reason": "root key update"}))).json()
    read = (await ok(await api.client.get(f"/v1/cas/{root}", headers=admin,
                                          params={"min_position": rolled["global_position"]}))).json()
    links = {c["role"]: load(c["certificate_pem"]) for c in read["link_certificates"]}
    new = load((await chain(api, admin, root))[-1])
    for role, signer in (("new_with_old", old), ("old_with_new", new)):
        link = links[role]
        urls = link.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert any(d.access_location.value.endswith(f"/ocsp/{root}") for d in urls
                   if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP), role
        answer = await ask(api, root, ocsp_request(link, signer))
        assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, role
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD, role


@needs_openssl
async def test_after_two_root_rollovers_each_generations_leaf_verifies_against_the_roots_before_it(pki_api, tmp_path):
    """Three keys of one root (two rollovers), a leaf under each: with its chain as served, `openssl verify` accepts
    it against each root certificate alone, older or newer, but one: the middle key's leaf against the newest root
    alone. Its chain carries two links of the middle key, and the one the first key signed comes first (for
    truststores exported before the first rollover); OpenSSL does not backtrack to the other. A truststore exported
    after a rollover holds every generation, and no link."""
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await create_ca(api, admin, name="Acme Root", path_length=2)
    roots, leaves = [], []
    for generation in range(3):
        if generation:
            rolled = (await ok(await api.client.post(f"/v1/cas/{root}/rollover", headers=admin,
                                                     json={"reason": f"root key update {generation}"}))).json()
            await ok(await api.client.get(f"/v1/cas/{root}", headers=admin,
                                          params={"min_position": rolled["global_position"]}))
        issuing = await create_ca(api, admin, name=f"Acme Issuing {generation}", parent_id=root)
        leaves.append(await issue_leaf(api, admin, issuing, f"g{generation}.acme.internal"))
        roots.append((await chain(api, admin, issuing))[-1])
    assert len(set(roots)) == 3 and all(load(r).subject == load(r).issuer for r in roots)
    read = (await ok(await api.client.get(f"/v1/cas/{root}", headers=admin))).json()
    assert len(read["link_certificates"]) == 4
    refused = []
    for generation, issued in enumerate(leaves):
        served = await leaf_with_chain(api, admin, issued)
        for anchor_generation, anchor in enumerate(roots):
            run = openssl_verify(tmp_path, f"leaf{generation}-root{anchor_generation}", served[0], anchor, served[1:])
            if run.returncode != 0:
                refused.append((generation, anchor_generation))
        store = await truststore(api, admin, issued)
        assert set(roots) <= set(store) and not {c["certificate_pem"] for c in read["link_certificates"]} & set(store)
    assert refused == [(1, 2)]
