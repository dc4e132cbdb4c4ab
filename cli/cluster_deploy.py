"""`csm cluster deploy`: install each node's keystore and truststore over SSH, recorded as ``certificate.deployed``.

The files are exported fresh from the store for each node (the key export is the ordinary, audited
``certificate.private_key_exported``), rendered in memory and sent on ssh's standard input: no
keystore is written on this machine, and the deployment records the SHA-256 of exactly what the
node holds. The password is the one the nodes' cassandra.yaml already names (bootstrap-tls's
``keystore.password``); it is read from a file, only ever used here to encrypt the stores, and
appears in no argv, environment of a child process, log line or event. Nodes are done one at a
time, in the order given, so a bad keystore shows at the first node's reload rather than on all.

Once the files are staged on the node, ``certificate.deployment_started`` is recorded, then the renames run, then
``certificate.deployed``: a failure between the two is recorded as ``certificate.deployment_failed`` (the step, and
ssh's words without the password), a process that dies there records nothing more; either way the next deploy of
the node (as verify and rollback) reports what the node holds of it, file by file (``report_unfinished``).
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
from collections.abc import Callable
from pathlib import Path

import click
import msgspec

from cli.ca import convert
from cli.cluster import also_trusted
from cli.cluster_verify import check, how_unfinished, verify_options
from cli.common import CliError, catch_up, command_context, run_async, runtime_for
from cli.metrics_file import Run, metrics_file_option, recorded_run
from commands import certificates as cert_commands
from commands import deployments
from domain import deployment
from domain.certificate import DeployedFile
from domain.deployment import DEFAULT_KEEP, MAX_KEEP, NodeFile
from domain.errors import DomainError
from infra import ssh
from infra.config import Settings
from infra.export.bundle import NODE_FORMATS, node_keystores, preflight
from projections import cas as ca_model
from projections import certificate_queries as read_model
from projections import deployments as deployments_model

DEFAULT_REMOTE_DIR = "/etc/cassandra/tls"


class Target(msgspec.Struct, frozen=True):
    name: str
    endpoint: ssh.Endpoint


def node_target(text: str) -> Target:
    name, _, destination = text.partition("=")
    try:
        msgspec.convert(name, deployments.NodeName)
        return Target(name, ssh.Endpoint.parse(destination))
    except (msgspec.ValidationError, ValueError) as exc:
        raise click.BadParameter(f"{text!r}: NAME=user@host[:port] expected ({exc})", param_hint="--node") from None


def _certificate(conn, tenant_id: str, node: str, ca_id: str | None, now) -> dict:
    """The node's newest valid cassandra-node certificate (common name = node name, as bootstrap-tls issues it)."""
    rows = read_model.search(conn, None, tenant_id=tenant_id, ca_id=ca_id, common_name=node, status="valid",
                             profile="cassandra-node", now=now, limit=10_000)
    rows = [row for row in rows if row["common_name"] == node and row["has_key"]]
    if not rows:
        raise CliError(f"no valid cassandra-node certificate with common name {node} and a key held here in tenant "
                       f"{tenant_id}" + (f" under CA {ca_id}" if ca_id else "") + " (csm cluster bootstrap-tls)")
    return max(rows, key=lambda row: row["position"])


def _named(conn, tenant_id: str, certificate_id: str) -> dict:
    """``--certificate``: that certificate of the tenant, whatever its common name (one deployed to several nodes)."""
    row = read_model.get(conn, certificate_id.lower(), tenant_id)
    if row is None:
        raise CliError(f"--certificate {certificate_id}: no such certificate in tenant {tenant_id}", 2)
    return row


def report_unfinished(node_row: dict | None, observed: list[NodeFile]) -> list[str]:
    """Lines saying that a deployment to the node was started and never recorded as done, and what each of its files
    is on the node now (``observed``); none if there is no such deployment on record."""
    if not node_row or not node_row["started_certificate_id"]:
        return []
    started = {f["path"]: f["sha256"] for f in node_row["started_files"]}
    states = deployment.half_done(started, {f["path"]: f["sha256"] for f in node_row["files"]}, observed)
    return [f"  unfinished: a deployment of certificate {node_row['started_certificate_id']} started at "
            f"{node_row['started_at']} by {node_row['started_actor']} (position {node_row['started_position']}) "
            f"{how_unfinished(node_row)}; the node holds: {deployment.describe(states)}"]


def inspect_started(endpoint: ssh.Endpoint, options: ssh.SshOptions, node_row: dict | None,
                    host_key: ssh.HostKey | None = None) -> list[NodeFile]:
    """The node's hashes of the files of a deployment started there and never recorded as done (none: no such)."""
    if not node_row or not node_row["started_certificate_id"]:
        return []
    seen, _ = ssh.inspect(endpoint, options, [f["path"] for f in node_row["started_files"]], host_key)
    return [NodeFile(path=path, sha256=current, generations=generations) for path, current, generations in seen]


def _read_password(password_file: Path | None) -> str:
    password = password_file.read_text().rstrip("\n") if password_file else os.environ.get("CSM_EXPORT_PASSWORD")
    if not password:
        raise CliError("a keystore password is needed: --password-file (bootstrap-tls's keystore.password) or "
                       "CSM_EXPORT_PASSWORD", 2)
    return password


@click.command("deploy")
@click.option("--node", "nodes", multiple=True, required=True, metavar="NAME=USER@HOST[:PORT]",
              help="A node (repeatable): its certificate is the newest valid cassandra-node one named NAME.")
@click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The nodes' SSH host keys (known_hosts format); the only trust: a node not in it is refused.")
@click.option("--accept-new-host-key", is_flag=True,
              help="Trust on first use: a node with no key in --known-hosts is accepted, its key added there, "
                   "printed and recorded. A changed key is still refused.")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="SSH private key file (else the keys of the running ssh-agent, SSH_AUTH_SOCK).")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The keystore password the nodes use (else CSM_EXPORT_PASSWORD).")
@click.option("--tenant", "tenant_id", default="platform", show_default=True)
@click.option("--ca", "ca_id", default=None, help="Only certificates issued by this CA.")
@click.option("--also-trust", multiple=True, metavar="CA_ID", help="Put this CA's roots in the truststore too "
              "(repeatable; as bootstrap-tls --also-trust, while the cluster CA is replaced).")
@click.option("--certificate", "certificate_id", default=None, metavar="ID",
              help="Deploy this certificate to every --node, instead of each node's own (the newest valid "
                   "cassandra-node certificate named NAME): one certificate on several nodes.")
@click.option("--keep", type=click.IntRange(1, MAX_KEEP), default=DEFAULT_KEEP, show_default=True,
              help="Generations of the replaced files each node keeps for a rollback: NAME.previous (the last), "
                   "NAME.previous.2 ... NAME.previous.KEEP; older ones are removed.")
@click.option("--format", "format_", type=click.Choice(NODE_FORMATS), default="jks", show_default=True)
@click.option("--remote-dir", default=DEFAULT_REMOTE_DIR, show_default=True, help="Directory on the node.")
@click.option("--group", default=None, help="Make the files 0640 and owned by this group (default: 0600).")
@click.option("--reload-command", default=None,
              help="Run on the node after the files are in place, e.g. 'nodetool reloadssl'; its exit status is "
                   "reported and recorded (its text is not). Keep credentials out of it.")
@click.option("--reload-timeout", type=click.IntRange(1, 3600), default=300, show_default=True)
@click.option("--connect-timeout", type=click.IntRange(1, 300), default=10, show_default=True)
@click.option("--stop-on-error", is_flag=True, help="Leave the remaining nodes alone after a failure.")
@verify_options
@metrics_file_option
@click.pass_obj
def deploy(settings: Settings, nodes: tuple[str, ...], known_hosts: Path, accept_new_host_key: bool,
           identity: Path | None, password_file: Path | None, tenant_id: str, ca_id: str | None,
           also_trust: tuple[str, ...], certificate_id: str | None, keep: int, format_: str, remote_dir: str,
           group: str | None, reload_command: str | None, reload_timeout: int, connect_timeout: int,
           stop_on_error: bool, verify_ports: tuple[int, ...], verify_within: int, metrics_file: Path | None) -> None:
    """Install each --node's keystore and truststore over SSH (atomically, keeping --keep generations of the
    replaced files: NAME.previous, NAME.previous.2 ...), audited.

    The start is recorded once the files are staged, before the renames, and the deployment once they are done: a
    deployment started and never recorded as done (the renames failed halfway) is reported, file by file, by the
    next deploy, verify or rollback of the node. With --verify-port, then check that the node serves the
    certificate (recorded too). Exit status 1 if any node failed (a reload that failed, or a verification,
    included); the summary lists every node. With --metrics-file, the run is recorded for node_exporter's textfile
    collector (csm_cluster_deploy_*).
    """
    with recorded_run(metrics_file, "cluster_deploy") as run:
        _deploy(settings, run, nodes, known_hosts, accept_new_host_key, identity, password_file, tenant_id, ca_id,
                also_trust, certificate_id, keep, format_, remote_dir, group, reload_command, reload_timeout,
                connect_timeout, stop_on_error, verify_ports, verify_within)


def _deploy(settings: Settings, run: Run, nodes: tuple[str, ...], known_hosts: Path, accept_new_host_key: bool,
            identity: Path | None, password_file: Path | None, tenant_id: str, ca_id: str | None,
            also_trust: tuple[str, ...], certificate_id: str | None, keep: int, format_: str, remote_dir: str,
            group: str | None, reload_command: str | None, reload_timeout: int, connect_timeout: int, stop_on_error: bool,
            verify_ports: tuple[int, ...], verify_within: int) -> None:
    targets = [node_target(text) for text in nodes]
    if len({t.name for t in targets}) != len(targets):
        raise click.BadParameter("a node is named twice", param_hint="--node")
    if not remote_dir.startswith("/") or posixpath.normpath(remote_dir) != (remote_dir.rstrip("/") or "/"):
        raise click.BadParameter(f"{remote_dir!r} is not an absolute path (normalised: no '.', '..' or '//')",
                                 param_hint="--remote-dir")
    if group is not None and not ssh.GROUP_NAME.match(group):
        raise click.BadParameter(f"{group!r} is not a group name", param_hint="--group")
    if not known_hosts.exists() and not accept_new_host_key:
        raise click.BadParameter(f"{known_hosts} does not exist (or pass --accept-new-host-key)",
                                 param_hint="--known-hosts")
    if identity is None and not os.environ.get("SSH_AUTH_SOCK"):
        raise CliError("no --identity and no ssh-agent (SSH_AUTH_SOCK is not set)", 2)
    if shutil.which(ssh.SSH) is None:
        raise CliError("the OpenSSH client (ssh) is not installed (Debian package openssh-client)", 2)
    password = _read_password(password_file)
    options = ssh.SshOptions(known_hosts=known_hosts, identity=identity, accept_new_host_key=accept_new_host_key,
                             connect_timeout=connect_timeout)
    with runtime_for(settings) as runtime:
        catch_up(runtime)
        each_node(targets, lambda target: _deploy_one(
            runtime, target, options, password, tenant_id=tenant_id, ca_id=ca_id, also_trust=also_trust,
            certificate_id=certificate_id, keep=keep, format_=format_, remote_dir=remote_dir, group=group,
            reload_command=reload_command, reload_timeout=reload_timeout, verify=(verify_ports, verify_within)), stop_on_error=stop_on_error,
            done="deployed", run=run)


def each_node(targets: list[Target], act: Callable[[Target], tuple[str, bool]], *, stop_on_error: bool,
              done: str, run: Run | None = None) -> None:
    """``act`` on each node in turn, printing its line (a refusal or SSH failure is that node's FAILED line, not
    the end of the run unless ``stop_on_error``), then the count; exit status 1 when any node failed. ``run``
    (--metrics-file) gets the counts, a node skipped by ``stop_on_error`` counted as failed."""
    failed = 0
    for index, target in enumerate(targets):
        try:
            line, ok = act(target)
        except (CliError, DomainError, ssh.SshError, ValueError) as exc:
            text = exc.format_message() if isinstance(exc, CliError) else (
                f"{exc.code}: {exc.detail}" if isinstance(exc, DomainError) else str(exc))
            line, ok = f"{target.name}: FAILED ({target.endpoint}): {text}", False
        click.echo(line)
        failed += not ok
        if not ok and stop_on_error:
            for skipped in targets[index + 1:]:
                click.echo(f"{skipped.name}: SKIPPED (--stop-on-error)")
            break
    click.echo(f"{len(targets)} node(s): {len(targets) - failed} {done}, {failed} failed")
    if run is not None:
        run.count(nodes=len(targets), nodes_failed=failed + len(targets) - 1 - index if failed else 0)
        run.success = not failed
    if failed:
        raise SystemExit(1)


def _deploy_one(runtime, target: Target, options: ssh.SshOptions, password: str, *, tenant_id: str,
                ca_id: str | None, also_trust: tuple[str, ...], certificate_id: str | None, keep: int, format_: str,
                remote_dir: str, group: str | None, reload_command: str | None, reload_timeout: int,
                verify: tuple[tuple[int, ...], int]) -> tuple[str, bool]:
    """Deploy one node through the command handler: its summary lines, and whether all went well (the reload and
    the verification too)."""
    services, ctx, now = runtime.services, command_context(), runtime.services.clock.now()
    conn = runtime.runner.connection()
    try:
        row = _named(conn, tenant_id, certificate_id) if certificate_id else _certificate(
            conn, tenant_id, target.name, ca_id, now)
        node_row = deployments_model.node(conn, tenant_id, target.name)
        chain = ca_model.issuer_chain(conn, tenant_id, row["issuer_fingerprint"], now)
        trust = ca_model.truststore_chain(conn, tenant_id, row["issuer_fingerprint"], now)
        trust += [r for r in also_trusted(conn, tenant_id, also_trust, now)
                  if r["fingerprint"] not in {t["fingerprint"] for t in trust}]
    finally:
        conn.close()
    preflight(format_, password, format_ == "pem", password_field="--password-file", key_algorithm=row["algorithm"])
    reload_detail: list[str] = []
    notes: list[str] = []
    started: list[int | None] = []  # the position of certificate.deployment_started, once recorded

    async def deliver(record_start: deployments.RecordStart) -> deployments.Delivered:
        # the node's host key is checked before its key leaves the vault: a refused node has nothing exported for it
        seen = await asyncio.to_thread(ssh.probe, target.endpoint, options)
        notes.extend(report_unfinished(node_row, await asyncio.to_thread(inspect_started, target.endpoint, options,
                                                                         node_row, seen)))
        exported = await cert_commands.export_private_key(convert({
            "tenant_id": tenant_id, "certificate_id": row["certificate_id"], "format": format_, "encrypted": True},
            cert_commands.ExportPrivateKey), ctx, services)
        files = node_keystores(format_, row, chain, trust, exported.material, password)
        staged = await asyncio.to_thread(ssh.stage, target.endpoint, options, remote_dir, files, group, seen)
        try:
            begun = await record_start(deployments.Staging(
                files=tuple(DeployedFile(path=f.path, sha256=f.sha256) for f in staged.files),
                host_key_type=staged.host_key.key_type, host_key_fingerprint=staged.host_key.fingerprint))
        except BaseException:
            await asyncio.to_thread(ssh.discard, target.endpoint, options, staged.moves)
            raise
        started.append(begun.global_position)
        try:
            host_key = await asyncio.to_thread(ssh.commit, target.endpoint, options, staged, keep)
        except ssh.SshError as exc:  # ssh's and the node's words: paths and errors, the password removed anyway
            raise deployments.StepFailed("commit", str(exc), secrets=(password,)) from exc
        installed = staged.files
        status = None
        if reload_command:
            status, detail = await asyncio.to_thread(run_reload, target.endpoint, options, reload_command,
                                                     reload_timeout)
            reload_detail.append(detail)
        return deployments.Delivered(
            files=tuple(DeployedFile(path=f.path, sha256=f.sha256) for f in installed),
            host_key_type=host_key.key_type, host_key_fingerprint=host_key.fingerprint,
            host_key_first_use=host_key.first_use, reload_exit_status=status)

    command = convert({"tenant_id": tenant_id, "certificate_id": row["certificate_id"], "node": target.name,
                       "user": target.endpoint.user, "host": target.endpoint.host, "port": target.endpoint.port,
                       "format": format_, "keep": keep}, deployments.DeployCertificate)
    try:
        outcome = run_async(deployments.deploy_certificate(command, ctx, services, deliver))
    except deployments.StepFailed as exc:
        recorded = (f"and its failure (position {exc.recorded.global_position})" if exc.recorded
                    else "(its failure could not be recorded)")
        raise CliError("\n".join([f"{exc.reason}; the start of this deployment is recorded (position {started[0]}) "
                                  f"{recorded}, not its completion: some files may be new and some old. The next "
                                  "deploy, verify or rollback of the node reports which", *notes])) from None
    done = outcome.delivered
    lines = [f"{target.name}: deployed certificate {row['certificate_id']} to {target.endpoint} "
             f"(host key {done.host_key_type} {done.host_key_fingerprint}"
             + (f", trusted on first use and added to {options.known_hosts}" if done.host_key_first_use else "")
             + f"; position {outcome.result.global_position}; keeping {keep} generation{'s' * (keep > 1)})"]
    lines += notes
    lines += [f"  {f.path} sha256:{f.sha256}" for f in done.files]
    if done.reload_exit_status is not None:
        lines.append(f"  reload: exit {done.reload_exit_status}" + (f": {reload_detail[0]}" if reload_detail
                                                                      and reload_detail[0] else ""))
    ok = done.reload_exit_status in (None, 0)
    ports, within = verify
    if ports and ok:
        checked = check(runtime, tenant_id=tenant_id, node=target.name, host=target.endpoint.host, ports=ports,
                        certificate_id=row["certificate_id"], fingerprint=row["fingerprint"], within=within,
                        after="deploy")
        lines += checked.lines
        ok = checked.verified
        if not ok:  # the files are in place and recorded, but the node does not serve them
            lines[0] = lines[0].replace(f"{target.name}: ", f"{target.name}: NOT VERIFIED: ", 1)
    elif ports:
        lines.append("  verify: skipped (the reload failed)")
    return "\n".join(lines), ok


def run_reload(endpoint: ssh.Endpoint, options: ssh.SshOptions, command: str, timeout: int) -> tuple[int, str]:
    """The reload command's exit status and last words; 255 if ssh itself failed (the files are in place)."""
    try:
        done = ssh.run(endpoint, options, command, timeout=timeout)
    except ssh.SshError as exc:
        return 255, str(exc)
    return done.returncode, " ".join(done.stderr.splitlines()[-2:])
