"""`csm keys`: status, rotate-kek, rewrap and retire-kek as an operator runs them (the console script, a subprocess):
exit statuses, refusals in one line, the records in the log, and CAs that still sign afterwards."""

from __future__ import annotations

import json

from test_cli import csm
from test_cli_pki import hierarchy  # noqa: F401 - a fixture


def _status(data) -> dict[str, dict]:
    return {kek["kek_id"]: kek for kek in json.loads(csm(data, "keys", "status", "--json").stdout)}


def _issue(data, inter: str, name: str) -> str:
    return json.loads(csm(data, "cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", name, "--dns", name,
                          "--json").stdout)["certificate_id"]


def test_rotate_rewrap_and_retire_from_the_command_line(hierarchy, tmp_path):  # noqa: F811
    data, _root, inter = hierarchy
    _issue(data, inter, "one.acme.internal")
    (master,) = _status(data)
    assert _status(data)[master]["current_for"] == ["*"] and _status(data)[master]["rows"]["acme"] >= 3
    assert (_status(data)[master]["available"], _status(data)[master]["unavailable_reason"]) == (True, None)
    assert "usable now" in csm(data, "keys", "status").stdout
    assert "kek_in_use" in csm(data, "keys", "retire-kek", master, "--yes", expect=1).stderr
    assert "--tenant T or --all-tenants" in csm(data, "keys", "rotate-kek", expect=2).stderr

    rotated = csm(data, "keys", "rotate-kek", "--tenant", "acme", "--json")
    own = json.loads(rotated.stdout)["rotated"][0]["kek_id"]
    assert "re-wrapped" in rotated.stderr and "remaining 0" in rotated.stderr and "re-wrapping" in rotated.stderr
    status = _status(data)
    assert status[own]["current_for"] == ["acme"] and master not in {k for k, v in status.items() if v["rows"]}

    every = json.loads(csm(data, "keys", "rotate-kek", "--all-tenants", "--no-rewrap", "--json").stdout)
    (new,) = every["rotated"]
    assert every["rewrap"] is None and sorted(new["replaces"]) == sorted([master, own])
    assert "kek_referenced" in csm(data, "keys", "retire-kek", own, "--yes", expect=1).stderr
    moved = csm(data, "keys", "rewrap", "--json")
    assert json.loads(moved.stdout)["remaining"] == 0
    for old in (master, own):
        assert "destroyed" in csm(data, "keys", "retire-kek", old, "--yes").stderr
    status = _status(data)
    assert status[new["kek_id"]]["current_for"] == ["*", "acme"]
    assert all(status[old]["retired_at"] for old in (master, own))
    assert not (data / "keys" / "master.key").exists()

    _issue(data, inter, "two.acme.internal")  # the issuing CA's re-wrapped key still signs, after a restart
    assert "invalid_kek_id" in csm(data, "keys", "retire-kek", "nonsense", "--yes", expect=1).stderr
    exported = [json.loads(line) for line in csm(data, "events", "export").stdout.splitlines()]
    recorded = [event["type"] for event in exported if event["stream_id"] == "vault-keks"]
    assert recorded == ["vault.kek_rotated", "vault.rewrap_started", "vault.rewrap_completed", "vault.kek_rotated",
                        "vault.rewrap_started", "vault.rewrap_completed", "vault.kek_retired", "vault.kek_retired"]
    assert csm(data, "audit", "verify").returncode == 0

    csm(data, "backup", str(tmp_path / "after"))  # the rotated key file travels with the backup
    manifest = json.loads((tmp_path / "after" / "manifest.json").read_text())
    assert f"keys/kek/local-{new['kek_id'].split(':')[1]}.key" in manifest["files"]
    restored = tmp_path / "restored"
    csm(restored, "restore", str(tmp_path / "after"))
    assert _status(restored)[new["kek_id"]]["rows"] == _status(data)[new["kek_id"]]["rows"]
    _issue(restored, inter, "three.acme.internal")

    version = restored / "keys" / "kek" / f"local-{new['kek_id'].split(':')[1]}.key"
    version.unlink()  # the KEK that wraps every tenant's keys is gone: the status says so, and exits 1
    gone = csm(restored, "keys", "status", "--json", expect=1)
    kek = {k["kek_id"]: k for k in json.loads(gone.stdout)}[new["kek_id"]]
    assert kek["available"] is False and str(version) in kek["unavailable_reason"]
    assert new["kek_id"] in gone.stderr and "unavailable" in gone.stderr
    assert "unavailable: cannot open key file" in csm(restored, "keys", "status", expect=1).stdout  # piped: one line a row


def test_a_deleted_master_key_stops_the_service_and_status_still_lists_every_kek(hierarchy):  # noqa: F811
    data, _root, inter = hierarchy
    (master,) = _status(data)
    key_file = data / "keys" / "master.key"
    saved = key_file.read_bytes()
    key_file.unlink()  # no rotated version replaces it: the CAs' keys are wrapped under a KEK nobody holds now

    for command in (["cert", "issue", "--tenant", "acme", "--ca", inter, "--cn", "x.acme.internal"],
                    ["serve", "--port", "0", "--workers", "1"]):
        run = csm(data, *command, expect=2)
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: key vault: cannot open key file"), run.stderr
        assert master in run.stderr and "csm restore" in run.stderr and str(key_file) in run.stderr
        assert not key_file.exists()  # no new master key hides the loss

    gone = csm(data, "keys", "status", "--json", expect=1)
    (kek,) = json.loads(gone.stdout)
    assert (kek["kek_id"], kek["available"], kek["rows"]["acme"] >= 2) == (master, False, True)
    assert "restore" in kek["unavailable_reason"] and "\n" not in kek["unavailable_reason"]
    assert "configured KEK provider local (CSM_KEK_PROVIDER) cannot be opened" in gone.stderr
    assert f"1 KEKs in use are unavailable: {master}" in gone.stderr
    table = csm(data, "keys", "status", expect=1).stdout
    assert master in table and "unavailable: cannot open key file" in table
    assert not key_file.exists()

    key_file.write_bytes(saved)  # restored from a backup: everything is back
    key_file.chmod(0o600)
    assert _status(data)[master]["available"] is True
    _issue(data, inter, "back.acme.internal")
