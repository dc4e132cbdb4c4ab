"""The rules of checking and undoing a deployment: whether a node serves it, and whether its files may be rolled back.

A rollback undoes a certificate's last recorded deployment to a node by putting each file's ``NAME.previous`` (the
file that deployment replaced) back in place. It is refused when a file has no ``.previous`` on the node (nothing to
go back to), and when the node's files are not, byte for byte (SHA-256), the ones the deployment recorded: someone
changed them since, and rolling back would throw their change away unseen (unless the operator forces it). What the
restored files are is found by their SHA-256 too: the recorded deployment to that node that they match, if any.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from domain.certificate import Certificate, CertificateDeployed, VerifiedPort, require_exists
from domain.errors import DomainError, NotFound

AFTER = ("deploy", "rollback", "check")
ROLLED_BACK_SUFFIX = ".rolled-back"


class RollbackRefused(DomainError):
    status = 409


class NodeFile(msgspec.Struct, frozen=True, kw_only=True):
    """A deployed file as the node holds it now: its SHA-256 and its ``.previous``'s (None: the file is absent)."""

    path: str
    sha256: str | None
    previous_sha256: str | None


def last_deployment(state: Certificate, node: str) -> CertificateDeployed | None:
    mine = [d for d in state.deployments if d.node == node]
    return mine[-1] if mine else None


def earlier_deployment(state: Certificate, node: str) -> CertificateDeployed | None:
    """The deployment to ``node`` before the last one, of this same certificate (a re-deployment)."""
    mine = [d for d in state.deployments if d.node == node]
    return mine[-2] if len(mine) > 1 else None


def require_deployed(state: Certificate, certificate_id: str, node: str) -> CertificateDeployed:
    """The certificate's last deployment to ``node``, still in place as far as the store knows (not rolled back)."""
    require_exists(state, certificate_id)
    deployed = last_deployment(state, node)
    if deployed is None:
        raise NotFound("not_deployed", f"certificate {certificate_id} has no deployment to node {node} that a "
                       "rollback has not undone", field="node")
    return deployed


def check_rollback(deployed: CertificateDeployed, observed: Sequence[NodeFile], force: bool) -> bool:
    """Refuse a rollback the node's files do not allow; True if it goes ahead only because it is forced (the node's
    files differ from the recorded ones)."""
    seen = {f.path: f for f in observed}
    missing = [f.path for f in deployed.files if f.path not in seen or seen[f.path].previous_sha256 is None]
    if missing:
        raise RollbackRefused("no_previous", f"node {deployed.node} has no {missing[0]}.previous: there is nothing to "
                              "roll back to (a first deployment, or a rollback already done)", field="node")
    changed = [f.path for f in deployed.files if seen[f.path].sha256 != f.sha256]
    if changed and not force:
        raise RollbackRefused("files_changed", f"{changed[0]} on node {deployed.node} is not the file the last "
                              f"deployment installed (SHA-256 differs: changed by hand?); --force rolls back anyway",
                              field="force")
    return bool(changed)


def restored_by(candidates: Iterable[CertificateDeployed | None], observed: Sequence[NodeFile]) -> str | None:
    """The certificate of the first candidate deployment whose every file is what a ``.previous`` holds, or None."""
    previous = {f.path: f.previous_sha256 for f in observed}
    for deployed in candidates:
        if deployed is not None and deployed.files and all(
                previous.get(f.path) == f.sha256 for f in deployed.files):
            return deployed.certificate_id
    return None


def is_verified(ports: Sequence[VerifiedPort]) -> bool:
    """Every port checked served the certificate (and at least one was checked)."""
    return bool(ports) and all(p.matched for p in ports)


def require_after(after: str) -> str:
    if after not in AFTER:
        raise DomainError("invalid_after", f"{after!r} is not one of {', '.join(AFTER)}", field="after")
    return after
