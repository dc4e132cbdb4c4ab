"""The Directory port over LDAP / Active Directory (ldap3): search the user with a service bind, then bind as them."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import re
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn

from commands.ports import DirectoryIdentity
from domain.errors import DirectoryUnavailable
from infra.service_settings import LdapSettings

log = logging.getLogger(__name__)

MAX_USERNAME = 256
# Bind results that mean "these credentials do not sign in" (AD reports disabled, expired and locked accounts as 49
# with a sub-code); anything else from a bind is the directory failing, not the user.
_REFUSED = frozenset({19, 48, 49, 50, 53})
_SEARCH_OK = frozenset({0, 4})  # 4: sizeLimitExceeded, which the user search turns into "ambiguous"
_FILTER_ESCAPES = {"\\": r"\5c", "*": r"\2a", "(": r"\28", ")": r"\29", "\0": r"\00"}
_USERNAME_ATTRIBUTE = re.compile(r"\(([A-Za-z][A-Za-z0-9-]*)=\{username\}\)")


def escape_filter_value(value: str) -> str:
    """RFC 4515 assertion-value escaping: no input can add, close or widen a filter term."""
    return "".join(_FILTER_ESCAPES.get(char, char) for char in value)


def normalise_dn(dn: str) -> str:
    """A DN compared case- and space-insensitively, as directories do for the names used here."""
    try:
        parts = parse_dn(dn, strip=True)
    except LDAPException:
        return dn.strip().lower()
    return ",".join(f"{attr.strip().lower()}={value.strip().lower()}" for attr, value, _ in parts)


def _first_cn(dn: str) -> str | None:
    try:
        attr, value, _ = parse_dn(dn, strip=True)[0]
    except (LDAPException, IndexError):
        return None
    return value.strip().lower() if attr.strip().lower() == "cn" else None


@dataclass(frozen=True, slots=True)
class _Endpoint:
    url: str
    host: str
    port: int
    implicit_tls: bool


def parse_endpoints(urls: str, starttls: bool) -> tuple[_Endpoint, ...]:
    """Every configured URL; plain ldap:// is accepted only when StartTLS will be required on it."""
    endpoints = []
    for url in urls.split():
        parts = urlsplit(url)
        if parts.scheme not in {"ldaps", "ldap"} or not parts.hostname:
            raise ValueError(f"CSM_LDAP_URL: {url!r} is not an ldaps:// or ldap:// URL")
        if parts.scheme == "ldap" and not starttls:
            raise ValueError(f"CSM_LDAP_URL: {url!r} would send passwords in the clear; use ldaps:// "
                             "or set CSM_LDAP_STARTTLS=true")
        implicit = parts.scheme == "ldaps"
        endpoints.append(_Endpoint(url, parts.hostname, parts.port or (636 if implicit else 389), implicit))
    if not endpoints:
        raise ValueError("CSM_LDAP_URL names no directory")
    return tuple(endpoints)


def tls_context(ca_file: Any = None) -> ssl.SSLContext:
    """Certificate and host name verified by OpenSSL, TLS 1.2 or newer, the given CA (or the system store)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class _VerifiedTls(ldap3.Tls):
    """ldap3's Tls with the handshake done by our context: ldap3 itself turns Python's host name check off."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context
        self._server_hostname = server_hostname

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(connection.socket, server_side=False,
                                                      do_handshake_on_connect=do_handshake,
                                                      server_hostname=self._server_hostname)


class _Unavailable(Exception):
    """This endpoint cannot serve the attempt (network, TLS, service bind, server error)."""


class LdapDirectory:
    """``Directory`` against one directory (several URLs are replicas, tried in order).

    A connection per attempt: open, TLS (ldaps or StartTLS, checked before any bind), service
    bind, find the one entry the user filter matches, check the disabled filter, collect groups,
    then bind as that entry's DN with the password. The blocking client runs on a small pool of
    its own, so a slow directory cannot take the threads the rest of the service needs.
    """

    def __init__(self, settings: LdapSettings, *, max_concurrent: int = 4) -> None:
        self._settings = settings
        self._endpoints = parse_endpoints(settings.url, settings.starttls)
        if "{username}" not in settings.user_filter:
            raise ValueError("CSM_LDAP_USER_FILTER must contain {username}")
        self._member_of = settings.group_base is None or settings.group_filter.strip().lower() == "memberof"
        if not self._member_of and "{dn}" not in settings.group_filter and "{username}" not in settings.group_filter:
            raise ValueError("CSM_LDAP_GROUP_FILTER must contain {dn} or {username} (or be memberOf)")
        if settings.timeout <= 0:
            raise ValueError("CSM_LDAP_TIMEOUT must be positive")
        self._context = tls_context(settings.ca_file)
        self._bind_password = self._read_password(settings)
        match = _USERNAME_ATTRIBUTE.search(settings.user_filter)
        self._username_attribute = match.group(1) if match else None
        self._roles_by_dn: dict[str, tuple[str, ...]] = {}
        self._roles_by_cn: dict[str, tuple[str, ...]] = {}
        for group, roles in settings.role_map.items():
            if "=" in group:
                self._roles_by_dn[normalise_dn(group)] = roles
            else:
                self._roles_by_cn[group.strip().lower()] = roles
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="ldap")

    @staticmethod
    def _read_password(settings: LdapSettings) -> str | None:
        if settings.bind_dn is None:
            return None
        if settings.bind_password_file is None:
            raise ValueError("CSM_LDAP_BIND_DN needs CSM_LDAP_BIND_PASSWORD_FILE")
        if settings.bind_password_file.stat().st_mode & 0o077:
            log.warning("%s is readable by other users; chmod 600 it", settings.bind_password_file)
        password = settings.bind_password_file.read_text().rstrip("\r\n")
        if not password:
            raise ValueError("CSM_LDAP_BIND_PASSWORD_FILE is empty (an empty password is an anonymous bind)")
        return password

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def authenticate(self, username: str, password: str) -> DirectoryIdentity | None:
        # An empty password is an "unauthenticated bind" (RFC 4513 5.1.2) that many servers answer with success.
        if not username or not password or len(username) > MAX_USERNAME:
            log.info("directory sign-in refused for %r: empty or oversized credentials", username[:MAX_USERNAME])
            return None
        call = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, self._authenticate,
                                                                username, password)

    def _authenticate(self, username: str, password: str) -> DirectoryIdentity | None:
        for endpoint in self._endpoints:
            try:
                return self._attempt(endpoint, username, password)
            except _Unavailable as exc:
                log.warning("directory %s unavailable: %s", endpoint.url, exc)
        # The reasons stay in the log: the caller may be anyone who can reach the sign-in endpoint.
        raise DirectoryUnavailable("the directory service could not be reached; try again later")

    def _attempt(self, endpoint: _Endpoint, username: str, password: str) -> DirectoryIdentity | None:
        connection = self._open(endpoint)
        try:
            return self._sign_in(connection, username, password)
        except LDAPException as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from None
        except OSError as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from None
        finally:
            _close(connection)

    def _open(self, endpoint: _Endpoint) -> ldap3.Connection:
        timeout = self._settings.timeout
        # ldap3 packs the receive timeout into SO_RCVTIMEO as whole seconds.
        server = ldap3.Server(endpoint.host, port=endpoint.port, use_ssl=endpoint.implicit_tls,
                              tls=_VerifiedTls(self._context, endpoint.host), get_info=ldap3.NONE,
                              connect_timeout=timeout)
        service = ({"user": self._settings.bind_dn, "password": self._bind_password, "authentication": ldap3.SIMPLE}
                   if self._settings.bind_dn else {"authentication": ldap3.ANONYMOUS})
        connection = ldap3.Connection(server, auto_bind=ldap3.AUTO_BIND_NONE, client_strategy=ldap3.SYNC,
                                      read_only=True, receive_timeout=math.ceil(timeout), raise_exceptions=False,
                                      auto_referrals=False, **service)
        try:
            connection.open(read_server_info=False)
            if not endpoint.implicit_tls and not connection.start_tls(read_server_info=False):
                raise _Unavailable(f"StartTLS refused: {connection.result}")
            _require_tls(connection)
            if not connection.bind(read_server_info=False):
                raise _Unavailable(f"the service account could not bind: {_describe(connection)}")
        except (LDAPException, OSError) as exc:
            _close(connection)
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from None
        except _Unavailable:
            _close(connection)
            raise
        return connection

    def _sign_in(self, connection: ldap3.Connection, username: str, password: str) -> DirectoryIdentity | None:
        entry = self._find_user(connection, username)
        if entry is None:
            return None
        dn = entry["dn"]
        if self._is_disabled(connection, dn):
            log.info("directory sign-in refused for %r: account disabled", username)
            return None
        attributes = entry.get("attributes", {})
        groups = self._groups(connection, dn, attributes)
        _require_tls(connection)
        if not connection.rebind(user=dn, password=password, read_server_info=False):
            if connection.result.get("result") in _REFUSED:
                log.info("directory sign-in refused for %r: %s", username, connection.result.get("description"))
                return None
            raise _Unavailable(f"bind as the user failed: {_describe(connection)}")
        canonical = _first(attributes, self._username_attribute) if self._username_attribute else None
        return DirectoryIdentity(
            username=canonical or username, dn=dn,
            display_name=_first(attributes, "displayName") or _first(attributes, "cn"),
            email=_first(attributes, "mail"), groups=groups, roles=self._roles(groups),
            tenant_id=self._settings.tenant)

    def _search(self, connection: ldap3.Connection, base: str, search_filter: str, scope: str,
                attributes: list[str] | str, size_limit: int = 0) -> list[dict]:
        connection.search(base, search_filter, search_scope=scope, attributes=attributes, size_limit=size_limit,
                          time_limit=math.ceil(self._settings.timeout))
        if connection.result.get("result") not in _SEARCH_OK:
            if scope == ldap3.BASE and connection.result.get("result") == 32:  # noSuchObject
                return []
            raise _Unavailable(f"search under {base!r} failed: {_describe(connection)}")
        # References (AD's referrals to other domains) are not followed: the configured base is the scope.
        return [item for item in connection.response or () if item.get("type") == "searchResEntry"]

    def _find_user(self, connection: ldap3.Connection, username: str) -> dict | None:
        search_filter = self._settings.user_filter.replace("{username}", escape_filter_value(username))
        wanted = ["cn", "displayName", "mail"] + (["memberOf"] if self._member_of else [])
        if self._username_attribute:
            wanted.append(self._username_attribute)
        entries = self._search(connection, self._settings.user_base, search_filter, ldap3.SUBTREE, wanted,
                               size_limit=2)
        if len(entries) != 1:
            log.info("directory sign-in refused for %r: %s", username,
                     "no such user" if not entries else "the user filter matches several entries")
            return None
        return entries[0]

    def _is_disabled(self, connection: ldap3.Connection, dn: str) -> bool:
        disabled = self._settings.disabled_filter
        if not disabled:
            return False
        return bool(self._search(connection, dn, disabled, ldap3.BASE, ldap3.NO_ATTRIBUTES))

    def _groups(self, connection: ldap3.Connection, dn: str, attributes: dict) -> tuple[str, ...]:
        if self._member_of:
            return tuple(sorted(set(_values(attributes, "memberOf"))))
        search_filter = (self._settings.group_filter.replace("{dn}", escape_filter_value(dn))
                         .replace("{username}", escape_filter_value(_first(attributes, self._username_attribute)
                                                                     or "")))
        entries = self._search(connection, self._settings.group_base or "", search_filter, ldap3.SUBTREE,
                               ldap3.NO_ATTRIBUTES, size_limit=1000)
        return tuple(sorted({entry["dn"] for entry in entries}))

    def _roles(self, groups: tuple[str, ...]) -> tuple[str, ...]:
        roles: set[str] = set()
        for group in groups:
            roles.update(self._roles_by_dn.get(normalise_dn(group), ()))
            cn = _first_cn(group)
            if cn is not None:
                roles.update(self._roles_by_cn.get(cn, ()))
        return tuple(sorted(roles))


def _close(connection: ldap3.Connection) -> None:
    try:
        connection.unbind()
    except (LDAPException, OSError):
        pass  # closing is best effort: the attempt's outcome is already decided


def _require_tls(connection: ldap3.Connection) -> None:
    # The last line of defence against a silent downgrade: no credential leaves without TLS.
    if not isinstance(connection.socket, ssl.SSLSocket):
        raise _Unavailable("the connection is not encrypted; refusing to bind")


def _describe(connection: ldap3.Connection) -> str:
    result = connection.result or {}
    return f"{result.get('result')} {result.get('description')} {result.get('message') or ''}".strip()


def _values(attributes: dict, name: str | None) -> list[str]:
    if not name:
        return []
    value = attributes.get(name)
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in items]


def _first(attributes: dict, name: str | None) -> str | None:
    values = _values(attributes, name)
    return values[0] if values else None
