"""The browser UI (admin dashboard, developer portal): static files under /ui/, a client of the /v1 API only.

Plain HTML, CSS and ES modules from the package's ``ui`` folder, no build step and nothing fetched from elsewhere;
the strict Content-Security-Policy they are served with is set in api/middleware.py (``UI_CSP``). The one dynamic
files are ``/ui/roles.json``, the role table of commands/authz.py, so that the UI hides what a role cannot use
without a copy of the table that could drift (the API still decides), and ``/ui/catalog.json``, the domain's fixed
lists the admin views offer (the webhook event types one can subscribe to, each compliance rule's remedy, the key
usages a profile may name, the analytics metrics).
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from commands.authz import PERMISSIONS, PLATFORM_ONLY, ROLES
from domain.certspec import EXTENDED_KEY_USAGES, KEY_USAGES
from domain.compliance import RULES
from domain.profile import SAN_TYPES
from domain.webhook import NOTIFIABLE
from projections.analytics import DIMENSIONS, MORE_DIMENSIONS

UI_DIRECTORY = Path(__file__).resolve().parent / "ui"


@get("/ui/roles.json", include_in_schema=False, cache=False, sync_to_thread=False)
def roles() -> dict:
    """Each role's permissions, and those only a platform-wide principal can use (no secret: docs/security.md)."""
    return {"roles": {role: sorted(granted) for role, granted in ROLES.items()},
            "platform_only": sorted(PLATFORM_ONLY), "permissions": sorted(PERMISSIONS)}


@get("/ui/catalog.json", include_in_schema=False, cache=False, sync_to_thread=False)
def catalog() -> dict:
    """Fixed lists of the domain the forms offer: webhook event types, compliance rules with their remedies, what a
    profile may name (key usages, extended key usages, SAN types) and the analytics metrics with their dimension."""
    metrics = dict(DIMENSIONS)
    metrics |= {f"{name}.{path[-1]}": path[-1] for name, paths in MORE_DIMENSIONS.items() for path in paths}
    return {"webhook_event_types": sorted(NOTIFIABLE),
            "key_usages": sorted(KEY_USAGES - {"key_cert_sign", "crl_sign"}),  # a profile describes a leaf
            "extended_key_usages": sorted(EXTENDED_KEY_USAGES),
            "san_types": sorted(SAN_TYPES), "analytics_metrics": metrics,
            "compliance_rules": {name: {"severity": rule.severity, "title": rule.title, "remedy": rule.remedy}
                                 for name, rule in RULES.items()}}


def ui_routes() -> list:
    """The static files (``/ui/`` answers index.html) and the role table; revalidated on every load (ETag)."""
    files: Router = create_static_files_router(
        "/ui", [UI_DIRECTORY], html_mode=True, name="ui", include_in_schema=False,
        cache_control=CacheControlHeader(no_cache=True))
    return [files, roles, catalog]
