"""Cluster mode: the same API, with sandboxes as Kubernetes ``Sandbox`` objects. The work (the
objects, watches, cleanup and the route to node-agents) is the ``microsandbox`` Rust crate's,
shared with the Rust and Node.js SDKs; this module holds the Python-side options.

::

    from microsandbox import Cluster, Sandbox

    async with await Sandbox.create("job-1", image="python", cluster=Cluster()) as sb:
        print((await sb.exec("python", ["-c", "print(1)"])).stdout())

``Sandbox.create`` posts a ``Sandbox`` object, watches it until it is Ready (no polling) and
deletes it again if that fails, times out or is cancelled. The microsandbox operator schedules
it onto a node; exec, files and metrics then go to that node's agent, authenticated with your
own bearer token, which the agent checks with the API server: you need ``create`` on
``sandboxes/exec`` of that Sandbox. A kubeconfig that authenticates with client certificates
only has no token to present (use a token: ``kubectl create token``).

How the agent is reached (``Cluster(agent_access=...)`` or ``MICROSANDBOX_AGENT_ACCESS``):

- ``"direct"``: straight to ``status.agentEndpoint`` (needs a route to the node network);
- ``"proxy"``: through the API server's pod proxy (``status.agentProxy``), over the same TLS
  connection and credentials as every other Kubernetes call, so it needs no network setup;
  you also need ``get`` and ``create`` on ``pods/proxy`` in the microsandbox namespace (the
  chart's ``microsandbox-agent-proxy`` Role);
- ``"auto"`` (default): direct when running in a pod, else the proxy when the agent offers it.

Which mode applies, first match wins:

1. the ``cluster=`` argument of the call (a :class:`Cluster`, or ``"local"``);
2. :func:`set_mode`;
3. the environment: ``MICROSANDBOX_MODE=cluster`` (with ``KUBECONFIG``,
   ``MICROSANDBOX_CONTEXT``, ``MICROSANDBOX_NAMESPACE``, ``MICROSANDBOX_READY_TIMEOUT``);
4. local mode.

Within a :class:`Cluster`, an explicit ``kubeconfig=`` wins over ``KUBECONFIG``, which wins over
``~/.kube/config``, which wins over the in-cluster ServiceAccount.

``secrets=[Secret.env(...)]`` becomes, per secret, a core ``Secret`` holding the value and a
``Secret`` (microsandbox.dev) naming it and its ``allow_hosts``, both owned by the Sandbox (so they
are deleted with it); the operator seals the values to the node-agent that runs the sandbox.
You need ``create`` on ``secrets`` in both API groups.
"""

from __future__ import annotations

import os
from datetime import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from . import _native
from .config import VolumeInfo
from .errors import InvalidConfigError

__all__ = ["AgentAccess", "Cluster", "set_mode"]

AgentAccess = Literal["auto", "direct", "proxy"]
_ACCESS: tuple[str, ...] = ("auto", "direct", "proxy")


@dataclass(frozen=True)
class Cluster:
    """Where cluster-mode sandboxes live.

    Args:
        kubeconfig: Path of a kubeconfig; default as kubectl (``KUBECONFIG``, ``~/.kube/config``,
            then the pod's ServiceAccount).
        context: kubeconfig context; default the current one.
        namespace: Namespace of the Sandbox objects; default the context's.
        ready_timeout: Seconds ``Sandbox.create`` waits for Ready.
        agent_access: How exec and files reach the node-agent: ``"direct"``, ``"proxy"`` (the
            API server's pod proxy) or ``"auto"`` (see the module doc).
    """

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    ready_timeout: float = 120.0
    agent_access: AgentAccess = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.ready_timeout, (int, float)) or self.ready_timeout <= 0:
            raise InvalidConfigError(
                f"ready_timeout must be a positive number of seconds, not {self.ready_timeout!r}"
            )
        if self.agent_access not in _ACCESS:
            raise InvalidConfigError(
                f"agent_access must be one of {', '.join(_ACCESS)}, not {self.agent_access!r}"
            )

    @classmethod
    def from_env(cls) -> Cluster | None:
        """The cluster the environment asks for (``MICROSANDBOX_MODE=cluster``), else None."""
        mode = os.environ.get("MICROSANDBOX_MODE", "local").strip().lower()
        if mode in ("", "local"):
            return None
        if mode != "cluster":
            raise InvalidConfigError(
                f"MICROSANDBOX_MODE must be 'local' or 'cluster', not {mode!r}"
            )
        timeout = os.environ.get("MICROSANDBOX_READY_TIMEOUT")
        try:
            ready = float(timeout) if timeout else 120.0
        except ValueError:
            raise InvalidConfigError(
                f"MICROSANDBOX_READY_TIMEOUT must be seconds, not {timeout!r}"
            ) from None
        access = os.environ.get("MICROSANDBOX_AGENT_ACCESS", "auto").strip().lower() or "auto"
        if access not in _ACCESS:
            raise InvalidConfigError(
                f"MICROSANDBOX_AGENT_ACCESS must be one of {', '.join(_ACCESS)}, not {access!r}"
            )
        return cls(
            context=os.environ.get("MICROSANDBOX_CONTEXT") or None,
            namespace=os.environ.get("MICROSANDBOX_NAMESPACE") or None,
            ready_timeout=ready,
            agent_access=cast(AgentAccess, access),
        )


ModeArg = Cluster | Literal["local"] | None


_UNSET = object()
_mode: object = _UNSET
_connections: dict[Cluster, _native.Cluster] = {}


def set_mode(mode: ModeArg) -> None:
    """Sets the mode of calls without a ``cluster=`` argument: a :class:`Cluster`, ``"local"``,
    or None to follow the environment again."""
    global _mode
    if mode is not None and mode != "local" and not isinstance(mode, Cluster):
        raise InvalidConfigError(f"mode must be a Cluster, 'local' or None, not {mode!r}")
    _mode = _UNSET if mode is None else mode


def resolve(explicit: ModeArg) -> Cluster | None:
    """The cluster a call uses, or None for local mode (precedence in the module doc)."""
    for choice in (explicit, None if _mode is _UNSET else _mode):
        if choice == "local":
            return None
        if isinstance(choice, Cluster):
            return choice
        if choice is not None:
            raise InvalidConfigError(f"cluster must be a Cluster or 'local', not {choice!r}")
    return Cluster.from_env()


async def connect(c: Cluster) -> _native.Cluster:
    """The (shared) connection for ``c``."""
    conn = _connections.get(c)
    if conn is None:
        conn = await _native.Cluster.connect(
            c.kubeconfig, c.context, c.namespace, float(c.ready_timeout), c.agent_access
        )
        _connections[c] = conn
    return conn


_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def quantity_bytes(q: str) -> int:
    """A Kubernetes byte quantity (``512Mi``, ``1G``, ``1048576``) in bytes."""
    q = q.strip()
    digits = q.rstrip("kMGTPi")
    unit = q[len(digits) :]
    if unit not in _UNITS or not digits:
        raise ValueError(f"not a byte quantity: {q!r}")
    return int(float(digits) * _UNITS[unit])


def volume_info(obj: Mapping[str, Any]) -> VolumeInfo:
    """What ``Volume.get`` says about a Volume object."""
    status = obj.get("status") or {}
    created = obj["metadata"].get("creationTimestamp")
    return VolumeInfo(
        name=obj["metadata"]["name"],
        quota_mib=quantity_bytes(obj["spec"]["size"]) // 2**20,
        used_bytes=quantity_bytes(status["used"]) if status.get("used") else 0,
        created_at=int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
        if created
        else 0,
        node=status.get("node"),
    )


async def create_volume(
    c: Cluster,
    name: str,
    quota_mib: int,
    node: str | None,
    node_selector: Mapping[str, str] | None,
) -> VolumeInfo:
    """Creates Volume ``name`` and waits until it is provisioned; the object is deleted again if
    that fails, times out or is cancelled (never an object someone else created)."""
    conn = await connect(c)
    obj = await conn.volume_create(
        name, quota_mib, node, dict(node_selector) if node_selector else None
    )
    return volume_info(obj)
