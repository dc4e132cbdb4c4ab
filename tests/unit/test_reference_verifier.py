"""docs/events.md is enough to verify a store: the stdlib-only tools/verify_chain.py, written
from it, accepts a store the service built and rejects tampered copies; and the document's
worked example and list of problem kinds agree with the code."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from commands.authz import SYSTEM
from commands.runtime import CommandContext
from commands.tenants import (CreateTenant, RenameTenant, SuspendTenant, create_tenant, rename_tenant,
                              suspend_tenant)
from domain.audit import checkpoint_statement
from domain.chain import canonical_bytes, envelope_body, genesis_hash, heads_root, merkle_leaf
from domain.events import EventEnvelope
from infra.bootstrap import initialise, verify_store
from infra.config import Settings

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "verify_chain.py"
DOC = ROOT / "docs" / "events.md"
CTX = CommandContext(principal=SYSTEM)


def load_tool():
    spec = importlib.util.spec_from_file_location("verify_chain", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(db: Path, *args: str) -> subprocess.CompletedProcess:
    # -I: isolated mode, so the tool cannot import the project even by accident
    return subprocess.run([sys.executable, "-I", str(TOOL), str(db), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Settings:
    """A store written by the real handlers: 4 tenants, 2 checkpoints, and unsealed events after them."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("reference") / "data")

    async def write() -> None:
        runtime = initialise(settings)
        try:
            s = runtime.services
            for tenant_id in ("acme", "globex", "initech", "umbrella"):
                await create_tenant(CreateTenant(tenant_id=tenant_id, name=tenant_id.title()), CTX, s)
            assert runtime.checkpointer.seal_all() == 1
            await rename_tenant(RenameTenant(tenant_id="acme", name="Acme Corporation"), CTX, s)
            await suspend_tenant(SuspendTenant(tenant_id="globex", reason="unpaid"), CTX, s)
            await rename_tenant(RenameTenant(tenant_id="umbrella", name="Umbrella Corp ☂"), CTX, s)
            assert runtime.checkpointer.seal_all() == 1
            await rename_tenant(RenameTenant(tenant_id="initech", name="Initech, unsealed"), CTX, s)
        finally:
            runtime.close()

    import asyncio
    asyncio.run(write())
    return settings


@pytest.fixture
def copy(built, tmp_path) -> Settings:
    """A private copy of the built data directory, to tamper with."""
    target = tmp_path / "data"
    shutil.copytree(built.data_dir, target)
    return Settings(data_dir=target)


def execute(db: Path, sql: str, *params) -> None:
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(sql, params)
        conn.commit()


def problem_kinds(result: subprocess.CompletedProcess) -> list[str]:
    return [p["kind"] for p in json.loads(result.stdout)["problems"]]


# the store the service wrote verifies ----------------------------------------------------------

def test_the_reference_verifier_accepts_the_store_the_service_wrote(built):
    result = run_tool(built.events_db, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    service = verify_store(built, _open_store(built))
    assert service.ok
    assert (report["events"], report["streams"], report["checkpoints"], report["sealed_position"],
            report["unsealed_events"]) == (service.events, service.streams, service.checkpoints,
                                           service.sealed_position, service.unsealed_events)
    assert report["trust_anchor"] == "anchor file"


def test_the_human_report_says_ok_and_that_signatures_were_not_checked(built):
    result = run_tool(built.events_db)
    assert result.returncode == 0
    assert result.stdout.startswith("OK: ") and "not verified" in result.stdout


def _open_store(settings: Settings):
    from infra.eventstore.sqlite import SQLiteEventStore
    return SQLiteEventStore(settings.events_db)  # read paths need no writer thread


# tampering is caught ----------------------------------------------------------------------------

def test_one_flipped_body_byte_is_caught(copy):
    db = copy.events_db
    with closing(sqlite3.connect(db)) as conn:
        position, body = conn.execute(
            "SELECT position, body FROM events WHERE stream_id = 'tenant-acme' AND version = 2").fetchone()
    index = body.index(b"Acme Corporation")
    tampered = body[:index] + b"X" + body[index + 1:]
    execute(db, "UPDATE events SET body = ? WHERE position = ?", tampered, position)
    result = run_tool(db, "--json")
    assert result.returncode == 1, result.stdout
    assert "hash_mismatch" in problem_kinds(result)
    assert not verify_store(copy, _open_store(copy)).ok  # the service agrees


def test_a_deleted_stream_is_caught_by_the_checkpoints(copy):
    execute(copy.events_db, "DELETE FROM events WHERE stream_id = 'tenant-umbrella'")
    result = run_tool(copy.events_db, "--json")
    assert result.returncode == 1
    assert {"missing_events", "checkpoint_heads"} <= set(problem_kinds(result))


def test_a_truncated_tail_is_caught_by_the_witness(copy):
    with closing(sqlite3.connect(copy.events_db)) as conn:
        last_checkpoint = conn.execute("SELECT max(position) FROM events WHERE type = 'audit.checkpoint'").fetchone()[0]
    execute(copy.events_db, "DELETE FROM events WHERE position >= ?", last_checkpoint)
    result = run_tool(copy.events_db, "--json")
    assert result.returncode == 1
    assert set(problem_kinds(result)) == {"truncated"}


def test_a_rewritten_chain_is_still_caught_by_the_signed_merkle_root(copy):
    """Re-hash an edited event and every later one of its stream: the chain is consistent again,
    but the checkpoint's heads (and the root the audit keys signed) no longer match."""
    tool = load_tool()
    db = copy.events_db
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT position, body FROM events WHERE stream_id = 'tenant-globex'"
                            " ORDER BY version").fetchall()
        prev = tool.genesis("globex", "tenant-globex")
        for position, body in rows:
            envelope = json.loads(body)
            envelope["prev_hash"] = prev
            if envelope["type"] == "tenant.created":
                envelope["payload"]["name"] = "Globex (rewritten)"
            new_body = tool.canonical(envelope)
            prev = tool.event_hash(prev, new_body)
            conn.execute("UPDATE events SET body = ?, hash = ? WHERE position = ?", (new_body, prev, position))
        conn.commit()
    result = run_tool(db, "--json")
    assert result.returncode == 1
    assert set(problem_kinds(result)) == {"checkpoint_heads"}


def test_an_unreadable_store_is_exit_status_2(tmp_path):
    assert run_tool(tmp_path / "missing.db").returncode == 2


# the document agrees with the code --------------------------------------------------------------

def _section(text: str, number: int) -> str:
    start = text.index(f"\n## {number}. ")
    end = text.index(f"\n## {number + 1}. ", start)
    return text[start:end]


def test_the_worked_example_in_the_document_is_true():
    tool = load_tool()
    example = _section(DOC.read_text(), 5)
    blocks = re.findall(r"```json\n(.*?)\n```", example, re.S)
    values = dict(re.findall(r"^([\w -]+\d?): +([0-9a-f]{96})$", example, re.M))
    bodies = [block.encode() for block in blocks[:3]]
    statement = blocks[3].encode()

    assert values["genesis-acme"] == tool.genesis("acme", "tenant-acme") == genesis_hash("acme", "tenant-acme")
    assert "63736d2f76312f67656e657369730061636d650074656e616e742d61636d65" in example
    assert (b"csm/v1/genesis\x00acme\x00tenant-acme").hex() in example
    prev = {("acme", "tenant-acme"): values["genesis-acme"],
            ("globex", "tenant-globex"): genesis_hash("globex", "tenant-globex")}
    assert prev[("globex", "tenant-globex")] in example
    for number, body in zip((2, 3, 4), bodies):
        envelope = json.loads(body)
        key = (envelope["tenant_id"], envelope["stream_id"])
        assert envelope["global_position"] == number and envelope["prev_hash"] == prev[key]
        assert f"({len(body)} bytes)" in example or f"the {len(body)} body bytes" in example
        assert tool.canonical(envelope) == body  # canonical per section 3 ...
        decoded = msgspec.json.decode(body, type=EventEnvelope)
        assert envelope_body(decoded) == body  # ... and exactly what the service writes
        prev[key] = tool.event_hash(envelope["prev_hash"], body)
        assert values[f"hash-{number}"] == prev[key]

    heads = [("acme", "tenant-acme", 2, values["hash-3"]), ("globex", "tenant-globex", 1, values["hash-4"])]
    for number, head in enumerate(heads, start=1):
        assert f"leaf JSON {number}: {canonical_bytes(list(head)).decode()}\n" in example
        assert values[f"leaf {number}"] == tool.leaf(*head).hex() == merkle_leaf(*head).hex()
    assert values["root"] == tool.merkle_root(heads) == heads_root(heads)
    assert values["root"] == hashlib.sha384(b"\x01" + bytes.fromhex(values["leaf 1"]) +
                                            bytes.fromhex(values["leaf 2"])).hexdigest()

    fields = json.loads(statement)
    assert statement == checkpoint_statement(fields["sequence"], fields["from_position"], fields["to_position"],
                                             fields["merkle_root"], fields["prev_ledger_hash"])
    assert (fields["merkle_root"], fields["from_position"], fields["to_position"]) == (values["root"], 0, 4)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8, 13])
def test_the_tools_merkle_tree_matches_the_service(size):
    tool = load_tool()
    heads = [(f"t{i % 3}", f"s-{i}", i + 1, hashlib.sha384(str(i).encode()).hexdigest()) for i in range(size)]
    assert tool.merkle_root(heads) == heads_root(heads)


def test_the_document_lists_every_problem_kind_the_verifier_reports():
    source = (ROOT / "domain" / "verification.py").read_text()
    kinds = set(re.findall(r"""problem\(\s*["']([a-z_]+)["']""", source))
    kinds |= set(re.findall(r"""kind = ["']([a-z_]+)["']""", source))
    assert len(kinds) >= 15, kinds
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", _section(DOC.read_text(), 7), re.M))
    missing = kinds - documented
    assert not missing, f"docs/events.md section 7 does not describe the problem kinds {sorted(missing)}"


def test_the_document_lists_every_tenant_token_and_audit_event_type():
    import domain.api_token  # noqa: F401  (registers its types)
    import domain.audit  # noqa: F401
    import domain.tenant  # noqa: F401
    from domain.events import known_event_types
    catalogue = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", _section(DOC.read_text(), 8), re.M))
    registered = {t for t in known_event_types() if t.split(".")[0] in ("tenant", "api_token", "audit")}
    assert registered <= catalogue, f"docs/events.md section 8 lacks {sorted(registered - catalogue)}"
