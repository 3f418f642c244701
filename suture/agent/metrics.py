"""The agent's metrics as a node exporter textfile (``metrics_file``), written after each cycle.

The node exporter's textfile collector reads ``*.prom`` files from a folder
it is given; the agent writes its file atomically (temporary file, fsync,
rename) so the collector never reads half a file. No HTTP listener on the
host, and no metrics library in the agent. Format: Prometheus text
exposition 0.0.4.
"""

from __future__ import annotations

from pathlib import Path

from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.host import Kernel
from suture.agent.outcome import ERROR, Outcome
from suture.agent.state import AgentState
from suture.errors import AgentStateError
from suture.fsutil import atomic_write, check_trusted_folder
from suture.kernel.identity import KernelIdentity

# Every value of last_result, so that each appears (0 or 1) and a dashboard can sum them.
RESULTS = (*(str(o) for o in Outcome), ERROR)


def render(state: AgentState, ident: KernelIdentity, live: set[str]) -> str:
    """The textfile's content for this state and kernel."""
    level = state.live_level(ident.release, ident.build_id, live)
    supported = ident.livepatch and bool(ident.build_id)
    reported = state.last_report is not None and not state.last_report_error
    kernel = _labels(release=ident.release, build_id=ident.build_id)
    lines = [
        *_metric("suture_agent_level", "the live patch level live in memory (0: none)"),
        f"suture_agent_level{kernel} {level}",
        *_metric("suture_agent_last_check_timestamp_seconds", "when the last check ran"),
        f"suture_agent_last_check_timestamp_seconds {_time(state.last_check)}",
        *_metric("suture_agent_last_result", "the last cycle's outcome (1: this one)"),
        *(
            f"suture_agent_last_result{_labels(result=r)} {int(state.last_result == r)}"
            for r in RESULTS
        ),
        *_metric("suture_agent_held", "1: the crash guard holds a level back"),
        f"suture_agent_held {int(state.held is not None)}",
        *_metric("suture_agent_livepatch_supported", "1: this kernel can be live patched"),
        f"suture_agent_livepatch_supported {int(supported)}",
        *_metric("suture_agent_last_report_timestamp_seconds", "the last check-in attempt"),
        f"suture_agent_last_report_timestamp_seconds {_time(state.last_report)}",
        *_metric("suture_agent_last_report_ok", "1: the fleet server took the last check-in"),
        f"suture_agent_last_report_ok {int(reported)}",
    ]
    return "\n".join(lines) + "\n"


def write(config: AgentConfig, kernel: Kernel) -> bool:
    """Write ``config.metrics_file`` from the state and the kernel; False when it is off.

    Raises:
        AgentStateError: the state cannot be read, or the file cannot be written.
    """
    if not config.metrics_file:
        return False
    with agent_state.locked(config.state_dir):
        current = agent_state.read(config.state_dir)
    text = render(current, kernel.identity(), kernel.live_patches())
    path = Path(config.metrics_file)
    try:
        check_trusted_folder(path.parent)
    except PermissionError as e:
        raise AgentStateError(
            f"not writing the metrics file {path}: {e.strerror}",
            hint="the agent runs as root: give metrics_file a folder only root can write "
            "(the node exporter only needs to read it)",
        ) from e
    try:
        atomic_write(path, text.encode(), mode=0o644)
    except OSError as e:
        raise AgentStateError(
            f"cannot write the metrics file {path}: {e.strerror or e}",
            hint="check metrics_file in the agent's configuration and its folder's permissions",
        ) from e
    return True


def _metric(name: str, text: str) -> tuple[str, str]:
    return f"# HELP {name} {text}", f"# TYPE {name} gauge"


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _time(when: float | None) -> str:
    return "0" if when is None else repr(float(when))
