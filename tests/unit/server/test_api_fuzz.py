"""The API fuzzed from its own OpenAPI document (schemathesis) against a live server.

Every operation ``/openapi.json`` declares gets generated requests, valid and
not (schemathesis' default modes), with the admin token, or a host token on
the check-in. The checks: no 5xx anywhere, answers conform to the document
where it declares them (status codes, media types, bodies, 405 with Allow for
undeclared methods: schemathesis' default checks), and no report is ever taken for
another host: generated check-ins speak for our host, and each one taken is
sent again naming another enrolled host, which must be refused (403).

Bounded for CI: a few examples per operation, derandomized (the same run
every time), no per-example deadline but a socket timeout on each request.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis.specs.openapi.checks import (  # noqa: E402 - after the skips
    negative_data_rejection,
    positive_data_acceptance,
)

from suture.server import openapi  # noqa: E402
from tests import fleet_sim  # noqa: E402
from tests.fleet_sim import ADMIN_TOKEN  # noqa: E402

MAX_EXAMPLES = 30  # per operation
TIMEOUT = 10  # s per request
OURS, OTHER = "fuzz-host-1", "fuzz-host-2"


def _post(url: str, path: str, body: Any, token: str = "") -> dict[str, Any]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode())  # noqa: S310
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as answer:  # noqa: S310 - loopback
        data: dict[str, Any] = json.load(answer)
        return data


class Live:
    """A server with two enrolled hosts that have checked in once."""

    def __init__(self, url: str) -> None:
        self.url = url
        key = _post(url, "/api/v1/registration-keys", {"tags": ["env:fuzz"]}, ADMIN_TOKEN)
        self.tokens = {
            host: _post(
                url,
                "/api/v1/register",
                {"registration_key": key["registration_key"], "host_id": host},
            )["host_token"]
            for host in (OURS, OTHER)
        }
        base = fleet_sim.fleet(1, seed=1)[0]
        for host, token in self.tokens.items():
            _post(url, "/api/v1/checkin", base.checkin(host_id=host), token)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("fuzz")
    fleet_sim.make_repo(folder / "repo")
    # The fuzzer sends every request again with a wrong admin token (hundreds of them):
    # the limit on failed logins per address would answer 429 to what follows.
    config = folder / "server.toml"
    config.write_text("format = 1\n[limits]\nauth_failures = 1000000\n")
    db = f"sqlite:///{folder}/server.db"
    with fleet_sim.serve(folder / "repo", db, folder, extra=["--config", str(config)]) as srv:
        yield Live(srv.url)


# The document the server serves at /openapi.json (test_the_served_document_is_fuzzed
# checks it is the same), loaded at import: schemathesis' fixture-based lazy loading
# (schemathesis.pytest.from_fixture) breaks on pytest 9 (it sets Function._nodeid).
schema = schemathesis.openapi.from_dict(openapi.document())

# Not checked: that the document describes the requests the server takes exactly.
# positive_data_acceptance (every schema-valid request is taken): the document is looser
# than the server (hostname, release, agent_version have no pattern there; the static
# files' {path} admits names the server refuses with 400). negative_data_rejection
# (every schema-invalid request is refused): some routes are more lenient than the
# document (an empty ?cve=, a reason or canary_tags of another type, unroll without level).
EXCLUDED = [positive_data_acceptance, negative_data_rejection]


def test_the_served_document_is_fuzzed(live: Live) -> None:
    with urllib.request.urlopen(f"{live.url}/openapi.json", timeout=TIMEOUT) as answer:  # noqa: S310
        assert json.load(answer) == json.loads(json.dumps(openapi.document()))


def _is_checkin(case: Any) -> bool:
    return bool(case.method == "POST" and case.path == "/api/v1/checkin")


def no_report_for_another_host(ctx: Any, response: Any, case: Any) -> bool | None:
    """A check-in is accepted only when it names the host its token belongs to."""
    if _is_checkin(case) and response.status_code < 300:
        named = case.body.get("host_id") if isinstance(case.body, dict) else None
        assert named == OURS, f"a check-in for {named!r} was accepted with {OURS}'s token"
    return None


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_api_conforms_to_its_openapi_document(case: Any, live: Live) -> None:
    checkin = _is_checkin(case) and isinstance(case.body, dict) and "host_id" in case.body
    token = live.tokens[OURS] if _is_checkin(case) else ADMIN_TOKEN
    if checkin:
        # As generated, the host id is random: speak for our own host, so that valid
        # check-ins are taken.
        case.body["host_id"] = OURS
    answer = case.call_and_validate(
        live.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
        additional_checks=[no_report_for_another_host],
        excluded_checks=EXCLUDED,
    )
    if checkin and answer.status_code == 200:
        # The same report, taken for our host, is refused when it names another one.
        case.body = {**case.body, "host_id": OTHER}
        forged = case.call(live.url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        assert forged.status_code == 403, forged.text


# --- what the fuzzing found, pinned down -------------------------------------------------


def _status(live: Live, method: str, path: str, body: Any = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(live.url + path, data=data, method=method)  # noqa: S310
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as answer:  # noqa: S310 - loopback
            return answer.status, answer.headers.get("Allow", "")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Allow", "")


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "PATCH", "QUERY"])
def test_methods_no_route_takes_are_405_with_allow(live: Live, method: str) -> None:
    # It was 501 with an HTML page (http.server's default for a missing do_METHOD).
    assert _status(live, method, "/api/v1/checkin") == (405, "POST")
    assert _status(live, method, "/healthz") == (405, "GET, HEAD")
    assert _status(live, method, "/api/v1/rollouts/stable") == (405, "GET, HEAD, PUT")
    assert _status(live, "POST", "/metadata/root.json", {}) == (405, "GET, HEAD")


@pytest.mark.parametrize("tags", [None, 5, "ring:0", {"ring:0": 1}])
def test_canary_tags_that_are_not_a_list_are_refused(live: Live, tags: object) -> None:
    # None and 5 dropped the connection (a TypeError in the route); a string or
    # an object was taken as its characters or keys.
    assert _status(live, "PUT", "/api/v1/rollouts/testing", {"canary_tags": tags})[0] == 400
