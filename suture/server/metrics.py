"""Prometheus metrics of the server at ``GET /metrics`` (text exposition format 0.0.4).

Written by hand: a few counters and one histogram do not need a client
library, and the agent's packages stay free of it. Request metrics are
labelled by route *pattern* (``/api/v1/hosts/{host_id}``), never by raw
path, so a scanner probing random URLs cannot grow the label set.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

from suture.server.checkin import STATES

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

    def checkins(self) -> int:
        """Check-ins accepted since the server started."""
        with self._lock:
            return sum(
                n for (r, m, s), n in self._counts.items() if (m, r) == CHECKIN_ROUTE and s == 200
            )

    def lines(self) -> list[str]:
        """The request metrics in the exposition format."""
        with self._lock:
            counts = sorted(self._counts.items())
            hist = sorted((k, list(v), self._sums[k]) for k, v in self._buckets.items())
        out = _head("suture_http_requests_total", "counter", "HTTP requests answered")
        out += [
            f"suture_http_requests_total{_labels(route=r, method=m, status=str(s))} {n}"
            for (r, m, s), n in counts
        ]
        name = "suture_http_request_duration_seconds"
        out += _head(name, "histogram", "time to answer a request, by route")
        for (r, m), buckets, total in hist:
            for bound, n in zip((*map(_number, BUCKETS), "+Inf"), buckets, strict=True):
                out.append(f"{name}_bucket{_labels(route=r, method=m, le=bound)} {n}")
            out.append(f"{name}_sum{_labels(route=r, method=m)} {_number(total)}")
            out.append(f"{name}_count{_labels(route=r, method=m)} {buckets[-1]}")
        return out


def fleet_lines(groups: Iterable[tuple[str, str, int, str, int, int]], checkins: int) -> list[str]:
    """The fleet's gauges from :func:`suture.server.queries.groups` rows."""
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
    out += _head("suture_checkins_total", "counter", "check-ins accepted since the server started")
    out.append(f"suture_checkins_total {checkins}")
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
