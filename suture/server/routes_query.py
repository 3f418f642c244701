"""Fleet queries for operators (admin token): exposure to a CVE, summaries, exports, OpenVEX.

(Routes register themselves with :func:`suture.server.api.route` when this module loads.)
"""

from __future__ import annotations
