"""Prometheus metrics at ``GET /metrics`` (text exposition format 0.0.4), summed over processes.

Written by hand: a few counters and one histogram do not need a client
library, and the agent's packages stay free of it. Request metrics are
labelled by route *pattern* (``/api/v1/hosts/{host_id}``), never by raw
path, so a scanner probing random URLs cannot grow the label set.

Each server process counts its own requests (:class:`RequestMetrics`) and
writes a snapshot of them to the database every few seconds; ``/metrics``,
from whichever process answers, adds up every process's last snapshot, so
the counters describe the whole server, not one worker. A process that
stopped keeps its last snapshot, so the sums never go down.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from suture import __version__
from suture.contract.checkin import STATES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # s
CHECKIN_ROUTE = ("POST", "/api/v1/checkin")


class RequestMetrics:
    """Request counts by (route, method, status) and latency histograms by (route, method)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, int]] = Counter()
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (route, method)
        with self._lock:
            self._counts[(route, method, status)] += 1
            counts = self._buckets.setdefault(key, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1  # +Inf, which is also the count
            self._sums[key] = self._sums.get(key, 0.0) + seconds

    def snapshot(self) -> dict[str, Any]:
        """This process's counts as JSON (what goes to the database)."""
        with self._lock:
            hist = [[r, m, list(b), self._sums[(r, m)]] for (r, m), b in self._buckets.items()]
            return {"counts": [[*k, n] for k, n in self._counts.items()], "histograms": hist}

    def add(self, snapshot: Mapping[str, Any]) -> None:
        """Add another process's :meth:`snapshot` to these counts."""
        with self._lock:
            for route, method, status, n in snapshot.get("counts", []):
                self._counts[(route, method, int(status))] += int(n)
            for route, method, buckets, seconds in snapshot.get("histograms", []):
                key = (route, method)
                mine = self._buckets.setdefault(key, [0] * (len(BUCKETS) + 1))
                for i, n in enumerate(buckets[: len(mine)]):
                    mine[i] += int(n)
                self._sums[key] = self._sums.get(key, 0.0) + float(seconds)


def merged(snapshots: Iterable[Mapping[str, Any]]) -> RequestMetrics:
    """The sum of several processes' snapshots."""
    total = RequestMetrics()
    for snap in snapshots:
        total.add(snap)
    return total


def request_lines(metrics: RequestMetrics) -> list[str]:
    """The request metrics in the exposition format."""
    snap = metrics.snapshot()
    counts = sorted((r, m, int(s), n) for r, m, s, n in snap["counts"])
    hist = sorted(snap["histograms"])
    out = _head("suture_http_requests_total", "counter", "HTTP requests answered")
    out += [
        f"suture_http_requests_total{_labels(route=r, method=m, status=str(s))} {n}"
        for r, m, s, n in counts
    ]
    name = "suture_http_request_duration_seconds"
    out += _head(name, "histogram", "time to answer a request, by route")
    for r, m, buckets, total in hist:
        for bound, n in zip((*map(_number, BUCKETS), "+Inf"), buckets, strict=True):
            out.append(f"{name}_bucket{_labels(route=r, method=m, le=bound)} {n}")
        out.append(f"{name}_sum{_labels(route=r, method=m)} {_number(total)}")
        out.append(f"{name}_count{_labels(route=r, method=m)} {buckets[-1]}")
    return out


def checkins(metrics: RequestMetrics) -> int:
    """Check-ins accepted."""
    snap = metrics.snapshot()
    return sum(n for r, m, s, n in snap["counts"] if (m, r) == CHECKIN_ROUTE and int(s) == 200)


def fleet_lines(groups: Iterable[tuple[str, str, int, str, int, int]], checkins: int) -> list[str]:
    """The fleet's gauges from :func:`suture.server.db.queries.groups` rows."""
    by_state: Counter[str] = Counter(dict.fromkeys(STATES, 0))
    by_level: Counter[int] = Counter()
    inactive = total = 0
    for _, _, level, state, count, gone in groups:
        by_state[state] += count
        by_level[level] += count
        inactive += gone
        total += count
    out = _head("suture_hosts", "gauge", "hosts by the state they last reported")
    out += [f"suture_hosts{_labels(state=s)} {n}" for s, n in sorted(by_state.items())]
    # By level only, not by build: builds x levels would be a label set without bound.
    out += _head("suture_hosts_by_level", "gauge", "hosts by the level they last reported")
    out += [
        f"suture_hosts_by_level{_labels(level=str(lv))} {n}" for lv, n in sorted(by_level.items())
    ]
    out += _head("suture_hosts_failed", "gauge", "hosts whose last update failed")
    out.append(f"suture_hosts_failed {by_state['failed']}")
    out += _head("suture_hosts_unsupported", "gauge", "hosts whose kernel cannot be live patched")
    out.append(f"suture_hosts_unsupported {by_state['unsupported']}")
    out += _head("suture_hosts_activity", "gauge", "hosts by whether they checked in lately")
    out.append(f'suture_hosts_activity{{activity="active"}} {total - inactive}')
    out.append(f'suture_hosts_activity{{activity="inactive"}} {inactive}')
    out += _head("suture_checkins_total", "counter", "check-ins accepted by every server process")
    out.append(f"suture_checkins_total {checkins}")
    return out


def server_lines(
    *,
    expires: Mapping[str, float],
    metadata_error: str,
    halts: Mapping[str, int],
    processes: int,
    db: str,
    now: float,
) -> list[str]:
    """Gauges of the server itself: build info, metadata expiry, halted rollouts, processes."""
    out = _head("suture_build_info", "gauge", "the suture server's version (always 1)")
    out.append(f"suture_build_info{_labels(version=__version__, db=db)} 1")
    name = "suture_repository_metadata_expires_seconds"
    out += _head(name, "gauge", "seconds until each role's signed metadata expires")
    out += [f"{name}{_labels(role=r)} {_number(t - now)}" for r, t in sorted(expires.items())]
    out += _head("suture_repository_metadata_ok", "gauge", "1 when the metadata loads")
    out.append(f"suture_repository_metadata_ok {0 if metadata_error else 1}")
    out += _head("suture_rollouts_halted", "gauge", "halts in force, by channel")
    out += [f"suture_rollouts_halted{_labels(channel=c)} {n}" for c, n in sorted(halts.items())]
    out += _head("suture_server_processes", "gauge", "server processes that reported lately")
    out.append(f"suture_server_processes {processes}")
    return out


def render(lines: Iterable[str]) -> bytes:
    """The exposition body."""
    return ("\n".join(lines) + "\n").encode()


def _head(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value))
