"""http-01 validation (RFC 8555 8.3): fetch ``http://NAME:PORT/.well-known/acme-challenge/TOKEN``, guarded; for an
IP identifier (RFC 8738 5) ``http://ADDRESS:PORT/...``, connecting to that address alone (nothing is resolved), if
the same rule allows it.

Server-side fetching of a client-chosen name is an SSRF risk, so: the name resolves through the operator's hosts
file (if set) and then the system resolver; every address is checked against the validation networks
(``domain.acme_networks.validation_address_problem``) and the connection goes to the checked address itself (the
name is only the Host header), so a second resolution cannot point it elsewhere; a timeout bounds the lookup, the
connection, and the whole read;
at most ``MAX_BODY`` bytes are read; redirects are not followed (a 3xx fails the challenge).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from domain import acme_networks

MAX_BODY = 8192
USER_AGENT = "csm-acme-validator"


class ValidationFailed(Exception):
    def __init__(self, error_type: str, detail: str) -> None:
        super().__init__(detail)
        self.error_type, self.detail = error_type, detail


def read_hosts(path: Path | None) -> dict[str, list[str]]:
    """An /etc/hosts-style file: ``address name [name...]`` per line, ``#`` comments. Missing: no overrides."""
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError:
        return {}
    hosts: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            ipaddress.ip_address(fields[0])
        except ValueError:
            continue
        for name in fields[1:]:
            hosts.setdefault(name.lower().rstrip("."), []).append(fields[0])
    return hosts


def _resolve_system(name: str, port: int, timeout: float) -> list[str]:
    """``getaddrinfo`` on a thread of its own, waited for ``timeout`` at most (a blocking lookup cannot be
    cancelled: a late answer is dropped)."""
    answer: concurrent.futures.Future[list] = concurrent.futures.Future()

    def resolve() -> None:
        try:
            answer.set_result(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            answer.set_exception(exc)

    threading.Thread(target=resolve, name=f"acme-dns-{name}"[:60], daemon=True).start()
    try:
        infos = answer.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise ValidationFailed("dns", f"{name} did not resolve within {timeout:g} s") from None
    except OSError as exc:
        raise ValidationFailed("dns", f"{name} does not resolve: {exc.strerror or exc}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def allowed_addresses(name: str, port: int, networks: tuple[acme_networks.IpNetwork, ...], hosts_file: Path | None,
                      timeout: float, *, ip: bool = False) -> list[str]:
    """The addresses of ``name`` (hosts file first, then the system resolver; an IP identifier, ``ip``: itself) that
    validation may connect to; ValidationFailed (``rejectedIdentifier``) naming why when there are none: nothing
    is connected to then."""
    found = [name] if ip else read_hosts(hosts_file).get(name.lower()) or _resolve_system(name, port, timeout)
    allowed, refused = [], []
    for text in found:
        problem = acme_networks.validation_address_problem(ipaddress.ip_address(text), networks)
        (refused if problem else allowed).append(problem or text)
    if not allowed:
        raise ValidationFailed("rejectedIdentifier", f"{name}: no address validation may connect to ("
                               + "; ".join(refused or ["none found"]) + ")")
    return allowed


@dataclass(frozen=True)
class Http01:
    port: int
    networks: tuple[acme_networks.IpNetwork, ...]
    hosts_file: Path | None
    timeout: float

    def addresses(self, name: str, *, ip: bool = False) -> list[str]:
        """The addresses of ``name`` validation may connect to; ValidationFailed when there are none."""
        return allowed_addresses(name, self.port, self.networks, self.hosts_file, self.timeout, ip=ip)

    def fetch(self, name: str, token: str, *, ip: bool = False) -> tuple[str, bytes]:
        """(address, body) of the first address that answers 200; ValidationFailed otherwise. ``ip``: ``name`` is
        an IP identifier's address, the only one connected to (the Host header is the address, an IPv6 one in
        brackets)."""
        path = f"/.well-known/acme-challenge/{token}"
        failure: ValidationFailed | None = None
        host = f"[{name}]" if ip and ":" in name else name
        for address in self.addresses(name, ip=ip):
            try:
                return address, self._get(address, host, path)
            except ValidationFailed as exc:
                if exc.error_type != "connection":
                    raise
                failure = exc  # the name's next address, as a client would
        assert failure is not None
        raise failure

    def _get(self, address: str, name: str, path: str) -> bytes:
        host = name if self.port == 80 else f"{name}:{self.port}"
        conn = http.client.HTTPConnection(address, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path, headers={"Host": host, "User-Agent": USER_AGENT, "Accept": "*/*",
                                               "Connection": "close"})
            response = conn.getresponse()
            if response.status != 200:
                raise ValidationFailed("unauthorized", f"http://{host}{path} answered {response.status}"
                                       + (" (redirects are not followed)" if 300 <= response.status < 400 else ""))
            body = self._read(response, host, path)
        except (OSError, http.client.HTTPException) as exc:
            raise ValidationFailed("connection", f"fetching http://{host}{path} from {address} failed: "
                                   f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if len(body) > MAX_BODY:
            raise ValidationFailed("unauthorized", f"http://{host}{path} answered more than {MAX_BODY} bytes")
        return body

    def _read(self, response: http.client.HTTPResponse, host: str, path: str) -> bytes:
        """At most MAX_BODY + 1 bytes, within one timeout in all: a server dripping a byte at a time (each read
        within the socket's timeout) cannot hold a validation longer."""
        deadline = time.monotonic() + self.timeout
        body = b""
        while len(body) <= MAX_BODY:
            chunk = response.read1(MAX_BODY + 1 - len(body))
            if not chunk:
                break
            body += chunk
            if time.monotonic() > deadline:
                raise ValidationFailed("connection", f"http://{host}{path} did not answer within "
                                       f"{self.timeout:g} s")
        return body
