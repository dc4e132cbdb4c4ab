"""The rules of checking and undoing a deployment: whether a node serves it, and whether its files may be rolled back.

A rollback undoes the deployment of a certificate that a node holds now by putting back each file's generation
``g`` (1: ``NAME.previous``, the file that deployment replaced; 2: ``NAME.previous.2``, the one before; ...; a
node keeps as many as the deployments' ``--keep`` said). It is refused when a file has no such generation on the
node (nothing to go back to), and when the node's files are not, byte for byte (SHA-256), the ones the deployment
recorded: someone changed them since, and rolling back would throw their change away unseen (unless the operator
forces it); and when a deployment to the node was started and never recorded as completed (it may have left some
files new and some old: ``half_done``), unless forced. Which of the certificate's recorded deployments to the node
is in place is found by SHA-256 (``in_place``): not always its last one, since a rollback recorded on another
certificate's stream may have put an earlier one back. What the restored files are is found by their SHA-256 too:
the recorded deployment to that node that they match, if any.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from domain.certificate import (Certificate, CertificateDeployed, DeploymentFailed, DeploymentStarted, VerifiedPort,
                                require_exists)
from domain.errors import DomainError, NotFound

AFTER = ("deploy", "rollback", "check")
FAILED_STEPS = ("commit", "record", "deliver")  # where a deployment started can fail (certificate.deployment_failed)
MAX_REASON = 300
DEFAULT_KEEP = 3  # generations of the replaced files a node keeps unless told otherwise (deploy --keep)
MAX_KEEP = 10
ROLLED_BACK_SUFFIX = ".rolled-back"


class RollbackRefused(DomainError):
    status = 409


class NodeFile(msgspec.Struct, frozen=True, kw_only=True):
    """A deployed file as the node holds it now: its SHA-256 and its generations' (``generations[0]``: its
    ``.previous``, ``[1]``: ``.previous.2``, ...; None: that file is absent)."""

    path: str
    sha256: str | None
    generations: tuple[str | None, ...] = ()

    def generation(self, number: int) -> str | None:
        return self.generations[number - 1] if 0 < number <= len(self.generations) else None


def _generation_name(path: str, generation: int) -> str:
    return f"{path}.previous" + (f".{generation}" if generation > 1 else "")


def last_deployment(state: Certificate, node: str) -> CertificateDeployed | None:
    mine = [d for d in state.deployments if d.node == node]
    return mine[-1] if mine else None


def deployments_to(state: Certificate, node: str) -> list[CertificateDeployed]:
    """This certificate's deployments to ``node`` the state keeps, newest first."""
    return [d for d in state.deployments if d.node == node][::-1]


def earlier_deployments(state: Certificate, node: str) -> list[CertificateDeployed]:
    """The deployments to ``node`` before the last one, of this same certificate (re-deployments), newest first."""
    return [d for d in state.deployments if d.node == node][-2::-1]


def unfinished(state: Certificate, node: str) -> DeploymentStarted | None:
    """This certificate's deployment to ``node`` started and never recorded as done, if there is one."""
    return next((d for d in state.started if d.node == node), None)


def in_place(state: Certificate, node: str, observed: Sequence[NodeFile]) -> CertificateDeployed | None:
    """This certificate's newest recorded deployment to ``node`` whose every file the node holds (``observed``, by
    SHA-256), or None: files changed since, or none of its deployments is there."""
    seen = {(f.path, f.sha256) for f in observed}
    return next((d for d in deployments_to(state, node) if d.files and _pairs(d.files) <= seen), None)


def _pairs(files: Iterable) -> set[tuple[str, str | None]]:
    return {(f.path, f.sha256) for f in files}


def require_deployed(state: Certificate, certificate_id: str, node: str) -> CertificateDeployed:
    """The certificate's last deployment to ``node``, still in place as far as the store knows (not rolled back)."""
    require_exists(state, certificate_id)
    deployed = last_deployment(state, node)
    if deployed is None:
        raise NotFound("not_deployed", f"certificate {certificate_id} has no deployment to node {node} that a "
                       "rollback has not undone", field="node")
    return deployed


def check_rollback(deployed: CertificateDeployed, observed: Sequence[NodeFile], force: bool, generation: int = 1,
                   unfinished: DeploymentStarted | None = None) -> bool:
    """Refuse a rollback the node's files do not allow; True if it goes ahead only because it is forced (the node's
    files differ from the recorded ones, or a deployment to the node was started and never recorded as done)."""
    seen = {f.path: f for f in observed}
    missing = [f.path for f in deployed.files if f.path not in seen or seen[f.path].generation(generation) is None]
    if missing:
        raise RollbackRefused("no_previous", f"node {deployed.node} has no {_generation_name(missing[0], generation)}: "
                              "there is nothing to roll back to at that generation (a first deployment, fewer "
                              "deployments kept, or a rollback already done)", field="generation")
    if unfinished is not None and not force:
        raise RollbackRefused("deployment_unfinished", f"a deployment of certificate {unfinished.certificate_id} to "
                              f"node {deployed.node} was started and never recorded as done: "
                              f"{describe(half_done(_hashes(unfinished.files), _hashes(deployed.files), observed))}; "
                              "deploy again (which records "
                              "what the node holds) or --force", field="force")
    changed = [f.path for f in deployed.files if seen[f.path].sha256 != f.sha256]
    if changed and not force:
        raise RollbackRefused("files_changed", f"{changed[0]} on node {deployed.node} is not the file the last "
                              f"deployment installed (SHA-256 differs: changed by hand?); --force rolls back anyway",
                              field="force")
    return bool(changed) or unfinished is not None


def restored_by(candidates: Iterable[CertificateDeployed | None], observed: Sequence[NodeFile],
                generation: int = 1) -> str | None:
    """The certificate of the first candidate deployment whose every file is what that generation holds, or None."""
    restored = {f.path: f.generation(generation) for f in observed}
    for deployed in candidates:
        if deployed is not None and deployed.files and all(
                restored.get(f.path) == f.sha256 for f in deployed.files):
            return deployed.certificate_id
    return None


def _hashes(files: Iterable) -> dict[str, str]:
    return {f.path: f.sha256 for f in files}


def half_done(started: Mapping[str, str], recorded: Mapping[str, str],
              observed: Sequence[NodeFile]) -> dict[str, str]:
    """What each file (path: SHA-256) of a deployment started and never recorded as done is on the node: ``new``
    (the started deployment's), ``old`` (the last recorded deployment's, ``recorded``), ``absent`` or ``other``."""
    seen = {f.path: f.sha256 for f in observed}
    out = {}
    for path, digest in started.items():
        now = seen.get(path)
        out[path] = ("new" if now == digest else "old" if now is not None and now == recorded.get(path)
                     else "absent" if now is None else "other")
    return out


def describe(states: dict[str, str]) -> str:
    """``half_done``'s answer in words: which files are new, which old."""
    if states and all(state == "new" for state in states.values()):
        return "every file is the new one (the renames were done; the record of it is missing)"
    return ", ".join(f"{path}: {state}" for path, state in states.items())


_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.DOTALL)


def failed(started: DeploymentStarted, step: str, reason: str, secrets: Iterable[str] = ()) -> DeploymentFailed:
    """The record of ``started`` failing at ``step``: ``reason`` on one line, bounded, without any PEM block (key
    material) or any of ``secrets`` (the keystore password) it might quote."""
    if step not in FAILED_STEPS:
        raise DomainError("invalid_step", f"{step!r} is not one of {', '.join(FAILED_STEPS)}", field="step")
    text = _PEM.sub("[PEM removed]", reason)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())[:MAX_REASON] or "no reason given"
    return DeploymentFailed(certificate_id=started.certificate_id, node=started.node, step=step, reason=text)


def is_verified(ports: Sequence[VerifiedPort]) -> bool:
    """Every port checked served the certificate (and at least one was checked)."""
    return bool(ports) and all(p.matched for p in ports)


def require_after(after: str) -> str:
    if after not in AFTER:
        raise DomainError("invalid_after", f"{after!r} is not one of {', '.join(AFTER)}", field="after")
    return after
