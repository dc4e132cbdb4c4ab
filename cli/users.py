"""`csm user`: local users (create, list, grant, revoke, unlock, reset-password, disable, enable, reset-totp)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

import click
from cli.common import (CliError, catch_up, command_context, echo_json, id_table, print_table, report_change,
                        run_async, runtime_for)
from commands import identity as cmd
from commands import mfa
from commands.authz import ROLES
from commands.runtime import CommandResult, rfc3339
from infra.config import Settings
from projections import users as read_model

PAGE = 500
_TENANT = click.option("--tenant", "tenant_id", default=None, help="The user's tenant (default: a platform user).")


@click.group()
def user() -> None:
    """Local users: argon2id passwords, role grants (optionally until a time), lockouts."""


def _password(password_file: str | None, prompt: bool) -> str:
    """From a file (first line), from stdin ('-'), or typed twice at a prompt: never from argv."""
    if password_file == "-":
        return sys.stdin.readline().rstrip("\r\n")
    if password_file:
        try:
            lines = Path(password_file).read_text().splitlines()
        except OSError as exc:
            raise CliError(f"cannot read the password file: {exc.strerror} ({password_file})", 2) from exc
        return lines[0] if lines else ""
    if not prompt:
        raise CliError("give --password-file FILE (or - for stdin)", 2)
    return click.prompt("password", hide_input=True, confirmation_prompt=True, err=True)


def _run(settings: Settings, coroutine_for) -> CommandResult:
    with runtime_for(settings) as runtime:
        result = run_async(coroutine_for(runtime))
        catch_up(runtime, strict=False)  # a running server sees the change at once
        return result


@user.command("create")
@click.argument("username")
@_TENANT
@click.option("--role", "roles", multiple=True, type=click.Choice(sorted(ROLES)), help="Grant a role; repeatable.")
@click.option("--display-name", default=None)
@click.option("--password-file", default=None, help="Read the password from FILE's first line ('-': stdin).")
@click.pass_obj
def create(settings: Settings, username: str, tenant_id: str | None, roles: tuple[str, ...],
           display_name: str | None, password_file: str | None) -> None:
    """Create local user USERNAME (the password is prompted for, or read from --password-file)."""
    password = _password(password_file, sys.stdin.isatty())
    command = cmd.CreateUser(username=username, password=password, tenant_id=tenant_id,
                             display_name=display_name, roles=list(roles))
    result = _run(settings, lambda rt: cmd.create_user(command, command_context(), rt.services, rt.identity))
    report_change(f"created user {username}" + (f" in tenant {tenant_id}" if tenant_id else ""), result)
    privileged = set(roles) & set(settings.mfa_required_roles)
    if privileged:
        click.echo(f"{', '.join(sorted(privileged))} needs TOTP: the first sign-in returns a token good only for "
                   "POST /v1/auth/totp (enroll, then confirm a code); later sign-ins send the code as 'totp'",
                   err=True)


@user.command("grant")
@click.argument("username")
@click.argument("role", type=click.Choice(sorted(ROLES)))
@_TENANT
@click.option("--for", "duration", default=None, help="Just in time: the grant lapses after e.g. 30m, 8h, 2d.")
@click.option("--until", "until", default=None, help="Or lapses at this RFC 3339 time (with a zone).")
@click.pass_obj
def grant(settings: Settings, username: str, role: str, tenant_id: str | None, duration: str | None,
          until: str | None) -> None:
    """Grant ROLE to USERNAME, permanently or until a time."""
    if duration and until:
        raise CliError("give --for or --until, not both", 2)
    expires = _expiry(duration, until)
    command = cmd.GrantRole(username=username, role=role, tenant_id=tenant_id, expires_at=expires)
    result = _run(settings, lambda rt: cmd.grant_role(command, command_context(), rt.services))
    report_change(f"granted {role} to {username}" + (f" until {rfc3339(expires)}" if expires else ""), result)


def _expiry(duration: str | None, until: str | None) -> datetime | None:
    if until:
        try:
            moment = datetime.fromisoformat(until)
        except ValueError:
            raise CliError(f"--until {until!r} is not an RFC 3339 time", 2) from None
        if moment.tzinfo is None:
            raise CliError("--until needs a time zone (e.g. Z or +02:00)", 2)
        return moment
    if duration:
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        number, unit = duration[:-1], duration[-1:]
        if unit not in units or not number.isdigit() or int(number) < 1:
            raise CliError(f"--for {duration!r} is not a duration like 30m, 8h or 2d", 2)
        return datetime.now().astimezone() + timedelta(seconds=int(number) * units[unit])
    return None


@user.command("revoke")
@click.argument("username")
@click.argument("role")
@_TENANT
@click.option("--reason", default="revoked", show_default=True)
@click.pass_obj
def revoke(settings: Settings, username: str, role: str, tenant_id: str | None, reason: str) -> None:
    """Revoke ROLE from USERNAME."""
    command = cmd.RevokeRole(username=username, role=role, tenant_id=tenant_id, reason=reason)
    report_change(f"revoked {role} from {username}",
            _run(settings, lambda rt: cmd.revoke_role(command, command_context(), rt.services)))


@user.command("unlock")
@click.argument("username")
@_TENANT
@click.pass_obj
def unlock(settings: Settings, username: str, tenant_id: str | None) -> None:
    """Lift USERNAME's sign-in lockout and back-off now."""
    command = cmd.UnlockAccount(username=username, tenant_id=tenant_id)
    report_change(f"unlocked {username}", _run(settings, lambda rt: cmd.unlock_account(command, command_context(),
                                                                                  rt.services)))


@user.command("reset-password")
@click.argument("username")
@_TENANT
@click.option("--password-file", default=None, help="Read the new password from FILE's first line ('-': stdin).")
@click.pass_obj
def reset_password(settings: Settings, username: str, tenant_id: str | None, password_file: str | None) -> None:
    """Set USERNAME's password; every session of USERNAME ends (its tokens are refused)."""
    password = _password(password_file, sys.stdin.isatty())
    command = cmd.ResetPassword(username=username, password=password, tenant_id=tenant_id)
    report_change(f"reset the password of {username}",
            _run(settings, lambda rt: cmd.reset_password(command, command_context(), rt.services, rt.identity)))


@user.command("disable")
@click.argument("username")
@_TENANT
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.pass_obj
def disable(settings: Settings, username: str, tenant_id: str | None, reason: str) -> None:
    """Disable USERNAME: sign-in stops, and its sessions end for good (enabling it brings none back)."""
    command = cmd.SetUserStatus(username=username, enabled=False, tenant_id=tenant_id, reason=reason)
    report_change(f"disabled {username}", _run(settings, lambda rt: cmd.set_user_status(command, command_context(),
                                                                                   rt.services)))


@user.command("enable")
@click.argument("username")
@_TENANT
@click.option("--reason", required=True, help="Why (recorded in the audit log).")
@click.pass_obj
def enable(settings: Settings, username: str, tenant_id: str | None, reason: str) -> None:
    """Enable disabled user USERNAME."""
    command = cmd.SetUserStatus(username=username, enabled=True, tenant_id=tenant_id, reason=reason)
    report_change(f"enabled {username}", _run(settings, lambda rt: cmd.set_user_status(command, command_context(),
                                                                                  rt.services)))


@user.command("reset-totp")
@click.argument("username")
@_TENANT
@click.pass_obj
def reset_totp(settings: Settings, username: str, tenant_id: str | None) -> None:
    """Turn USERNAME's TOTP off (lost device) and end its sessions; a privileged user enrolls again at the next
    sign-in."""
    command = mfa.ResetTotp(username=username, tenant_id=tenant_id)
    report_change(f"reset TOTP of {username}", _run(settings, lambda rt: mfa.reset_totp(command, command_context(),
                                                                                   rt.services)))


@user.command("list")
@_TENANT
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout instead of a table.")
@click.pass_obj
def list_(settings: Settings, tenant_id: str | None, as_json: bool) -> None:
    """List the users of a tenant (default: the platform's), with the roles in force now."""
    now = rfc3339(datetime.now().astimezone())
    with runtime_for(settings) as runtime:
        catch_up(runtime)
        conn = runtime.runner.connection()
        try:
            rows, after = [], None
            while page := read_model.search(conn, None, tenant_id=tenant_id, now=now, after=after, limit=PAGE,
                                            platform=tenant_id is None):
                rows.extend(page)
                after = page[-1]["username"]
                if len(page) < PAGE:
                    break
        finally:
            conn.close()
    if as_json:
        echo_json(rows)
        return
    table = id_table("user", "status", "roles", "totp", "locked until", "last sign-in", ids={"user"})
    for row in rows:
        roles = ", ".join(g["role"] + (f" (until {g['expires_at']})" if g["expires_at"] else "")
                          for g in row["grants"])
        table.add_row(row["username"], row["status"], roles, "yes" if row["totp_enabled"] else "no",
                      row["locked_until"] or "", row["last_login_at"] or "")
    print_table(table, f"{len(rows)} user(s)")
