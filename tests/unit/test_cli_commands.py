"""The root `csm` group loads each command's module only when that command is asked for, and still offers them all."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from cli.main import COMMANDS, csm


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (this process has imported everything)."""
    run = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(run.stdout.splitlines()[-1]))


def test_every_command_the_root_lists_loads_under_its_own_name():
    ctx = click.Context(csm)
    names = csm.list_commands(ctx)
    assert set(COMMANDS) | {"version"} == set(names)
    for name in names:
        assert csm.get_command(ctx, name).name == name
    ca_commands = csm.get_command(ctx, "ca").commands
    assert {"create-root", "root", "import-root", "list", "show", "algorithms"} <= set(ca_commands)
    assert {"deploy", "rollback", "verify", "status"} <= set(csm.get_command(ctx, "cluster").commands)


def test_the_root_group_imports_no_command_and_no_store():
    loaded = modules_after("import cli.main")
    assert not loaded & {"cli.common", "cli.cert", "cli.serve", "infra.bootstrap", "rich", "importlib.metadata"}


def test_a_command_loads_its_own_module_and_not_the_others():
    loaded = modules_after("from cli.main import csm\ncsm(['cert', '--help'], standalone_mode=False)")
    assert {"cli.cert", "cli.common"} <= loaded
    assert not loaded & {"cli.cluster_deploy", "cli.events_forward", "cli.serve", "infra.ssh"}


def test_the_commands_that_read_a_store_alone_do_not_import_the_composition_root():
    loaded = modules_after("import cli.audit, cli.backup, cli.events")
    assert "cli.common" in loaded and "infra.bootstrap" not in loaded


def test_rich_is_imported_by_what_draws_not_by_every_command():
    assert "rich" not in modules_after("import cli.common, cli.tenants, cli.cert, cli.ca")
    assert "rich" in modules_after("import cli.common\ncli.common.id_table('id', ids={'id'})")
