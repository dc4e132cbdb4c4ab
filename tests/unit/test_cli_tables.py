"""The CLI's tables keep id columns whole, however narrow the terminal."""

from __future__ import annotations

from rich.console import Console

from cli import common

CA_ID, PARENT_ID = "01a24d7b-3e5b-7816-b610-ef9f8e0a1b2c", "01a24d7b-2c4a-7e10-9f3d-1a2b3c4d5e6f"


def test_a_narrow_terminal_wraps_other_columns_and_never_cuts_an_id(monkeypatch, capsys):
    monkeypatch.setattr(common, "stdout_console", lambda: Console(width=60, force_terminal=True, soft_wrap=False,
                                                                  color_system=None))
    table = common.id_table("ca id", "name", "parent", ids={"ca id", "parent"})
    table.add_row(CA_ID, "A rather long display name for an issuing CA", PARENT_ID)
    common.print_table(table, "1 CA(s)")
    out = capsys.readouterr().out
    assert CA_ID in out and PARENT_ID in out and "…" not in out
    assert out.rstrip().endswith("1 CA(s)")
