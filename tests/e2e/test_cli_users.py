"""`csm user` and `csm auth` as operators run them: the installed console script in a subprocess."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_cli import CSM, clean_env

PASSWORD = "operator chosen password"


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    csm(data, "init")
    return data


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    return path


def csm(data_dir, *args: str, expect: int = 0, input_text: str = "") -> subprocess.CompletedProcess:
    """``csm --data-dir DATA_DIR ARGS``, with ``input_text`` on stdin (never a terminal)."""
    run = subprocess.run([*CSM, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=120,
                         env=clean_env(), cwd=data_dir.parent, input=input_text)
    assert run.returncode == expect, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    return run


def events(data_dir) -> list[dict]:
    return [json.loads(line) for line in csm(data_dir, "events", "export").stdout.splitlines()]


def test_user_lifecycle(data_dir, password_file):
    created = csm(data_dir, "user", "create", "admin", "--role", "platform-admin", "--password-file",
                  str(password_file))
    assert "created user admin" in created.stdout and "TOTP" in created.stderr
    csm(data_dir, "tenant", "create", "acme", "--name", "Acme")
    csm(data_dir, "user", "create", "ann", "--tenant", "acme", "--role", "viewer", "--password-file",
        str(password_file))
    csm(data_dir, "user", "grant", "ann", "auditor", "--tenant", "acme", "--for", "8h")
    listing = json.loads(csm(data_dir, "user", "list", "--tenant", "acme", "--json").stdout)
    assert [(u["username"], u["roles"]) for u in listing] == [("ann", ["auditor", "viewer"])]
    assert listing[0]["grants"][0]["expires_at"] is not None
    assert "admin" in csm(data_dir, "user", "list").stdout
    csm(data_dir, "user", "revoke", "ann", "auditor", "--tenant", "acme")
    csm(data_dir, "user", "reset-password", "ann", "--tenant", "acme", "--password-file", "-",
        input_text="another long password\n")
    assert "nothing to change" in csm(data_dir, "user", "unlock", "ann", "--tenant", "acme").stdout
    csm(data_dir, "user", "disable", "ann", "--tenant", "acme", "--reason", "left")
    types = [e["type"] for e in events(data_dir)]
    for kind in ("user.created", "user.role_granted", "user.role_revoked", "user.password_reset", "user.disabled"):
        assert kind in types
    exported = csm(data_dir, "events", "export").stdout
    assert PASSWORD not in exported and "another long password" not in exported


def test_refusals_are_one_line(data_dir, password_file, tmp_path):
    short = tmp_path / "short"
    short.write_text("short\n")
    run = csm(data_dir, "user", "create", "bob", "--password-file", str(short), expect=1)
    assert run.stderr.startswith("error: invalid_password") and "(field: password)" in run.stderr
    run = csm(data_dir, "user", "create", "bob", "--tenant", "nowhere", "--password-file", str(password_file),
              expect=1)
    assert "tenant_not_found" in run.stderr
    csm(data_dir, "user", "create", "bob", "--password-file", str(password_file))
    assert "user_exists" in csm(data_dir, "user", "create", "bob", "--password-file", str(password_file),
                                expect=1).stderr
    assert "--password-file" in csm(data_dir, "user", "create", "carl", expect=2).stderr
    assert "user_not_found" in csm(data_dir, "user", "grant", "nobody", "viewer", expect=1).stderr


def test_rotating_the_signing_key_keeps_the_old_one_published(data_dir):
    assert "no signing key yet" in csm(data_dir, "auth", "keys").stdout
    first = csm(data_dir, "auth", "rotate-signing-key").stdout
    assert "signs from now on" in first
    second = csm(data_dir, "auth", "rotate-signing-key", "--algorithm", "ES384").stdout
    assert "stays published" in second
    jwks = json.loads(csm(data_dir, "auth", "keys", "--json").stdout)
    assert [k["alg"] for k in jwks["keys"]] == ["ES384", "RS256"] and all("d" not in k for k in jwks["keys"])
    rotated = [e for e in events(data_dir) if e["type"] == "auth.signing_key_rotated"]
    assert [e["payload"]["algorithm"] for e in rotated] == ["RS256", "ES384"]
    assert rotated[1]["payload"]["previous_kid"] == rotated[0]["payload"]["kid"]
    for path in (data_dir / "keys" / "jwt").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_create_token_reuses_the_named_service_account(data_dir):
    first = csm(data_dir, "admin", "create-token", "--name", "deploy bot")
    second = csm(data_dir, "admin", "create-token", "--name", "deploy bot", "--role", "viewer")
    assert "service account: deploy-bot" in first.stderr and "service account: deploy-bot" in second.stderr
    types = [e["type"] for e in events(data_dir)]
    assert types.count("service_account.created") == 1 and types.count("api_token.issued") == 2
    missing = csm(data_dir, "admin", "create-token", "--name", "x", "--service-account", "nope", expect=1)
    assert "service_account_not_found" in missing.stderr


@pytest.mark.slow
def test_disabling_a_service_account_from_the_cli_stops_its_keys_in_a_running_server(tmp_path, data_dir):
    import httpx
    from test_cli_serve import free_port, stopped, wait_until_live

    port = free_port()
    server = subprocess.Popen([*CSM, "--data-dir", str(data_dir), "serve", "--port", str(port)],
                              env={**clean_env(), "CSM_WORKERS": "1"}, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(server, base)
        key = csm(data_dir, "admin", "create-token", "--name", "bot", "--role", "viewer").stdout.strip()
        token = httpx.post(f"{base}/v1/auth/token", data={"grant_type": "client_credentials", "client_secret": key},
                           timeout=10)
        assert token.status_code == 200, token.text
        credentials = [key, token.json()["access_token"]]
        for credential in credentials:
            ok = httpx.get(f"{base}/v1/tenants", headers={"Authorization": f"Bearer {credential}"}, timeout=10)
            assert ok.status_code == 200, ok.text
        done = csm(data_dir, "admin", "disable-service-account", "bot", "--reason", "key leaked")
        assert done.stdout.startswith("disabled service account bot (version")
        for credential in credentials:  # the server's own read models were not asked: keys.db and the log were
            refused = httpx.get(f"{base}/v1/tenants", headers={"Authorization": f"Bearer {credential}"}, timeout=10)
            assert refused.status_code == 401, refused.text
        more = csm(data_dir, "admin", "create-token", "--name", "x", "--service-account", "bot", expect=1)
        assert "service_account_disabled" in more.stderr and "(field: service_account)" in more.stderr
        again = csm(data_dir, "admin", "disable-service-account", "bot", "--reason", "again")
        assert "nothing to change" in again.stdout
        assert "--reason" in csm(data_dir, "admin", "disable-service-account", "bot", expect=2).stderr
        csm(data_dir, "admin", "enable-service-account", "bot", "--reason", "rotated")
        still = httpx.get(f"{base}/v1/tenants", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert still.status_code == 401, still.text  # enabling brings no key back
        fresh = csm(data_dir, "admin", "create-token", "--name", "y", "--service-account", "bot", "--role", "viewer")
        works = httpx.get(f"{base}/v1/tenants", headers={"Authorization": f"Bearer {fresh.stdout.strip()}"},
                          timeout=10)
        assert works.status_code == 200, works.text
    finally:
        stopped(server)
    types = [e["type"] for e in events(data_dir)]
    assert types.count("service_account.disabled") == 1 and types.count("service_account.enabled") == 1
    assert key.split("_", 2)[2] not in csm(data_dir, "events", "export").stdout
    assert json.loads(csm(data_dir, "audit", "verify", "--json").stdout)["ok"]
