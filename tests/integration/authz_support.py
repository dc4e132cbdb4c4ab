"""A small two-tenant world for the authorization and isolation tests: tenants, CAs, a certificate, profiles, tokens.

Imported by test_authz_matrix.py and test_tenant_isolation.py; it holds no tests. Everything is
made through the real API with a platform-admin token, once per module.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_api_support import Api

from commands.authz import ROLES

OWN, OTHER = "mx-own", "mx-other"
_serial = itertools.count(1)


def fresh(prefix: str) -> str:
    """A name no earlier request used (tenants, profiles)."""
    return f"{prefix}-{next(_serial)}"


def profile_body(name: str) -> dict:
    return {"name": name, "description": "matrix test profile", "key_usage": ["digital_signature"],
            "extended_key_usage": ["client_auth"], "allowed_san_types": ["dns"], "require_san": False,
            "require_common_name": True, "max_validity_days": 90, "default_validity_days": 30,
            "allowed_algorithms": None, "default_algorithm": "ecdsa-p256"}


def self_signed_ca_pem(common_name: str = "Offline Root", organization: str | None = None) -> str:
    """A CA certificate made elsewhere (an offline root), to import."""
    key = ec.generate_private_key(ec.SECP384R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attributes)
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .sign(key, hashes.SHA384()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Tenant:
    tenant_id: str
    root: str = ""
    issuing: str = ""
    spare: str = ""  # a CA the matrix may disable, roll over and cross-sign
    certificate: str = ""  # issued with a server-side key, so keystores can be exported
    profile: str = ""  # updated by the matrix
    retiring: str = ""  # retired by the matrix
    user: str = ""  # a local user (identity routes)
    service_account: str = ""
    key: str = ""  # an API key of service_account (revoked by the matrix)
    spare_account: str = ""  # a service account the matrix disables and enables
    webhook: str = ""  # a webhook subscription (updated and its secret rotated by the matrix)
    webhook_deleting: str = ""  # deleted by the matrix
    eab_key: str = ""  # an ACME EAB key (revoked by the matrix; revoking again answers 200, unchanged)


@dataclass
class World:
    api: Api
    admin: dict[str, str]
    tenants: dict[str, Tenant] = field(default_factory=dict)
    tokens: dict[tuple[str, str | None], dict[str, str]] = field(default_factory=dict)
    import_pem: str = ""

    def headers(self, role: str, tenant_id: str | None) -> dict[str, str]:
        return self.tokens[(role, tenant_id)]


async def _post(api: Api, headers: dict, path: str, body: dict) -> dict:
    response = await api.client.post(path, json=body, headers=headers)
    assert response.status_code in (200, 201), f"{path}: {response.status_code} {response.text}"
    return response.json()


async def _ca(api: Api, admin: dict, tenant_id: str, name: str, parent: str | None = None) -> str:
    body = {"kind": "intermediate" if parent else "root", "tenant_id": tenant_id, "name": name,
            "algorithm": "ecdsa-p384", "subject": {"common_name": f"{tenant_id} {name}"}}
    if parent:
        body |= {"parent_id": parent, "name_constraints": {"permitted_dns": [f"{tenant_id}.internal"]}}
    return (await _post(api, admin, "/v1/cas", body))["ca_id"]


async def build_tenant(api: Api, admin: dict, tenant_id: str) -> Tenant:
    await api.create_tenant(admin, tenant_id)
    t = Tenant(tenant_id)
    t.root = await _ca(api, admin, tenant_id, "root")
    t.issuing = await _ca(api, admin, tenant_id, "issuing", parent=t.root)
    t.spare = await _ca(api, admin, tenant_id, "spare", parent=t.root)
    issued = await _post(api, admin, "/v1/certificates", {
        "tenant_id": tenant_id, "ca_id": t.issuing, "profile": "cassandra-node", "algorithm": "ecdsa-p256",
        "subject": {"common_name": f"node1.{tenant_id}.internal"}, "sans": {"dns": [f"node1.{tenant_id}.internal"]},
        "tags": ["matrix"]})
    t.certificate = issued["certificate_id"]
    for attribute, name in (("profile", "shared-name"), ("retiring", "retiring")):
        await _post(api, admin, "/v1/profiles", {"tenant_id": tenant_id, "profile": profile_body(name)})
        setattr(t, attribute, name)
    await _post(api, admin, "/v1/users", {"username": "mx-user", "password": "matrix password, long enough",
                                          "tenant_id": tenant_id, "roles": ["viewer"]})
    await _post(api, admin, "/v1/service-accounts", {"name": "mx-sa", "tenant_id": tenant_id})
    key = await _post(api, admin, f"/v1/service-accounts/mx-sa/keys?tenant_id={tenant_id}", {"roles": ["viewer"]})
    t.user, t.service_account, t.key = "mx-user", "mx-sa", key["key_id"]
    await _post(api, admin, "/v1/service-accounts", {"name": "mx-sa-spare", "tenant_id": tenant_id})
    t.spare_account = "mx-sa-spare"
    for attribute in ("webhook", "webhook_deleting"):  # .invalid never resolves; no matrix event is notifiable
        hook = await _post(api, admin, "/v1/webhooks", {"tenant_id": tenant_id, "url": "https://hooks.invalid/mx",
                                                        "event_types": ["certificate.expiry_warned"]})
        setattr(t, attribute, hook["webhook_id"])
    t.eab_key = (await _post(api, admin, f"/v1/tenants/{tenant_id}/acme/eab-keys", {"ca_id": t.issuing}))["key_id"]
    return t


async def build_world(api: Api) -> World:
    """Two tenants with the same shapes (and a profile of the same name), and a token per role and scope."""
    world = World(api=api, admin=await api.admin(), import_pem=self_signed_ca_pem())
    for tenant_id in (OWN, OTHER):
        world.tenants[tenant_id] = await build_tenant(api, world.admin, tenant_id)
    for role in ROLES:
        for scope in (OWN, None):
            world.tokens[(role, scope)] = await api.token(role, tenant_id=scope)
    await caught_up(api)
    return world


async def caught_up(api: Api) -> None:
    """Wait until every read model has applied every event written so far."""
    head = await api.runtime.store.head_position()
    assert await api.runtime.runner.wait_for(head, 10)
