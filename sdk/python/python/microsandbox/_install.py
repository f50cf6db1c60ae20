"""``is_installed()`` / ``install()``: is this host ready to run sandboxes?"""

from __future__ import annotations

import json
import os
import subprocess

from . import _agent
from .errors import AgentNotInstalledError, IsolationUnavailableError


def is_installed() -> bool:
    """Whether sandboxes can be used from here: an agent answers (``MSB_AGENT_SOCKET`` or the
    state directory), or a ``microsandbox-agent`` binary is available to start one."""
    loc = _agent.locate()
    if _agent.healthy(loc.endpoint, timeout=1.0):
        return True
    return loc.state_dir is not None and _agent.find_agent_binary() is not None


def install() -> tuple[str, ...]:
    """Makes sure this host can run sandboxes, and starts the local agent.

    Checks the host with ``microsandbox-agent doctor`` (there is nothing to download: the agent
    ships in the wheel or comes from ``MSB_AGENT_BIN`` / ``PATH``), then starts the agent unless
    one runs. Returns the isolation levels available (``"microvm"``, ``"container"``).

    Raises:
        AgentNotInstalledError: no agent binary.
        IsolationUnavailableError: the host can run neither microVMs nor containers (the
            message carries the doctor's reasons).
    """
    loc = _agent.locate()
    binary = _agent.find_agent_binary()
    if binary is None:
        if loc.state_dir is None and _agent.healthy(loc.endpoint):
            return ()
        raise AgentNotInstalledError(
            "no microsandbox-agent binary found",
            hint=f"set {_agent.ENV_AGENT_BIN}, put microsandbox-agent on PATH, or install a "
            "microsandbox wheel that bundles it",
        )
    proc = subprocess.run(
        [binary, "doctor", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    try:
        report = json.loads(proc.stdout)
        levels = report["isolation"]
    except (ValueError, KeyError, TypeError):
        raise AgentNotInstalledError(
            f"`{binary} doctor --json` failed (status {proc.returncode}): {proc.stderr.strip()}"
        ) from None
    available = tuple(lv["isolation"] for lv in levels if lv.get("available"))
    if not available:
        reasons = "; ".join(f"{lv['isolation']}: {lv.get('reason')}" for lv in levels)
        raise IsolationUnavailableError(
            f"this host can run no sandboxes: {reasons}",
            hint=f"run `{os.path.basename(binary)} doctor` for details",
        )
    if loc.state_dir is not None:
        _agent.start_agent(loc.state_dir)
    return available
