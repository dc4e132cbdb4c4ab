"""The process's logged-in session of the configured PKCS#11 token, shared by the KEK provider (``pkcs11``) and the
CA keys on the token (``infra/crypto/token_keys.py``).

PKCS#11 logs in per application, not per session, and closing a logged-in session logs out
every session: so one ``SharedToken`` per (module, serial) is shared by all users of a process
and holds the login; a session the token dropped is replaced by logging in again. The vault
calls from worker threads; python-pkcs11 sessions are not thread-safe and the module is
initialised without locking, so calls take the module's lock.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from infra.service_settings import Pkcs11Settings
from infra.keystore.kek import KekUnavailable, read_secret_line

log = logging.getLogger(__name__)
T = TypeVar("T")
_SALT = secrets.token_bytes(32)  # keys the PIN digests a shared login compares, for this process only


def pkcs11_module() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise KekUnavailable("CSM_KEK_PROVIDER=pkcs11 needs python-pkcs11 "
                             "(pip install 'cassandra-security-manager[hsm]')") from None
    return pkcs11


def _text(value: str | bytes) -> str:
    """Token fields (python-pkcs11 gives the serial as bytes, the label as str), blank-padded by PKCS#11."""
    return (value.decode(errors="replace") if isinstance(value, bytes) else str(value)).strip()


def _pin_digest(pin: str) -> bytes:
    return hmac.new(_SALT, pin.encode(), hashlib.sha256).digest()


def read_pin(settings: Pkcs11Settings) -> str:
    """The user PIN: CSM_PKCS11_PIN_FILE (0600, first line) or CSM_PKCS11_PIN, never both."""
    if settings.pin_file is not None and settings.pin is not None:
        raise KekUnavailable("set CSM_PKCS11_PIN_FILE or CSM_PKCS11_PIN, not both")
    if settings.pin_file is not None:
        return read_secret_line(settings.pin_file)
    if settings.pin:
        return settings.pin
    raise KekUnavailable("CSM_KEK_PROVIDER=pkcs11 needs the token's user PIN: CSM_PKCS11_PIN_FILE (mode 0600)")


class TokenSession:
    """The logged-in session and the key objects found through it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.keys: dict[tuple[str, bytes], Any] = {}


REINITIALISE_EVERY = 5.0  # seconds: a token that stays away costs a module re-initialisation at most this often
_REINITIALISED: dict[str, float] = {}  # module -> when this process last initialised it again
_MODULE_LOCKS: dict[str, threading.RLock] = {}
_MODULE_LOCKS_LOCK = threading.Lock()


def _module_lock(module: str) -> threading.RLock:
    with _MODULE_LOCKS_LOCK:
        return _MODULE_LOCKS.setdefault(module, threading.RLock())


class SharedToken:
    """A logged-in token shared by a process's providers: the login session and a reference count.

    python-pkcs11 initialises the module with ``C_Initialize(NULL)``, which tells it the
    application makes no concurrent calls (SoftHSM2 then runs without its mutexes, and two
    threads encrypting at once fail with CKR_GENERAL_ERROR): so every call into a module holds
    that module's lock, and one session per token is all a pool could use.
    """

    registry: dict[tuple[str, str], SharedToken] = {}
    registry_lock = threading.Lock()

    def __init__(self, key: tuple[str, str], token: Any, login: Any, pin: str, where: str) -> None:
        self.key, self.token, self.where = key, token, where
        self.serial, self.label = _text(token.serial), _text(token.label)
        self.lock = _module_lock(key[0])  # the one acquire holds: the same object
        self._pin = _pin_digest(pin)
        self._secret = pin  # to log in again after the token dropped the session
        self._held: TokenSession | None = TokenSession(login)
        self._released = False  # released by its last user: never logs in again
        self._users = 0

    @classmethod
    def acquire(cls, settings: Pkcs11Settings, pin: str) -> SharedToken:
        pkcs11, module = pkcs11_module(), str(settings.module)
        where = f"PKCS#11 token {settings.token_label!r} (module {settings.module})"
        lock = _module_lock(module)
        with cls.registry_lock, lock:
            try:
                token = pkcs11.lib(module).get_token(token_label=settings.token_label)
            except pkcs11.NoSuchToken:
                raise KekUnavailable(f"{where} is not present: check CSM_PKCS11_TOKEN_LABEL and the module's "
                                     "configuration (SoftHSM2: SOFTHSM2_CONF)") from None
            except pkcs11.PKCS11Error as exc:
                raise KekUnavailable(f"{where}: cannot reach it ({type(exc).__name__}: {exc})") from None
            key = (module, _text(token.serial))
            shared = cls.registry.get(key)
            if shared is None:
                shared = cls.registry[key] = cls(key, token, _login(token, pin, where), pin, where)
            elif not hmac.compare_digest(shared._pin, _pin_digest(pin)):
                raise KekUnavailable(f"{where}: the user PIN is not the one this process logged in with")
            shared._users += 1
            return shared

    def release(self) -> None:
        with self.registry_lock, self.lock:
            self._users -= 1
            if self._users > 0:
                return
            self.registry.pop(self.key, None)
            self._released = True
            self._drop_session()  # logs the application out of the token

    def run(self, operation: Callable[[TokenSession], T]) -> T:
        """``operation`` on the session, under the module's lock; once more after logging in again if the
        token dropped the session (restarted, reinserted, or its login timed out). After a failed login again
        (the token was away) each call tries once more, so the process recovers when the token is back."""
        errors = pkcs11_module()
        lost = (errors.SessionHandleInvalid, errors.SessionClosed, errors.UserNotLoggedIn, errors.DeviceRemoved,
                errors.TokenNotPresent, errors.DeviceError, errors.ObjectHandleInvalid, errors.KeyHandleInvalid)
        with self.lock:
            if self._held is None:
                if self._released:
                    raise KekUnavailable(f"PKCS#11 token {self.label!r}: the session is closed")
                self._relogin()
            try:
                return operation(self._held)
            except lost as exc:
                log.warning("PKCS#11 token %r: %s; logging in again", self.label, type(exc).__name__)
            self._relogin()
            return operation(self._held)

    def probe(self) -> None:
        """Readiness: the token is present and answers (logged in again if it had dropped the session, or had gone
        and is back); KekUnavailable otherwise. A search alone finds nothing on a removed token without failing
        (SoftHSM2): C_GetTokenInfo does fail. On failure the session is dropped, so that the next probe or use logs
        in again and the process sees the token come back."""
        errors = pkcs11_module()
        search = {errors.Attribute.LABEL: "csm-readiness-probe"}

        def answer(held: TokenSession) -> None:
            held.session.token.slot.get_token()
            list(held.session.get_objects(search))

        try:
            self.run(answer)
        except errors.PKCS11Error as exc:
            with self.lock:
                self._drop_session()
            raise KekUnavailable(f"PKCS#11 token {self.label!r} does not answer ({type(exc).__name__})") from None

    def _drop_session(self) -> None:
        """Close the held session, if any (under the lock): the next use logs in again, unless released."""
        held, self._held = self._held, None
        if held is not None:
            _close_quietly(held.session)

    def _relogin(self) -> None:
        self._drop_session()
        token = self._find_again()
        if _text(token.serial) != self.serial:
            raise KekUnavailable(f"{self.where}: now has serial {_text(token.serial)}, not {self.serial}")
        self.token = token
        self._held = TokenSession(_login(token, self._secret, self.where, relogin=True))
        log.warning("PKCS#11 token %r: logged in again", self.label)

    def _find_again(self) -> Any:
        """The token, looked up again (it may be back in another slot). A module that lost sight of a token that
        went away may not see it come back (SoftHSM2: CKR_GENERAL_ERROR until C_Finalize): then the module is
        initialised again, at most every REINITIALISE_EVERY seconds; every session of it is closed by that, and
        their users log in again as after any lost session (all of them hold this lock meanwhile)."""
        pkcs11 = pkcs11_module()
        lib = pkcs11.lib(self.key[0])
        try:
            return lib.get_token(token_label=self.label)
        except pkcs11.PKCS11Error as exc:
            failed = exc
        now = time.monotonic()
        if now - _REINITIALISED.get(self.key[0], -REINITIALISE_EVERY) >= REINITIALISE_EVERY:
            _REINITIALISED[self.key[0]] = now
            try:
                lib.reinitialize()
                return lib.get_token(token_label=self.label)
            except pkcs11.PKCS11Error as exc:
                failed = exc
        if isinstance(failed, pkcs11.NoSuchToken):
            raise KekUnavailable(f"{self.where} is not present (removed, or its slot is empty); logging in again "
                                 "when it is back") from None
        raise KekUnavailable(f"{self.where}: cannot reach it again ({type(failed).__name__})") from None


def _login(token: Any, pin: str, where: str, *, relogin: bool = False) -> Any:
    pkcs11 = pkcs11_module()
    try:
        return token.open(rw=True, user_pin=pin)
    except pkcs11.UserAlreadyLoggedIn:
        if not relogin:  # something else in this process logged in: the PIN would go unchecked
            raise KekUnavailable(f"{where}: another part of this process is logged in to it") from None
        return token.open(rw=True)  # our PIN was checked when we first logged in
    except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
        raise KekUnavailable(f"{where}: the user PIN is incorrect (CSM_PKCS11_PIN_FILE or CSM_PKCS11_PIN)") from None
    except pkcs11.PinLocked:
        raise KekUnavailable(f"{where}: the user PIN is locked (the security officer must reset it)") from None
    except pkcs11.PKCS11Error as exc:
        raise KekUnavailable(f"{where}: cannot log in ({type(exc).__name__})") from None


def _close_quietly(session: Any) -> None:
    try:
        session.close()
    except Exception:  # noqa: BLE001 - closing a session of a removed token: nothing left to release
        pass


def open_token(settings: Pkcs11Settings, *, needed_by: str = "CSM_KEK_PROVIDER=pkcs11") -> SharedToken:
    """The process's logged-in session of the configured token (shared; ``release`` it when done)."""
    if settings.module is None or not settings.token_label:
        raise KekUnavailable(f"{needed_by} needs CSM_PKCS11_MODULE (the token's PKCS#11 library) "
                             "and CSM_PKCS11_TOKEN_LABEL")
    if not settings.module.is_file():
        raise KekUnavailable(f"PKCS#11 module {settings.module} does not exist (CSM_PKCS11_MODULE)")
    pkcs11_module()
    return SharedToken.acquire(settings, read_pin(settings))
