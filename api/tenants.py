"""The /v1/tenants resource: tenant commands (create, rename, quotas, suspend, resume) and queries (usage, compromised
keys, compliance, analytics, discovered endpoints)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post, route
from litestar.params import FromPath, JSONBody, QueryParameter

from api.deps import (Caller, IdempotencyKey, MinPosition, command_context, decoded_cursor, execute, find_row,
                      page_position, read_models_of, read_your_writes, runtime_of)
from api.problems import COMMAND_ERRORS, QUERY_ERRORS, ApiProblem
from api.schemas import (DiscoveredBody, DiscoveredEndpointOut, DiscoveredPage, KeyCompromiseBody, LiftBody,
                         ReasonBody,
                         RenameBody, TenantOut, TenantPage, TenantUsageOut)
from commands import compromise_report, compromised_keys, discovery as discovered
from commands import tenants as cmd
from commands.authz import authorize, visible_tenants
from commands.ids import uuid7
from commands.runtime import CommandResult, rfc3339
from domain.discovery import ChainCertificate, Observation, chain_complete, der_of
from domain.errors import DomainError
from domain.tenant import Quotas, day_start
from domain.tenant_policy import TenantPolicy
from infra.discovery import chain_entry, facts_of_pem
from projections import analytics, compliance
from projections import discovery as discovery_model
from projections import tenants as read_model


async def _tenant_row(request: Request, principal, tenant_id: str) -> dict:
    """The tenant's row as the caller may see it; 404 ``tenant_not_found`` if there is none."""
    row = await find_row(request, read_model.get, tenant_id, visible_tenants(principal), field="tenant_id")
    if row is None:
        raise ApiProblem(404, "tenant_not_found", f"tenant {tenant_id} does not exist", field="tenant_id")
    return row


def _tenant_out(row: dict) -> TenantOut:
    return msgspec.convert(row, TenantOut)


class TenantController(Controller):
    path = "/tenants"
    tags = ["tenants"]

    @post("/", status_code=201, summary="Create a tenant", responses=COMMAND_ERRORS)
    async def create(self, request: Request, principal: Caller, data: JSONBody[cmd.CreateTenant],
                     idempotency_key: IdempotencyKey = None) -> Response[CommandResult]:
        result = await execute(request, cmd.create_tenant, data, principal, idempotency_key)
        return Response(result, status_code=201, headers={"Location": f"/v1/tenants/{data.tenant_id}"})

    @get("/", summary="Search tenants (keyset pagination by tenant id)", responses=QUERY_ERRORS)
    async def search(self, request: Request, principal: Caller, min_position: MinPosition = None,
                     status: Annotated[str | None, QueryParameter(pattern="^(active|suspended)$")] = None,
                     cursor: Annotated[str | None, QueryParameter(max_length=63, description="the previous page's "
                                                                  "next_cursor")] = None,
                     after: Annotated[str | None, QueryParameter(max_length=63, description="cursor's older name")] = None,
                     limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100) -> TenantPage:
        authorize(principal, "tenant:read", principal.tenant_id)
        await read_your_writes(request, min_position)
        rows = await read_models_of(request.app.state).query(
            read_model.search, visible_tenants(principal), status=status, after=page_position(after, cursor), limit=limit + 1)
        more = len(rows) > limit
        items = [_tenant_out(row) for row in rows[:limit]]
        return TenantPage(items=items, next_cursor=items[-1].tenant_id if more else None)

    @get("/{tenant_id:str}", summary="Read one tenant", responses=QUERY_ERRORS)
    async def read(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                   min_position: MinPosition = None) -> TenantOut:
        authorize(principal, "tenant:read", tenant_id)
        await read_your_writes(request, min_position)
        row = await _tenant_row(request, principal, tenant_id)
        return _tenant_out(row)

    @get("/{tenant_id:str}/usage", summary="What a tenant holds against its quotas", responses=QUERY_ERRORS)
    async def usage(self, request: Request, principal: Caller, tenant_id: FromPath[str]) -> TenantUsageOut:
        """Counted once the read models have reached the log's head (503 usage_unknown if they cannot in time)."""
        authorize(principal, "tenant:read", tenant_id)
        row = await _tenant_row(request, principal, tenant_id)
        services = runtime_of(request.app.state).services
        now = services.clock.now()
        counted = await services.usage.count(tenant_id, now)
        day = day_start(now)
        return TenantUsageOut(tenant_id=tenant_id, quotas=msgspec.convert(row["quotas"], Quotas),
                              usage=counted.usage, day_started_at=rfc3339(day),
                              day_ends_at=rfc3339(day + timedelta(days=1)),
                              position=min(counted.cas_position, counted.certificates_position))

    @get("/{tenant_id:str}/compliance", summary="A tenant's compliance report: findings by rule, most severe first",
         description="The rules of docs/security.md (\"Compliance rules\") evaluated now: live certificates (and "
         "those expired in the last 30 days that nothing replaced) from the certificates read model, as of "
         "`position` (`min_position` waits for a write); CAs, CRLs, the tenant's policy and compromised keys from "
         "their streams. `counts` counts every finding, `findings` lists at most `limit`. Needs cert:read and ca:read.",
         responses=QUERY_ERRORS)
    async def compliance(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                         min_position: MinPosition = None,
                         limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 1000) -> compliance.ComplianceReport:
        await read_your_writes(request, min_position)
        services = runtime_of(request.app.state).services
        return await compliance.report(read_models_of(request.app.state).query, services, principal, tenant_id,
                                       services.clock.now(), limit)

    @get("/{tenant_id:str}/analytics", summary="Daily counts of a tenant's security-relevant events",
         description="Per UTC day from `since` to `until` (both included, at most 366 days; by default the last 30), "
         "how many issuances (by profile, algorithm and key source), revocations (by reason), renewals, renewal "
         "failures, key exports (by format), CA creations, rollovers and revocations, compromised keys, CRL "
         "publications and access denials (by permission). Needs audit:read.", responses=QUERY_ERRORS)
    async def analytics(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                        min_position: MinPosition = None,
                        since: Annotated[date | None, QueryParameter(description="first UTC day, YYYY-MM-DD")] = None,
                        until: Annotated[date | None, QueryParameter(description="last UTC day (default: today)")] = None,
                        ) -> analytics.AnalyticsReport:
        authorize(principal, "audit:read", tenant_id)
        await read_your_writes(request, min_position)
        today = runtime_of(request.app.state).services.clock.now().date()
        until = until or today
        since = since or until - timedelta(days=analytics.DEFAULT_DAYS - 1)
        if since > until:
            raise ApiProblem(400, "validation_failed", f"since ({since}) is after until ({until})", field="since",
                             rule="range")
        if (until - since).days >= analytics.MAX_DAYS:
            raise ApiProblem(400, "validation_failed", f"at most {analytics.MAX_DAYS} days at once", field="since",
                             rule="range")
        await _tenant_row(request, principal, tenant_id)
        return await read_models_of(request.app.state).query(analytics.report, tenant_id, since, until)

    @get("/{tenant_id:str}/compromised-keys", summary="Keys reported compromised in a tenant: never certified again in it",
         description="Each key (SHA-256 of its SubjectPublicKeyInfo DER) that a `key_compromise` revocation of a "
         "certificate, or a `key_compromise` or `ca_compromise` revocation of a CA, reported: when, and through "
         "which certificate or CA. Read from the tenant's own stream, so it is current without `min_position`.",
         responses=QUERY_ERRORS)
    async def compromised(self, request: Request, principal: Caller,
                          tenant_id: FromPath[str]) -> compromised_keys.CompromisedKeyList:
        authorize(principal, "cert:read", tenant_id)
        await _tenant_row(request, principal, tenant_id)
        return await compromised_keys.list_compromised_keys(
            compromised_keys.ListCompromisedKeys(tenant_id=tenant_id), command_context(principal),
            runtime_of(request.app.state).services)

    @post("/{tenant_id:str}/compromised-keys", status_code=200,
          summary="Report a key compromised: the key of a certificate revoked for another reason, or a root's keys",
          description="For a key found compromised after its certificate was revoked for another reason (a "
          "revocation is final, its reason stands) or a root's keys (a root is never revoked): give "
          "`certificate_id` (permission cert:revoke) or `ca_id` (ca:manage; with `public_key_sha256`, only that one of "
          "its keys, e.g. a root's old key after a rollover). The key is never certified again in the "
          "tenant, and the tenant's still trusted certificates of a certificate's key are revoked `key_compromise` "
          "(`revoked`). A live certificate named here is revoked too; revoking it with reason `key_compromise` "
          "does the same. For a CA's key, the certificates of it that CAs here issued (another CA's "
          "cross-certificate, a root's link) are revoked `key_compromise` on their issuers' CRLs "
          "(`revoked_ca_certificates`); an intermediate still signing with the key is refused (422 "
          "`revoke_ca_instead`: revoke it). Reporting a key again blocks nothing more (`result.changed` false; "
          "it records only that it was made, `key.compromise_report_repeated`); a retry under the same "
          "Idempotency-Key answers what the first call answered, whatever it recorded.",
          responses=COMMAND_ERRORS)
    async def report_compromised(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                                 data: JSONBody[KeyCompromiseBody],
                                 idempotency_key: IdempotencyKey = None) -> compromise_report.KeyCompromiseReported:
        command = compromise_report.ReportKeyCompromise(tenant_id=tenant_id, certificate_id=data.certificate_id,
                                                        ca_id=data.ca_id, public_key_sha256=data.public_key_sha256,
                                                        invalidity_date=data.invalidity_date)
        return await execute(request, compromise_report.report_key_compromise, command, principal, idempotency_key)

    @post("/{tenant_id:str}/compromised-keys/{public_key_sha256:str}/lift", status_code=200,
          summary="Lift a compromised-key block that was reported in error (tenant admins; audited)",
          description="Permission key:unblock (tenant-admin, platform-admin) and a `reason`, kept in the audit trail "
          "(`key.compromise_lifted`). The key, and its hybrid partner if it was reported with one, may be certified "
          "in the tenant again, until it is reported again. Nothing is un-revoked: certificates revoked with the "
          "report stay revoked. A key a compromise rollover rolled away from cannot be lifted (409 "
          "`compromise_rollover_final`); a key not blocked is 409 `key_not_compromised`; a key reported from more "
          "than one source since its block began (the list's `sources`) is 409 `compromise_reported_again` unless "
          "`every_report` is true.",
          responses=COMMAND_ERRORS)
    async def lift_compromised(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                               public_key_sha256: FromPath[str], data: JSONBody[LiftBody],
                               idempotency_key: IdempotencyKey = None) -> compromised_keys.KeyCompromiseLifted:
        try:
            command = msgspec.convert({"tenant_id": tenant_id, "public_key_sha256": public_key_sha256,
                                       "reason": data.reason, "every_report": data.every_report},
                                      compromised_keys.LiftKeyCompromise)
        except msgspec.ValidationError as exc:
            raise ApiProblem(400, "validation_failed", str(exc), field="public_key_sha256", rule="format") from None
        return await execute(request, compromised_keys.lift_key_compromise, command, principal, idempotency_key)

    @get("/{tenant_id:str}/discovered", summary="Endpoints scanned for the certificates they serve, with their latest "
         "observation", description="One item per endpoint (host, port) a scan recorded: what it served when last "
         "observed (fingerprint, subject, issuer, serial, validity, TLS version) or why it served nothing, and the "
         "tenant's certificate of that fingerprint (`certificate_id`, its status and successor; null: not issued "
         "here). Ordered by host and port. Needs cert:read.", responses=QUERY_ERRORS)
    async def discovered(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                         min_position: MinPosition = None,
                         cursor: Annotated[str | None, QueryParameter(max_length=600, description="the previous "
                                                                      "page's next_cursor")] = None,
                         limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100) -> DiscoveredPage:
        authorize(principal, "cert:read", tenant_id)
        await read_your_writes(request, min_position)
        after = decoded_cursor(discovery_model.decode_cursor, cursor)
        await _tenant_row(request, principal, tenant_id)
        rows = await read_models_of(request.app.state).query(discovery_model.of_tenant, tenant_id, after=after,
                                                            limit=limit + 1)
        items = [_endpoint_out(r) for r in rows[:limit]]
        return DiscoveredPage(items=items, next_cursor=discovery_model.encode_cursor(rows[limit - 1])
                              if len(rows) > limit else None)

    @post("/{tenant_id:str}/discovered", status_code=200,
          summary="Record what endpoints served when a scanner elsewhere scanned them",
          description="Observations made elsewhere (`csm discover scan` records its own): per endpoint, the PEM "
          "certificate it served (the server reads its fingerprint and facts from it) or the `error` met. The "
          "server never connects to the hosts named here. A retry with the same `scan_id` records nothing; "
          "another scan under a used `scan_id` is 422 `scan_exists`. Needs discovery:record.",
          responses=COMMAND_ERRORS)
    async def record_discovered(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                                data: JSONBody[DiscoveredBody],
                                idempotency_key: IdempotencyKey = None) -> discovered.ObservationsRecordedResult:
        authorize(principal, "discovery:record", tenant_id)  # before the certificates are parsed
        observations = [_observation(i, o) for i, o in enumerate(data.observations)]
        command = discovered.RecordObservations(tenant_id=tenant_id, scan_id=data.scan_id or uuid7(),
                                                observations=observations)
        return await execute(request, discovered.record_observations, command, principal, idempotency_key)

    @post("/{tenant_id:str}/rename", status_code=200, summary="Rename a tenant", responses=COMMAND_ERRORS)
    async def rename(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                     data: JSONBody[RenameBody], idempotency_key: IdempotencyKey = None) -> CommandResult:
        command = cmd.RenameTenant(tenant_id=tenant_id, name=data.name)
        return await execute(request, cmd.rename_tenant, command, principal, idempotency_key)

    @route("/{tenant_id:str}/quotas", http_method=["PUT", "POST"], status_code=200, summary="Set a tenant's quotas",
           responses=COMMAND_ERRORS)
    async def quotas(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                     data: JSONBody[Quotas], idempotency_key: IdempotencyKey = None) -> CommandResult:
        command = cmd.SetTenantQuotas(tenant_id=tenant_id, quotas=data)
        return await execute(request, cmd.set_tenant_quotas, command, principal, idempotency_key)

    @get("/{tenant_id:str}/policy", summary="Read a tenant's certificate policy (what issuance checks against)",
         description="From the tenant's stream, so a policy set a moment ago is the one answered. Needs tenant:read.",
         responses=QUERY_ERRORS)
    async def read_policy(self, request: Request, principal: Caller,
                          tenant_id: FromPath[str]) -> cmd.TenantPolicyOut:
        return await cmd.read_policy(principal, runtime_of(request.app.state).services, tenant_id)

    @route("/{tenant_id:str}/policy", http_method=["PUT", "POST"], status_code=200,
           summary="Set a tenant's certificate policy (algorithms, allowed names, maximum validity)",
           responses=COMMAND_ERRORS)
    async def policy(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                     data: JSONBody[TenantPolicy], idempotency_key: IdempotencyKey = None) -> CommandResult:
        command = cmd.SetTenantPolicy(tenant_id=tenant_id, policy=data)
        return await execute(request, cmd.set_tenant_policy, command, principal, idempotency_key)

    @post("/{tenant_id:str}/suspend", status_code=200, summary="Suspend a tenant", responses=COMMAND_ERRORS)
    async def suspend(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                      data: JSONBody[ReasonBody], idempotency_key: IdempotencyKey = None) -> CommandResult:
        command = cmd.SuspendTenant(tenant_id=tenant_id, reason=data.reason)
        return await execute(request, cmd.suspend_tenant, command, principal, idempotency_key)

    @post("/{tenant_id:str}/resume", status_code=200, summary="Resume a suspended tenant", responses=COMMAND_ERRORS)
    async def resume(self, request: Request, principal: Caller, tenant_id: FromPath[str],
                     data: JSONBody[ReasonBody], idempotency_key: IdempotencyKey = None) -> CommandResult:
        command = cmd.ResumeTenant(tenant_id=tenant_id, reason=data.reason)
        return await execute(request, cmd.resume_tenant, command, principal, idempotency_key)


def _observation(i: int, o) -> Observation:
    """An observation posted by a scanner, with its certificate's facts read here from its PEM."""
    facts: dict = {}
    if o.certificate_pem is not None:
        try:
            facts = facts_of_pem(o.certificate_pem)
        except ValueError as exc:
            raise DomainError("invalid_observation", f"not a PEM certificate: {exc}",
                              field=f"observations[{i}].certificate_pem") from None
    chain = None
    if o.chain_pem is not None:
        chain = []
        for j, pem in enumerate(o.chain_pem):
            try:
                chain.append(chain_entry(der_of(pem)))
            except ValueError as exc:
                raise DomainError("invalid_observation", f"not a PEM certificate: {exc}",
                                  field=f"observations[{i}].chain_pem[{j}]") from None
    return Observation(host=o.host, port=o.port, observed_at=o.observed_at, tls_version=o.tls_version,
                       cipher=o.cipher, error=o.error, reason=o.reason, chain=chain,
                       client_certificate=o.client_certificate, **facts)


def _endpoint_out(row: dict) -> DiscoveredEndpointOut:
    chain = None if row["chain"] is None else msgspec.convert(row["chain"], list[ChainCertificate])
    return DiscoveredEndpointOut(
        endpoint=row["endpoint"], host=row["host"], port=row["port"], observed_at=row["observed_at"],
        scan_id=row["scan_id"], error=row["error"], reason=row["reason"], fingerprint_sha256=row["fingerprint"],
        subject_dn=row["subject_dn"], issuer_dn=row["issuer_dn"], serial_hex=row["serial_hex"],
        not_before=row["not_before"], not_after=row["not_after"], tls_version=row["tls_version"],
        cipher=row["cipher"], chain=chain, client_certificate=row["client_certificate"],
        chain_complete=chain_complete(row["issuer_dn"], row["ca_kind"], chain),
        first_seen=row["first_seen"], last_served_at=row["last_served_at"],
        served_since=row["served_since"], certificate_id=row["certificate_id"], ca_id=row["ca_id"],
        certificate_status=row["status"], revocation_reason=row["revocation_reason"],
        superseded_by=row["superseded_by"])
