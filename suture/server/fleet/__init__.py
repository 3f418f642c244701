"""The fleet's logic: enrolment, check-ins and rollouts, the level catalog, what operators read.

Plain functions of a :class:`~suture.server.fleet.context.Fleet` (the
database, the repository, the clock); no HTTP here. The API
(:mod:`suture.server.http`) and the dashboard (:mod:`suture.server.dashboard`)
both call them.
"""
