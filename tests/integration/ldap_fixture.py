"""A real OpenLDAP slapd on loopback for the directory tests: own config, data, CA and TLS certificate."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SKIP_REASON = "slapd is not installed (Debian package slapd; `make sysdeps` installs it)"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
BASE = "dc=example,dc=org"
READER_DN = f"cn=csm-reader,ou=services,{BASE}"
# Every account's password, by uid; the tests log in with these.
PASSWORDS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2", "carol": "carol-Secret-3",
             "dave": "dave-Secret-4", "erin": "erin-Secret-5", "frank": "frank-Secret-6",
             "gr*ce(ops)": "grace-Secret-7", "csm-reader": "reader-Secret-0"}


# The few Active Directory attributes the adapter reads, with AD's OIDs and matching rules (Debian's msuser.schema
# declares them without equality rules, so filters on them never match).
AD_SCHEMA = """
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
    EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.102 NAME 'memberOf'
    EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP organizationalPerson STRUCTURAL
    MAY ( sAMAccountName $ userAccountControl $ memberOf $ displayName $ mail ) )
"""


def slapd_binary() -> str | None:
    found = shutil.which("slapd")
    if found:
        return found
    # /usr/sbin is not on every user's PATH.
    return "/usr/sbin/slapd" if os.access("/usr/sbin/slapd", os.X_OK) else None


@dataclass(frozen=True)
class Slapd:
    """Where the running server listens, and the files a client needs to trust it."""

    ldaps_url: str  # TLS from the first byte
    ldap_url: str  # plain listener: StartTLS is required before anything else (security tls=1)
    mismatch_url: str | None  # ldaps on 127.0.0.2, a name the certificate does not carry
    ca_file: Path
    other_ca_file: Path  # a CA that did not sign the server certificate
    reader_password_file: Path
    workdir: Path
    log_file: Path


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ssha(password: str) -> str:
    """An OpenLDAP {SSHA} userPassword value: SHA-1 over password and salt, then the salt."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # SHA-1: the {SSHA} format slapd verifies
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_ca(path: Path, common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def write_tls_files(directory: Path) -> None:
    """ca.pem, other-ca.pem, and server.pem/server.key for localhost and 127.0.0.1 (not 127.0.0.2)."""
    ca_key, ca_cert = _write_ca(directory / "ca.pem", "CSM test directory CA")
    _write_ca(directory / "other-ca.pem", "Some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "server.key").chmod(0o600)


def slapd_conf(directory: Path) -> str:
    schemas = "\n".join(f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "inetorgperson"))
    (directory / "ad.schema").write_text(AD_SCHEMA)
    return f"""{schemas}
include {directory}/ad.schema
modulepath {MODULE_DIR}
moduleload back_mdb
pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
TLSCACertificateFile {directory}/ca.pem
TLSCertificateFile {directory}/server.pem
TLSCertificateKeyFile {directory}/server.key
TLSProtocolMin 3.3
# Nothing but StartTLS before TLS: proves the StartTLS client really encrypts before binding.
security tls=1

database mdb
maxsize 16777216
suffix "{BASE}"
rootdn "cn=admin,{BASE}"
directory {directory}/data
index objectClass eq
index uid,cn,sAMAccountName eq
index member,memberOf eq
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{READER_DN}" read
    by self read
    by * none
"""


def _user(uid: str, name: str, *, extra: str = "", ou: str = "people", mail: bool = True) -> str:
    mail_line = f"mail: {uid}@example.org\n" if mail else ""
    return (f"dn: uid={uid},ou={ou},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {name}\n"
            f"sn: {name.split()[-1]}\ndisplayName: {name}\n{mail_line}{extra}"
            f"userPassword: {ssha(PASSWORDS[uid])}\n\n")


def directory_ldif() -> str:
    """OpenLDAP-style people and groupOfNames, plus an AD-style branch (msuser schema, memberOf on the user)."""
    people = f"ou=people,{BASE}"
    groups = f"ou=groups,{BASE}"
    ad = f"ou=ad,{BASE}"
    entries = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n",
        *(f"dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
          for ou in ("people", "groups", "services", "ad")),
        (f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: csm-reader\n"
         f"userPassword: {ssha(PASSWORDS['csm-reader'])}\n\n"),
        _user("alice", "Alice Admin"),
        _user("bob", "Bob Auditor"),
        _user("carol", "Carol Nogroup", mail=False),
        _user("dave", "Dave Disabled", extra="employeeType: disabled\n"),
        # A name full of filter metacharacters: escaping must find exactly this entry, nothing more.
        _user("gr*ce(ops)", "Grace Ops", mail=False),
        (f"dn: cn=csm-admins,{groups}\nobjectClass: groupOfNames\ncn: csm-admins\n"
         f"member: uid=alice,{people}\n\n"),
        (f"dn: cn=auditors,{groups}\nobjectClass: groupOfNames\ncn: auditors\n"
         f"member: uid=alice,{people}\nmember: uid=bob,{people}\nmember: uid=dave,{people}\n\n"),
        f"dn: cn=unmapped,{groups}\nobjectClass: groupOfNames\ncn: unmapped\nmember: uid=carol,{people}\n\n",
        # Active Directory shape: sAMAccountName, userAccountControl (2 = ACCOUNTDISABLE), memberOf on the user.
        (f"dn: cn=Erin AD,{ad}\nobjectClass: user\ncn: Erin AD\nsn: AD\nsAMAccountName: erin\n"
         f"userAccountControl: 512\ndisplayName: Erin AD\nmail: erin@example.org\nmemberOf: cn=csm-admins,{groups}\n"
         f"userPassword: {ssha(PASSWORDS['erin'])}\n\n"),
        (f"dn: cn=Frank AD,{ad}\nobjectClass: user\ncn: Frank AD\nsn: AD\nsAMAccountName: frank\n"
         f"userAccountControl: 514\nmemberOf: cn=csm-admins,{groups}\nuserPassword: {ssha(PASSWORDS['frank'])}\n\n"),
    ]
    return "".join(entries)


def _wait_listening(process: subprocess.Popen, host: str, port: int, log_file: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited with {process.returncode}: {log_file.read_text()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"slapd did not listen on {host}:{port}: {log_file.read_text()[-2000:]}")


def start_slapd(directory: Path) -> tuple[subprocess.Popen, Slapd]:
    """Configure, load and start slapd in ``directory``; the caller stops the returned process."""
    binary = slapd_binary()
    assert binary is not None
    (directory / "data").mkdir(mode=0o700)
    write_tls_files(directory)
    conf = directory / "slapd.conf"
    conf.write_text(slapd_conf(directory))
    ldif = directory / "directory.ldif"
    ldif.write_text(directory_ldif())
    # slapadd is slapd itself under another name (Debian links both to one binary).
    subprocess.run([binary, "-T", "add", "-f", str(conf), "-l", str(ldif)], check=True,
                   capture_output=True, timeout=60)
    reader_file = directory / "reader-password"
    reader_file.write_text(PASSWORDS["csm-reader"] + "\n")
    reader_file.chmod(0o600)
    ldaps_port, ldap_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    listeners = [f"ldaps://127.0.0.1:{ldaps_port}/", f"ldap://127.0.0.1:{ldap_port}/"]
    mismatch_url = None
    try:
        mismatch_port = free_port("127.0.0.2")
        listeners.append(f"ldaps://127.0.0.2:{mismatch_port}/")
        mismatch_url = f"ldaps://127.0.0.2:{mismatch_port}"
    except OSError:
        pass  # no 127.0.0.2 here: the hostname-mismatch test skips
    log_file = directory / "slapd.log"
    with log_file.open("wb") as log:
        # -d keeps slapd in the foreground, so the fixture owns the process and its exit.
        process = subprocess.Popen([binary, "-d", "0", "-f", str(conf), "-h", " ".join(listeners)],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        _wait_listening(process, "127.0.0.1", ldaps_port, log_file, deadline)
        _wait_listening(process, "127.0.0.1", ldap_port, log_file, deadline)
    except BaseException:
        stop_slapd(process)
        raise
    server = Slapd(ldaps_url=f"ldaps://127.0.0.1:{ldaps_port}", ldap_url=f"ldap://127.0.0.1:{ldap_port}",
                   mismatch_url=mismatch_url, ca_file=directory / "ca.pem",
                   other_ca_file=directory / "other-ca.pem", reader_password_file=reader_file,
                   workdir=directory, log_file=log_file)
    return process, server


def stop_slapd(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory) -> Slapd:
    """One slapd per test module (and per xdist worker), stopped afterwards; skips without slapd."""
    if slapd_binary() is None:
        pytest.skip(SKIP_REASON)
    process, server = start_slapd(tmp_path_factory.mktemp("slapd"))
    try:
        yield server
    finally:
        stop_slapd(process)
