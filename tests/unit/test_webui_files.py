"""The browser UI's files (api/ui/): all shipped in the wheel, nothing inline for the CSP to allow, no HTML sinks."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from api.webui import UI_DIRECTORY

ROOT = Path(__file__).resolve().parents[2]
# Ways to turn text into markup or code; the UI builds DOM nodes and sets textContent instead.
SINKS = re.compile(r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|\beval\(|new Function\(|"
                   r"setTimeout\(\s*[\"'`]|\.setAttribute\(\s*[\"']on")


def ui_files() -> list[Path]:
    return sorted(p for p in UI_DIRECTORY.rglob("*") if p.is_file())


def test_every_ui_file_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["api"]
    files = ui_files()
    assert files, UI_DIRECTORY
    left_out = [str(p.relative_to(UI_DIRECTORY.parent)) for p in files
                if not any(fnmatch(str(p.relative_to(UI_DIRECTORY.parent)), pattern) for pattern in patterns)]
    assert not left_out, f"not in [tool.setuptools.package-data] api, so not in the wheel: {left_out}"


def test_the_page_has_no_inline_script_style_or_remote_resource():
    html = (UI_DIRECTORY / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert "<style" not in html and " style=" not in html and not re.search(r"\son[a-z]+=", html)
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "a resource from elsewhere"


def test_scripts_use_no_html_sink_and_fetch_nothing_from_elsewhere():
    for path in UI_DIRECTORY.rglob("*.js"):
        text = path.read_text()
        assert not SINKS.search(text), f"{path.name}: {SINKS.search(text).group(0)}"
        # the SVG namespace is a name that createElementNS takes, never fetched
        assert not re.search(r"https?://", text.replace('"http://www.w3.org/2000/svg"', "")), \
            f"{path.name} names another origin"
        assert not re.search(r"\blocalStorage\.", text), f"{path.name}: tokens stay in memory and sessionStorage"
