"""Shared fixtures for the browser UI tests: `csm serve` on a random loopback port with a tenant, CAs and users,
and Debian's Chromium driven by Playwright (its own browser download is never used).

Imported by test_ui*.py (``from ui_support import ...``); it holds no tests.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from test_cli_serve import CSM, csm, env, free_port, stopped, wait_until_live

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; "
          "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
TENANT = "acme"
# One process; no back-off after the wrong-password test's failure; every test signs in from 127.0.0.1, more than the
# default 20 sign-ins a minute from one address allows when the module runs quickly.
SERVE_ENV = {"CSM_WORKERS": "1", "CSM_LOGIN_BACKOFF_BASE": "0", "CSM_RATE_LIMIT_LOGIN_PER_ADDRESS": "300/minute"}
# Records what the page's Content-Security-Policy refused; Playwright's init scripts run whatever the policy says.
CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', e => "
             "window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def chromium_path() -> str | None:
    """``CSM_TEST_CHROMIUM`` if set, else Debian's chromium on the PATH (or /usr/bin); None when there is none."""
    named = os.environ.get("CSM_TEST_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def sync_playwright():
    """Playwright's sync API, or a skip naming what is missing."""
    if chromium_path() is None:
        pytest.skip(f"chromium is not installed ({os.environ.get('CSM_TEST_CHROMIUM') or 'not on the PATH'}; "
                    "make sysdeps installs Debian's chromium)")
    api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                              "(pip install -e '.[test]')")
    return api.sync_playwright


@dataclass
class Service:
    base: str
    data_dir: Path
    admin_key: str
    ca_id: str  # the issuing (intermediate) CA
    root_id: str
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def post(self, path: str, body: dict, headers: dict | None = None) -> dict:
        response = httpx.post(f"{self.base}{path}", json=body, headers=headers or self.admin, timeout=60)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def post_raw(self, path: str, body: dict) -> httpx.Response:
        """The answer to a POST as the admin, whatever its status."""
        return httpx.post(f"{self.base}{path}", json=body, headers=self.admin, timeout=60)

    def put(self, path: str, body: dict) -> dict:
        response = httpx.put(f"{self.base}{path}", json=body, headers=self.admin, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    def get(self, path: str, headers: dict | None = None, **params) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", params=params, headers=headers or self.admin, timeout=60)

    def user(self, username: str, *roles: str) -> str:
        """A local user of the tenant with ``roles``; returns the password."""
        password = secrets.token_urlsafe(18)
        self.post("/v1/users", {"username": username, "password": password, "tenant_id": TENANT, "roles": list(roles)})
        self.passwords[username] = password
        return password

    def key(self, name: str, *roles: str, tenant: str | None = TENANT) -> str:
        """An API key of a new service account (no TOTP: keys sign in with the client_credentials grant)."""
        args = ["admin", "create-token", "--name", name, *[a for r in roles for a in ("--role", r)]]
        return csm(self.data_dir, *args, *(["--tenant", tenant] if tenant else [])).stdout.strip()

    def issue(self, common_name: str, **extra) -> dict:
        body = {"ca_id": self.ca_id, "tenant_id": TENANT, "profile": "cassandra-client", "algorithm": "ecdsa-p256",
                "subject": {"common_name": common_name}, **extra}
        return self.post("/v1/certificates", body)


def start_service(tmp_path: Path, extra_env: dict[str, str] | None = None):
    """`csm serve` (one process) on a free port: a tenant, a root and an issuing CA (ECDSA), stopped afterwards.
    ``extra_env``: more settings for the server (CSM_...)."""
    data = tmp_path / "data"
    port = free_port()
    log = (tmp_path / "serve.log").open("w")  # a file, not a pipe: the access log would fill a pipe and stall it
    server = subprocess.Popen([*CSM, "--data-dir", str(data), "serve", "--port", str(port)],
                              env={**env(), **SERVE_ENV, **(extra_env or {})}, cwd=tmp_path,
                              stdout=log, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_live(server, base)
        admin_key = csm(data, "admin", "create-token", "--name", "ui-setup").stdout.strip()
        service = Service(base=base, data_dir=data, admin_key=admin_key, ca_id="", root_id="")
        service.post("/v1/tenants", {"tenant_id": TENANT, "name": "Acme <Corp>"})
        root = service.post("/v1/cas", {"kind": "root", "tenant_id": TENANT, "name": "Acme root",
                                        "algorithm": "ecdsa-p384", "subject": {"common_name": "Acme Root CA"}})
        issuing = service.post("/v1/cas", {"kind": "intermediate", "tenant_id": TENANT, "parent_id": root["ca_id"],
                                           "name": "Acme clients", "algorithm": "ecdsa-p384",
                                           "subject": {"common_name": "Acme Client CA"}})
        service.root_id, service.ca_id = root["ca_id"], issuing["ca_id"]
        yield service
    finally:
        stopped(server)
        log.close()


class Browser:
    """A Chromium instance; ``page()`` opens a fresh context (own sessionStorage) and records its errors."""

    def __init__(self, browser, base: str) -> None:
        self.browser, self.base = browser, base
        self.pages: list = []

    def page(self, width: int = 1280, height: int = 900):
        context = self.browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        context.add_init_script(CSP_WATCH)
        page = context.new_page()
        page.console_errors, page.page_errors = [], []
        page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.page_errors.append(str(e)))
        page.on("dialog", lambda d: page.page_errors.append(f"unexpected dialog: {d.message}") or d.dismiss())
        # a wait's limit, not its length: 30 s, as the suite now runs two workers per CPU beside Chromium and servers
        page.set_default_timeout(30_000)
        self.pages.append(page)
        return page

    def close_pages(self) -> None:
        for page in self.pages:
            page.context.close()
        self.pages.clear()


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)


def sign_in(page, base: str, username: str = "", password: str = "", *, api_key: str | None = None,
            totp: str | None = None) -> None:
    page.goto(f"{base}/ui/")
    page.get_by_role("heading", name="Sign in").wait_for()
    if api_key:
        page.get_by_label("Sign in with a service account's API key").check()
        page.get_by_label("API key", exact=True).fill(api_key)
    else:
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_label("Tenant").fill(TENANT)
        if totp:
            page.get_by_label("TOTP code").fill(totp)
    page.get_by_role("button", name="Sign in").click()


def page_problems(page) -> dict:
    """CSP violations, uncaught errors and console errors the page has had so far."""
    return {"csp": page.evaluate("window.__csp"), "errors": page.page_errors, "console": page.console_errors}


def no_problems(page, console: bool = True) -> None:
    """No CSP violation nor uncaught error so far; nor console error unless ``console`` is False (Chromium logs a
    refused request, a 4xx, as one: tests that provoke one pass False)."""
    found = page_problems(page)
    assert found["csp"] == [] and found["errors"] == [], found
    if console:
        assert found["console"] == [], found


# How many pixels the page is wider than its viewport: 0 unless something overflows sideways.
OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def tenant_admin_page(service, browser, name: str, **size):
    """A page signed in with a new tenant-admin API key of ``name``, at the overview."""
    page = browser.page(**size)
    sign_in(page, service.base, api_key=service.key(name, "tenant-admin"))
    page.get_by_role("heading", name=re.compile("^Overview")).wait_for()
    return page


def head(service) -> int:
    """A position at or past every write so far (for min_position): the event log's head, as GET /health/ready reads
    it from the store. Not the audit log's last entry: that is a read model, so its position is one the read models
    have already reached, and a min_position of it waited for nothing."""
    ready = service.get("/health/ready")
    assert ready.status_code == 200, ready.text
    return ready.json()["head_position"]


def in_form(page, label: str):
    """The form labelled ``label`` (its aria-label)."""
    return page.locator(f"form[aria-label='{label}']")


@pytest.fixture(scope="module")
def playwright():
    starter = sync_playwright()
    with starter() as running:
        yield running


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    yield from start_service(tmp_path_factory.mktemp("ui"))


@pytest.fixture(scope="module")
def chromium(playwright):
    browser = launch(playwright)
    yield browser
    browser.close()


@pytest.fixture
def browser(chromium, service):
    opened = Browser(chromium, service.base)
    yield opened
    opened.close_pages()
