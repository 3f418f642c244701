"""The patch factory: fixes ported, built, tested and published for every build a fleet runs.

- :mod:`suture.factory.series`: the fix files of a release, as one series.
- :mod:`suture.factory.ledger`: what a repository already offers a build (its
  levels and the fixes they were built from).
- :mod:`suture.factory.job`: one build's way through: port, build, test, publish.
- :mod:`suture.factory.release`: ``suture release``: a job per build, side by
  side, and the table of what became of each.
"""
