"""The HTTP side: uvicorn with connection limits, routes as an endpoint table, typed models.

- ``routing``: endpoints, authorization, body and query checks, replies;
- ``models``: the pydantic models (built from :mod:`suture.contract` where agents speak);
- ``openapi``: the document, generated;
- ``agent_routes``, ``admin_routes``, ``query_routes``, ``ops_routes``: the API;
- ``middleware``, ``protocol``, ``serve``, ``workers``: requests, connections, processes.
"""
