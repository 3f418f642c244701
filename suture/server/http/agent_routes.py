"""What agents call: enrolment with a registration key, and the check-in with its directive."""

from __future__ import annotations

from typing import Any

from suture.contract.directive import answer
from suture.contract.enrolment import CHECKIN_PATH, REGISTER_PATH
from suture.server.db.hosts import stamp
from suture.server.fleet import checkins, enrolment
from suture.server.http import models
from suture.server.http.routing import Auth, Call, CheckinBody, Doc, Endpoint, ModelBody


def register(call: Call) -> dict[str, Any]:
    """Enrol a host: a registration key in, the host's own token out (shown once)."""
    body: Any = call.body
    token = enrolment.enrol(
        call.fleet,
        body.registration_key,
        body.host_id,
        shown_token=call.bearer(),
        address=call.address,
    )
    return {"format": 1, "ok": True, "host_id": body.host_id, "host_token": token}


def take_checkin(call: Call) -> dict[str, Any]:
    """Store a host's report; answer with the highest level it may run (the rollout)."""
    # The token is looked up with the host's row, in the check-in's own transaction.
    directive = checkins.take(call.fleet, call.body, call.bearer(), call.address)
    return dict(answer(directive, stamp(call.fleet.now())))


ENDPOINTS = [
    Endpoint(
        "POST",
        REGISTER_PATH,
        register,
        body=ModelBody(models.Enrolment),
        doc=Doc(
            "enrol a host with a registration key; its own token comes back (once). "
            "An enrolled host id is enrolled again only with its current token "
            "(Authorization: Bearer sht_...) or after an operator's action",
            {200: models.EnrolAnswer, 403: models.Error, 409: models.Error, 429: models.Error},
            ("agent",),
        ),
    ),
    Endpoint(
        "POST",
        CHECKIN_PATH,
        take_checkin,
        auth=Auth.HOST,
        host_lookup=False,
        body=CheckinBody(),
        refused_as="CheckinError",
        doc=Doc(
            "an agent reports its host; the answer is the rollout's directive",
            {200: models.CheckinAnswer, 403: models.Error, 429: models.Error},
            ("agent",),
        ),
    ),
]
