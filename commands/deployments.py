"""Deploying a certificate's keystore to a node: authorise, check it, deliver, record ``certificate.deployed``.

The delivery itself (export the key, write the keystore, install it over SSH, reload) is a port the
caller passes in: this layer does no I/O of its own, and decides only what may be deployed, by whom,
and what the audit trail says afterwards. The order is the point: every refusal comes before the
delivery, so a caller without ``cert:deploy`` (or ``key:export``: a deployment exports the key) never
gets a key out of the vault nor a connection to a node. The delivery records its intent
(``certificate.deployment_started``, through the callback it is given) once the files are staged and
checked on the node, before the renames that put them in place, and ``certificate.deployed`` is appended
once the node holds them, naming their SHA-256 and the host key the connection was checked against. A
renaming that fails halfway (or a process that dies there) thus leaves a started deployment without its
completion on record, which the next deploy, verify or rollback of the node reports.

A rollback (``rollback_deployment``) follows the same order through its own port: the node's file hashes are
read, the domain decides whether they allow it (``domain.deployment``), and only then are the files moved back
and ``certificate.deployment_rolled_back`` appended. A verification (``record_verification``) only records
what the caller observed a node's TLS ports serve, as a discovery scan does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Protocol

import msgspec

from commands.authz import authorize
from commands.ids import CertificateId
from commands.runtime import CommandContext, CommandResult, Services, load, run
from commands.tenants import TenantId, allowed_while_suspended, refused_while_suspended
from domain import certificate, deployment
from domain.deployment import DEFAULT_KEEP, MAX_KEEP, NodeFile

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
    keep: Annotated[int, msgspec.Meta(ge=1, le=MAX_KEEP)] = DEFAULT_KEEP


class Staging(msgspec.Struct, frozen=True, kw_only=True):
    """What the delivery reports before its renames: the files staged (checked there) and the host key."""

    files: tuple[certificate.DeployedFile, ...]
    host_key_type: str
    host_key_fingerprint: str


RecordStart = Callable[[Staging], Awaitable[CommandResult]]


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


Deliver = Callable[[RecordStart], Awaitable[Delivered]]


@refused_while_suspended("hands a private key to a node (a keystore over SSH)")
async def deploy_certificate(cmd: DeployCertificate, ctx: CommandContext, services: Services,
                             deliver: Deliver) -> Deployment:
    """Refuse first (permissions, a revoked, expired or keyless certificate), then ``deliver(record_start)``, then
    record it.

    The delivery calls ``record_start`` once its files are staged, before the renames that put them in place: that
    appends ``certificate.deployment_started``. A delivery that raises before that records nothing (the node kept
    its files); one that raises after it leaves the start on record, without a completion."""
    authorize(ctx.principal, "cert:deploy", cmd.tenant_id)
    authorize(ctx.principal, "key:export", cmd.tenant_id)  # the delivery exports the key: refused here, before it
    state = await load(services, cmd.tenant_id, certificate.stream_id(cmd.certificate_id), certificate.fold)
    certificate.require_deployable(state, cmd.certificate_id, services.clock.now())

    async def record_start(staging: Staging) -> CommandResult:
        started = certificate.DeploymentStarted(
            certificate_id=cmd.certificate_id, node=cmd.node, user=cmd.user, host=cmd.host, port=cmd.port,
            format=cmd.format, files=staging.files, keep=cmd.keep, host_key_type=staging.host_key_type,
            host_key_fingerprint=staging.host_key_fingerprint)

        def decide(state: certificate.Certificate) -> list:
            certificate.require_exists(state, cmd.certificate_id)
            return [started]

        return await run(services, ctx.without_key(), staging, tenant_id=cmd.tenant_id,
                         stream_id=certificate.stream_id(cmd.certificate_id), stream_type=certificate.STREAM_TYPE,
                         fold=certificate.fold, decide=decide)

    delivered = await deliver(record_start)
    deployed = certificate.CertificateDeployed(
        certificate_id=cmd.certificate_id, node=cmd.node, user=cmd.user, host=cmd.host, port=cmd.port,
        format=cmd.format, files=delivered.files, host_key_type=delivered.host_key_type,
        host_key_fingerprint=delivered.host_key_fingerprint, host_key_first_use=delivered.host_key_first_use,
        reload_exit_status=delivered.reload_exit_status, keep=cmd.keep)
    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id,
                       stream_id=certificate.stream_id(cmd.certificate_id), stream_type=certificate.STREAM_TYPE,
                       fold=certificate.fold, decide=lambda state: certificate.decide_deployed(state, deployed))
    return Deployment(result=result, delivered=delivered)


class RecordVerification(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What ``host``'s TLS ports served when checked for ``certificate_id``, deployed to ``node``."""

    tenant_id: TenantId
    certificate_id: CertificateId
    node: NodeName
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    ports: Annotated[tuple[certificate.VerifiedPort, ...], msgspec.Meta(min_length=1, max_length=16)]
    after: Annotated[str, msgspec.Meta(pattern="^(deploy|rollback|check)$")]


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    result: CommandResult
    verified: bool


@allowed_while_suspended("records what a node's TLS ports serve: it signs, adds and hands out nothing (as a "
                         "discovery scan)")
async def record_verification(cmd: RecordVerification, ctx: CommandContext, services: Services) -> Verification:
    """Append ``certificate.deployment_verified``: verified only if every port served the certificate."""
    authorize(ctx.principal, "discovery:record", cmd.tenant_id)
    verified = deployment.is_verified(cmd.ports)
    checked = certificate.DeploymentVerified(certificate_id=cmd.certificate_id, node=cmd.node, host=cmd.host,
                                             ports=cmd.ports, verified=verified,
                                             after=deployment.require_after(cmd.after))

    def decide(state: certificate.Certificate) -> list:
        certificate.require_exists(state, cmd.certificate_id)
        return [checked]

    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id,
                       stream_id=certificate.stream_id(cmd.certificate_id), stream_type=certificate.STREAM_TYPE,
                       fold=certificate.fold, decide=decide)
    return Verification(result=result, verified=verified)


class RollbackDeployment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Undo ``certificate_id``'s last deployment to ``node``, going back ``generation`` generations (1: to the files
    it replaced); ``candidates``: other certificates deployed to the node before (newest first), one of which the
    restored files may be; ``unfinished_certificate_id``: a certificate whose deployment to the node was started and
    never recorded as done (the node's record says so); ``force``: even over files changed by hand, or over such a
    half-done deployment."""

    tenant_id: TenantId
    certificate_id: CertificateId
    node: NodeName
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 22
    candidates: Annotated[tuple[CertificateId, ...], msgspec.Meta(max_length=32)] = ()
    generation: Annotated[int, msgspec.Meta(ge=1, le=MAX_KEEP)] = 1
    unfinished_certificate_id: CertificateId | None = None
    force: bool = False


class Restored(msgspec.Struct, frozen=True, kw_only=True):
    """What the rollback port reports once the files are back: the host key checked, the reload's exit status."""

    host_key_type: str
    host_key_fingerprint: str
    reload_exit_status: int | None


class RollbackPort(Protocol):
    async def inspect(self, paths: Sequence[str]) -> list[NodeFile]: ...

    async def restore(self, files: Sequence[NodeFile], generation: int) -> Restored: ...


class RolledBack(msgspec.Struct, frozen=True, kw_only=True):
    result: CommandResult
    event: certificate.DeploymentRolledBack


@refused_while_suspended("changes the keystores a node holds (over SSH), as a deployment does")
async def rollback_deployment(cmd: RollbackDeployment, ctx: CommandContext, services: Services,
                              node: RollbackPort) -> RolledBack:
    """Refuse first (permission, no recorded deployment, no such generation, files changed by hand, a deployment
    started and never recorded as done), then move the files back, then record
    ``certificate.deployment_rolled_back``. A port that raises records nothing."""
    authorize(ctx.principal, "cert:deploy", cmd.tenant_id)
    state = await load(services, cmd.tenant_id, certificate.stream_id(cmd.certificate_id), certificate.fold)
    deployed = deployment.require_deployed(state, cmd.certificate_id, cmd.node)
    observed = await node.inspect([f.path for f in deployed.files])
    unfinished = None
    if cmd.unfinished_certificate_id is not None:
        started = state if cmd.unfinished_certificate_id == cmd.certificate_id else await load(
            services, cmd.tenant_id, certificate.stream_id(cmd.unfinished_certificate_id), certificate.fold)
        unfinished = deployment.unfinished(started, cmd.node)
    forced = deployment.check_rollback(deployed, observed, cmd.force, cmd.generation, unfinished)
    candidates = deployment.earlier_deployments(state, cmd.node)
    for other in cmd.candidates:
        if other != cmd.certificate_id:
            other_state = await load(services, cmd.tenant_id, certificate.stream_id(other), certificate.fold)
            candidates += deployment.deployments_to(other_state, cmd.node)
    restored = await node.restore(observed, cmd.generation)
    event = certificate.DeploymentRolledBack(
        certificate_id=cmd.certificate_id, node=cmd.node, user=cmd.user, host=cmd.host, port=cmd.port,
        files=tuple(certificate.RestoredFile(path=f.path, sha256=f.generation(cmd.generation) or "",
                                             rolled_back_sha256=f.sha256) for f in observed),
        restored_certificate_id=deployment.restored_by(candidates, observed, cmd.generation), forced=forced,
        host_key_type=restored.host_key_type, host_key_fingerprint=restored.host_key_fingerprint,
        reload_exit_status=restored.reload_exit_status, generation=cmd.generation)
    result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id,
                       stream_id=certificate.stream_id(cmd.certificate_id), stream_type=certificate.STREAM_TYPE,
                       fold=certificate.fold, decide=lambda state: _decide_rolled_back(state, event))
    return RolledBack(result=result, event=event)


def _decide_rolled_back(state: certificate.Certificate, event: certificate.DeploymentRolledBack) -> list:
    """Record it unless another rollback of the same deployment got there first (the files moved only once)."""
    deployment.require_deployed(state, event.certificate_id, event.node)
    return [event]
