"""`csm cluster rollback`: put a generation of each node's earlier files (``NAME.previous``, ``NAME.previous.2`` ...)
back in place over SSH, recorded and optionally verified.

What is undone is the last deployment the store records for the node (``csm cluster deploy``; the node's row in the
deployments read model says which certificate that was, its stream which files), and with ``--generation N`` the
N - 1 before it as well. The SSH transport is deploy's (known_hosts only, no trust on first use: the node was
deployed to before; no secret in any argv); nothing but SHA-256 hashes is read back from the node, no key is
exported, and the files moved are the ones the node already had.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import click

from cli.ca import convert
from cli.cluster_deploy import Target, each_node, node_target, report_unfinished, run_reload
from cli.cluster_verify import check, verify_options
from cli.common import CliError, catch_up, command_context, run_async, runtime_for
from cli.metrics_file import Run, metrics_file_option, recorded_run
from commands import deployments
from domain.deployment import NodeFile
from infra import ssh
from infra.config import Settings
from domain.deployment import MAX_KEEP
from projections import certificate_queries as read_model
from projections import deployments as deployments_model


class SshNode:
    """The rollback port over ssh: inspect the files' hashes, then move them back and run the reload command."""

    def __init__(self, endpoint: ssh.Endpoint, options: ssh.SshOptions, reload_command: str | None,
                 reload_timeout: int) -> None:
        self.endpoint, self.options = endpoint, options
        self.reload_command, self.reload_timeout = reload_command, reload_timeout
        self.host_key: ssh.HostKey | None = None
        self.observed: list[NodeFile] = []
        self.reload_detail = ""

    async def inspect(self, paths) -> list[NodeFile]:
        seen, self.host_key = await asyncio.to_thread(ssh.inspect, self.endpoint, self.options, list(paths))
        self.observed = [NodeFile(path=path, sha256=current, generations=generations)
                         for path, current, generations in seen]
        return self.observed

    async def restore(self, files, generation: int) -> deployments.Restored:
        moves = [(f.path, f.sha256, f.generation(generation) or "") for f in files]
        key = await asyncio.to_thread(ssh.restore_generation, self.endpoint, self.options, moves, generation,
                                      self.host_key)
        status = None
        if self.reload_command:
            status, self.reload_detail = await asyncio.to_thread(run_reload, self.endpoint, self.options,
                                                                 self.reload_command, self.reload_timeout)
        return deployments.Restored(host_key_type=key.key_type, host_key_fingerprint=key.fingerprint,
                                    reload_exit_status=status)


@click.command("rollback")
@click.option("--node", "nodes", multiple=True, required=True, metavar="NAME=USER@HOST[:PORT]",
              help="A node (repeatable) whose last recorded deployment is undone.")
@click.option("--generation", type=click.IntRange(1, MAX_KEEP), default=1, show_default=True,
              help="How far back: 1 puts NAME.previous back (the files the last deployment replaced), 2 "
                   "NAME.previous.2 (undoing the last two deployments), ... as deploy --keep kept them.")
@click.option("--known-hosts", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The nodes' SSH host keys (known_hosts format); the only trust: a node not in it is refused.")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="SSH private key file (else the keys of the running ssh-agent, SSH_AUTH_SOCK).")
@click.option("--tenant", "tenant_id", default="platform", show_default=True)
@click.option("--force", is_flag=True, help="Roll back even if the node's files are not the ones the last deployment "
              "installed (changed by hand since), or a deployment to it was started and never recorded as done: "
              "those files are kept as NAME.rolled-back too.")
@click.option("--reload-command", default=None, help="Run on the node after the files are back, as deploy's.")
@click.option("--reload-timeout", type=click.IntRange(1, 3600), default=300, show_default=True)
@click.option("--connect-timeout", type=click.IntRange(1, 300), default=10, show_default=True)
@click.option("--stop-on-error", is_flag=True, help="Leave the remaining nodes alone after a failure.")
@verify_options
@metrics_file_option
@click.pass_obj
def rollback(settings: Settings, nodes: tuple[str, ...], generation: int, known_hosts: Path, identity: Path | None,
             tenant_id: str, force: bool, reload_command: str | None, reload_timeout: int, connect_timeout: int,
             stop_on_error: bool, verify_ports: tuple[int, ...], verify_within: int, metrics_file: Path | None) -> None:
    """Undo each --node's last deployment (--generation N: its last N): that generation of every file back in place
    (the undone file kept as NAME.rolled-back, the newer generations removed, the older ones shifted down), audited;
    then reload and verify if asked.

    Refused for a node without that generation, whose files were changed since the deployment, or to which a
    deployment was started and never recorded as done (unless --force). Exit status 1 if any node failed. With
    --metrics-file, the run is recorded for node_exporter's textfile collector (csm_cluster_rollback_*).
    """
    with recorded_run(metrics_file, "cluster_rollback") as run:
        _rollback(settings, run, nodes, generation, known_hosts, identity, tenant_id, force, reload_command,
                  reload_timeout, connect_timeout, stop_on_error, verify_ports, verify_within)


def _rollback(settings: Settings, run: Run, nodes: tuple[str, ...], generation: int, known_hosts: Path,
              identity: Path | None, tenant_id: str, force: bool, reload_command: str | None, reload_timeout: int,
              connect_timeout: int, stop_on_error: bool, verify_ports: tuple[int, ...], verify_within: int) -> None:
    targets = [node_target(text) for text in nodes]
    if len({t.name for t in targets}) != len(targets):
        raise click.BadParameter("a node is named twice", param_hint="--node")
    if identity is None and not os.environ.get("SSH_AUTH_SOCK"):
        raise CliError("no --identity and no ssh-agent (SSH_AUTH_SOCK is not set)", 2)
    if shutil.which(ssh.SSH) is None:
        raise CliError("the OpenSSH client (ssh) is not installed (Debian package openssh-client)", 2)
    options = ssh.SshOptions(known_hosts=known_hosts, identity=identity, connect_timeout=connect_timeout)
    with runtime_for(settings) as runtime:
        catch_up(runtime)
        each_node(targets, lambda target: _rollback_one(
            runtime, target, SshNode(target.endpoint, options, reload_command, reload_timeout), tenant_id=tenant_id,
            force=force, generation=generation, verify=(verify_ports, verify_within)), stop_on_error=stop_on_error,
            done="rolled back", run=run)


def _rollback_one(runtime, target: Target, node: SshNode, *, tenant_id: str, force: bool, generation: int,
                  verify: tuple[tuple[int, ...], int]) -> tuple[str, bool]:
    conn = runtime.runner.connection()
    try:
        record = deployments_model.node(conn, tenant_id, target.name)
        others = deployments_model.certificates_on(conn, tenant_id, target.name)
    finally:
        conn.close()
    if record is None or record["state"] == "none":
        raise CliError(f"no certificate is recorded as deployed to {target.name} in tenant {tenant_id}")
    if record["certificate_id"] is None:
        raise CliError(f"{target.name} holds files no recorded deployment installed (a rollback put them back at "
                       f"{record['since']}): there is no recorded deployment to undo")
    command = convert({"tenant_id": tenant_id, "certificate_id": record["certificate_id"], "node": target.name,
                       "user": target.endpoint.user, "host": target.endpoint.host, "port": target.endpoint.port,
                       "candidates": [c for c in others if c != record["certificate_id"]], "generation": generation,
                       "unfinished_certificate_id": record["started_certificate_id"], "force": force},
                      deployments.RollbackDeployment)
    outcome = run_async(deployments.rollback_deployment(command, command_context(), runtime.services, node))
    done = outcome.event
    restored = done.restored_certificate_id
    lines = [f"{target.name}: rolled back certificate {done.certificate_id} on {target.endpoint} to generation "
             f"{done.generation} (host key {done.host_key_type} {done.host_key_fingerprint}; position "
             f"{outcome.result.global_position})"
             + (" FORCED over files changed on the node" if done.forced else "")]
    if done.forced and record["started_certificate_id"]:
        lines += report_unfinished(record, node.observed)
    lines += [f"  {f.path} sha256:{f.sha256} (was sha256:{f.rolled_back_sha256}, kept as {f.path}.rolled-back)"
              for f in done.files]
    lines.append(f"  restored: certificate {restored}" if restored else
                 "  restored: files no recorded deployment installed (their certificate is not known here)")
    if done.reload_exit_status is not None:
        lines.append(f"  reload: exit {done.reload_exit_status}" + (f": {node.reload_detail}" if node.reload_detail
                                                                      else ""))
    ok = done.reload_exit_status in (None, 0)
    if verify[0]:
        checked, ok = _verify_restored(runtime, tenant_id, target, restored, verify, reloaded=ok)
        lines += checked
    return "\n".join(lines), ok


def _verify_restored(runtime, tenant_id: str, target: Target, restored: str | None,
                     verify: tuple[tuple[int, ...], int], *, reloaded: bool) -> tuple[list[str], bool]:
    """Check that the node serves the restored certificate; not verified if the reload failed or it is unknown."""
    if not reloaded or restored is None:
        return ["  verify: NOT VERIFIED: " + ("the reload failed" if not reloaded else
                                              "which certificate the restored files hold is not known")], False
    catch_up(runtime)
    conn = runtime.runner.connection()
    try:
        row = read_model.get(conn, restored, tenant_id)
    finally:
        conn.close()
    if row is None:
        raise CliError(f"certificate {restored} is not in the read model yet; run csm cluster verify")
    ports, within = verify
    checked = check(runtime, tenant_id=tenant_id, node=target.name, host=target.endpoint.host, ports=ports,
                    certificate_id=restored, fingerprint=row["fingerprint"], within=within, after="rollback")
    return checked.lines, checked.verified
