"""The UI's DER encoder and PKCS#10 builder (api/ui/js/der.js, csr.js), run in Chromium on generated inputs and
read back with pyasn1 and cryptography: what the browser builds is strict DER and says what it was asked to."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import encoder
from pyasn1.type import char, univ
from ui_support import chromium, playwright, service  # noqa: F401

pytestmark = pytest.mark.slow
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def page(chromium, service):  # noqa: F811
    context = chromium.new_context()
    opened = context.new_page()
    opened.goto(f"{service.base}/ui/")
    opened.evaluate("""async () => {
        window.der = await import('/ui/js/der.js');
        window.csr = await import('/ui/js/csr.js');
    }""")
    yield opened
    context.close()


def js_bytes(page, expression: str, *args) -> bytes:
    return bytes(page.evaluate(f"(args) => Array.from({expression})", list(args)))


arcs = st.tuples(st.integers(0, 2), st.integers(0, 39), st.lists(st.integers(0, 2**40), max_size=8))


@SETTINGS
@given(arcs)
def test_object_identifiers_encode_as_der(page, parts):
    first, second, rest = parts
    dotted = ".".join(map(str, [first, second, *rest]))
    assert js_bytes(page, "der.oid(args[0])", dotted) == encoder.encode(univ.ObjectIdentifier(dotted))


@SETTINGS
@given(st.binary(min_size=1, max_size=80))
def test_unsigned_integers_are_minimal_and_positive(page, magnitude):
    expected = encoder.encode(univ.Integer(int.from_bytes(magnitude, "big")))
    assert js_bytes(page, "der.unsignedInteger(Uint8Array.from(args[0]))", list(magnitude)) == expected


@SETTINGS
@given(st.text(max_size=400))
def test_utf8_strings_and_long_lengths(page, text):
    assert js_bytes(page, "der.utf8String(args[0])", text) == encoder.encode(char.UTF8String(text))


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
dns_name = st.lists(label, min_size=2, max_size=4).map(".".join)
email = st.tuples(st.from_regex(r"[a-z0-9._+-]{1,20}", fullmatch=True), dns_name).map("@".join)
common_name = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=64)


@SETTINGS
@given(common_name, st.one_of(st.none(), common_name), st.lists(dns_name, max_size=5), st.lists(email, max_size=3),
       st.lists(st.ip_addresses(v=4).map(str), max_size=3))
def test_a_browser_csr_says_what_it_was_asked_and_its_signature_verifies(page, cn, org, dns, emails, ips):
    pem = page.evaluate("""async ([subject, sans]) => {
        const pair = await csr.generateKeyPair();
        return der.pem('CERTIFICATE REQUEST', await csr.certificationRequest(pair, subject, sans));
    }""", [{"commonName": cn, "organization": org}, {"dns": dns, "email": emails, "ip": ips}])
    request = x509.load_pem_x509_csr(pem.encode())  # a strict DER parser: BER or a wrong length is refused
    assert request.is_signature_valid
    assert isinstance(request.public_key(), ec.EllipticCurvePublicKey)
    assert request.public_key().curve.name == "secp256r1"
    assert request.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == cn
    organizations = request.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert [o.value for o in organizations] == ([org] if org else [])
    if not (dns or emails or ips):
        assert list(request.extensions) == []
        return
    names = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == dns
    assert names.get_values_for_type(x509.RFC822Name) == emails
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(a) for a in ips]
