"""domain.tenant: every decide rule, and that each refusal names its code and field."""

from __future__ import annotations

import pytest

from domain import tenant
from domain.errors import AlreadyExists, DomainError, NotFound
from domain.tenant import (Quotas, Tenant, TenantCreated, TenantQuotasSet, TenantRenamed, TenantResumed,
                           TenantSuspended)

ACTIVE = tenant.fold([TenantCreated(tenant_id="acme", name="Acme", quotas=Quotas(max_cas=3))])
SUSPENDED = tenant.evolve(ACTIVE, TenantSuspended(reason="unpaid"))
ABSENT = Tenant()


def refusal(fn, *args) -> DomainError:
    with pytest.raises(DomainError) as caught:
        fn(*args)
    return caught.value


@pytest.mark.parametrize("tenant_id", ["", "ab", "Acme", "1acme", "-acme", "acme-", "ac_me", "ac me", "a" * 64,
                                       "acmé", "acme\n"])
def test_create_refuses_a_malformed_tenant_id(tenant_id):
    err = refusal(tenant.decide_create, ABSENT, tenant_id, "Acme", Quotas())
    assert (err.code, err.field, err.status) == ("invalid_tenant_id", "tenant_id", 422)


@pytest.mark.parametrize("tenant_id", ["abc", "a-1", "acme-corp", "a" * 63])
def test_create_accepts_a_well_formed_tenant_id(tenant_id):
    assert tenant.decide_create(ABSENT, tenant_id, "Acme", Quotas()) == [
        TenantCreated(tenant_id=tenant_id, name="Acme", quotas=Quotas())]


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "bad\x00name", "tab\tinside", "new\nline"])
def test_create_refuses_a_bad_name(name):
    err = refusal(tenant.decide_create, ABSENT, "acme", name, Quotas())
    assert (err.code, err.field) == ("invalid_name", "name")


def test_create_strips_the_name_and_accepts_unicode():
    [created] = tenant.decide_create(ABSENT, "acme", "  Acmé 日本 ", Quotas())
    assert created.name == "Acmé 日本"


@pytest.mark.parametrize("field", ["max_cas", "max_certificates", "max_issuances_per_day"])
@pytest.mark.parametrize("value", [-1, 10**9 + 1])
def test_create_refuses_an_out_of_range_quota_naming_the_quota(field, value):
    err = refusal(tenant.decide_create, ABSENT, "acme", "Acme", Quotas(**{field: value}))
    assert (err.code, err.field) == ("invalid_quota", f"quotas.{field}")


def test_quota_bounds_are_inclusive():
    quotas = Quotas(max_cas=0, max_certificates=10**9, max_issuances_per_day=None)
    assert tenant.decide_create(ABSENT, "acme", "Acme", quotas)[0].quotas == quotas


def test_create_refuses_an_existing_tenant():
    err = refusal(tenant.decide_create, ACTIVE, "acme", "Acme", Quotas())
    assert isinstance(err, AlreadyExists)
    assert (err.code, err.field, err.status) == ("tenant_exists", "tenant_id", 409)


@pytest.mark.parametrize("decide, args", [
    (tenant.decide_rename, ("New",)),
    (tenant.decide_set_quotas, (Quotas(),)),
    (tenant.decide_suspend, ("why",)),
    (tenant.decide_resume, ("why",)),
])
def test_commands_on_an_absent_tenant_are_refused_as_not_found(decide, args):
    err = refusal(decide, ABSENT, "ghost", *args)
    assert isinstance(err, NotFound)
    assert (err.code, err.field, err.status) == ("tenant_not_found", "tenant_id", 404)
    assert "ghost" in err.detail


def test_rename_validates_the_name_and_is_a_no_op_when_unchanged():
    err = refusal(tenant.decide_rename, ACTIVE, "acme", " ")
    assert (err.code, err.field) == ("invalid_name", "name")
    assert tenant.decide_rename(ACTIVE, "acme", " Acme ") == []
    assert tenant.decide_rename(ACTIVE, "acme", "Acme Corp") == [TenantRenamed(old_name="Acme", new_name="Acme Corp")]


def test_set_quotas_validates_and_is_a_no_op_when_unchanged():
    err = refusal(tenant.decide_set_quotas, ACTIVE, "acme", Quotas(max_certificates=-5))
    assert (err.code, err.field) == ("invalid_quota", "quotas.max_certificates")
    assert tenant.decide_set_quotas(ACTIVE, "acme", Quotas(max_cas=3)) == []
    assert tenant.decide_set_quotas(ACTIVE, "acme", Quotas(max_cas=4)) == [TenantQuotasSet(quotas=Quotas(max_cas=4))]


def test_suspend_needs_a_reason_and_an_active_tenant():
    err = refusal(tenant.decide_suspend, ACTIVE, "acme", "")
    assert (err.code, err.field) == ("invalid_name", "reason")
    err = refusal(tenant.decide_suspend, SUSPENDED, "acme", "again")
    assert (err.code, err.field) == ("tenant_suspended", "tenant_id")
    assert tenant.decide_suspend(ACTIVE, "acme", " unpaid ") == [TenantSuspended(reason="unpaid")]


def test_resume_needs_a_reason_and_a_suspended_tenant():
    err = refusal(tenant.decide_resume, SUSPENDED, "acme", "\x07")
    assert (err.code, err.field) == ("invalid_name", "reason")
    err = refusal(tenant.decide_resume, ACTIVE, "acme", "paid")
    assert (err.code, err.field) == ("tenant_not_suspended", "tenant_id")
    assert tenant.decide_resume(SUSPENDED, "acme", "paid") == [TenantResumed(reason="paid")]


def test_fold_tracks_state_and_version():
    state = tenant.fold([
        TenantCreated(tenant_id="acme", name="Acme", quotas=Quotas()),
        TenantRenamed(old_name="Acme", new_name="Acme Corp"),
        TenantQuotasSet(quotas=Quotas(max_cas=1)),
        TenantSuspended(reason="r"),
    ])
    assert state == Tenant(tenant_id="acme", name="Acme Corp", status="suspended", quotas=Quotas(max_cas=1), version=4)
    assert tenant.evolve(state, TenantResumed(reason="r")).status == "active"
    assert tenant.fold([]) == ABSENT and ABSENT.version == 0
    assert tenant.stream_id("acme") == "tenant-acme"


def test_quotas_refuse_unknown_fields_when_decoded():
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="max_widgets"):
        msgspec.convert({"max_widgets": 1}, Quotas)
