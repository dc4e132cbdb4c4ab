"""Pushing files to a node over SSH with the OpenSSH client (`ssh`), a fixed option set and atomic installs.

Why the ``ssh`` binary and not a Python library: it is on every operator's machine, honours their
ssh-agent, and its host key checking is the one operators already trust; no new dependency. Every
call runs ``ssh -F /dev/null`` (the operator's ssh_config cannot loosen anything) with
``BatchMode=yes`` (never a password or passphrase prompt), ``StrictHostKeyChecking=yes`` against
the known_hosts file given and no other (``accept-new`` only when asked: trust on first use), no
forwarding, no multiplexing, and ``-v -E LOG``: the debug log, kept in a private temporary
directory, is where the server's host key fingerprint is read from.

The files travel on the ssh process's standard input (``cat >`` on the node): they never touch
the local disk, and no secret is in any argv or in the child's environment (which is reduced to
what ssh needs: PATH, HOME, the user's names and SSH_AUTH_SOCK). Nothing here sees a password;
keystores arrive already encrypted.

On the node (a POSIX shell with mktemp, sha256sum, chmod, ln, mv): each file is written to a new
temporary name in the destination directory, born under umask 077, set to 0600 (or 0640 and
chgrp'ed), its SHA-256 compared with ours (:func:`stage`); only when every file is staged are they
renamed over their targets (:func:`commit`). The files replaced are kept for a rollback, ``keep``
generations of them: ``NAME.previous`` (the last one), ``NAME.previous.2`` (the one before) up to
``NAME.previous.KEEP``; older ones are removed. The commit does that in two phases: first, for every file,
the older generations are shifted up one and the current file hard-linked as ``NAME.previous`` (nothing
the node reads has changed yet), then the staged files are renamed over their targets, one ``mv`` each.
Only a failure in that second phase (a few renames) can leave some files new and some old; the caller
records its intent before the commit for that reason (``commands.deployments``).

A rollback (:func:`inspect`, then :func:`restore_generation`) reads the SHA-256 of each file and of its
generations, and then, in one script that checks those hashes again first (a file changed in between
stops it before anything moves), keeps each file as ``NAME.rolled-back`` (a hard link), renames the
chosen generation over it, removes the generations newer than the chosen one (they are undone too) and
shifts the older ones down, so that ``NAME.previous`` is again the one before. Nothing is read back from
the node but hashes.
"""

from __future__ import annotations

import hashlib
import os
import re
import posixpath
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from domain.deployment import MAX_KEEP  # generations a node may keep of each file; the scripts look no further

SSH = "ssh"
TRANSFER_TIMEOUT = 300.0  # seconds per ssh call that moves or renames files
PREVIOUS_SUFFIX = ".previous"
ROLLED_BACK_SUFFIX = ".rolled-back"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")
GROUP_NAME = _USER  # a POSIX group name, as --group gives it
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HOST_KEY_LINE = re.compile(r"Server host key: (\S+) (SHA256:\S+)")
_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "SSH_AUTH_SOCK")


class SshError(Exception):
    """A step on a node failed: ``stage`` says which (connect, stage, commit, reload), the message what ssh said."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage


@dataclass(frozen=True, slots=True)
class Endpoint:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``user@host[:port]``, an IPv6 address in brackets (``user@[::1]:2222``); ValueError naming what is wrong."""
        user, at, rest = text.rpartition("@")
        if not at or not _USER.match(user):
            raise ValueError(f"{text!r}: user@host[:port] expected (a user name is required)")
        port = "22"
        if rest.startswith("["):
            host, bracket, tail = rest[1:].partition("]")
            if not bracket or not _IPV6.match(host) or (tail and not tail.startswith(":")):
                raise ValueError(f"{text!r}: an IPv6 address is written [addr] or [addr]:port")
            port = tail[1:] or port
        else:
            host, colon, given = rest.partition(":")
            port = given if colon else port
            if not _HOST.match(host):
                raise ValueError(f"{text!r}: {host!r} is not a host name or IPv4 address")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: port {port!r} is not 1-65535")
        return cls(user=user, host=host, port=int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SshOptions:
    """How to reach nodes: the known_hosts file (the only trust), an identity file or else the ssh-agent."""

    known_hosts: Path
    identity: Path | None = None
    accept_new_host_key: bool = False
    connect_timeout: int = 10


@dataclass(frozen=True, slots=True)
class HostKey:
    key_type: str  # as ssh names it: ssh-ed25519, ecdsa-sha2-nistp256, rsa-sha2-512, ...
    fingerprint: str  # SHA256:base64, as ssh-keygen -l prints it
    first_use: bool  # added to known_hosts by this connection (accept_new_host_key)


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: str  # the remote command's (ssh's own messages are in the log, below)
    log: str  # ssh's own messages, debug lines left out
    host_key: HostKey | None


@dataclass(frozen=True, slots=True)
class InstalledFile:
    path: str
    sha256: str


def argv(endpoint: Endpoint, options: SshOptions, log_file: Path, remote_command: str) -> list[str]:
    """The whole ssh command line: fixed options, the destination after ``--``, and the remote command."""
    checking = "accept-new" if options.accept_new_host_key else "yes"
    settings = {
        "BatchMode": "yes", "StrictHostKeyChecking": checking, "UserKnownHostsFile": str(options.known_hosts),
        "GlobalKnownHostsFile": "/dev/null", "CheckHostIP": "no", "UpdateHostKeys": "no",
        "IdentitiesOnly": "yes" if options.identity is not None else "no",
        "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no", "PubkeyAuthentication": "yes",
        "ConnectTimeout": str(options.connect_timeout), "ServerAliveInterval": "15", "ServerAliveCountMax": "3",
        "ControlMaster": "no", "ControlPath": "none", "ForwardAgent": "no", "ForwardX11": "no",
        "ClearAllForwardings": "yes", "PermitLocalCommand": "no", "RequestTTY": "no", "LogLevel": "DEBUG1",
    }
    command = [SSH, "-F", "/dev/null", "-v", "-E", str(log_file)]
    for name, value in settings.items():
        command += ["-o", f"{name}={value}"]
    if options.identity is not None:
        command += ["-i", str(options.identity)]
    return [*command, "-l", endpoint.user, "-p", str(endpoint.port), "--", endpoint.host, remote_command]


def child_environment() -> dict[str, str]:
    """What ssh needs of ours and nothing else: no export password (CSM_EXPORT_PASSWORD) reaches a child."""
    return {name: os.environ[name] for name in _ENVIRONMENT if name in os.environ}


def run(endpoint: Endpoint, options: SshOptions, remote_command: str, stdin: bytes = b"", *,
        timeout: float = TRANSFER_TIMEOUT) -> Completed:
    """Run ``remote_command`` (a shell command line on the node) with ``stdin``; raise SshError if ssh could not
    connect or authenticate (exit 255), else return what the command did."""
    with tempfile.TemporaryDirectory(prefix="csm-ssh-") as private:  # 0700: the debug log names hosts and users
        log_file = Path(private) / "ssh.log"
        try:
            done = subprocess.run(argv(endpoint, options, log_file, remote_command), input=stdin,
                                  capture_output=True, timeout=timeout, env=child_environment(), check=False)
        except subprocess.TimeoutExpired:
            raise SshError("connect", f"{endpoint}: no answer within {timeout:.0f} s") from None
        except FileNotFoundError:
            raise SshError("connect", "the OpenSSH client (ssh) is not installed") from None
        log = log_file.read_text(errors="replace") if log_file.exists() else ""
    messages = "\n".join(line for line in log.splitlines() if not line.startswith(("debug1:", "OpenSSH_")))
    found = _HOST_KEY_LINE.search(log)
    host_key = HostKey(found.group(1), found.group(2), "Permanently added" in log) if found else None
    stderr = done.stderr.decode(errors="replace").strip()
    if done.returncode == 255:
        raise SshError("connect", _last_lines(messages or stderr) or f"ssh to {endpoint} failed (exit 255)")
    return Completed(done.returncode, done.stdout, stderr, messages, host_key)


def _last_lines(text: str, count: int = 3) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines()[-count:])


def _stage_script(directory: str, name: str, group: str | None) -> str:
    mode = "0640" if group else "0600"
    chgrp = f'chgrp -- {shlex.quote(group)} "$tmp"\n' if group else ""
    return (f"set -eu\numask 077\ndir={shlex.quote(directory)}\n"
            'mkdir -p -- "$dir"\n'
            f'tmp=$(mktemp "$dir/.{name}.csm-XXXXXX")\n'
            "trap 'rm -f -- \"$tmp\"' EXIT\n"
            'cat > "$tmp"\n'
            f"{chgrp}chmod {mode} \"$tmp\"\n"
            'sync "$tmp" 2>/dev/null || true\n'
            'printf "%s\\n" "$tmp"\n'
            'sha256sum < "$tmp"\n'
            "trap - EXIT\n")


def generation_path(path: str, generation: int) -> str:
    """Where a file's ``generation``-th previous version is kept: ``PATH.previous``, ``PATH.previous.2``, ..."""
    if not 1 <= generation <= MAX_KEEP:
        raise ValueError(f"generation {generation} is not 1-{MAX_KEEP}")
    return path + PREVIOUS_SUFFIX + (f".{generation}" if generation > 1 else "")


def _move_if_present(source: str, target: str) -> str:
    return f"if [ -f {shlex.quote(source)} ]; then mv -f -- {shlex.quote(source)} {shlex.quote(target)}; fi"


def _commit_script(moves: list[tuple[str, str]], keep: int) -> str:
    """Phase 1 (nothing the node serves changes): per target, drop generations beyond ``keep``, shift the others up
    one, hard-link the current file as generation 1. Phase 2: the staged files renamed over their targets."""
    lines = ["set -eu"]
    for _, target in moves:
        lines += [f"rm -f -- {shlex.quote(generation_path(target, k))}" for k in range(keep, MAX_KEEP + 1)]
        lines += [_move_if_present(generation_path(target, k), generation_path(target, k + 1))
                  for k in range(keep - 1, 0, -1)]
        quoted = shlex.quote(target)
        lines.append(f"if [ -f {quoted} ]; then ln -f -- {quoted} {shlex.quote(generation_path(target, 1))}; fi")
    lines += [f"mv -f -- {shlex.quote(staged)} {shlex.quote(target)}" for staged, target in moves]
    return "\n".join(lines) + "\n"


def _same_key(seen: HostKey | None, now: HostKey | None, endpoint: Endpoint) -> HostKey:
    if now is None:
        raise SshError("connect", f"{endpoint}: ssh did not report the server's host key")
    if seen is not None and (seen.key_type, seen.fingerprint) != (now.key_type, now.fingerprint):
        raise SshError("connect", f"{endpoint}: the host key changed between connections "
                                  f"({seen.fingerprint}, then {now.fingerprint})")
    return seen or now


def probe(endpoint: Endpoint, options: SshOptions) -> HostKey:
    """Connect and run nothing: the node's host key, checked (or, if asked, trusted on first use) before anything
    is sent to it or exported for it. SshError if the key is unknown or changed, or the login fails."""
    done = run(endpoint, options, "true")
    if done.returncode != 0:
        raise SshError("connect", _last_lines(done.stderr) or f"exit status {done.returncode}")
    return _same_key(None, done.host_key, endpoint)


def _check_keep(keep: int) -> None:
    if not 1 <= keep <= MAX_KEEP:
        raise ValueError(f"keep {keep} is not 1-{MAX_KEEP}")


@dataclass(frozen=True, slots=True)
class Staged:
    """Files written to temporary names beside their targets, checked, not yet in place."""

    moves: tuple[tuple[str, str], ...]  # (temporary path, target path)
    files: tuple[InstalledFile, ...]
    host_key: HostKey


def stage(endpoint: Endpoint, options: SshOptions, directory: str, files: list[tuple[str, bytes]],
          group: str | None = None, host_key: HostKey | None = None) -> Staged:
    """Write every ``(name, data)`` to a temporary name in ``directory`` on the node and check its SHA-256 there.

    A failure removes what was staged (the node's files are as they were) and raises SshError naming the step.
    """
    if not directory.startswith("/"):
        raise ValueError(f"{directory!r}: the remote directory must be an absolute path")
    for name, _data in files:  # the paths recorded, which inspect and rollback take back: refused there too
        _check_path(f"{directory.rstrip('/')}/{name}")
    if group is not None and not GROUP_NAME.match(group):
        raise ValueError(f"{group!r} is not a group name")
    staged: list[tuple[str, str]] = []  # (temporary path, target path)
    installed: list[InstalledFile] = []
    try:
        for name, data in files:
            if not _FILE_NAME.match(name):
                raise ValueError(f"{name!r} is not a plain file name")
            done = run(endpoint, options, _remote(_stage_script(directory, name, group)), data)
            target = f"{directory.rstrip('/')}/{name}"
            temporary, _, digest = done.stdout.decode(errors="replace").partition("\n")
            if done.returncode == 0:
                staged.append((temporary, target))  # first, so that any refusal below removes it
            host_key = _same_key(host_key, done.host_key, endpoint)
            if done.returncode != 0:
                raise SshError("stage", _last_lines(done.stderr) or f"exit status {done.returncode}")
            expected = hashlib.sha256(data).hexdigest()
            if digest.split(" ")[0].strip() != expected:
                raise SshError("stage", f"{target}: the node's copy does not match what was sent (SHA-256)")
            installed.append(InstalledFile(path=target, sha256=expected))
    except BaseException:
        discard(endpoint, options, staged)
        raise
    assert host_key is not None
    return Staged(moves=tuple(staged), files=tuple(installed), host_key=host_key)


def commit(endpoint: Endpoint, options: SshOptions, staged: Staged, keep: int = 1) -> HostKey:
    """Rename the staged files over their targets, keeping ``keep`` generations of the files replaced.

    SshError("commit") if the script failed: before its renames the node serves what it did; during them, some
    files may be new and some old (the caller recorded its intent first). Staged files left are removed.
    """
    _check_keep(keep)
    try:
        done = run(endpoint, options, _remote(_commit_script(list(staged.moves), keep)))
    except BaseException:
        discard(endpoint, options, staged.moves)
        raise
    host_key = _same_key(staged.host_key, done.host_key, endpoint)
    if done.returncode != 0:
        discard(endpoint, options, staged.moves)
        raise SshError("commit", _last_lines(done.stderr) or f"exit status {done.returncode}")
    return host_key


def discard(endpoint: Endpoint, options: SshOptions, moves) -> None:
    """Best effort: a staged file left behind is a dot-file the node never reads."""
    if moves:
        try:
            run(endpoint, options, _remote("rm -f -- " + " ".join(shlex.quote(t) for t, _ in moves)))
        except SshError:
            pass


def install(endpoint: Endpoint, options: SshOptions, directory: str, files: list[tuple[str, bytes]],
            group: str | None = None, host_key: HostKey | None = None,
            keep: int = 1) -> tuple[list[InstalledFile], HostKey]:
    """:func:`stage` then :func:`commit`: each file's remote path and SHA-256 (the node's, equal to ours) and the
    host key every connection was checked against (``host_key``'s if given: the one :func:`probe` saw)."""
    _check_keep(keep)
    staged = stage(endpoint, options, directory, files, group, host_key)
    return list(staged.files), commit(endpoint, options, staged, keep)


def _remote(script: str) -> str:
    """Run ``script`` under sh whatever the user's login shell is (csh, fish...)."""
    return f"sh -c {shlex.quote(script)}"


def _hash_of(path: str) -> str:
    quoted = shlex.quote(path)
    return f'if [ -f {quoted} ]; then sha256sum < {quoted}; else echo -; fi'


def inspect(endpoint: Endpoint, options: SshOptions, paths: list[str], host_key: HostKey | None = None
            ) -> tuple[list[tuple[str, str | None, tuple[str | None, ...]]], HostKey]:
    """Each path's SHA-256 on the node and its generations' (``PATH.previous``, ``.previous.2`` ... up to
    MAX_KEEP), None where a file is absent; and the host key."""
    for path in paths:
        _check_path(path)
    per_path = 1 + MAX_KEEP
    lines = ["set -eu"] + [_hash_of(name) for p in paths
                           for name in (p, *(generation_path(p, k) for k in range(1, MAX_KEEP + 1)))]
    done = run(endpoint, options, _remote("\n".join(lines) + "\n"))
    host_key = _same_key(host_key, done.host_key, endpoint)
    words = [line.split(" ")[0] for line in done.stdout.decode(errors="replace").splitlines()]
    if done.returncode != 0 or len(words) != per_path * len(paths):
        raise SshError("inspect", _last_lines(done.stderr) or f"exit status {done.returncode}")
    digests = [w if _SHA256.match(w) else None for w in words]
    return [(p, digests[per_path * i], tuple(digests[per_path * i + 1:per_path * (i + 1)]))
            for i, p in enumerate(paths)], host_key


def _same_hash(path: str, expected: str | None) -> str:
    return f'[ "$({_hash_of(path)} | cut -d" " -f1)" = {shlex.quote(expected or "-")} ] || exit 3'


def restore_generation(endpoint: Endpoint, options: SshOptions, seen: list[tuple[str, str | None, str]],
                       generation: int = 1, host_key: HostKey | None = None) -> HostKey:
    """Put each file's ``generation`` back as PATH, keeping PATH as ``PATH.rolled-back``; remove the newer
    generations and shift the older ones down. ``seen``: (path, its SHA-256 and the generation's, as
    :func:`inspect` found them), checked again on the node before anything is renamed."""
    generation_path("", generation)  # refuses a generation out of range before connecting
    checks, moves = ["set -eu"], []
    for path, current, restored in seen:
        _check_path(path)
        quoted = shlex.quote(path)
        checks += [_same_hash(path, current), _same_hash(generation_path(path, generation), restored)]
        moves.append(f"if [ -f {quoted} ]; then ln -f -- {quoted} {shlex.quote(path + ROLLED_BACK_SUFFIX)}; fi")
        moves.append(f"mv -f -- {shlex.quote(generation_path(path, generation))} {quoted}")
        moves += [f"rm -f -- {shlex.quote(generation_path(path, k))}" for k in range(1, generation)]
        moves += [_move_if_present(generation_path(path, k), generation_path(path, k - generation))
                  for k in range(generation + 1, MAX_KEEP + 1)]
    done = run(endpoint, options, _remote("\n".join(checks + moves) + "\n"))
    host_key = _same_key(host_key, done.host_key, endpoint)
    if done.returncode == 3:
        raise SshError("commit", "the node's files changed since they were inspected; nothing was moved")
    if done.returncode != 0:
        raise SshError("commit", _last_lines(done.stderr) or f"exit status {done.returncode}")
    return host_key


def _check_path(path: str) -> None:
    """A path the store recorded (a node's files): absolute, normalised (no '.', '..' or empty segment, so nothing
    climbs out of the directory the deploy named) and ending in a plain file name."""
    directory, _, name = path.rpartition("/")
    if not path.startswith("/") or not _FILE_NAME.match(name) or posixpath.normpath(path) != path \
            or "\n" in path:
        raise ValueError(f"{path!r} is not an absolute path to a plain file name")
