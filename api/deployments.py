"""The /v1/deployments resource: what each node holds as far as the store knows (``csm cluster deploy``, ``rollback``)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, get
from litestar.params import QueryParameter

from api.deps import Caller, MinPosition, TenantQuery, decoded_cursor, read_models_of, read_your_writes
from api.problems import QUERY_ERRORS
from commands.authz import authorize_search, visible_tenants
from projections import deployments as deployments_model


class NodeFileOut(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    sha256: str


class GenerationOut(msgspec.Struct, frozen=True, kw_only=True):
    """Earlier files the node keeps (``NAME.previous``, ``.previous.2`` ...): whose, and since when they were in place."""

    certificate_id: str | None
    files: list[NodeFileOut]
    since: str | None


class FailureOut(msgspec.Struct, frozen=True, kw_only=True):
    """How a started deployment failed (``certificate.deployment_failed``): when, at which step (commit: the
    renames; record: recording them done; deliver: anything else), and why (never a password or key material)."""

    at: str
    step: str
    reason: str


class StartedOut(msgspec.Struct, frozen=True, kw_only=True):
    """A deployment started (its files staged on the node) and never recorded as done: the node may hold some of its
    files and not others (docs/operations.md 6.1). ``state``: ``failed`` (its failure was recorded: ``failure``) or
    ``unfinished`` (nothing more was recorded: the process died)."""

    certificate_id: str
    at: str
    actor: str
    files: list[NodeFileOut]
    position: int
    state: str  # unfinished | failed
    failure: FailureOut | None


class NodeOut(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    node: str
    certificate_id: str | None  # null: files no recorded deployment installed (put back by a rollback), or none yet
    state: str  # deployed | rolled_back | none (only a deployment started, never done)
    since: str | None
    actor: str | None  # who deployed or rolled back (the event's principal)
    user: str | None
    host: str | None
    port: int | None
    format: str | None
    files: list[NodeFileOut]
    keep: int
    generations: list[GenerationOut]  # newest first
    verified: bool | None  # the last check of certificate_id on this node; null: not checked since
    verified_at: str | None
    started: StartedOut | None


class NodePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[NodeOut]
    next_cursor: str | None


def node_out(row: dict) -> NodeOut:
    failure = None if row["failed_at"] is None else FailureOut(at=row["failed_at"], step=row["failed_step"],
                                                               reason=row["failed_reason"])
    started = None if row["started_certificate_id"] is None else StartedOut(
        certificate_id=row["started_certificate_id"], at=row["started_at"], actor=row["started_actor"],
        files=msgspec.convert(row["started_files"], list[NodeFileOut]), position=row["started_position"],
        state="failed" if failure else "unfinished", failure=failure)
    return msgspec.convert({**{k: v for k, v in row.items() if not k.startswith(("started_", "failed_"))},
                            "started": started}, NodeOut, from_attributes=True)


class DeploymentController(Controller):
    path = "/deployments"
    tags = ["deployments"]

    @get("/", summary="What each node holds (cursor pagination)", description="One item per node a certificate was "
         "deployed to (`csm cluster deploy`): the certificate it holds as far as the store knows, since when and by "
         "whom, its files and their SHA-256, the last verification, the earlier generations the node keeps for a "
         "rollback, and a deployment started there and never recorded as done. Ordered by tenant and node. Needs "
         "cert:read.", responses=QUERY_ERRORS)
    async def list_nodes(self, request: Request, principal: Caller, min_position: MinPosition = None,
                         tenant_id: TenantQuery = None,
                         node: Annotated[str | None, QueryParameter(min_length=1, max_length=253,
                                                                    description="one node's name")] = None,
                         cursor: Annotated[str | None, QueryParameter(max_length=600, description="the previous "
                                                                      "page's next_cursor")] = None,
                         limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100) -> NodePage:
        authorize_search(principal, "cert:read", tenant_id)
        await read_your_writes(request, min_position)
        after = decoded_cursor(deployments_model.decode_cursor, cursor)
        rows = await read_models_of(request.app.state).query(
            deployments_model.nodes, visible_tenants(principal), tenant_id=tenant_id, name=node, after=after,
            limit=limit + 1)
        return NodePage(items=[node_out(r) for r in rows[:limit]],
                        next_cursor=deployments_model.encode_cursor(rows[limit - 1]) if len(rows) > limit else None)
