"""`csm auth`: token-signing keys (rotate without downtime, list what the JWKS publishes)."""

from __future__ import annotations

import time

import click

from cli.common import command_context, echo_json, require_initialised, run_async, runtime_for
from commands.runtime import Services, run
from domain.access import SIGNING_STREAM_ID, SIGNING_STREAM_TYPE, SigningKeyRotated
from domain.events import SYSTEM_TENANT
from infra.config import Settings
from infra.identity import signing_keys
from infra.jwt import ALGORITHMS


@click.group()
def auth() -> None:
    """Access-token signing keys."""


async def _record(services: Services, rotated: SigningKeyRotated):
    return await run(services, command_context(), rotated, tenant_id=SYSTEM_TENANT, stream_id=SIGNING_STREAM_ID,
                     stream_type=SIGNING_STREAM_TYPE, fold=lambda payloads: None, decide=lambda _: [rotated])


@auth.command("rotate-signing-key")
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default=None,
              help="The new key's algorithm  [default: CSM_JWT_ALGORITHM or RS256]")
@click.pass_obj
def rotate_signing_key(settings: Settings, algorithm: str | None) -> None:
    """Add a signing key that signs from now on; older keys stay in the JWKS until their tokens have expired."""
    require_initialised(settings)
    keys = signing_keys(settings)
    key, previous = keys.rotate(time.time(), algorithm)
    with runtime_for(settings) as runtime:
        result = run_async(_record(runtime.services, SigningKeyRotated(
            kid=key.kid, algorithm=key.algorithm, previous_kid=previous.kid if previous else None,
            public_jwk=key.jwk())))
    click.echo(f"new signing key {key.kid} ({key.algorithm}) signs from now on (position {result.global_position})")
    if previous is not None:
        click.echo(f"previous key {previous.kid} stays published for {keys.publish_for:.0f} s, until the tokens "
                   "it signed have expired")


@auth.command("keys")
@click.option("--json", "as_json", is_flag=True, help="The JWKS on stdout.")
@click.pass_obj
def list_keys(settings: Settings, as_json: bool) -> None:
    """The keys the JWKS publishes now (the first signs)."""
    require_initialised(settings)
    keys = signing_keys(settings)
    published = sorted(keys.published(time.time()), key=lambda k: k.retired_at is not None)
    if as_json:
        echo_json({"keys": [key.jwk() for key in published]})
        return
    for key in published:
        state = "signing" if key.retired_at is None else "verifying only"
        click.echo(f"{key.kid}  {key.algorithm}  {state}")
    if not published:
        click.echo("no signing key yet: the first token request creates one")


def first_login_hints(settings: Settings) -> list[str]:
    """What `csm serve` prints: the two ways to a first token."""
    csm = f"csm --data-dir {settings.data_dir}"
    url = f"http://{settings.host}:{settings.port}"
    return ["first sign-in, either:",
            f"  an API key:  TOKEN=$({csm} admin create-token --name me)",
            f"  or a user:   {csm} user create admin --role platform-admin --password-file F",
            f"               curl -d grant_type=password -d username=admin --data-urlencode \"password=$(head -n1 F)\" "
            f"{url}/v1/auth/token",
            "               (platform-admin needs TOTP: that first token enrolls it at POST /v1/auth/totp)"]
