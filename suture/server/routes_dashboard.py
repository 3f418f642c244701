"""The web dashboard at ``/``: server-rendered pages for operators.

(Routes register themselves with :func:`suture.server.api.route` when this module loads.)
"""

from __future__ import annotations
