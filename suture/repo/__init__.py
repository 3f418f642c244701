"""The publisher's TUF repository of bundles: static files any web server can host.

Entry points, one module each:

- :func:`suture.repo.create.init`: keys and the first metadata.
- :func:`suture.repo.publish.publish`, :func:`suture.repo.publish.yank`: levels in, levels out.
- :func:`suture.repo.maintain.refresh`, :func:`suture.repo.maintain.rotate_key`: upkeep.

:mod:`suture.repo.layout` and :mod:`suture.repo.index` are the contract with
agents (target paths, the level index). This ``__init__`` imports nothing,
so an agent that reads those two modules does not load the signing code.
See docs/adr/0003-repository-layout.md.
"""
