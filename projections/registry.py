"""Every projector the service runs, in one list."""

from __future__ import annotations

from projections.acme import AcmeProjector
from projections.analytics import AnalyticsProjector
from projections.api_tokens import ApiTokensProjector
from projections.audit_log import AuditLogProjector
from projections.base import Projector
from projections.cas import CasProjector
from projections.certificates import CertificatesProjector
from projections.deployments import DeploymentsProjector
from projections.discovery import DiscoveryProjector
from projections.profiles import ProfilesProjector
from projections.service_accounts import ServiceAccountsProjector
from projections.sessions import SessionsProjector
from projections.tenants import TenantsProjector
from projections.users import UsersProjector
from projections.webhooks import WebhooksProjector


def all_projectors() -> list[Projector]:
    return [TenantsProjector(), AuditLogProjector(), ApiTokensProjector(), CasProjector(), CertificatesProjector(),
            ProfilesProjector(), UsersProjector(), ServiceAccountsProjector(), WebhooksProjector(),
            SessionsProjector(), AnalyticsProjector(), DiscoveryProjector(), AcmeProjector(),
            DeploymentsProjector()]
