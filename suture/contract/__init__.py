"""The formats the agent and the server speak, defined once: standard library only, no I/O.

Both sides import this package; neither defines these shapes again.

- :mod:`suture.contract.fields`: the rules a field can carry (:class:`~suture.contract.fields.Text`,
  :class:`~suture.contract.fields.Whole`, :class:`~suture.contract.fields.Items`) and a
  validator that reads them off a ``TypedDict``.
- :mod:`suture.contract.checkin`: the check-in an agent sends (formats 1 and 2).
- :mod:`suture.contract.directive`: the server's answer to it, the rollout directive.
- :mod:`suture.contract.enrolment`: enrolment with a registration key, the tokens, the paths.
- :mod:`suture.contract.targets`: the repository's target paths (one folder per build and
  channel).
- :mod:`suture.contract.index`: the level index in each of those folders.

The server builds its pydantic models from these ``TypedDict`` forms
(``suture/server/http/models.py``), and a test checks that both validators
agree, so the two sides cannot drift apart.
"""
