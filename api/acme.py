"""/acme/{tenant_id}/…: the RFC 8555 ACME server of one tenant (directory, nonces, accounts, orders, challenges).

Outside /v1: ACME clients authenticate every POST with a JWS signed by their account key, not a bearer token;
accounts need an external account binding (an EAB key from ``POST /v1/tenants/{id}/acme/eab-keys``).
Identifiers: DNS names and IP addresses (RFC 8738). Challenges: http-01, tls-alpn-01, and dns-01 when resolvers are
configured (the only one a wildcard gets; never an address's);
pre-authorization is not offered (docs/operations.md, "ACME").
"""

from __future__ import annotations

from litestar import Request, Response, Router, get, head, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath

from api.acme_support import (ACME_ERRORS, CREATED, PEM_CHAIN, account_json, acme_error, authz_json, challenge_json,
                              nonce_headers, order_json, payload_of, reply, url_of, verified)
from api.deps import read_models_of, runtime_of
from commands import acme as cmd
from commands import acme_accounts as accounts
from commands.runtime import load
from domain import acme_account, jose
from domain.acme_problems import AcmeProblem
from domain.errors import DomainError
from projections import acme as acme_model
from projections import cas as ca_model


def _services(request: Request):
    return runtime_of(request.app.state).services


@get("/directory", summary="ACME directory (RFC 8555 7.1.1)", responses=ACME_ERRORS)
async def directory(request: Request, tenant_id: FromPath[str]) -> Response:
    await cmd.require_tenant(_services(request), tenant_id)
    return await reply(request, tenant_id, {
        "newNonce": url_of(request, tenant_id, "new-nonce"), "newAccount": url_of(request, tenant_id, "new-account"),
        "newOrder": url_of(request, tenant_id, "new-order"), "revokeCert": url_of(request, tenant_id, "revoke-cert"),
        "keyChange": url_of(request, tenant_id, "key-change"),
        "meta": {"externalAccountRequired": True}})


@head("/new-nonce", summary="A fresh nonce in Replay-Nonce", responses=ACME_ERRORS)
async def nonce_head(request: Request, tenant_id: FromPath[str]) -> Response[None]:
    await cmd.require_tenant(_services(request), tenant_id)
    return Response(content=None, status_code=200, headers=await nonce_headers(request, tenant_id))


@get("/new-nonce", summary="A fresh nonce in Replay-Nonce", status_code=204, responses=ACME_ERRORS)
async def nonce_get(request: Request, tenant_id: FromPath[str]) -> Response[None]:
    await cmd.require_tenant(_services(request), tenant_id)
    return Response(content=None, status_code=204, headers=await nonce_headers(request, tenant_id))


@post("/new-account", summary="Create (with EAB) or find the account of the signing key", status_code=200,
      responses={**ACME_ERRORS, **CREATED})
async def new_account(request: Request, tenant_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id, by="jwk")
    payload = payload_of(signed)
    contact = payload.get("contact", [])
    if not isinstance(contact, list) or not all(isinstance(c, str) and c.startswith("mailto:") and len(c) < 256
                                                for c in contact) or len(contact) > 4:
        raise AcmeProblem("invalidContact", "contact is a list of at most 4 mailto: URLs", field="contact")
    services = _services(request)
    account = await accounts.new_account(accounts.NewAccount(
        tenant_id=tenant_id, jwk=signed.jws.jwk, contact=contact, eab=payload.get("externalAccountBinding"),
        url=signed.jws.url, only_return_existing=payload.get("onlyReturnExisting") is True),
        signed.context, services)
    state = await cmd.load_account(services, tenant_id, account.id)
    return await reply(request, tenant_id, account_json(request, tenant_id, state),
                        201 if account.created else 200, location=url_of(request, tenant_id, "acct", account.id))


@post("/acct/{account_id:str}", summary="Read or deactivate the signing account",
      status_code=200, responses=ACME_ERRORS)
async def account(request: Request, tenant_id: FromPath[str], account_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id)
    if signed.account_id != account_id:
        raise AcmeProblem("unauthorized", "an account reads and changes only itself", field="account_id",
                          status=403)
    services = _services(request)
    if not signed.jws.post_as_get:
        payload = signed.jws.payload_json()
        if payload.get("status") == "deactivated":
            await accounts.deactivate_account(accounts.DeactivateAccount(tenant_id=tenant_id, account_id=account_id),
                                         signed.context, services)
            state = await load(services, tenant_id, acme_account.account_stream_id(account_id),
                               acme_account.fold_account)
            return await reply(request, tenant_id, account_json(request, tenant_id, state))
        if set(payload) - {"contact", "termsOfServiceAgreed"}:
            raise AcmeProblem("malformed", "only status: deactivated changes an account here", field="payload")
    state = await cmd.load_account(services, tenant_id, account_id)
    return await reply(request, tenant_id, account_json(request, tenant_id, state))


@post("/key-change", summary="Replace the signing account's key (RFC 8555 7.3.5: a JWS by the new key inside)",
      status_code=200, responses=ACME_ERRORS)
async def key_change(request: Request, tenant_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id)
    payload_of(signed)  # not POST-as-GET
    change = jose.parse_key_change(signed.jws.payload, url=signed.jws.url, kid=signed.jws.kid)
    services = _services(request)
    await accounts.change_key(accounts.ChangeAccountKey(tenant_id=tenant_id, account_id=signed.account_id, key_change=change),
                         signed.context, services)
    state = await cmd.load_account(services, tenant_id, signed.account_id)
    return await reply(request, tenant_id, account_json(request, tenant_id, state),
                       location=url_of(request, tenant_id, "acct", signed.account_id))


@post("/acct/{account_id:str}/orders", summary="The account's orders (POST-as-GET), newest first",
      status_code=200, responses=ACME_ERRORS)
async def account_orders(request: Request, tenant_id: FromPath[str], account_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id)
    if signed.account_id != account_id:
        raise AcmeProblem("unauthorized", "an account lists only its own orders", field="account_id",
                          status=403)
    runtime = runtime_of(request.app.state)
    await runtime.runner.wait_for(await runtime.store.head_position(), runtime.settings.read_your_writes_timeout)
    ids = await read_models_of(request.app.state).query(acme_model.orders_of, tenant_id, account_id)
    return await reply(request, tenant_id, {"orders": [url_of(request, tenant_id, "order", i) for i in ids]})


@post("/new-order", summary="Order a certificate for DNS names and IP addresses (RFC 8738)", status_code=201,
      responses=ACME_ERRORS)
async def new_order(request: Request, tenant_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id)
    payload = payload_of(signed)
    services = _services(request)
    order_id = await cmd.new_order(cmd.NewOrder(tenant_id=tenant_id, account_id=signed.account_id,
                                                identifiers=payload.get("identifiers"),
                                                not_before=payload.get("notBefore"), not_after=payload.get("notAfter")),
                                   signed.context, services)
    order = await cmd.owned_order(services, tenant_id, signed.account_id, order_id)
    return await reply(request, tenant_id, await order_json(request, tenant_id, order), 201,
                        location=url_of(request, tenant_id, "order", order_id))


@post("/order/{order_id:str}", summary="Read an order (POST-as-GET)",
      status_code=200, responses=ACME_ERRORS)
async def order(request: Request, tenant_id: FromPath[str], order_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id)
    state = await cmd.owned_order(_services(request), tenant_id, signed.account_id, order_id)
    return await reply(request, tenant_id, await order_json(request, tenant_id, state))


@post("/order/{order_id:str}/finalize", summary="Submit the CSR of a ready order; the certificate is issued at once",
      status_code=200, responses=ACME_ERRORS)
async def finalize(request: Request, tenant_id: FromPath[str], order_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id)
    csr = jose.b64url_decode(payload_of(signed).get("csr"), "csr")
    services = _services(request)
    state = await cmd.finalize_order(cmd.FinalizeOrder(tenant_id=tenant_id, account_id=signed.account_id,
                                                       order_id=order_id, csr_der=csr), signed.context, services)
    return await reply(request, tenant_id, await order_json(request, tenant_id, state),
                        location=url_of(request, tenant_id, "order", order_id))


@post("/authz/{authz_id:str}", summary="Read (POST-as-GET) or deactivate ({status: deactivated}) an authorization",
      status_code=200, responses=ACME_ERRORS)
async def authorization(request: Request, tenant_id: FromPath[str], authz_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id)
    services = _services(request)
    if signed.jws.post_as_get:
        state = await cmd.owned_authz(services, tenant_id, signed.account_id, authz_id)
    else:
        if signed.jws.payload_json().get("status") != "deactivated":
            raise AcmeProblem("malformed", "an authorization changes only by {\"status\": \"deactivated\"}",
                              field="status")
        state = await cmd.deactivate_authorization(cmd.DeactivateAuthorization(
            tenant_id=tenant_id, account_id=signed.account_id, authz_id=authz_id), signed.context, services)
    return await reply(request, tenant_id, authz_json(request, tenant_id, state, services.clock.now()))


@post("/chall/{authz_id:str}/{challenge_id:str}", summary="Start (payload {}) or read (POST-as-GET) a challenge",
      status_code=200, responses=ACME_ERRORS)
async def challenge(request: Request, tenant_id: FromPath[str], authz_id: FromPath[str],
                    challenge_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id)
    services = _services(request)
    if signed.jws.post_as_get:
        state = await cmd.owned_authz(services, tenant_id, signed.account_id, authz_id)
    else:
        signed.jws.payload_json()  # {} (RFC 8555 7.5.1); its members are ignored
        state = await cmd.start_challenge(cmd.StartChallenge(tenant_id=tenant_id, account_id=signed.account_id,
                                                             authz_id=authz_id, challenge_id=challenge_id),
                                          signed.context, services)
    answered = state.challenge(challenge_id)
    if answered is None:
        raise AcmeProblem("malformed", f"no challenge {challenge_id} here", field="challenge_id", status=404)
    return await reply(request, tenant_id, challenge_json(request, tenant_id, state, answered),
                        links=(f'<{url_of(request, tenant_id, "authz", authz_id)}>;rel="up"',))


@post("/cert/{order_id:str}", summary="Download the certificate chain (POST-as-GET), PEM",
      status_code=200, responses=ACME_ERRORS)
async def certificate(request: Request, tenant_id: FromPath[str], order_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id)
    services = _services(request)
    state = await cmd.owned_order(services, tenant_id, signed.account_id, order_id)
    if state.certificate_id is None:
        raise AcmeProblem("malformed", "the order has no certificate yet", field="order_id", status=404)
    issued = await cmd.issued_certificate(services, tenant_id, state.certificate_id)
    chain = await read_models_of(request.app.state).query(ca_model.issuer_chain, tenant_id,
                                                          issued.issuer_fingerprint, services.clock.now())
    pems = [issued.certificate_pem, *(row["certificate_pem"] for row in chain)]
    body = "".join(p if p.endswith("\n") else p + "\n" for p in pems)
    return Response(content=body.encode("ascii"), media_type=PEM_CHAIN, headers=await nonce_headers(request, tenant_id))


@post("/revoke-cert", summary="Revoke a certificate (signed by its account or by its key)",
      status_code=200, responses=ACME_ERRORS)
async def revoke_cert(request: Request, tenant_id: FromPath[str]) -> Response:
    signed = await verified(request, tenant_id, by="either")
    payload = payload_of(signed)
    der = jose.b64url_decode(payload.get("certificate"), "certificate")
    reason = payload.get("reason", 0)
    if not isinstance(reason, int) or isinstance(reason, bool):
        raise AcmeProblem("badRevocationReason", "reason is an RFC 5280 reason code", field="reason")
    await cmd.revoke(cmd.RevokeByAcme(tenant_id=tenant_id, certificate_der=der, reason=reason,
                                      account_id=signed.account_id,
                                      jwk=signed.jws.jwk if signed.account_id is None else None),
                     signed.context, _services(request))
    return Response(content=b"", status_code=200, headers=await nonce_headers(request, tenant_id))


acme_router = Router("/acme/{tenant_id:str}", route_handlers=[
    directory, nonce_head, nonce_get, new_account, account, key_change, account_orders, new_order, order, finalize, authorization,
    challenge,
    certificate, revoke_cert], exception_handlers={DomainError: acme_error, HTTPException: acme_error,
                                                   Exception: acme_error}, tags=["acme"])
