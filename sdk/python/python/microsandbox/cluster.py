"""Cluster mode: the same API, with sandboxes as Kubernetes ``Sandbox`` objects.

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

import asyncio
import base64
import contextlib
import json
import os
import re
from datetime import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from . import _native
from .config import VolumeInfo
from .errors import ClusterConfigError, InvalidConfigError, UnsupportedFeatureError

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


def agent_client(c: Cluster, conn: _native.Cluster, obj: Mapping[str, Any]) -> _native.Client:
    """A client of the node-agent running Sandbox ``obj``, reached as ``c.agent_access`` says."""
    status = obj.get("status") or {}
    name = obj["metadata"]["name"]
    endpoint = status.get("agentEndpoint")
    proxy = status.get("agentProxy")
    token = conn.token
    if token is None:
        raise ClusterConfigError(
            "this kubeconfig authenticates without a bearer token (client certificates?), "
            "which node-agents cannot check; use a token, e.g. `kubectl create token <sa>`"
        )
    access = c.agent_access
    if access == "auto":
        in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        access = "direct" if (in_pod and endpoint) or not proxy else "proxy"
    if access == "proxy":
        if not proxy:
            raise ClusterConfigError(
                f"the node-agent of Sandbox {name} announces no API server proxy path "
                "(status.agentProxy); it needs POD_NAME and --listen"
            )
        return conn.relayed_client(proxy, token)
    if not endpoint:
        raise ClusterConfigError(
            f"the node-agent of Sandbox {name} announces no endpoint (status.agentEndpoint)"
        )
    return _native.Client(endpoint, token)


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
        conn = await _native.Cluster.connect(c.kubeconfig, c.context, c.namespace)
        _connections[c] = conn
    return conn


_PULL = {"always": "Always", "if-not-present": "IfNotPresent", "never": "Never"}

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


def volume_object(
    name: str,
    namespace: str,
    quota_mib: int,
    node: str | None,
    node_selector: Mapping[str, str] | None = None,
) -> str:
    """The ``Volume`` object (JSON) for ``Volume.create``."""
    spec: dict[str, Any] = {"size": f"{quota_mib}Mi"}
    if node is not None:
        spec["placement"] = {"node": node}
    elif node_selector:
        spec["placement"] = {"nodeSelector": dict(node_selector)}
    return json.dumps(
        {
            "apiVersion": "microsandbox.dev/v1alpha1",
            "kind": "Volume",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/created-by": "microsandbox-python"},
            },
            "spec": spec,
        }
    )


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
    """Creates Volume ``name`` and waits until it is provisioned; deletes it again if that
    fails, times out or is cancelled (never an object someone else created)."""
    conn = await connect(c)
    await conn.volume_create(volume_object(name, conn.namespace, quota_mib, node, node_selector))
    try:
        return volume_info(await conn.volume_wait_ready(name, c.ready_timeout))
    except BaseException:
        # Shielded: a cancelled create still deletes the object it made.
        await asyncio.shield(_delete_volume_quietly(conn, name))
        raise


async def _delete_volume_quietly(conn: _native.Cluster, name: str) -> None:
    with contextlib.suppress(Exception):
        await conn.volume_delete(name, False, 0.0)


def _crd_volume(m: dict[str, Any]) -> dict[str, Any]:
    """A mount in the Sandbox object's form (``spec.volumes[]``)."""
    if m["kind"] == "named":
        # A Volume object of the namespace (kubectl apply it; the operator places it).
        return {"path": m["path"], "readOnly": m["readonly"], "named": {"name": m["name"]}}
    if m["kind"] == "tmpfs":
        return {"path": m["path"], "tmpfs": {"size": f"{m['size_mib']}Mi"}}
    raise UnsupportedFeatureError(
        "bind mounts name a directory of the node that runs the sandbox, not this machine's; "
        "in cluster mode use a named Volume or copy files in with sb.fs after creating it"
    )


def _crd_patch(p: dict[str, Any]) -> dict[str, Any]:
    """A patch in the Sandbox object's form (``spec.patches[]``)."""
    op = p["op"]

    def text() -> str:
        try:
            return base64.b64decode(p["content_b64"]).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidConfigError(
                f"patch {op} {p['path']}: a Sandbox object holds text only; write binary "
                "files with sb.fs after creating the sandbox"
            ) from None

    def octal(mode: int | None) -> dict[str, str]:
        return {} if mode is None else {"mode": f"{mode:04o}"}

    if op == "text":
        return {"text": {"path": p["path"], "content": text(), **octal(p["mode"])}}
    if op == "append":
        return {"append": {"path": p["path"], "content": text()}}
    if op == "mkdir":
        return {"mkdir": {"path": p["path"], **octal(p["mode"])}}
    if op == "symlink":
        return {"symlink": {"path": p["path"], "target": p["target"]}}
    if op == "remove":
        return {"remove": {"path": p["path"]}}
    raise UnsupportedFeatureError(
        "copy patches read the disk of the node that runs the sandbox, not this machine's; in "
        "cluster mode copy files in with sb.fs.copy_from_host() after creating the sandbox"
    )


def secret_names(sandbox: str, secrets: list[dict[str, Any]]) -> list[str]:
    """Names of the Secret objects (core and microsandbox.dev, one pair per ``Secret.env``) the
    SDK creates for Sandbox ``sandbox``: ``<sandbox>-<variable, lowercased, '_' -> '-'>``."""
    names: list[str] = []
    for i, s in enumerate(secrets):
        slug = re.sub(r"-+", "-", s["env"].lower().replace("_", "-")).strip("-") or "secret"
        candidate = f"{sandbox}-{slug}"[:240].rstrip("-.")
        if candidate in names:
            candidate = f"{candidate}-{i}"
        names.append(candidate)
    return names


async def create_secrets(
    conn: _native.Cluster, sandbox: dict[str, Any], secrets: list[dict[str, Any]]
) -> None:
    """Creates the Secret objects ``sandbox_object`` named, owned by the created Sandbox
    ``sandbox`` (so Kubernetes' garbage collector deletes them with it)."""
    name = sandbox["metadata"]["name"]
    items = [
        {**s, "name": object_name}
        for object_name, s in zip(secret_names(name, secrets), secrets, strict=True)
    ]
    await conn.secrets_create(name, sandbox["metadata"]["uid"], json.dumps(items))


def sandbox_object(
    name: str,
    namespace: str,
    *,
    image: str,
    memory: int,
    cpus: int,
    env: Mapping[str, str],
    workdir: str | None,
    isolation: str | None,
    pull_policy: str,
    pids_limit: int | None,
    patches: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    network: dict[str, Any] | None = None,
    secrets: list[dict[str, Any]] | None = None,
) -> str:
    """The ``Sandbox`` object (JSON) for the arguments of ``Sandbox.create``, already checked;
    ``patches`` in the node agent's form (``config._patch_wire``)."""
    spec: dict[str, Any] = {
        "image": image,
        "imagePullPolicy": _PULL[pull_policy],
        "resources": {"memory": f"{memory}Mi", "cpus": cpus},
    }
    if isolation is not None:
        spec["isolation"] = isolation
    if pids_limit is not None:
        spec["resources"]["pids"] = pids_limit
    if env:
        spec["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if workdir:
        spec["workdir"] = workdir
    if patches:
        spec["patches"] = [_crd_patch(p) for p in patches]
    if mounts:
        spec["volumes"] = [_crd_volume(m) for m in mounts]
    if secrets:
        spec["secrets"] = [
            {"name": object_name, "env": s["env"]}
            for object_name, s in zip(secret_names(name, secrets), secrets, strict=True)
        ]
    # Always explicit: the SDK's default (no network) is not the CRD's (public_only).
    net = network or {"policy": "none"}
    if net.get("publish"):
        raise UnsupportedFeatureError(
            "published ports are on the node's loopback, not this machine's; in cluster mode "
            "reach the sandbox with exec and files, or expose it with a Kubernetes Service"
        )
    spec["network"] = {
        "policy": net["policy"],
        **({"allow": net["allow"]} if net.get("allow") else {}),
    }
    return json.dumps(
        {
            "apiVersion": "microsandbox.dev/v1alpha1",
            "kind": "Sandbox",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/created-by": "microsandbox-python"},
            },
            "spec": spec,
        }
    )
