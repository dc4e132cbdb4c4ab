"""Deploying a certificate's keystore to a node: authorise, check it, deliver, record ``certificate.deployed``.

The delivery itself (export the key, write the keystore, install it over SSH, reload) is a port the
caller passes in: this layer does no I/O of its own, and decides only what may be deployed, by whom,
and what the audit trail says afterwards. The order is the point: every refusal comes before the
delivery, so a caller without ``cert:deploy`` (or ``key:export``: a deployment exports the key) never
gets a key out of the vault nor a connection to a node, and the event is appended only once the
node holds the files, naming their SHA-256 and the host key the connection was checked against.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import msgspec

from commands.authz import authorize
from commands.ids import CertificateId
from commands.runtime import CommandContext, CommandResult, Services, load, run
from commands.tenants import TenantId, refused_while_suspended
from domain import certificate

NodeName = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
DeployFormat = Annotated[str, msgspec.Meta(pattern="^(jks|pkcs12|pem)$")]


class DeployCertificate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Install ``certificate_id``'s keystore and truststore, as ``format``, on ``node`` (``user``@``host``:``port``)."""

    tenant_id: TenantId
    certificate_id: CertificateId
    node: NodeName
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 22
    format: DeployFormat = "jks"


class Delivered(msgspec.Struct, frozen=True, kw_only=True):
    """What the delivery port reports: the files as the node holds them, the host key it was checked against, and
    the reload command's exit status (None: none was run)."""

    files: tuple[certificate.DeployedFile, ...]
    host_key_type: str
    host_key_fingerprint: str
    host_key_first_use: bool
    reload_exit_status: int | None


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    result: CommandResult
    delivered: Delivered


Deliver = Callable[[], Awaitable[Delivered]]


@refused_while_suspended("hands a private key to a node (a keystore over SSH)")
async def deploy_certificate(cmd: DeployCertificate, ctx: CommandContext, services: Services,
                             deliver: Deliver) -> Deployment:
    """Refuse first (permissions, a revoked, expired or keyless certificate), then ``deliver()``, then record it.

    A delivery that raises records nothing (the node kept its files, or the error says what it holds)."""
    authorize(ctx.principal, "cert:deploy", cmd.tenant_id)
    authorize(ctx.principal, "key:export", cmd.tenant_id)  # the delivery exports the key: refused here, before it
    state = await load(services, cmd.tenant_id, certificate.stream_id(cmd.certificate_id), certificate.fold)
    certificate.require_deployable(state, cmd.certificate_id, services.clock.now())
    delivered = await deliver()
    deployed = certificate.CertificateDeployed(
        certificate_id=cmd.certificate_id, node=cmd.node, user=cmd.user, host=cmd.host, port=cmd.port,
        format=cmd.format, files=delivered.files, host_key_type=delivered.host_key_type,
        host_key_fingerprint=delivered.host_key_fingerprint, host_key_first_use=delivered.host_key_first_use,
        reload_exit_status=delivered.reload_exit_status)
    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id,
                       stream_id=certificate.stream_id(cmd.certificate_id), stream_type=certificate.STREAM_TYPE,
                       fold=certificate.fold, decide=lambda state: certificate.decide_deployed(state, deployed))
    return Deployment(result=result, delivered=delivered)
