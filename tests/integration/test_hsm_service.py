"""CSM_KEK_PROVIDER=pkcs11 end to end on a SoftHSM2 token: API issuance and export, readiness, the CLI's refusals."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from softhsm_fixture import PIN, softhsm  # noqa: F401 - softhsm is a fixture
from test_api_pki import fetch, hierarchy, issue
from test_api_support import assert_problem, running_api

pytestmark = pytest.mark.timeout(300)
OPENSSL = shutil.which("openssl")
CONSOLE_SCRIPT = Path(sys.executable).parent / "csm"
CSM = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "cli.main"]


def _providers(data_dir: Path) -> dict[str, str]:
    with closing(sqlite3.connect(data_dir / "keys.db")) as conn:
        return dict(conn.execute("SELECT purpose || ':' || key_id, kek_provider FROM private_keys").fetchall())


async def test_server_side_keys_are_wrapped_on_the_token_and_export_as_pkcs12(softhsm, tmp_path):  # noqa: F811
    async with running_api(tmp_path, kek_provider="pkcs11", pkcs11=softhsm.settings, max_body_bytes=1 << 20) as api:
        admin = await api.admin()
        _, inter = await hierarchy(api, admin)
        issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                             subject={"common_name": "node1.acme.internal"}, sans={"dns": ["node1.acme.internal"]})
        cid = issued["certificate_id"]
        await fetch(api, admin, f"/v1/certificates/{cid}", min_position=issued["global_position"])
        p12 = await api.client.get(f"/v1/certificates/{cid}/export", params={"format": "pkcs12"},
                                   headers={**admin, "X-Export-Password": "changeit-please"})
        assert p12.status_code == 200, p12.text
        ready = await api.client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["kek_available"] is True
        providers = _providers(tmp_path / "data")
        assert len(providers) == 3 and set(providers.values()) == {"pkcs11"}, providers  # the CAs' keys, the node's
        api.runtime.keys._default.close()  # as if the token had gone: readiness says so, without details
        body = assert_problem(await api.client.get("/health/ready"), 503, "not_ready", field="kek_available")
        assert body["kek_available"] is False and softhsm.label not in body["detail"]
        refused = await api.client.post("/v1/certificates", headers=admin, json={
            "tenant_id": "acme", "ca_id": inter["ca_id"], "algorithm": "ecdsa-p256",
            "subject": {"common_name": "node3.acme.internal"}, "sans": {"dns": ["node3.acme.internal"]}})
        assert_problem(refused, 503, "kek_unavailable", field="key_id")
    if OPENSSL:
        (tmp_path / "node.p12").write_bytes(p12.content)
        run = subprocess.run([OPENSSL, "pkcs12", "-in", tmp_path / "node.p12", "-passin", "pass:changeit-please",
                              "-nodes"], capture_output=True, text=True)
        assert run.returncode == 0 and "PRIVATE KEY" in run.stdout and "node1.acme.internal" in run.stdout, run.stderr


async def test_keys_stored_under_local_stay_usable_after_switching_to_the_token(softhsm, tmp_path):  # noqa: F811
    async with running_api(tmp_path, max_body_bytes=1 << 20) as api:
        admin = await api.admin()
        _, inter = await hierarchy(api, admin)
    assert set(_providers(tmp_path / "data").values()) == {"local"}
    async with running_api(tmp_path, kek_provider="pkcs11", pkcs11=softhsm.settings, max_body_bytes=1 << 20) as api:
        admin = await api.admin()
        # the intermediate's key (local) signs; the node's key is wrapped on the token
        issued = await issue(api, admin, tenant_id="acme", ca_id=inter["ca_id"], algorithm="ecdsa-p256",
                             subject={"common_name": "node2.acme.internal"}, sans={"dns": ["node2.acme.internal"]})
        await fetch(api, admin, f"/v1/certificates/{issued['certificate_id']}",
                    min_position=issued["global_position"])
        p12 = await api.client.get(f"/v1/certificates/{issued['certificate_id']}/export", params={"format": "pkcs12"},
                                   headers={**admin, "X-Export-Password": "changeit-please"})
        assert p12.status_code == 200, p12.text
    assert sorted(set(_providers(tmp_path / "data").values())) == ["local", "pkcs11"]


def _csm(data_dir: Path, env: dict[str, str], *args: str, expect: int) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CSM_")}
    run = subprocess.run([*CSM, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=120,
                         env={**clean, **env}, cwd=data_dir.parent)
    assert run.returncode == expect, f"exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in run.stderr and PIN not in run.stderr + run.stdout, run.stderr
    return run


def test_csm_init_and_serve_refuse_an_unreachable_token_in_one_line(softhsm, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    token = {**softhsm.env, "CSM_KEK_PROVIDER": "pkcs11"}
    _csm(data, token, "init", expect=0)
    for missing, says in (({**token, "CSM_PKCS11_TOKEN_LABEL": "gone"}, "PKCS#11 token 'gone'"),
                          ({"CSM_KEK_PROVIDER": "pkcs11"}, "needs CSM_PKCS11_MODULE and CSM_PKCS11_TOKEN_LABEL"),
                          ({**token, "CSM_PKCS11_PIN_FILE": str(tmp_path / "nope")}, "cannot open key file")):
        for command in (["init"], ["serve", "--port", "0", "--workers", "1"]):
            run = _csm(data, missing, *command, expect=2)
            assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: key vault: "), run.stderr
            assert says in run.stderr, run.stderr
    run = _csm(data, {"CSM_KEK_PROVIDER": "rot13"}, "init", expect=2)
    assert run.stderr.strip().endswith("CSM_KEK_PROVIDER must be one of local, hybrid, pkcs11, not 'rot13'")


def test_keys_status_lists_every_kek_when_the_default_token_is_absent_or_its_pin_wrong(softhsm, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    token = {**softhsm.env, "CSM_KEK_PROVIDER": "pkcs11"}
    _csm(data, token, "init", expect=0)
    _csm(data, token, "tenant", "create", "acme", "--name", "Acme", expect=0)
    _csm(data, token, "ca", "create-root", "--tenant", "acme", "--name", "Root", "--cn", "Acme Root",
         "--algorithm", "ecdsa-p256", expect=0)  # its key is wrapped on the token
    (on_token,) = [kek["kek_id"] for kek in json.loads(_csm(data, token, "keys", "status", "--json", expect=0).stdout)]
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("not-the-pin-1234\n")
    wrong.chmod(0o600)
    for broken, says in (({**token, "CSM_PKCS11_TOKEN_LABEL": "unplugged"}, "PKCS#11 token 'unplugged'"),
                         ({**token, "CSM_PKCS11_PIN_FILE": str(wrong)}, "the user PIN is incorrect (CSM_PKCS11_PIN_FILE")):
        status = _csm(data, broken, "keys", "status", "--json", expect=1)
        (kek,) = json.loads(status.stdout)
        assert (kek["kek_id"], kek["rows"], kek["available"]) == (on_token, {"acme": 1}, False), kek
        assert says in kek["unavailable_reason"] and "\n" not in kek["unavailable_reason"]
        assert "configured KEK provider pkcs11 (CSM_KEK_PROVIDER) cannot be opened" in status.stderr
        assert f"1 KEKs in use are unavailable: {on_token}" in status.stderr
        table = _csm(data, broken, "keys", "status", expect=1)
        assert on_token in table.stdout and f"unavailable: {kek['unavailable_reason'][:40]}" in table.stdout
        assert "not-the-pin-1234" not in status.stdout + status.stderr + table.stdout + table.stderr
        serve = _csm(data, broken, "serve", "--port", "0", "--workers", "1", expect=2)  # the service still refuses
        assert serve.stderr.count("\n") == 1 and serve.stderr.startswith("error: key vault: ") and says in serve.stderr
    assert json.loads(_csm(data, token, "keys", "status", "--json", expect=0).stdout)[0]["available"] is True


def _token_dir(softhsm) -> Path:  # noqa: F811
    """The SoftHSM2 directory of the test token (its token.object holds the label)."""
    tokens = softhsm.conf.parent / "tokens"
    return next(path for path in tokens.iterdir() if softhsm.label.encode() in (path / "token.object").read_bytes())


def _node(inter: dict, name: str) -> dict:
    return {"tenant_id": "acme", "ca_id": inter["ca_id"], "algorithm": "ecdsa-p256", "subject": {"common_name": name},
            "sans": {"dns": [name]}}


def _written_since(api, position: int) -> list[str]:
    """The streams written after ``position``, the audit checkpoints (sealed on a timer) aside."""
    from domain.audit import LEDGER_STREAM

    return [row.stream_id for row in api.runtime.store.read_raw(position) if row.stream_id != LEDGER_STREAM]


def _rows(data_dir: Path) -> int:
    with closing(sqlite3.connect(data_dir / "keys.db")) as conn:
        return conn.execute("SELECT COUNT(*) FROM private_keys").fetchone()[0]


# python-pkcs11's search finaliser re-raises SessionHandleInvalid from __del__ on the sessions the module dropped
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_token_removed_while_serving_fails_issuance_with_503_and_is_used_again_once_back(softhsm, tmp_path,  # noqa: F811
                                                                                                 monkeypatch):
    from infra.keystore import pkcs11_token

    monkeypatch.setattr(pkcs11_token, "REINITIALISE_EVERY", 0.2)  # the module is looked at again this often
    data, token = tmp_path / "data", {**softhsm.env, "CSM_KEK_PROVIDER": "pkcs11"}
    home, away = _token_dir(softhsm), tmp_path / "token-away"
    try:
        async with running_api(tmp_path, kek_provider="pkcs11", pkcs11=softhsm.settings, max_body_bytes=1 << 20) as api:
            admin = await api.admin()
            _, inter = await hierarchy(api, admin)
            await issue(api, admin, **_node(inter, "node1.acme.internal"))
            head, rows = api.runtime.store.head_position_sync(), _rows(data)

            home.rename(away)  # the token is gone (an HSM unplugged, its slot emptied) while the service runs
            assert_problem(await api.client.get("/health/ready"), 503, "not_ready", field="kek_available")
            for attempt in range(2):
                refused = await api.client.post("/v1/certificates", headers=admin,
                                                json=_node(inter, f"node{attempt + 2}.acme.internal"))
                body = assert_problem(refused, 503, "kek_unavailable", field="key_id")
                assert f"PKCS#11 token '{softhsm.label}'" in body["detail"] and "is not present" in body["detail"]
                assert PIN not in body["detail"]
            assert (await api.client.get("/health/live")).status_code == 200
            assert (_written_since(api, head), _rows(data)) == ([], rows)  # nothing half-written

            status = _csm(data, token, "keys", "status", "--json", expect=1)  # another process, meanwhile
            assert {kek["available"] for kek in json.loads(status.stdout)} == {False}
            assert "is not present" in status.stderr and "csm serve` refuses to start" in status.stderr

            away.rename(home)  # the token is back: the service logs in again by itself
            for _ in range(50):
                if (await api.client.get("/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            await issue(api, admin, **_node(inter, "node9.acme.internal"))
            assert _rows(data) == rows + 1
            assert api.runtime.verify().ok
        assert {kek["available"] for kek in json.loads(_csm(data, token, "keys", "status", "--json",
                                                             expect=0).stdout)} == {True}
        assert "ok" in _csm(data, token, "audit", "verify", expect=0).stdout.lower()
    finally:
        if away.exists():
            away.rename(home)


def _tenant_keys(softhsm, tenant: str) -> list[bytes]:  # noqa: F811
    """The CKA_IDs of the tenant's KEKs on the token, read through a session beside the service's."""
    import pkcs11

    session = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.label).open(rw=True)
    try:
        return sorted(bytes(key[pkcs11.Attribute.ID]) for key in session.get_objects(
            {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY, pkcs11.Attribute.LABEL: f"csm-kek:{tenant}"}))
    finally:
        session.close()


def _destroy_tenant_keys(softhsm, tenant: str) -> None:  # noqa: F811
    import pkcs11

    session = pkcs11.lib(str(softhsm.module)).get_token(token_label=softhsm.label).open(rw=True)
    try:
        for key in list(session.get_objects({pkcs11.Attribute.LABEL: f"csm-kek:{tenant}"})):
            key.destroy()
    finally:
        session.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_tenant_kek_deleted_from_the_token_is_not_replaced_by_a_new_one(softhsm, tmp_path):  # noqa: F811
    data, token = tmp_path / "data", {**softhsm.env, "CSM_KEK_PROVIDER": "pkcs11"}
    tenant = f"gone-{secrets.token_hex(4)}"  # its own label on the token the process shares
    async with running_api(tmp_path, kek_provider="pkcs11", pkcs11=softhsm.settings, max_body_bytes=1 << 20) as api:
        admin = await api.admin()
        _, inter = await hierarchy(api, admin, tenant=tenant, permit=(f"{tenant}.internal",))
        await issue(api, admin, **{**_node(inter, f"n0.{tenant}.internal"), "tenant_id": tenant})  # the CA key in use
        (lost,) = _tenant_keys(softhsm, tenant)
        head, rows = api.runtime.store.head_position_sync(), _rows(data)

        _destroy_tenant_keys(softhsm, tenant)  # its CA keys are wrapped under it: they are lost with it
        name = f"n1.{tenant}.internal"
        refused = await api.client.post("/v1/certificates", headers=admin, json={**_node(inter, name),
                                                                                  "tenant_id": tenant})
        body = assert_problem(refused, 503, "kek_unavailable", field="key_id")
        assert "is not on PKCS#11 token" in body["detail"] and lost.hex() in body["detail"], body
        assert _tenant_keys(softhsm, tenant) == []  # no new KEK quietly takes its place
        assert (_written_since(api, head), _rows(data)) == ([], rows)
        assert api.runtime.verify().ok

        status = _csm(data, token, "keys", "status", "--json", expect=1)
        (kek,) = [k for k in json.loads(status.stdout) if k["rows"].get(tenant)]
        assert kek["available"] is False and "is not on PKCS#11 token" in kek["unavailable_reason"]
