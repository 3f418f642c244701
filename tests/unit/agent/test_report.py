"""suture.agent.report: what the check-in says of a host (its state, its pre-match refusals)."""

from __future__ import annotations

from pathlib import Path

from suture.agent import report, state
from suture.agent.state import AgentState, Applied
from tests.support.kernel import BUILD_ID, RELEASE, identity

APPLIED = AgentState(
    applied=Applied(2, "suture_fix", Path("/s/b"), RELEASE, BUILD_ID, 1e9),
    last_result="applied",
)


def test_a_live_level_is_patched() -> None:
    body = report.checkin(identity(), APPLIED, {"suture_fix"}, host="h1")
    assert (body["state"], body["level"], "last_error" in body) == ("patched", 2, False)


def test_a_module_refused_by_pre_match_is_a_failure_that_names_the_function() -> None:
    refused = ("suture_fix: mrp:mrp_rcv",)
    body = report.checkin(identity(), APPLIED, {"suture_fix"}, host="h1", refused=refused)
    assert (body["state"], body["level"]) == ("failed", 2)
    assert body["last_error"].startswith("pre-match: suture_fix: mrp:mrp_rcv: not the code level 2")


def test_a_refused_apply_is_reported_with_its_error() -> None:
    failed = AgentState(
        last_result="error",
        last_error={"error": "pre-match", "message": "suture_fix refused itself: vmlinux:f ..."},
    )
    body = report.checkin(identity(), failed, set(), host="h1")
    assert (body["state"], body["level"]) == ("failed", 0)
    assert body["last_error"] == "pre-match: suture_fix refused itself: vmlinux:f ..."
    assert state.AgentState().live_level(RELEASE, BUILD_ID, set()) == 0
