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

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Protocol

import msgspec

from commands.authz import authorize
from commands.ids import CertificateId
from commands.runtime import CommandContext, CommandResult, Services, load, run
from commands.tenants import TenantId, allowed_while_suspended, refused_while_suspended
from domain import certificate, deployment
from domain.deployment import DEFAULT_KEEP, MAX_KEEP, NodeFile
from domain.errors import DomainError

log = logging.getLogger(__name__)

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


class StepFailed(Exception):
    """What a delivery raises when a step after its start failed: ``step`` (``domain.deployment.FAILED_STEPS``) and
    ``reason`` go into ``certificate.deployment_failed`` (bounded, PEM blocks and ``secrets`` removed); ``recorded``
    is set to that append's result once it is made."""

    def __init__(self, step: str, reason: str, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(f"{step}: {reason}")
        self.step, self.reason, self.secrets = step, reason, secrets
        self.recorded: CommandResult | None = None


Deliver = Callable[[RecordStart], Awaitable[Delivered]]


@refused_while_suspended("hands a private key to a node (a keystore over SSH)")
async def deploy_certificate(cmd: DeployCertificate, ctx: CommandContext, services: Services,
                             deliver: Deliver) -> Deployment:
    """Refuse first (permissions, a revoked, expired or keyless certificate), then ``deliver(record_start)``, then
    record it.

    The delivery calls ``record_start`` once its files are staged, before the renames that put them in place: that
    appends ``certificate.deployment_started``. A delivery that raises before that records nothing (the node kept
    its files). An ``Exception`` after it (the renames failed; recording the completion failed) appends
    ``certificate.deployment_failed`` (the step, and a reason with no secret: a ``StepFailed``'s own, else only
    the exception's type) before it propagates; a process that dies (or a ``BaseException``: interrupted, cancelled)
    leaves the start on record without either, which the next deploy, verify and rollback report as unfinished."""
    authorize(ctx.principal, "cert:deploy", cmd.tenant_id)
    authorize(ctx.principal, "key:export", cmd.tenant_id)  # the delivery exports the key: refused here, before it
    state = await load(services, cmd.tenant_id, certificate.stream_id(cmd.certificate_id), certificate.fold)
    certificate.require_deployable(state, cmd.certificate_id, services.clock.now())

    begun: list[certificate.DeploymentStarted] = []

    async def record_start(staging: Staging) -> CommandResult:
        started = certificate.DeploymentStarted(
            certificate_id=cmd.certificate_id, node=cmd.node, user=cmd.user, host=cmd.host, port=cmd.port,
            format=cmd.format, files=staging.files, keep=cmd.keep, host_key_type=staging.host_key_type,
            host_key_fingerprint=staging.host_key_fingerprint)

        def decide(state: certificate.Certificate) -> list:
            certificate.require_exists(state, cmd.certificate_id)
            return [started]

        result = await run(services, ctx.without_key(), staging, tenant_id=cmd.tenant_id,
                           stream_id=certificate.stream_id(cmd.certificate_id), stream_type=certificate.STREAM_TYPE,
                           fold=certificate.fold, decide=decide)
        begun.append(started)
        return result

    try:
        delivered = await deliver(record_start)
        deployed = certificate.CertificateDeployed(
            certificate_id=cmd.certificate_id, node=cmd.node, user=cmd.user, host=cmd.host, port=cmd.port,
            format=cmd.format, files=delivered.files, host_key_type=delivered.host_key_type,
            host_key_fingerprint=delivered.host_key_fingerprint, host_key_first_use=delivered.host_key_first_use,
            reload_exit_status=delivered.reload_exit_status, keep=cmd.keep)
    except Exception as exc:
        if begun:
            await _record_failure(cmd, ctx, services, begun[0], exc, "deliver")
        raise
    try:
        result = await run(services, ctx, cmd, tenant_id=cmd.tenant_id,
                           stream_id=certificate.stream_id(cmd.certificate_id), stream_type=certificate.STREAM_TYPE,
                           fold=certificate.fold, decide=lambda state: certificate.decide_deployed(state, deployed))
    except Exception as exc:
        await _record_failure(cmd, ctx, services, begun[0], exc, "record")
        raise
    return Deployment(result=result, delivered=delivered)


async def _record_failure(cmd: DeployCertificate, ctx: CommandContext, services: Services,
                          started: certificate.DeploymentStarted, exc: Exception, step: str) -> None:
    """Append ``certificate.deployment_failed`` for ``exc``, best effort: if that fails too (the store is what
    failed), the start stays on record alone and ``exc`` is what the caller sees."""
    if isinstance(exc, StepFailed):
        failure = deployment.failed(started, exc.step, exc.reason, exc.secrets)
    else:  # a message the delivery did not word for the record may quote anything: its type only
        failure = deployment.failed(started, step, f"{type(exc).__name__}" + (
            f": {exc.code}" if isinstance(exc, DomainError) else ""))
    try:
        result = await run(services, ctx.without_key(), failure, tenant_id=cmd.tenant_id,
                           stream_id=certificate.stream_id(cmd.certificate_id), stream_type=certificate.STREAM_TYPE,
                           fold=certificate.fold, decide=lambda state: [failure])
    except Exception:
        log.warning("deployment failure not recorded", extra={"certificate_id": cmd.certificate_id, "node": cmd.node,
                                                               "step": failure.step}, exc_info=False)
        return
    if isinstance(exc, StepFailed):
        exc.recorded = result


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
    """Undo ``certificate_id``'s deployment to ``node`` that the node holds (its last, or an earlier one a rollback
    put back), going back ``generation`` generations (1: to the files it replaced); ``candidates``: other
    certificates deployed to the node before (newest first), one of which the restored files may be; ``unfinished_certificate_id``: a certificate whose deployment to the node was started and
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
    last = deployment.require_deployed(state, cmd.certificate_id, cmd.node)
    observed = await node.inspect([f.path for f in last.files])
    # the one the node holds: an earlier one than the last if a rollback (on another certificate's stream) put it back
    deployed = deployment.in_place(state, cmd.node, observed) or last
    unfinished = None
    if cmd.unfinished_certificate_id is not None:
        started = state if cmd.unfinished_certificate_id == cmd.certificate_id else await load(
            services, cmd.tenant_id, certificate.stream_id(cmd.unfinished_certificate_id), certificate.fold)
        unfinished = deployment.unfinished(started, cmd.node)
    forced = deployment.check_rollback(deployed, observed, cmd.force, cmd.generation, unfinished)
    candidates = [d for d in deployment.deployments_to(state, cmd.node) if d is not deployed]
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
