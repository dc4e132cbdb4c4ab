"""A real SoftHSM2 token in a private token directory, for the tests of the PKCS#11 KEK provider.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when a process first initialises the library, and
python-pkcs11 keeps the library loaded for the process: so the configuration and its tokens
are made once per test process (session scope) and ``SOFTHSM2_CONF`` stays set for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from infra.service_settings import Pkcs11Settings

SKIP_UTIL = "softhsm2-util is not installed (Debian package softhsm2; `make sysdeps` installs it)"
SKIP_MODULE = "python-pkcs11 is not installed (the hsm extra; `make setup` installs it)"
MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
           "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")
LABEL, SPARE = "csm-test", "csm-spare"  # the spare token is never logged into by a provider: wrong-PIN tests
PIN, SO_PIN = "user-pin-4711", "so-pin-0815"


def softhsm_module() -> str | None:
    return next((path for path in MODULES if os.path.isfile(path)), None)


def init_token(util: str, label: str, env: dict[str, str]) -> None:
    subprocess.run([util, "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", PIN],
                   check=True, capture_output=True, env=env, timeout=60)


_MADE: SimpleNamespace | None = None  # this process's tokens: see ``softhsm``


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory) -> SimpleNamespace:
    """Two initialised SoftHSM2 tokens; ``settings`` names the first, with the PIN in a 0600 file.

    Made once per process, whichever test module asks first: each module that imports this fixture holds a
    session fixture of its own, and a second set of tokens under a second ``SOFTHSM2_CONF`` would be invisible
    to this process (the library read the first), while the ``csm`` processes a test starts would use it.
    """
    global _MADE
    util = shutil.which("softhsm2-util")
    if util is None:
        pytest.skip(SKIP_UTIL)
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        pytest.skip(SKIP_MODULE)
    module = softhsm_module()
    if module is None:
        pytest.skip(f"softhsm2-util is installed but libsofthsm2.so is in none of {', '.join(MODULES)}")
    if _MADE is None:
        _MADE = _make_tokens(util, module, tmp_path_factory.mktemp("softhsm"))
    return _MADE


def _make_tokens(util: str, module: str, root: Path) -> SimpleNamespace:
    (root / "tokens").mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    for label in (LABEL, SPARE):
        init_token(util, label, env)
    pin_file = root / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    os.environ["SOFTHSM2_CONF"] = str(conf)  # before this process first loads the library; for the process's life
    settings = Pkcs11Settings(module=Path(module), token_label=LABEL, pin_file=pin_file)
    return SimpleNamespace(module=Path(module), conf=conf, label=LABEL, spare=SPARE, pin=PIN, pin_file=pin_file,
                           settings=settings, env={"SOFTHSM2_CONF": str(conf), "CSM_PKCS11_MODULE": module,
                                                   "CSM_PKCS11_TOKEN_LABEL": LABEL,
                                                   "CSM_PKCS11_PIN_FILE": str(pin_file)})


def token_session(softhsm: SimpleNamespace, label: str | None = None):
    """A session of this process on a token, opened without a PIN: a user session while a provider is logged in."""
    import pkcs11

    return pkcs11.lib(str(softhsm.module)).get_token(token_label=label or softhsm.label).open()
