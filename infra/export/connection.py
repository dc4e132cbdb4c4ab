"""The secure connection bundle: one zip with everything a Cassandra client or node needs to connect over TLS.

For a certificate: its certificate and chain (PEM), the CAs to trust (PEM, PKCS#12 and JKS truststores), and, when
its key was made here, the key (encrypted PKCS#8 PEM) and PKCS#12 and JKS keystores; then ready configurations
for cqlsh (``cqlshrc``), the DataStax Java driver (``application.conf``) and the Python driver (``connect.py``),
naming the contact points asked for, a README, and a manifest with every file's SHA-256.

The export password encrypts every store and the key. It is never written into the bundle: the configurations
read it from the environment (``CSM_KEYSTORE_PASSWORD``), so the zip can travel separately from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from datetime import datetime

from domain import algorithms, names
from domain.errors import DomainError
from commands.pki import pem
from infra.export.bundle import KEYSTORE_FAMILIES, der_of, render

DEFAULT_PORT = 9042
MAX_CONTACT_POINTS = 32
PASSWORD_ENV = "CSM_KEYSTORE_PASSWORD"
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$")


def contact_points(text: str | None, field: str = "contact_points") -> list[tuple[str, int]]:
    """``host[:port]`` items, comma-separated (IPv6 in brackets); port 9042 when none is given."""
    points: list[tuple[str, int]] = []
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        match = _HOST_PORT.match(item)
        host, port = (match.group(1).strip("[]"), int(match.group(2) or DEFAULT_PORT)) if match else ("", 0)
        if not match or not 1 <= port <= 65535 or (names.ip_problem(host) and names.dns_name_problem(host)):
            raise DomainError("invalid_contact_point", f"{item!r} is not host[:port] (a DNS name or IP address, and "
                              "a port from 1 to 65535)", field=field)
        points.append((host, port))
    if len(points) > MAX_CONTACT_POINTS:
        raise DomainError("too_many_contact_points", f"at most {MAX_CONTACT_POINTS} contact points", field=field)
    return points


def _pem_chain(chain: list[dict]) -> bytes:
    return "".join(pem("CERTIFICATE", der_of(c["certificate_pem"])) for c in chain).encode()


def bundle(row: dict, chain: list[dict], trust: list[dict], material: bytes | None, password: str,
           points: list[tuple[str, int]], now: datetime) -> bytes:
    """The zip. ``chain``: the certificate's issuers up to the root, as keystores carry it; ``trust``: the CAs a
    truststore holds; ``material``: the private key from the vault, or None when it is not held here."""
    if not trust:
        raise DomainError("no_chain", "no CA certificates to put in a truststore", field="format")
    files: dict[str, bytes] = {
        "certificate.pem": render("pem", row, [], None, None),
        "chain.pem": render("pem", row, chain, None, None),
        "ca.pem": _pem_chain(trust),
        "truststore.p12": render("pkcs12-truststore", row, trust, None, password),
        "truststore.jks": render("jks-truststore", row, trust, None, password),
    }
    family = getattr(algorithms.get(row["algorithm"]), "family", row["algorithm"])
    if material is not None:
        files["private-key.pem"] = _encrypted_key(row, material, password)
        if family in KEYSTORE_FAMILIES:
            files["keystore.p12"] = render("pkcs12", row, chain, material, password)
            files["keystore.jks"] = render("jks", row, chain, material, password)
    keyed = material is not None
    stores = keyed and family in KEYSTORE_FAMILIES
    files["cqlshrc"] = _cqlshrc(points, keyed).encode()
    files["application.conf"] = _java_conf(points, stores).encode()
    files["connect.py"] = _python_example(points, keyed).encode()
    files["README.txt"] = _readme(row, keyed, stores).encode()
    manifest = {
        "certificate_id": row["certificate_id"], "tenant_id": row["tenant_id"], "subject": row["subject_dn"],
        "serial_hex": row["serial_hex"], "fingerprint_sha256": row["fingerprint"], "not_after": row["not_after"],
        "includes_private_key": keyed, "contact_points": [f"{_host(h)}:{p}" for h, p in points],
        "password_env": PASSWORD_ENV, "generated_at": now.isoformat(),
        "files": {name: hashlib.sha256(body).hexdigest() for name, body in sorted(files.items())},
    }
    files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    out = io.BytesIO()
    folder = _folder(row)
    stamp = now.timetuple()[:6]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in files.items():
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=stamp)
            secret = name in ("private-key.pem", "keystore.p12", "keystore.jks")
            info.external_attr = (0o600 if secret else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, body)
    return out.getvalue()


def _folder(row: dict) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", (row.get("common_name") or row["certificate_id"]).lower()).strip("-.")
    return f"{base or 'certificate'}-connection-bundle"


def _encrypted_key(row: dict, material: bytes, password: str) -> bytes:
    """The key alone (no certificate), encrypted: the PEM export with the key, minus its certificate."""
    body = render("pem", row, [], material, password)
    start = body.index(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    return body[start:]


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _cqlshrc(points: list[tuple[str, int]], keyed: bool) -> str:
    host, port = points[0] if points else ("CASSANDRA_HOST", DEFAULT_PORT)
    lines = ["; cqlsh --cqlshrc cqlshrc (run from this folder)", "[connection]", f"hostname = {host}",
             f"port = {port}", "ssl = true", "", "[ssl]", "certfile = ca.pem", "validate = true"]
    if keyed:
        lines += ["; cqlsh cannot read an encrypted key: decrypt it once into a file only you can read:",
                  ";   umask 077 && openssl pkey -in private-key.pem -out private-key.plain.pem",
                  "userkey = private-key.plain.pem", "usercert = certificate.pem"]
    else:
        lines += ["; your private key stayed with you: name it and this certificate for mutual TLS",
                  "; userkey = /path/to/your-key.pem", "usercert = certificate.pem"]
    return "\n".join(lines) + "\n"


def _java_conf(points: list[tuple[str, int]], stores: bool) -> str:
    hosts = ", ".join(json.dumps(f"{_host(h)}:{p}") for h, p in points) or '"CASSANDRA_HOST:9042"'
    lines = ["# DataStax Java driver 4.x: -Dconfig.file=application.conf; passwords come from the environment",
             "datastax-java-driver {", f"  basic.contact-points = [{hosts}]", "  advanced.ssl-engine-factory {",
             "    class = DefaultSslEngineFactory", "    hostname-validation = true",
             '    truststore-path = "truststore.jks"', f"    truststore-password = ${{{PASSWORD_ENV}}}"]
    if stores:
        lines += ['    keystore-path = "keystore.jks"', f"    keystore-password = ${{{PASSWORD_ENV}}}"]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _python_example(points: list[tuple[str, int]], keyed: bool) -> str:
    hosts = [h for h, _ in points] or ["CASSANDRA_HOST"]
    port = points[0][1] if points else DEFAULT_PORT
    key = ('context.load_cert_chain("chain.pem", "private-key.pem", password=os.environ["' + PASSWORD_ENV + '"])'
           if keyed else '# context.load_cert_chain("certificate.pem", "/path/to/your-key.pem")  # mutual TLS')
    return f'''"""Connect with the DataStax Python driver (pip install cassandra-driver), from this folder."""

import os
import ssl

from cassandra.cluster import Cluster

context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile="ca.pem")
context.minimum_version = ssl.TLSVersion.TLSv1_2
{key}
cluster = Cluster({hosts!r}, port={port}, ssl_context=context)
session = cluster.connect()
print(session.execute("SELECT release_version FROM system.local").one())
'''


def _readme(row: dict, keyed: bool, stores: bool) -> str:
    keys = ("private-key.pem     the private key, encrypted with the export password (PKCS#8)\n"
            + ("keystore.jks/.p12   keystores: the key, this certificate and its chain\n" if stores else "")
            if keyed else "(no private key: it was never held by the service; yours stays with you)\n")
    return f"""Secure connection bundle for {row['subject_dn']}
certificate {row['certificate_id']} (tenant {row['tenant_id']}), serial {row['serial_hex']},
valid until {row['not_after']}; SHA-256 of every file in manifest.json.

certificate.pem     this certificate
chain.pem           this certificate and its issuing CAs up to the root
ca.pem              the CAs to trust (PEM), for cqlsh and the Python driver
truststore.jks/.p12 the same, for Java (cassandra.yaml, the Java driver)
{keys}cqlshrc             cqlsh --cqlshrc cqlshrc
application.conf    DataStax Java driver 4.x
connect.py          DataStax Python driver

Every store and the key are encrypted with the export password, which is not in this bundle.
The configurations read it from the environment: export {PASSWORD_ENV}=...
"""
