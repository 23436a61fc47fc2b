"""`setup_console(app)`: the web console's routes, templates, static files, CSRF middleware and the
session cookie on the API. Called by `cloud_receiver.app.factory.create_app` after `setup_api`."""

from __future__ import annotations

from aiohttp import web

from cloud_receiver.admin.auth import SESSION_RESOLVER
from cloud_receiver.web import admin_pages, alerts_pages, ledger_pages, live_page, login, public_pages
from cloud_receiver.web import dashboard as dashboard_page
from cloud_receiver.web import schools as schools_page
from cloud_receiver.web.pages import console_middleware, page_headers, setup_templates, static_file
from cloud_receiver.web.sessions import SESSION_SETTINGS, SessionSettings, api_session


def setup_console(app: web.Application, settings: SessionSettings | None = None) -> None:
    """Register the console on `app` (before it starts; after `setup_api`, whose headers hook it overrides
    for pages)."""
    app[SESSION_SETTINGS] = settings or SessionSettings()
    app[SESSION_RESOLVER] = api_session
    setup_templates(app)
    app.middlewares.append(console_middleware)
    app.on_response_prepare.append(page_headers)
    app.router.add_get("/static/{path:.+}", static_file)
    login.register(app)
    # the pages of the console (public pages too: they check no session)
    live_page.register(app)
    alerts_pages.register(app)
    schools_page.register(app)
    ledger_pages.register(app)  # 自律台账 (docs/console.md)
    dashboard_page.register(app)
    admin_pages.register(app)
    public_pages.register(app)  # 共治: /p/{canteen_id}, no login (docs/public.md)
