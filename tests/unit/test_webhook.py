"""The Webhook aggregate's rules: URLs, event filters, decisions, the notification document and its signature."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from domain import webhook
from domain.errors import AlreadyExists, NotFound

SECRET = b"whsec_test-secret"


@pytest.mark.parametrize("url", ["https://hooks.example.com/csm", "https://hooks.example.com:8443/a?b=c",
                                 "https://[2001:db8::1]/x"])
def test_https_urls_are_accepted(url):
    assert webhook.check_url(url) == url


@pytest.mark.parametrize("url, code", [
    ("http://hooks.example.com/x", "url_scheme"),
    ("ftp://hooks.example.com/x", "url_scheme"),
    ("file:///etc/passwd", "url_scheme"),
    ("https://user:pass@hooks.example.com/x", "url_credentials"),
    ("https://user@hooks.example.com/x", "url_credentials"),
    ("https:///x", "invalid_url"),
    ("https://hooks.example.com:99999/x", "invalid_url"),
    ("https://hooks.example.com/x#frag", "invalid_url"),
    ("https://hooks.example.com/a b", "invalid_url"),
    ("", "invalid_url"),
    ("https://x/" + "a" * webhook.MAX_URL, "invalid_url"),
])
def test_bad_urls_are_refused_naming_url(url, code):
    with pytest.raises(webhook.InvalidWebhook) as refused:
        webhook.check_url(url, allow_loopback_http=True)
    assert refused.value.code == code and refused.value.field == "url" and refused.value.status == 400


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]:9/x",
                                 "http://127.0.0.2/x"])
def test_plain_http_only_to_loopback_and_only_when_allowed(url):
    assert webhook.check_url(url, allow_loopback_http=True) == url
    with pytest.raises(webhook.InvalidWebhook):
        webhook.check_url(url)


def test_http_to_other_hosts_is_refused_even_when_loopback_is_allowed():
    for url in ("http://10.0.0.1/x", "http://localhost.example.com/x", "http://127.0.0.1.nip.io/x"):
        with pytest.raises(webhook.InvalidWebhook):
            webhook.check_url(url, allow_loopback_http=True)


@pytest.mark.parametrize("url", [
    "https://" + "a" * 2030,  # a 2030-character label: accepted, then every delivery failed in the idna codec
    "https://" + "a" * 64 + ".example.com/x",
    "https://" + ".".join(["a" * 63] * 4) + "/x",  # 255 characters
    "https://a..example.com/x", "https://-a.example.com/x", "https://a_b.example.com/x",
    "https://xn--zz.example.com/x",  # not a valid A-label
    "https://2852039166/x", "https://127.1/x", "https://0x7f.0.0.1/x", "https://0177.0.0.1/x",  # IPv4 in disguise
])
def test_hosts_that_are_not_dns_names_or_ip_addresses_are_refused(url):
    with pytest.raises(webhook.InvalidWebhook) as refused:
        webhook.check_url(url, allow_loopback_http=True)
    assert refused.value.code == "invalid_url" and refused.value.field == "url"


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/", "https://[fe80::1]/x", "https://[fe80::1%25eth0]/x",
    "https://[::ffff:169.254.169.254]/x", "https://0.0.0.0/x", "https://[::]/x", "https://0.1.2.3/x",
    "https://224.0.0.1/x", "https://[ff02::1]/x",
])
def test_link_local_unspecified_and_multicast_addresses_are_refused_even_with_loopback_allowed(url):
    for allow in (False, True):
        with pytest.raises(webhook.InvalidWebhook) as refused:
            webhook.check_url(url, allow_loopback_http=allow)
        assert refused.value.code == "url_host" and refused.value.field == "url"


@pytest.mark.parametrize("url", [
    "https://[64:ff9b::a9fe:a9fe]/latest",  # NAT64 of 169.254.169.254, the metadata address
    "https://[2002:a9fe:a9fe::1]/x",  # 6to4 of it
    "https://[2001:0:4136:e378:8000:63bf:5601:5601]/x",  # Teredo whose client is 169.254.169.254
    "https://[::a9fe:a9fe]/x",  # IPv4-compatible
    "https://[64:ff9b::e000:1]/x",  # NAT64 of a multicast address
    "https://[64:ff9b:1:a9fe:a9:fe00::]/x",  # local-use NAT64 (RFC 8215) with a /48 prefix (RFC 6052 2.2)
    "https://[64:ff9b:1:a9:fe:a9fe::]/x",  # the same with a /56 prefix
    "https://[64:ff9b:1:0:a9:fea9:fe00:0]/x",  # and /64
    "https://[64:ff9b:1::a9fe:a9fe]/x",  # and /96
    "https://[::ffff:0:a9fe:a9fe]/x",  # SIIT's IPv4-translated form (RFC 2765)
])
def test_an_ipv6_address_carrying_a_refused_ipv4_one_is_refused_as_that_address(url):
    for allow in (False, True):
        with pytest.raises(webhook.InvalidWebhook) as refused:
            webhook.check_url(url, allow_loopback_http=allow)
        assert refused.value.code == "url_host" and "reaches" in refused.value.detail


def test_an_ipv6_address_carrying_a_loopback_one_follows_the_loopback_setting():
    with pytest.raises(webhook.InvalidWebhook):
        webhook.check_url("https://[64:ff9b::7f00:1]/x")
    assert webhook.check_url("https://[64:ff9b::7f00:1]/x", allow_loopback_http=True)
    assert webhook.check_url("https://[64:ff9b::a00:1]/x") == "https://[64:ff9b::a00:1]/x"  # NAT64 of 10.0.0.1


@pytest.mark.parametrize("url", ["https://127.0.0.1/x", "https://127.9.9.9:8443/x", "https://[::1]/x",
                                 "https://localhost/x", "https://hooks.localhost./x", "https://[::ffff:127.0.0.1]/x"])
def test_loopback_is_refused_unless_the_service_allows_loopback_webhooks(url):
    with pytest.raises(webhook.InvalidWebhook) as refused:
        webhook.check_url(url)
    assert refused.value.code == "url_host" and refused.value.field == "url"
    assert webhook.check_url(url, allow_loopback_http=True) == url


@pytest.mark.parametrize("url", ["https://10.0.0.1/x", "https://172.16.5.4:8443/x", "https://192.168.1.5/x",
                                 "https://[fd00::1]/x", "https://hooks.internal/x", "https://bücher.example/x",
                                 "https://example.com./x", "https://" + ".".join(["a" * 63] * 3) + "/x"])
def test_private_addresses_and_ordinary_names_are_accepted(url):
    assert webhook.check_url(url) == url


_HOST_CHARS = st.sampled_from(list("ab0-._:%[]@x9") + ["xn--", "0x", "ü", "☃", "a" * 63, "a" * 64, "::", "%25"])


@given(host=st.one_of(st.lists(_HOST_CHARS, max_size=30).map("".join), st.text(max_size=80),
                      st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip))),
       allow=st.booleans())
@example(host="a" * 2030, allow=False)
def test_a_url_is_accepted_only_if_its_host_can_be_sent_to(host, allow):
    """check_url raises nothing but InvalidWebhook, and an accepted host is an allowed IP address or a name the
    idna codec (which the delivery resolves it with) encodes."""
    url = f"https://{host}/x"
    try:
        webhook.check_url(url, allow_loopback_http=allow)
    except webhook.InvalidWebhook as refused:
        assert refused.field == "url"
        return
    name = urlsplit(url).hostname
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        encoded = name.rstrip(".").encode("idna")
        assert len(encoded) <= 253 and all(1 <= len(label) <= 63 for label in encoded.split(b"."))
    else:
        address = getattr(address, "ipv4_mapped", None) or address
        assert not (address.is_link_local or address.is_unspecified or address.is_multicast)
        assert allow or not address.is_loopback


def test_event_filter():
    assert webhook.check_event_types(None) == sorted(webhook.NOTIFIABLE)
    assert webhook.check_event_types(["certificate.revoked", "certificate.revoked"]) == ["certificate.revoked"]
    with pytest.raises(webhook.InvalidWebhook) as refused:
        webhook.check_event_types(["certificate.revoked", "tenant.created"])
    assert refused.value.field == "event_types" and "tenant.created" in refused.value.detail


def _subscribed(**extra) -> webhook.WebhookSubscribed:
    return webhook.WebhookSubscribed(**{"webhook_id": "w1", "url": "https://h.example.com/x", "event_types": [],
                                        "enabled": True, "description": "", "secret_ref": "key_1", **extra})


def test_lifecycle_decisions():
    [subscribed] = webhook.decide_subscribe(webhook.Webhook(), _subscribed(), allow_loopback_http=False)
    assert subscribed.event_types == sorted(webhook.NOTIFIABLE)
    state = webhook.fold([subscribed])
    assert state.status == "active" and state.enabled and state.version == 1
    with pytest.raises(AlreadyExists):
        webhook.decide_subscribe(state, _subscribed(), allow_loopback_http=False)
    [updated] = webhook.decide_update(state, url=None, event_types=["ca.revoked"], enabled=False, description=None,
                                      allow_loopback_http=False)
    assert updated.url == state.url and updated.event_types == ["ca.revoked"] and not updated.enabled
    assert webhook.decide_update(state, url=state.url, event_types=None, enabled=True, description=None,
                                 allow_loopback_http=False) == [], "no change, no event"
    [rotated] = webhook.decide_rotate(state, "key_2")
    state = webhook.fold([subscribed, updated, rotated])
    assert state.secret_ref == "key_2" and state.event_types == ("ca.revoked",) and state.version == 3
    [deleted] = webhook.decide_delete(state, "")
    state = webhook.fold([subscribed, updated, rotated, deleted])
    assert state.status == "deleted" and webhook.decide_delete(state, "again") == []
    for decide in (lambda s: webhook.decide_rotate(s, "key_3"),
                   lambda s: webhook.decide_update(s, url=None, event_types=None, enabled=True, description=None,
                                                   allow_loopback_http=False)):
        with pytest.raises(NotFound):
            decide(state)
    with pytest.raises(NotFound):
        webhook.decide_delete(webhook.Webhook(), "never existed")


def test_notification_is_cloudevents_shaped_without_vault_references():
    document = webhook.notification(event_id="e1", event_type="certificate.renewed", source="https://csm.example",
                                    occurred_at="2026-01-01T00:00:00Z", tenant_id="acme", stream_id_="certificate-ab12",
                                    payload={"certificate_id": "ab12", "key_ref": "key_9", "new_certificate_id": "cd"})
    assert document == {"specversion": "1.0", "id": "e1", "type": "certificate.renewed",
                        "source": "https://csm.example", "time": "2026-01-01T00:00:00Z", "tenant": "acme",
                        "subject": "ab12", "datacontenttype": "application/json",
                        "data": {"certificate_id": "ab12", "new_certificate_id": "cd"}}


def test_signature_verifies_only_the_same_body_secret_and_recent_time():
    body = b'{"id":"e1"}'
    header = webhook.signature(SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.rpartition("v1=")[2]) == 64
    assert webhook.verify(SECRET, header, body, now=1_700_000_100)
    assert not webhook.verify(SECRET, header, body + b" ", now=1_700_000_100), "tampered body"
    assert not webhook.verify(b"other", header, body, now=1_700_000_100), "another secret"
    assert not webhook.verify(SECRET, header, body, now=1_700_000_000 + 301), "too old: a replay"
    assert not webhook.verify(SECRET, "v1=" + header.rpartition("v1=")[2], body, now=1_700_000_000), "no t="
    rolled = header + ",v1=" + "0" * 64  # receivers accept any listed v1 (room for several secrets)
    assert webhook.verify(SECRET, rolled, body, now=1_700_000_000)


@given(st.integers(0xA9FE0000, 0xA9FEFFFF), st.sampled_from([48, 56, 64, 96]), st.integers(0, 2**16 - 1))
def test_the_local_use_nat64_form_of_a_link_local_address_is_refused_at_any_prefix_length(v4, length, suffix):
    """RFC 6052 2.2's layouts under 64:ff9b:1::/48 (byte 8 zero, the suffix's bytes after the address)."""
    where = {48: (6, 7, 9, 10), 56: (7, 9, 10, 11), 64: (9, 10, 11, 12), 96: (12, 13, 14, 15)}[length]
    packed = bytearray(ipaddress.IPv6Address("64:ff9b:1::").packed)
    for index, byte in zip(where, v4.to_bytes(4, "big"), strict=True):
        packed[index] = byte
    if length < 96:
        packed[14:16] = suffix.to_bytes(2, "big")
    address = ipaddress.IPv6Address(bytes(packed))
    assert webhook.address_problem(address, allow_loopback=True) is not None


@pytest.mark.parametrize("url", ["https://[fd00:ec2::254]/latest", "https://100.100.100.200/latest",
                                 "https://168.63.129.16/machine", "https://[64:ff9b::6464:64c8]/x",
                                 "https://[::ffff:168.63.129.16]/x"])
def test_cloud_metadata_endpoints_outside_link_local_are_refused(url):
    """AWS's IMDS over IPv6 (a unique local address), Alibaba Cloud's metadata (in carrier-grade NAT space) and
    Azure's wireserver (a public address): not link-local, yet no webhook receiver lives there."""
    for allow in (False, True):
        with pytest.raises(webhook.InvalidWebhook) as refused:
            webhook.check_url(url, allow_loopback_http=allow)
        assert refused.value.code == "url_host" and "metadata" in refused.value.detail
