"""The web dashboard at ``/``: login, the fleet's pages, rollout controls.

Jinja2 templates with autoescape, no JavaScript, one stylesheet served by the
server, a strict Content-Security-Policy (:mod:`suture.server.dashboard.render`).
Sessions and CSRF: :mod:`suture.server.dashboard.session`.
"""

from __future__ import annotations

from suture.server.dashboard import fleet_pages, rollout_pages, session

ENDPOINTS = [*session.ENDPOINTS, *fleet_pages.ENDPOINTS, *rollout_pages.ENDPOINTS]

__all__ = ["ENDPOINTS"]
