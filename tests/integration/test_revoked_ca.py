"""What relying parties and operators learn about a revoked CA and everything below it, checked with openssl.

A revoked CA certifies nothing more, yet its own OCSP and CRL URLs must keep answering: its
responder and a CRL are made as it is revoked (even if nobody had asked it anything before),
its last responder signs until it runs out and then the CA's own key does, and its CRL stays
current. A CA below it reads as revoked by it.
"""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from test_api_revocation import (END, OPENSSL, ask, ca, chain_files, crl_of, leaf, needs_openssl, ocsp_request,
                                 pem_certs, revoke, run, setup, three_levels)
from test_api_support import pki_api  # noqa: F401
from test_crl_schedule import Clock, caught_up

from commands import ocsp as responder, revoke as revoking
from domain import ca as ca_domain


async def revoke_ca(api, headers, ca_id, reason="key_compromise") -> dict:
    response = await api.client.post(f"/v1/cas/{ca_id}/revoke", headers=headers, json={"reason": reason})
    assert response.status_code == 200, response.text
    return response.json()


async def stream_types(api, ca_id) -> list[str]:
    return [envelope.type for envelope in await api.runtime.store.read_stream("acme", f"ca-{ca_id}")]


def delegated(answer: ocsp.OCSPResponse) -> bool:
    """Signed by a delegated responder (EKU OCSPSigning), not by the CA itself."""
    try:
        usages = answer.certificates[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:  # a CA certificate
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in usages


async def openssl_ocsp(api, ca_id, tmp_path, name, *extra) -> str:
    done = await run(OPENSSL, "ocsp", "-issuer", tmp_path / "issuer.pem", "-cert", tmp_path / name,
                     "-url", f"{api.base_url}/ocsp/{ca_id}", "-CAfile", tmp_path / "root.pem",
                     "-verify_other", tmp_path / "chain.pem", "-resp_text", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Response verify OK" in done.stdout + done.stderr, done.stdout + done.stderr
    return done.stdout


@needs_openssl
async def test_a_ca_revoked_before_anyone_asked_it_answers_revoked_by_ocsp_and_serves_its_crl(pki_api, tmp_path):
    api = pki_api
    admin, root, inter, sub = await three_levels(api)
    idle = await leaf(api, admin, inter, "idle.acme.internal")
    later = await leaf(api, admin, inter, "later.acme.internal")
    chain = await chain_files(api, admin, inter, tmp_path)
    (tmp_path / "root.pem").write_text(chain.split(END)[1] + END)
    (tmp_path / "leaf.pem").write_text(idle["certificate_pem"])
    (tmp_path / "later.pem").write_text(later["certificate_pem"])
    sub_chain = (await api.client.get(f"/v1/cas/{sub}/chain", headers=admin)).text
    (tmp_path / "sub.pem").write_text(sub_chain.split(END)[0] + END)
    assert "ca.ocsp_signer_issued" not in await stream_types(api, inter)  # nobody has asked its OCSP yet

    await revoke_ca(api, admin, inter)
    types = await stream_types(api, inter)
    # made while the CA could still certify its responder, before the revocation is final
    assert types.index("ca.ocsp_signer_issued") < types.index("ca.revoked")
    assert types.index("ca.crl_published") < types.index("ca.revoked")
    for name in ("leaf.pem", "sub.pem"):  # a leaf, and a sub-CA's certificate, below the revoked CA
        out = await openssl_ocsp(api, inter, tmp_path, name)
        assert f"{name}: revoked" in out and "Reason: cACompromise" in out, out
    issuer = pem_certs(chain)[0]
    answer = await ask(api, inter, ocsp_request(x509.load_pem_x509_certificate(idle["certificate_pem"].encode()),
                                                issuer, nonce=b"n" * 16))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED and delegated(answer)

    await crl_of(api, inter, tmp_path)  # served, not a 404: made as it was revoked
    shown = await run(OPENSSL, "crl", "-in", tmp_path / "crl.pem", "-CAfile", tmp_path / "chain.pem", "-noout")
    assert shown.returncode == 0 and "verify OK" in shown.stdout + shown.stderr, shown.stdout + shown.stderr
    (tmp_path / "root.crl").write_text((await api.client.get(f"/v1/cas/{root}/crl", params={"format": "pem"})).text)
    whole = await run(OPENSSL, "verify", "-crl_check_all", "-CRLfile", tmp_path / "crl.pem", "-CRLfile",
                      tmp_path / "root.crl", "-CAfile", tmp_path / "root.pem", "-untrusted", tmp_path / "issuer.pem",
                      tmp_path / "leaf.pem")
    assert whole.returncode != 0 and "certificate revoked" in whole.stdout + whole.stderr, whole.stdout + whole.stderr

    # a revocation recorded after the CA's own still reaches its CRL: a revoked CA keeps its CRL current
    await revoke(api, admin, later["certificate_id"], reason="key_compromise")
    await crl_of(api, inter, tmp_path)
    own = await run(OPENSSL, "verify", "-crl_check", "-CRLfile", tmp_path / "crl.pem", "-CAfile",
                    tmp_path / "root.pem", "-untrusted", tmp_path / "issuer.pem", tmp_path / "later.pem")
    assert own.returncode != 0 and "certificate revoked" in own.stdout + own.stderr, own.stdout + own.stderr


@needs_openssl
async def test_when_its_last_responder_runs_out_a_revoked_ca_signs_its_answers_itself_and_its_crl_stays_current(
        pki_api, tmp_path):
    api = pki_api
    admin, _root, inter = await setup(api)
    row = await leaf(api, admin, inter, "node.acme.internal")
    chain = await chain_files(api, admin, inter, tmp_path)
    (tmp_path / "root.pem").write_text(chain.split(END)[1] + END)
    (tmp_path / "leaf.pem").write_text(row["certificate_pem"])
    issuer = pem_certs(chain)[0]
    question = ocsp_request(x509.load_pem_x509_certificate(row["certificate_pem"].encode()), issuer)
    await revoke_ca(api, admin, inter, reason="superseded")
    clock = api.runtime.services.clock = Clock()
    first = await ask(api, inter, question)
    assert first.certificate_status == ocsp.OCSPCertStatus.REVOKED and delegated(first)
    last_responder = first.certificates[0]

    clock.moment = last_responder.not_valid_after_utc - timedelta(days=9)  # due, but a revoked CA certifies none
    await caught_up(api)
    published = await api.runtime.revocation_scheduler().run_once()
    assert inter in {p.ca_id for p in published}  # its week-long CRL was due: republished, revoked or not
    assert (await ask(api, inter, question)).certificates[0] == last_responder
    assert "ca.ocsp_signer_issued" not in (await stream_types(api, inter))[-3:]

    clock.moment = last_responder.not_valid_after_utc - timedelta(minutes=30)  # it would not outlive an answer
    answer = await ask(api, inter, ocsp_request(x509.load_pem_x509_certificate(row["certificate_pem"].encode()),
                                                issuer, nonce=b"m" * 16))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.superseded
    assert answer.certificates == [issuer] and answer.this_update_utc == clock.moment.replace(microsecond=0)
    issuer.public_key().verify(answer.signature, answer.tbs_response_bytes,
                               ec.ECDSA(answer.signature_hash_algorithm))
    # openssl checks the answer's times against the real clock: allow the 30 days the test clock is ahead
    out = await openssl_ocsp(api, inter, tmp_path, "leaf.pem", "-validity_period", str(40 * 86400))
    assert "leaf.pem: revoked" in out and "Reason: superseded" in out, out

    listed = await crl_of(api, inter)
    assert listed.next_update_utc > clock.moment and listed.is_signature_valid(issuer.public_key())


async def test_a_ca_revocation_retried_after_a_crash_completes_once_and_one_without_responder_or_crl_still_answers(
        pki_api, monkeypatch):
    api = pki_api
    admin = await api.admin()
    await api.create_tenant(admin, "acme")
    root = await ca(api, admin, "root", "Root")
    crashed = await ca(api, admin, "intermediate", "Crashed", parent=root)
    bare = await ca(api, admin, "intermediate", "Bare", parent=root)
    legacy = await ca(api, admin, "intermediate", "Legacy", parent=root)
    rows = {ca_id: await leaf(api, admin, ca_id, f"{name}.acme.internal")
            for ca_id, name in ((crashed, "c"), (bare, "b"), (legacy, "l"))}
    record = revoking.run

    async def crash_before_the_ca_records_it(services, ctx, cmd, **kwargs):
        if kwargs["fold"] is ca_domain.fold:  # the last step: ``ca.revoked`` on the CA's own stream
            raise RuntimeError("crashed")
        return await record(services, ctx, cmd, **kwargs)

    monkeypatch.setattr(revoking, "run", crash_before_the_ca_records_it)
    headers = {**admin, "Idempotency-Key": "revoke-crashed"}
    failed = await api.client.post(f"/v1/cas/{crashed}/revoke", headers=headers, json={"reason": "key_compromise"})
    assert failed.status_code == 500
    monkeypatch.setattr(revoking, "run", record)
    retried = await api.client.post(f"/v1/cas/{crashed}/revoke", headers=headers, json={"reason": "key_compromise"})
    assert retried.status_code == 200, retried.text
    assert (await stream_types(api, crashed))[1:] == ["ca.ocsp_signer_issued", "ca.crl_published", "ca.revoked"]
    assert (await stream_types(api, root)).count("ca.certificate_revoked") == 1

    async def no_responder(*_args, **_kwargs):
        raise RuntimeError("the vault is away")

    monkeypatch.setattr(responder, "_issue_signer", no_responder)
    await revoke_ca(api, admin, bare)  # the revocation does not wait on what relying parties are answered with
    monkeypatch.undo()
    assert "ca.ocsp_signer_issued" not in await stream_types(api, bare)

    async def as_before(*_args) -> None:  # revoked as releases before this one did: no responder, no CRL
        return None

    monkeypatch.setattr(revoking, "_keep_answering", as_before)
    await revoke_ca(api, admin, legacy)
    monkeypatch.undo()
    assert (await stream_types(api, legacy))[1:] == ["ca.revoked"]
    for ca_id in (crashed, bare, legacy):
        issuer = pem_certs((await api.client.get(f"/v1/cas/{ca_id}/chain", headers=admin)).text)[0]
        certificate = x509.load_pem_x509_certificate(rows[ca_id]["certificate_pem"].encode())
        answer = await ask(api, ca_id, ocsp_request(certificate, issuer))
        assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert answer.revocation_reason == x509.ReasonFlags.ca_compromise
        assert delegated(answer) == (ca_id == crashed)  # without a responder the CA's own key signs
        assert (await crl_of(api, ca_id)).is_signature_valid(issuer.public_key())


async def test_a_ca_below_a_revoked_ca_reads_as_revoked_by_it(pki_api):
    api = pki_api
    admin, root, inter, sub = await three_levels(api)
    revoked = await revoke_ca(api, admin, inter, reason="superseded")
    position = {"min_position": revoked["global_position"]}

    async def read(ca_id: str) -> tuple:
        row = (await api.client.get(f"/v1/cas/{ca_id}", headers=admin, params=position)).json()
        return row["status"], row["revocation_reason"], row["revoked_ca_id"], row["revoked_at"]

    assert await read(root) == ("active", None, None, None)
    assert await read(inter) == ("revoked", "superseded", None, revoked["revoked_at"])
    assert await read(sub) == ("revoked", "ca_revoked", inter, revoked["revoked_at"])
    for status, expected in (("active", {root}), ("revoked", {inter, sub})):
        listed = (await api.client.get("/v1/cas", headers=admin, params={"status": status})).json()["items"]
        assert {item["ca_id"] for item in listed} == expected, status
    # its own stream still says active: disabling it is recorded, and it still reads as revoked
    disabled = await api.client.post(f"/v1/cas/{sub}/disable", headers=admin, json={"reason": "tidy up"})
    assert disabled.status_code == 200, disabled.text
    position = {"min_position": disabled.json()["global_position"]}
    assert await read(sub) == ("revoked", "ca_revoked", inter, revoked["revoked_at"])
